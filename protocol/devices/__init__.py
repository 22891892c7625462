"""Device access both sides use, behind one interface: NVML (and its recorded
replay), the energy counter's update period, RAPL, the host's driver libraries."""
