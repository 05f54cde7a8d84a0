//! A process's resource use as the kernel accounts it: user+system CPU time (its own and
//! its waited-for children's) from
//! `/proc/<pid>/stat` and peak resident set (`VmHWM`) from `/proc/<pid>/status`.

use std::process::Command;

/// Why a process's usage cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcStatError {
    #[error("cannot read '/proc/{pid}/{file}': {source}; is process {pid} still running?")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("'/proc/{pid}/{file}' has no {what}; this needs a Linux /proc")]
    Parse {
        pid: u32,
        file: &'static str,
        what: &'static str,
    },
    #[error("'getconf CLK_TCK' gave '{0}'; install getconf (libc-bin)")]
    ClockTicks(String),
}

/// CPU time and peak memory of one process at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// utime + stime + cutime + cstime, seconds.
    pub cpu_s: f64,
    /// Peak resident set so far, KiB.
    pub peak_rss_kib: u64,
}

/// Kernel clock ticks per second (the unit of `/proc/<pid>/stat` times).
pub fn clock_ticks() -> Result<f64, ProcStatError> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| ProcStatError::ClockTicks(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0)
        .ok_or(ProcStatError::ClockTicks(text))
}

/// utime + stime + cutime + cstime in ticks from the text of `/proc/<pid>/stat` (fields
/// 14–17: the process's threads and its waited-for children, so a monitor that shells out
/// is charged for it; the command name in parentheses may contain spaces, so count after
/// the last `)`).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(utime + stime + cutime + cstime)
}

/// `VmHWM` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vmhwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads `pid`'s CPU time and peak RSS now.
pub fn usage(pid: u32, ticks_per_s: f64) -> Result<Usage, ProcStatError> {
    let read = |file: &'static str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcStatError::Read { pid, file, source })
    };
    let ticks = parse_stat_ticks(&read("stat")?).ok_or(ProcStatError::Parse {
        pid,
        file: "stat",
        what: "utime/stime fields",
    })?;
    let peak = parse_vmhwm_kib(&read("status")?).ok_or(ProcStatError::Parse {
        pid,
        file: "status",
        what: "VmHWM line",
    })?;
    Ok(Usage {
        cpu_s: ticks as f64 / ticks_per_s,
        peak_rss_kib: peak,
    })
}

/// CPU use between two readings `wall_s` apart, as a percentage of one core.
pub fn cpu_pct_of_one_core(start: Usage, end: Usage, wall_s: f64) -> f64 {
    100.0 * (end.cpu_s - start.cpu_s) / wall_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_fields_14_to_17_even_with_spaces_in_the_name() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 120 0 0 0 37 5 2 1 20 0 3 0 99 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(45));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn vmhwm_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vmhwm_kib(status), Some(5120));
        assert_eq!(parse_vmhwm_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn this_process_is_readable_and_cpu_share_is_relative_to_wall_time() {
        let ticks = clock_ticks().expect("getconf CLK_TCK");
        let u = usage(std::process::id(), ticks).expect("own /proc entry");
        assert!(u.peak_rss_kib > 0);
        let a = Usage {
            cpu_s: 1.0,
            peak_rss_kib: 1,
        };
        let b = Usage {
            cpu_s: 1.5,
            peak_rss_kib: 1,
        };
        assert!((cpu_pct_of_one_core(a, b, 100.0) - 0.5).abs() < 1e-12);
    }
}
