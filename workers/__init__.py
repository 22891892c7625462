"""lem worker processes: one per backend and GPU set, each in its own Python environment."""
