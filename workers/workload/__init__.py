"""What a worker runs and how one measurement is taken: prompts and datasets,
arrival processes, warmup, the measured passes and phases, per-request latency."""
