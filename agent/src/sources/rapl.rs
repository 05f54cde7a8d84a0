//! Host CPU-package and DRAM energy from RAPL through the powercap sysfs (METHODOLOGY §3).
//!
//! Owns [`RaplReader`]: it discovers the zones under `/sys/class/powercap` (root
//! configurable), reads their `energy_uj` counters and returns interval deltas in joules.
//!
//! - **CPU** = Σ top-level zones whose `name` starts with `package` (`intel-rapl:N`; AMD's
//!   `amd_energy`/RAPL driver uses the same layout). Package energy covers cores and
//!   uncore; `psys` (whole platform) zones are left out so nothing is counted twice.
//! - **DRAM** = Σ zones named `dram` (subzones `intel-rapl:N:M`, or top-level on some
//!   servers); `None` when the machine has no DRAM zone.
//! - **Wrap-around:** `energy_uj` wraps at `max_energy_range_uj`; when a reading is below
//!   the previous one the delta is `cur + max_range − prev`. One wrap per interval is
//!   assumed: a ~262 kJ range wraps every ~15 min at 300 W, far above the sampling period.
//! - **Permissions:** since CVE-2020-8694 (Platypus) `energy_uj` is readable by root only
//!   on most distributions. Zones that exist but cannot be read give
//!   [`RaplError::NotReadable`], whose message says how to grant access.

use std::path::{Path, PathBuf};

/// Errors reading RAPL.
#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    /// A zone exists but its counter is not readable by this user.
    #[error("RAPL counter '{}' is not readable by this user (root-only since CVE-2020-8694): host energy is not measured; grant read access (e.g. a udev rule or systemd-tmpfiles 'z {} 0444 root root') or set host.rapl = false", path.display(), path.display())]
    NotReadable {
        /// The `energy_uj` file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read RAPL file '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file did not hold an unsigned integer.
    #[error("RAPL file '{}' holds '{value}', not an unsigned integer", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        value: String,
    },
}

/// Host energy over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RaplDelta {
    /// CPU packages, joules.
    pub cpu_j: f64,
    /// DRAM, joules; `None` without a DRAM zone.
    pub dram_j: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Package,
    Dram,
}

#[derive(Debug)]
struct Zone {
    energy_path: PathBuf,
    domain: Domain,
    max_range_uj: u64,
    prev_uj: Option<u64>,
}

/// Reads RAPL zones and differences their counters.
#[derive(Debug)]
pub struct RaplReader {
    zones: Vec<Zone>,
}

impl RaplReader {
    /// Discovers the zones under `root` (normally `/sys/class/powercap`). `Ok(None)` when
    /// the host has no package zone (virtual machines, ARM, no driver);
    /// [`RaplError::NotReadable`] when zones exist but `energy_uj` is root-only.
    pub fn open(root: impl AsRef<Path>) -> Result<Option<RaplReader>, RaplError> {
        let root = root.as_ref();
        let mut dirs: Vec<PathBuf> = match std::fs::read_dir(root) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_prefix("intel-rapl:").is_some_and(|rest| {
                        rest.split(':')
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    })
                })
                .map(|e| e.path())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RaplError::Io {
                    path: root.to_path_buf(),
                    source,
                })
            }
        };
        dirs.sort();
        let mut zones = Vec::new();
        for dir in dirs {
            let Some(name) = read_trimmed(&dir.join("name"))? else {
                continue;
            };
            let domain = if name.starts_with("package") {
                Domain::Package
            } else if name == "dram" {
                Domain::Dram
            } else {
                continue;
            };
            let max_path = dir.join("max_energy_range_uj");
            let max_range_uj = match read_trimmed(&max_path)? {
                Some(v) => parse_u64(&max_path, &v)?,
                None => 0,
            };
            zones.push(Zone {
                energy_path: dir.join("energy_uj"),
                domain,
                max_range_uj,
                prev_uj: None,
            });
        }
        if !zones.iter().any(|z| z.domain == Domain::Package) {
            return Ok(None);
        }
        let mut reader = RaplReader { zones };
        // Probe every counter now, so an unreadable one is reported at start-up.
        for z in &reader.zones {
            read_counter(&z.energy_path)?;
        }
        reader.zones.iter_mut().for_each(|z| z.prev_uj = None);
        Ok(Some(reader))
    }

    /// How many package and DRAM zones were found (for `check`).
    pub fn zone_counts(&self) -> (usize, usize) {
        let pkg = self
            .zones
            .iter()
            .filter(|z| z.domain == Domain::Package)
            .count();
        (pkg, self.zones.len() - pkg)
    }

    /// Energy since the previous call; `Ok(None)` on the first call (and the call after
    /// an error, which starts a new baseline).
    pub fn read_delta(&mut self) -> Result<Option<RaplDelta>, RaplError> {
        let mut readings = Vec::with_capacity(self.zones.len());
        for z in &self.zones {
            match read_counter(&z.energy_path) {
                Ok(v) => readings.push(v),
                Err(e) => {
                    self.zones.iter_mut().for_each(|z| z.prev_uj = None);
                    return Err(e);
                }
            }
        }
        let mut cpu_uj = 0u64;
        let mut dram_uj: Option<u64> = None;
        let mut primed = true;
        for (z, cur) in self.zones.iter_mut().zip(readings) {
            match z.prev_uj {
                Some(prev) => {
                    let d = wrapping_delta(prev, cur, z.max_range_uj);
                    match z.domain {
                        Domain::Package => cpu_uj += d,
                        Domain::Dram => *dram_uj.get_or_insert(0) += d,
                    }
                }
                None => primed = false,
            }
            z.prev_uj = Some(cur);
        }
        if !primed {
            return Ok(None);
        }
        Ok(Some(RaplDelta {
            cpu_j: cpu_uj as f64 / 1e6,
            dram_j: dram_uj.map(|d| d as f64 / 1e6),
        }))
    }
}

/// Counter delta with wrap-around at `max_range` (µJ). Without a known range a decrease
/// is taken as a restart from 0.
pub fn wrapping_delta(prev: u64, cur: u64, max_range: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else if max_range >= prev {
        cur + (max_range - prev)
    } else {
        cur
    }
}

fn read_trimmed(path: &Path) -> Result<Option<String>, RaplError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(None),
        Err(source) => Err(RaplError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_counter(path: &Path) -> Result<u64, RaplError> {
    match std::fs::read_to_string(path) {
        Ok(s) => parse_u64(path, s.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(RaplError::NotReadable {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(RaplError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_u64(path: &Path, v: &str) -> Result<u64, RaplError> {
    v.parse().map_err(|_| RaplError::Parse {
        path: path.to_path_buf(),
        value: v.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::wrapping_delta;

    #[test]
    fn wraps() {
        assert_eq!(wrapping_delta(100, 250, 1000), 150);
        assert_eq!(wrapping_delta(900, 50, 1000), 150);
        assert_eq!(wrapping_delta(900, 50, 0), 50);
    }
}
