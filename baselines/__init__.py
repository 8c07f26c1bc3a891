"""Traditional recommenders: one module per model, registered by name, on one training loop."""
