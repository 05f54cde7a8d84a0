//! The agent's local footprint estimate (METHODOLOGY §4): the site factors it applies to
//! its Prometheus metrics, where each comes from, and one model row's emissions and
//! water. Pure: it takes the configuration and returns numbers and sources.
//!
//! A factor nobody configured is *unset*: the agent leaves it off the wire (the collector
//! decides with its factors file or the same cited reference), uses the cited reference
//! for its own estimate, and says so in [`LocalFactors::warnings`] — never a silent 1.0
//! or 0.

use inferwatt_core::factors::{ewif_reference, grid_intensity, pue_reference, wue_reference};
use inferwatt_core::footprint::{
    facility_energy_kwh, location_emissions_g, water_offsite_l, water_onsite_l,
};

use crate::config::SiteConfig;

/// One factor the agent applies, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFactor {
    pub value: f64,
    /// `config`, or the cited reference used because nothing was configured.
    pub source: String,
    /// True when the value is a reference standing in for an unset configuration.
    pub defaulted: bool,
}

impl LocalFactor {
    fn configured(value: f64) -> Self {
        LocalFactor {
            value,
            source: "config".into(),
            defaulted: false,
        }
    }

    fn reference(f: Option<inferwatt_core::factors::Factor>) -> Self {
        match f {
            Some(f) => LocalFactor {
                value: f.value,
                source: match f.year {
                    Some(y) => format!("{} ({y})", f.source),
                    None => f.source,
                },
                defaulted: true,
            },
            // The built-in tables always hold these references; a missing one is unknown,
            // not zero.
            None => LocalFactor {
                value: f64::NAN,
                source: "unknown: no built-in reference".into(),
                defaulted: true,
            },
        }
    }
}

/// Site factors the agent applies for its local estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFactors {
    pub pue: LocalFactor,
    pub wue_l_per_kwh: LocalFactor,
    pub ewif_l_per_kwh: LocalFactor,
    pub intensity_g_per_kwh: Option<f64>,
    pub intensity_source: String,
}

/// The PUE reference used when none is configured (the collector's default too).
pub const DEFAULT_PUE_REFERENCE: &str = "uptime-2024";
/// The WUE and EWIF reference used when none is configured.
pub const DEFAULT_WATER_REFERENCE: &str = "us-average-li";

impl LocalFactors {
    pub fn from_site(s: &SiteConfig) -> Self {
        let (intensity_g_per_kwh, intensity_source) = match s.carbon_intensity_g_per_kwh {
            Some(v) => (Some(v), "config".to_string()),
            None => {
                let key = if s.zone.is_empty() {
                    &s.country
                } else {
                    &s.zone
                };
                match grid_intensity(key, None) {
                    Some(g) => (Some(g.g_per_kwh), format!("{} {}", g.source, g.year)),
                    None => (
                        None,
                        "unknown: set site.zone, site.country or site.carbon_intensity_g_per_kwh"
                            .into(),
                    ),
                }
            }
        };
        let pick = |v: Option<f64>,
                    reference: fn(&str) -> Option<inferwatt_core::factors::Factor>,
                    name: &str| {
            v.map_or_else(
                || LocalFactor::reference(reference(name)),
                LocalFactor::configured,
            )
        };
        LocalFactors {
            pue: pick(s.pue, pue_reference, DEFAULT_PUE_REFERENCE),
            wue_l_per_kwh: pick(s.wue_l_per_kwh, wue_reference, DEFAULT_WATER_REFERENCE),
            ewif_l_per_kwh: pick(s.ewif_l_per_kwh, ewif_reference, DEFAULT_WATER_REFERENCE),
            intensity_g_per_kwh,
            intensity_source,
        }
    }

    /// One line per factor the configuration left unset, naming the value used instead
    /// and the key that sets it.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, what, unit, f) in [
            ("site.pue", "PUE", "", &self.pue),
            ("site.wue_l_per_kwh", "WUE", " L/kWh", &self.wue_l_per_kwh),
            (
                "site.ewif_l_per_kwh",
                "EWIF",
                " L/kWh",
                &self.ewif_l_per_kwh,
            ),
        ] {
            if f.defaulted {
                out.push(format!(
                    "{what} not configured ({key}): {}{unit} from {} used for local estimates; \
                     the collector uses its factors file, else the same reference, and its report says so",
                    f.value, f.source
                ));
            }
        }
        if self.intensity_g_per_kwh.is_none() {
            out.push(format!(
                "grid carbon intensity {}; local emissions are not published",
                self.intensity_source
            ));
        }
        out
    }

    /// One model row's local footprint from its IT energy.
    pub fn footprint(&self, it_j: f64) -> LocalFootprint {
        let it_kwh = inferwatt_core::units::j_to_kwh(it_j);
        let facility_kwh = facility_energy_kwh(it_kwh, self.pue.value);
        LocalFootprint {
            location_g: self
                .intensity_g_per_kwh
                .map(|ci| location_emissions_g(facility_kwh, ci)),
            water_onsite_l: water_onsite_l(it_kwh, self.wue_l_per_kwh.value),
            water_offsite_l: water_offsite_l(it_kwh, self.pue.value, self.ewif_l_per_kwh.value),
        }
    }
}

/// Emissions and water of some IT energy, by the local factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFootprint {
    /// Location-based emissions (g), `None` when the grid intensity is unknown.
    pub location_g: Option<f64>,
    pub water_onsite_l: f64,
    pub water_offsite_l: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_factors_are_cited_references_with_warnings() {
        let f = LocalFactors::from_site(&SiteConfig::default());
        assert_eq!(f.pue.value, 1.56);
        assert!(f.pue.defaulted);
        assert!(
            f.pue.source.contains("Uptime Institute"),
            "{}",
            f.pue.source
        );
        assert!(f.pue.source.contains("2024"), "{}", f.pue.source);
        assert_eq!(f.wue_l_per_kwh.value, 0.55);
        // Li et al.'s US EWIF, not an approximation of π.
        assert!((f.ewif_l_per_kwh.value - 3142.0 / 1000.0).abs() < 1e-12);
        let w = f.warnings();
        assert!(
            w.iter()
                .any(|l| l.starts_with("PUE not configured (site.pue): 1.56")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|l| l.starts_with("WUE not configured")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|l| l.starts_with("EWIF not configured")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|l| l.starts_with("grid carbon intensity unknown")),
            "{w:?}"
        );
    }

    #[test]
    fn configured_factors_are_used_as_set_even_zero() {
        let site = SiteConfig {
            zone: "FR".into(),
            pue: Some(1.0),
            wue_l_per_kwh: Some(0.0),
            ewif_l_per_kwh: Some(0.0),
            ..SiteConfig::default()
        };
        let f = LocalFactors::from_site(&site);
        assert!(f.warnings().is_empty(), "{:?}", f.warnings());
        assert_eq!(f.pue, LocalFactor::configured(1.0));
        let fp = f.footprint(3.6e6);
        assert_eq!(fp.water_onsite_l, 0.0);
        assert_eq!(fp.water_offsite_l, 0.0);
        let g = fp.location_g.expect("FR has an intensity");
        assert_eq!(Some(g), f.intensity_g_per_kwh);
    }

    #[test]
    fn footprint_applies_pue_to_emissions_and_offsite_water_only() {
        let site = SiteConfig {
            pue: Some(1.5),
            wue_l_per_kwh: Some(2.0),
            ewif_l_per_kwh: Some(4.0),
            carbon_intensity_g_per_kwh: Some(100.0),
            ..SiteConfig::default()
        };
        let fp = LocalFactors::from_site(&site).footprint(3.6e6 * 2.0);
        assert!((fp.location_g.expect("intensity set") - 300.0).abs() < 1e-9);
        assert!((fp.water_onsite_l - 4.0).abs() < 1e-9);
        assert!((fp.water_offsite_l - 12.0).abs() < 1e-9);
    }
}
