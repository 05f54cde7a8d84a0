//! The footprint methodology (METHODOLOGY.md §3–§7, §10) as pure functions: facility
//! energy, location- and market-based emissions, embodied emissions, on-site and off-site
//! water, intensities and SCI.
//!
//! Every quantity carries its unit in its name (`_kwh`, `_g`, `_l`, `_g_per_kwh`,
//! `_l_per_kwh`). These functions take already-validated numbers and never fail;
//! configuration code checks factors once with [`check_pue`], [`check_non_negative`],
//! [`check_share`] and [`check_lifetime_hours`], which give user-facing errors.
//! Factor values and their sources live in [`crate::factors`].

/// Why a footprint input is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FootprintError {
    /// PUE is E_DC / E_IT, so it is at least 1.
    #[error("PUE '{value}' for '{key}' is below 1 or not a number; PUE = facility energy / IT energy is at least 1 (industry average 1.56, hyperscalers about 1.1): set '{key}' to a value ≥ 1")]
    PueBelowOne { key: String, value: f64 },
    /// A factor that cannot be negative (WUE, EWIF, intensity, embodied kg).
    #[error("'{key}' is '{value}', which is negative or not a number; set '{key}' to a finite value ≥ 0")]
    Negative { key: String, value: f64 },
    /// A share outside 0..=1.
    #[error("'{key}' is '{value}', which is not a share between 0 and 1; write 60% as 0.6")]
    ShareOutOfRange { key: String, value: f64 },
    /// An equipment lifetime that is not a positive number of hours.
    #[error("'{key}' is '{value}' hours; an equipment lifetime must be a positive number (4 years = 35040 hours)")]
    LifetimeNotPositive { key: String, value: f64 },
    /// Fuel-mix shares that do not add up to 1.
    #[error("fuel-mix shares add up to '{sum}', not 1 (±{tolerance}); give each fuel's share of generation so that they sum to 1")]
    MixDoesNotSum { sum: f64, tolerance: f64 },
    /// One fuel-mix share is negative or not a number.
    #[error(
        "fuel-mix share '{fuel}' is '{value}'; each share must be a finite value between 0 and 1"
    )]
    MixShareInvalid { fuel: &'static str, value: f64 },
}

/// Hours in a (365-day) year, the convention of the SCI worked example (4 years → 28.54 g).
pub const HOURS_PER_YEAR: f64 = 8760.0;

/// US gallons to litres (§6: gal/MWh × 3.785412 = L/MWh).
pub const LITRES_PER_US_GALLON: f64 = 3.785412;

/// §3: IT energy of a model = its GPU share (active + idle) + its host share.
pub fn it_energy_kwh(gpu_active_kwh: f64, gpu_idle_kwh: f64, host_kwh: f64) -> f64 {
    gpu_active_kwh + gpu_idle_kwh + host_kwh
}

/// §4: `E_facility = E_IT × PUE` (ISO/IEC 30134-2).
pub fn facility_energy_kwh(it_kwh: f64, pue: f64) -> f64 {
    it_kwh * pue
}

/// §5 location-based emissions: facility energy × the grid zone's intensity.
pub fn location_emissions_g(facility_kwh: f64, intensity_g_per_kwh: f64) -> f64 {
    facility_kwh * intensity_g_per_kwh
}

/// §5 market-based: instruments cover `covered_share` (0..=1) of consumption at
/// `instrument_g_per_kwh` (0 for renewable PPAs/certificates); the rest at the residual
/// mix, else the grid average (flagged). Offsets are not an input: they never reduce
/// either number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarketInputs {
    /// Share of the site's consumption covered by contractual instruments, 0..=1.
    pub covered_share: f64,
    /// Emission factor of the instruments (0 for renewable PPAs and certificates).
    pub instrument_g_per_kwh: f64,
    /// Residual-mix factor of the market, when published.
    pub residual_mix_g_per_kwh: Option<f64>,
    /// Location-based grid average, the fallback for the uncovered share.
    pub grid_average_g_per_kwh: f64,
}

impl MarketInputs {
    /// Checks the inputs once, at configuration time (`key` names the site's config table).
    pub fn validate(&self, key: &str) -> Result<(), FootprintError> {
        check_share(&format!("{key}.covered_share"), self.covered_share)?;
        check_non_negative(
            &format!("{key}.instrument_g_per_kwh"),
            self.instrument_g_per_kwh,
        )?;
        if let Some(residual) = self.residual_mix_g_per_kwh {
            check_non_negative(&format!("{key}.residual_mix_g_per_kwh"), residual)?;
        }
        check_non_negative(
            &format!("{key}.grid_average_g_per_kwh"),
            self.grid_average_g_per_kwh,
        )?;
        Ok(())
    }
}

/// Market-based emissions and whether the grid average stood in for a missing residual mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarketEmissions {
    pub grams: f64,
    /// True when part of the consumption was uncovered and no residual mix was given,
    /// so the grid average was used for it (the report flags this).
    pub used_grid_average_for_residual: bool,
}

/// §5 market-based emissions. `covered_share` is clamped to 0..=1 (a NaN share counts as
/// 0); validate it with [`MarketInputs::validate`] first.
pub fn market_emissions_g(facility_kwh: f64, m: &MarketInputs) -> MarketEmissions {
    let covered = if m.covered_share.is_nan() {
        0.0
    } else {
        m.covered_share.clamp(0.0, 1.0)
    };
    let uncovered = 1.0 - covered;
    let (residual_g_per_kwh, used_grid_average) = match m.residual_mix_g_per_kwh {
        Some(residual) => (residual, false),
        None => (m.grid_average_g_per_kwh, uncovered > 0.0),
    };
    let grams = facility_kwh * covered * m.instrument_g_per_kwh
        + facility_kwh * uncovered * residual_g_per_kwh;
    MarketEmissions {
        grams,
        used_grid_average_for_residual: used_grid_average,
    }
}

/// Years of equipment life to hours ([`HOURS_PER_YEAR`] per year).
pub fn years_to_hours(years: f64) -> f64 {
    years * HOURS_PER_YEAR
}

/// §5 embodied, SCI `M = TE × (TiR/EL) × (RR/ToR)`, in grams: `total_embodied_kg` (TE) over
/// `lifetime_hours` (EL, > 0: check with [`check_lifetime_hours`]), for `reserved_hours`
/// (TiR) and `resource_share` (RR/ToR: the share of the device reserved, 0..=1).
pub fn embodied_g(
    total_embodied_kg: f64,
    lifetime_hours: f64,
    reserved_hours: f64,
    resource_share: f64,
) -> f64 {
    total_embodied_kg * 1000.0 * (reserved_hours / lifetime_hours) * resource_share
}

/// Per-device share of a multi-device product footprint (e.g. one GPU of an 8-GPU board).
/// `None` when `devices` is 0.
pub fn per_device_kg(product_kg: f64, devices: u32) -> Option<f64> {
    per_unit(product_kg, f64::from(devices))
}

/// §6 on-site water: WUE × IT energy (NOT PUE-adjusted; CodeCarbon's PUE-adjusted
/// variant overstates it by a factor of PUE).
pub fn water_onsite_l(it_kwh: f64, wue_l_per_kwh: f64) -> f64 {
    it_kwh * wue_l_per_kwh
}

/// §6 off-site water: EWIF × facility energy (IT energy × PUE).
pub fn water_offsite_l(it_kwh: f64, pue: f64, ewif_l_per_kwh: f64) -> f64 {
    facility_energy_kwh(it_kwh, pue) * ewif_l_per_kwh
}

/// Water consumption of one quantity of IT energy, the two scopes kept apart (§6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Water {
    pub onsite_l: f64,
    pub offsite_l: f64,
}

impl Water {
    pub fn total_l(&self) -> f64 {
        self.onsite_l + self.offsite_l
    }
}

/// §6 `W = E_IT × WUE + E_IT × PUE × EWIF`, on-site and off-site apart.
pub fn water_l(it_kwh: f64, pue: f64, wue_l_per_kwh: f64, ewif_l_per_kwh: f64) -> Water {
    Water {
        onsite_l: water_onsite_l(it_kwh, wue_l_per_kwh),
        offsite_l: water_offsite_l(it_kwh, pue, ewif_l_per_kwh),
    }
}

/// Shares of generation by fuel (each 0..=1, summing to 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FuelMix {
    pub coal: f64,
    pub gas: f64,
    pub nuclear: f64,
    pub oil: f64,
    pub other: f64,
    pub solar: f64,
    pub wind: f64,
    pub hydro: f64,
}

impl FuelMix {
    /// (fuel, share, water intensity in gal/MWh) for each fuel, per the §6 table.
    fn with_gal_per_mwh(&self) -> [(&'static str, f64, f64); 8] {
        [
            ("coal", self.coal, 450.0),
            ("gas", self.gas, 300.0),
            ("nuclear", self.nuclear, 600.0),
            ("oil", self.oil, 350.0),
            ("other", self.other, 475.0),
            ("solar", self.solar, 0.0),
            ("wind", self.wind, 0.0),
            ("hydro", self.hydro, 0.0),
        ]
    }
}

/// How far the fuel-mix shares may sum from 1 (rounded published shares).
pub const FUEL_MIX_SUM_TOLERANCE: f64 = 0.01;

/// §6 EWIF of a fuel mix in L/kWh: Σ share × gal/MWh (coal 450, gas 300, nuclear 600,
/// oil 350, other 475, solar/wind/hydro 0) × 3.785412 / 1000. Shares must each be in
/// 0..=1 and sum to 1 ± [`FUEL_MIX_SUM_TOLERANCE`].
pub fn ewif_from_mix(mix: &FuelMix) -> Result<f64, FootprintError> {
    let fuels = mix.with_gal_per_mwh();
    let mut sum = 0.0;
    let mut gal_per_mwh = 0.0;
    for (fuel, share, intensity) in fuels {
        if !(0.0..=1.0).contains(&share) {
            return Err(FootprintError::MixShareInvalid { fuel, value: share });
        }
        sum += share;
        gal_per_mwh += share * intensity;
    }
    if (sum - 1.0).abs() > FUEL_MIX_SUM_TOLERANCE {
        return Err(FootprintError::MixDoesNotSum {
            sum,
            tolerance: FUEL_MIX_SUM_TOLERANCE,
        });
    }
    Ok(gal_per_mwh * LITRES_PER_US_GALLON / 1000.0)
}

/// `value / units`, or `None` when `units` is not a positive finite number or the result
/// is not finite: an intensity is never 0-by-default or infinity.
pub fn per_unit(value: f64, units: f64) -> Option<f64> {
    if !(units.is_finite() && units > 0.0) {
        return None;
    }
    let ratio = value / units;
    ratio.is_finite().then_some(ratio)
}

/// `value` per 1,000 `units` (e.g. Wh per 1,000 output tokens); `None` as [`per_unit`].
pub fn per_1k(value: f64, units: f64) -> Option<f64> {
    per_unit(value * 1000.0, units)
}

/// SCI (ISO/IEC 21031:2024) `= (E × I + M) per R`, location-based I only, in grams per
/// functional unit. For "per 1,000 output tokens" pass `tokens / 1000`; per request the
/// request count; per GPU-hour the GPU-hours. `None` when there are no functional units.
pub fn sci_g(
    energy_kwh: f64,
    intensity_g_per_kwh: f64,
    embodied_g: f64,
    functional_units: f64,
) -> Option<f64> {
    per_unit(
        location_emissions_g(energy_kwh, intensity_g_per_kwh) + embodied_g,
        functional_units,
    )
}

/// §10 GPAI Code of Practice: energy in MWh to 2 significant figures.
pub fn gpai_energy_mwh(energy_kwh: f64) -> f64 {
    round_significant(energy_kwh / 1000.0, 2)
}

/// `value` rounded to `digits` significant figures (0 stays 0; non-finite unchanged).
pub fn round_significant(value: f64, digits: u32) -> f64 {
    if value == 0.0 || !value.is_finite() || digits == 0 {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits as i32 - 1 - magnitude);
    (value * scale).round() / scale
}

/// PUE must be a finite number ≥ 1.
pub fn check_pue(key: &str, pue: f64) -> Result<f64, FootprintError> {
    if pue.is_finite() && pue >= 1.0 {
        Ok(pue)
    } else {
        Err(FootprintError::PueBelowOne {
            key: key.to_owned(),
            value: pue,
        })
    }
}

/// A factor that must be a finite number ≥ 0 (WUE, EWIF, intensities, embodied kg).
pub fn check_non_negative(key: &str, value: f64) -> Result<f64, FootprintError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(FootprintError::Negative {
            key: key.to_owned(),
            value,
        })
    }
}

/// A share in 0..=1.
pub fn check_share(key: &str, value: f64) -> Result<f64, FootprintError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(FootprintError::ShareOutOfRange {
            key: key.to_owned(),
            value,
        })
    }
}

/// An equipment lifetime: a finite number of hours > 0.
pub fn check_lifetime_hours(key: &str, hours: f64) -> Result<f64, FootprintError> {
    if hours.is_finite() && hours > 0.0 {
        Ok(hours)
    } else {
        Err(FootprintError::LifetimeNotPositive {
            key: key.to_owned(),
            value: hours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_all_covered_by_renewables_is_zero_and_unflagged() {
        let m = MarketInputs {
            covered_share: 1.0,
            instrument_g_per_kwh: 0.0,
            residual_mix_g_per_kwh: None,
            grid_average_g_per_kwh: 400.0,
        };
        let e = market_emissions_g(10.0, &m);
        assert_eq!(e.grams, 0.0);
        assert!(!e.used_grid_average_for_residual);
    }

    #[test]
    fn market_uncovered_share_uses_residual_mix_else_flagged_grid_average() {
        let mut m = MarketInputs {
            covered_share: 0.25,
            instrument_g_per_kwh: 20.0,
            residual_mix_g_per_kwh: Some(500.0),
            grid_average_g_per_kwh: 400.0,
        };
        let with_residual = market_emissions_g(100.0, &m);
        // 25 kWh × 20 + 75 kWh × 500
        assert!((with_residual.grams - 38_000.0).abs() < 1e-9);
        assert!(!with_residual.used_grid_average_for_residual);
        m.residual_mix_g_per_kwh = None;
        let fallback = market_emissions_g(100.0, &m);
        // 25 kWh × 20 + 75 kWh × 400
        assert!((fallback.grams - 30_500.0).abs() < 1e-9);
        assert!(fallback.used_grid_average_for_residual);
    }

    #[test]
    fn market_share_is_clamped_and_validation_names_the_key() {
        let m = MarketInputs {
            covered_share: 1.5,
            instrument_g_per_kwh: 0.0,
            residual_mix_g_per_kwh: Some(300.0),
            grid_average_g_per_kwh: 400.0,
        };
        assert_eq!(market_emissions_g(10.0, &m).grams, 0.0);
        let err = m
            .validate("sites.paris.market")
            .expect_err("1.5 is not a share");
        assert!(err
            .to_string()
            .contains("'sites.paris.market.covered_share' is '1.5'"));
    }

    #[test]
    fn ewif_of_pure_fuels_matches_the_gallon_table() {
        let coal = FuelMix {
            coal: 1.0,
            ..FuelMix::default()
        };
        assert!(
            (ewif_from_mix(&coal).expect("valid mix") - 450.0 * 3.785412 / 1000.0).abs() < 1e-12
        );
        let renewables = FuelMix {
            solar: 0.5,
            wind: 0.3,
            hydro: 0.2,
            ..FuelMix::default()
        };
        assert_eq!(ewif_from_mix(&renewables).expect("valid mix"), 0.0);
    }

    #[test]
    fn ewif_rejects_bad_mixes() {
        let short = FuelMix {
            gas: 0.5,
            ..FuelMix::default()
        };
        assert!(matches!(
            ewif_from_mix(&short),
            Err(FootprintError::MixDoesNotSum { .. })
        ));
        let negative = FuelMix {
            gas: 1.2,
            coal: -0.2,
            ..FuelMix::default()
        };
        assert!(matches!(
            ewif_from_mix(&negative),
            Err(FootprintError::MixShareInvalid { fuel: "coal", .. })
        ));
        let nan = FuelMix {
            gas: f64::NAN,
            coal: 1.0,
            ..FuelMix::default()
        };
        assert!(ewif_from_mix(&nan).is_err());
    }

    #[test]
    fn per_unit_is_none_for_empty_negative_and_non_finite_denominators() {
        assert_eq!(per_unit(5.0, 0.0), None);
        assert_eq!(per_unit(5.0, -1.0), None);
        assert_eq!(per_unit(5.0, f64::NAN), None);
        assert_eq!(per_unit(f64::INFINITY, 1.0), None);
        assert_eq!(per_unit(0.0, 4.0), Some(0.0));
        assert_eq!(per_1k(3.0, 2000.0), Some(1.5));
        assert_eq!(sci_g(1.0, 100.0, 20.0, 0.0), None);
        assert_eq!(sci_g(1.0, 100.0, 20.0, 4.0), Some(30.0));
    }

    #[test]
    fn checks_accept_valid_and_name_invalid_values() {
        assert_eq!(check_pue("pue", 1.0), Ok(1.0));
        let err = check_pue("sites.a.pue", 0.9).expect_err("below 1");
        assert!(err.to_string().contains("PUE '0.9' for 'sites.a.pue'"));
        assert!(check_pue("pue", f64::NAN).is_err());
        assert!(check_non_negative("wue", -0.1).is_err());
        assert!(check_non_negative("wue", 0.0).is_ok());
        assert!(check_share("s", 1.01).is_err());
        assert!(check_lifetime_hours("lifetime", 0.0).is_err());
        assert_eq!(check_lifetime_hours("lifetime", 8760.0), Ok(8760.0));
    }

    #[test]
    fn significant_figures() {
        assert_eq!(round_significant(1287.0, 2), 1300.0);
        assert_eq!(round_significant(0.0123456, 2), 0.012);
        assert_eq!(round_significant(-45.6, 2), -46.0);
        assert_eq!(round_significant(0.0, 2), 0.0);
        assert_eq!(gpai_energy_mwh(1_287_000.0), 1300.0);
        assert_eq!(gpai_energy_mwh(914.0), 0.91);
    }

    #[test]
    fn it_energy_adds_gpu_and_host_shares() {
        assert_eq!(it_energy_kwh(1.0, 0.5, 0.25), 1.75);
    }
}
