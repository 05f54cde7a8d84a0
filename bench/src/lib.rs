//! inferwatt benchmarks as a library the bench binaries share: reading a process's CPU
//! time and peak memory from `/proc`, a minimal loopback HTTP client, locating the
//! release binaries, the simulated 8-GPU fleet's scenario, and synthetic agent line
//! protocol. Benchmarks print figures; nothing here asserts a timing.

pub mod fleet;
pub mod http;
pub mod payload;
pub mod procstat;
pub mod spawn;
