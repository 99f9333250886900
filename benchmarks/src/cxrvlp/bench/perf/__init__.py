"""Per-method training-step timings next to the official baselines (scripts, not tests)."""
