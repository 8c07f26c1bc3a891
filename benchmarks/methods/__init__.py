"""Methods the harness wires from parts: generative recommenders (identifier + backbone)."""
