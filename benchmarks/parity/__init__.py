"""Parity harnesses against other implementations (benchmark scripts, not tests)."""
