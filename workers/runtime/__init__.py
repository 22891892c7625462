"""The worker process: its entry point, the coordinator channel, preflight checks,
the start barrier and the host facts it reports."""
