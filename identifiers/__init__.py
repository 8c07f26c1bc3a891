"""Item identifier schemes: one module per scheme, registered by name."""
