"""What a worker measures around the engine: energy windows, the telemetry sidecar,
idle baselines, contamination and cooldown checks, window-length policy."""
