//! Simulated NVML driver (being written).
