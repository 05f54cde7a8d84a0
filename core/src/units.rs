//! Unit conversions. NVML speaks millijoules and milliwatts, reports speak kWh and kg;
//! everything in between is joules, watts and seconds. Each conversion is one function.

/// Joules in one kilowatt-hour.
pub const J_PER_KWH: f64 = 3_600_000.0;

/// NVML energy counter units (millijoules) to joules.
pub fn mj_to_j(mj: u64) -> f64 {
    mj as f64 / 1000.0
}

/// NVML power units (milliwatts) to watts.
pub fn mw_to_w(mw: u32) -> f64 {
    f64::from(mw) / 1000.0
}

/// Joules to kilowatt-hours.
pub fn j_to_kwh(j: f64) -> f64 {
    j / J_PER_KWH
}

/// Kilowatt-hours to joules.
pub fn kwh_to_j(kwh: f64) -> f64 {
    kwh * J_PER_KWH
}

/// Joules to watt-hours.
pub fn j_to_wh(j: f64) -> f64 {
    j / 3600.0
}

/// RAPL powercap units (microjoules) to joules.
pub fn uj_to_j(uj: u64) -> f64 {
    uj as f64 / 1_000_000.0
}

/// Seconds to nanoseconds, for line-protocol timestamps.
pub fn s_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(mj_to_j(1500), 1.5);
        assert_eq!(mw_to_w(350_000), 350.0);
        assert_eq!(j_to_kwh(3_600_000.0), 1.0);
        assert_eq!(kwh_to_j(j_to_kwh(1234.5)), 1234.5);
        assert_eq!(j_to_wh(7200.0), 2.0);
        assert_eq!(uj_to_j(2_500_000), 2.5);
        assert_eq!(s_to_ns(1.5), 1_500_000_000);
    }
}
