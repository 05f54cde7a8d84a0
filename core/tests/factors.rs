//! Built-in factor tables (METHODOLOGY §4–§5): Ember and Electricity Maps lookups, the
//! derived tables against `shared/data/grid-intensity/`, embodied and PUE defaults, and
//! the hourly CSV import.

#![allow(clippy::approx_constant)] // 3.142 L/kWh is Li et al.'s US EWIF, not π.

use std::path::PathBuf;

use inferwatt_core::factors::*;

fn ember_2024(code: &str) -> f64 {
    let gi = country_intensity(code, Some(2024)).expect("country in Ember table");
    assert_eq!(gi.year, 2024, "{code}");
    assert_eq!(gi.source, "Ember yearly 2024 (CC BY-SA 4.0)");
    gi.g_per_kwh
}

#[test]
fn ember_2024_examples_of_methodology_section_5() {
    assert_eq!(ember_2024("USA"), 383.55);
    assert_eq!(ember_2024("FRA"), 44.18);
    assert_eq!(ember_2024("DEU"), 342.06);
    assert_eq!(ember_2024("IND"), 708.96);
    assert_eq!(ember_2024("World"), 472.94);
}

#[test]
fn ember_accepts_alpha2_alpha3_names_and_any_case() {
    for code in ["US", "usa", "United States", " USA "] {
        let gi = country_intensity(code, None).expect(code);
        assert_eq!(gi.zone_or_country, "USA");
        assert_eq!(gi.g_per_kwh, 383.55);
    }
    assert_eq!(
        country_intensity("world", None).map(|g| g.zone_or_country),
        Some("World".to_owned())
    );
    // Kosovo: user-assigned codes XK / XKX.
    assert_eq!(
        country_intensity("XK", None).map(|g| g.zone_or_country),
        Some("XKX".to_owned())
    );
}

#[test]
fn year_selection_is_the_newest_at_or_before_the_request() {
    // Ember holds one year per country (2024 for the USA).
    assert_eq!(
        country_intensity("USA", Some(2030)).map(|g| g.year),
        Some(2024)
    );
    assert_eq!(country_intensity("USA", Some(2023)), None);
    // Electricity Maps holds 2024 and 2025.
    let fr_2024 = zone_intensity("FR", Some(2024)).expect("FR 2024");
    let fr_newest = zone_intensity("FR", None).expect("FR newest");
    assert_eq!(fr_2024.year, 2024);
    assert_eq!(fr_2024.source, "Electricity Maps yearly 2024 (ODbL 1.0)");
    assert_eq!(fr_newest.year, 2025);
    assert_eq!(zone_intensity("FR", Some(2099)), Some(fr_newest));
    assert_eq!(zone_intensity("FR", Some(2020)), None);
}

#[test]
fn sub_national_electricity_maps_zone() {
    let caiso = zone_intensity("US-CAL-CISO", Some(2024)).expect("CAISO zone");
    assert_eq!(caiso.zone_or_country, "US-CAL-CISO");
    assert_eq!(caiso.year, 2024);
    // California's grid is cleaner than the US average (Ember 383.55).
    assert!(caiso.g_per_kwh > 0.0 && caiso.g_per_kwh < 383.55);
    assert_eq!(
        zone_intensity("us-cal-ciso", Some(2024)),
        Some(caiso.clone())
    );
    assert_eq!(zone_country("US-CAL-CISO").as_deref(), Some("US"));
    assert_eq!(zone_country("DK-DK1").as_deref(), Some("DK"));
    assert_eq!(zone_country("XK").as_deref(), Some("XK"));
    assert_eq!(zone_country("USA"), None);
    assert_eq!(zone_country(""), None);
    let factor = caiso.to_factor();
    assert_eq!(factor.unit, "gCO2e/kWh");
    assert_eq!(factor.year, Some(2024));
    assert!(factor.source.contains("Electricity Maps") && factor.source.contains("US-CAL-CISO"));
}

#[test]
fn unknown_zones_and_countries_are_none() {
    assert_eq!(zone_intensity("US-NOWHERE", None), None);
    assert_eq!(country_intensity("ZZZ", None), None);
    assert_eq!(grid_intensity("Atlantis", None), None);
    assert_eq!(grid_intensity("", None), None);
}

#[test]
fn grid_intensity_tries_zones_before_countries() {
    // "DE" is an Electricity Maps zone (and Germany's alpha-2): the zone wins.
    let de = grid_intensity("DE", Some(2024)).expect("DE");
    assert!(de.source.starts_with("Electricity Maps"));
    // "DEU" is no zone: Ember answers.
    let deu = grid_intensity("DEU", Some(2024)).expect("DEU");
    assert_eq!(deu.g_per_kwh, 342.06);
    assert!(deu.source.starts_with("Ember"));
}

#[test]
fn builtin_tables_carry_their_licences() {
    assert_eq!(check_builtin_tables(), Ok(()));
    let attributions = builtin_attributions();
    assert!(attributions
        .iter()
        .any(|a| a.contains("Electricity Maps") && a.contains("ODbL")));
    assert!(attributions
        .iter()
        .any(|a| a.contains("Ember") && a.contains("CC BY-SA 4.0")));
}

fn shared_grid_dir() -> PathBuf {
    std::env::var_os("INFERWATT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("data/grid-intensity")
}

fn read_json(name: &str) -> serde_json::Value {
    let path = shared_grid_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read '{}': {e}; set INFERWATT_SHARED_DIR to the shared/ folder",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("reference JSON parses")
}

#[test]
fn derived_tables_match_every_value_of_the_reference_data() {
    for year in [2024, 2025] {
        let raw = read_json(&format!("electricity-maps-yearly-{year}.json"));
        let zones = raw.as_object().expect("object of zones");
        assert!(zones.len() > 300);
        for (zone, row) in zones {
            let expected = row["carbonIntensity"]["value"].as_f64().expect("number");
            let got = zone_intensity(zone, Some(year)).unwrap_or_else(|| panic!("{zone} {year}"));
            assert_eq!((got.year, got.g_per_kwh), (year, expected), "{zone}");
        }
    }
    let raw = read_json("ember-average-intensities.json");
    let rows = raw.as_object().expect("object of countries");
    assert!(rows.len() > 200);
    for (key, row) in rows {
        let expected = row["emissions_intensity_gco2_per_kwh"]
            .as_f64()
            .expect("number");
        let year = row["year"].as_i64().expect("year") as i32;
        let got = country_intensity(key, None).unwrap_or_else(|| panic!("{key}"));
        assert_eq!((got.year, got.g_per_kwh), (year, expected), "{key}");
    }
}

#[test]
fn embodied_defaults() {
    let h100 = embodied_default("NVIDIA H100 80GB HBM3").expect("H100");
    assert_eq!(h100.kg_co2e, 164.0);
    assert_eq!(h100.gpu_model_pattern, "H100");
    assert!(h100.source.contains("1,312") && !h100.source.contains("assumption"));
    for name in [
        "NVIDIA H200",
        "NVIDIA H800 PCIe",
        "NVIDIA H100 PCIe",
        "NVIDIA H100 NVL",
    ] {
        let d = embodied_default(name).expect(name);
        assert_eq!(d.kg_co2e, 164.0);
        assert!(d.source.starts_with("assumption"), "{name}: {}", d.source);
    }
    for name in [
        "NVIDIA GH200 480GB",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA H20",
        "Tesla T4",
        "",
    ] {
        assert_eq!(embodied_default(name), None, "{name}");
    }
    let f = h100.to_factor();
    assert_eq!(
        (f.name.as_str(), f.unit.as_str(), f.value),
        ("embodied_per_gpu", "kgCO2e", 164.0)
    );
}

#[test]
fn pue_references_of_methodology_section_4() {
    let value = |n: &str| pue_reference(n).map(|f| (f.value, f.year));
    assert_eq!(value("uptime"), Some((1.56, Some(2024))));
    assert_eq!(value("Uptime 2023"), Some((1.58, Some(2023))));
    assert_eq!(value("google"), Some((1.09, Some(2024))));
    assert_eq!(value("google-2023"), Some((1.10, Some(2023))));
    assert_eq!(value("meta"), Some((1.08, Some(2023))));
    assert_eq!(value("microsoft"), Some((1.16, None)));
    assert_eq!(value("AWS"), Some((1.15, None)));
    assert_eq!(value("us_average_li"), Some((1.17, None)));
    assert_eq!(value("my-basement"), None);
    assert_eq!(pue_reference_names().count(), 8);
    for name in pue_reference_names() {
        let f = pue_reference(name).expect(name);
        assert_eq!((f.name.as_str(), f.unit.as_str()), ("pue", "ratio"));
        assert!(f.value >= 1.0);
        let json = serde_json::to_string(&f).expect("serialises");
        let back: Factor = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, f);
    }
    assert_eq!(wue_reference("li-et-al").map(|f| f.value), Some(0.55));
    assert_eq!(ewif_reference("li-et-al").map(|f| f.value), Some(3.142));
}

const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

#[test]
fn hourly_csv_own_format() {
    let csv = "datetime,zone,g_per_kwh\n\
               2024-01-01T00:00:00Z,FR,40.5\n\
               2024-01-01T02:00:00Z,FR,60\n\
               2024-01-01T01:00:00Z,FR,50\n\
               2024-01-01T00:00:00Z,US-CAL-CISO,250\n\
               \n\
               2024-01-01T04:00:00Z,FR,80\n";
    let h = parse_hourly_csv(csv).expect("valid CSV");
    assert_eq!(h.len(), 5);
    assert_eq!(h.zones().collect::<Vec<_>>(), vec!["FR", "US-CAL-CISO"]);
    assert_eq!(h.step_s("FR"), Some(3600));
    assert_eq!(h.range("FR"), Some((T0, T0 + 4 * 3600)));
    assert_eq!(h.at("FR", T0), Some(40.5));
    assert_eq!(h.at("fr", T0 + 3599), Some(40.5));
    assert_eq!(h.at("FR", T0 + 3600), Some(50.0));
    assert_eq!(h.at("FR", T0 + 2 * 3600 + 1800), Some(60.0));
    // 03:00 is missing: a gap, not the 02:00 value.
    assert_eq!(h.at("FR", T0 + 3 * 3600 + 1), None);
    assert_eq!(h.at("FR", T0 + 4 * 3600 + 3599), Some(80.0));
    assert_eq!(h.at("FR", T0 + 5 * 3600), None);
    assert_eq!(h.at("FR", T0 - 1), None);
    assert_eq!(h.at("US-CAL-CISO", T0 + 10), Some(250.0));
    assert_eq!(h.at("DE", T0), None);
}

#[test]
fn hourly_csv_electricity_maps_export() {
    let csv = "\u{feff}Datetime (UTC),Country,Zone name,Zone id,Carbon intensity gCO₂eq/kWh (direct),Carbon intensity gCO₂eq/kWh (LCA),Low-carbon percentage,Renewable percentage,Data source,Data estimated,Data estimation method\r\n\
               2024-01-01 00:00:00,Germany,Germany,DE,380.12,420.5,55.1,50.2,\"entsoe.eu, estimated\",false,\r\n\
               2024-01-01 01:00:00,Germany,Germany,DE,370.00,410.25,56.0,51.0,entsoe.eu,false,\r\n";
    let h = parse_hourly_csv(csv).expect("Electricity Maps export");
    // The lifecycle column, not the direct one.
    assert_eq!(h.at("DE", T0 + 60), Some(420.5));
    assert_eq!(h.at("DE", T0 + 3600), Some(410.25));
}

#[test]
fn hourly_csv_direct_only_export_is_refused() {
    let csv =
        "Datetime (UTC),Zone Id,Carbon Intensity gCO2eq/kWh (direct)\n2024-01-01 00:00:00,DE,380\n";
    let err = parse_hourly_csv(csv)
        .expect_err("no lifecycle column")
        .to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("lifecycle carbon-intensity"), "{err}");
    assert!(
        err.contains("'Carbon Intensity gCO2eq/kWh (direct)'"),
        "{err}"
    );
}

#[test]
fn hourly_csv_errors_name_line_column_and_value() {
    let cases = [
        ("", "empty"),
        ("zone,g_per_kwh\nFR,1\n", "no time column"),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,40\n2024-13-01T00:00:00Z,FR,41\n",
            "line 3, column 'datetime': '2024-13-01T00:00:00Z' is not an ISO 8601 time",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,forty\n",
            "line 2, column 'g_per_kwh': 'forty' is not a carbon intensity",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,-3\n",
            "line 2, column 'g_per_kwh': '-3'",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR\n",
            "line 2, column 'g_per_kwh': the row has 2 cells",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,,4\n",
            "line 2, column 'zone': the zone is empty",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,40\n2024-01-01T01:00:00+01:00,FR,41\n",
            "line 3, column 'datetime': '2024-01-01T01:00:00+01:00' for zone 'FR' was already given on line 2",
        ),
        (
            "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,\"FR,40\n",
            "line 2, column 'row': a quoted cell is not closed",
        ),
    ];
    for (csv, expected) in cases {
        let err = parse_hourly_csv(csv).expect_err(expected).to_string();
        assert!(err.contains(expected), "expected '{expected}' in: {err}");
    }
    // The same zone and time twice with the same value is harmless.
    let dup = "datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,FR,40\n2024-01-01T00:00:00Z,FR,40\n";
    assert_eq!(parse_hourly_csv(dup).expect("identical duplicate").len(), 1);
}

#[test]
fn hourly_series_step_follows_the_data() {
    let csv = "datetime,zone,g_per_kwh\n\
               2024-01-01T00:00:00Z,GB,100\n\
               2024-01-01T00:30:00Z,GB,110\n\
               2024-01-01T01:00:00Z,GB,120\n";
    let h = parse_hourly_csv(csv).expect("half-hourly");
    assert_eq!(h.step_s("GB"), Some(1800));
    assert_eq!(h.at("GB", T0 + 1799), Some(100.0));
    assert_eq!(h.at("GB", T0 + 1800), Some(110.0));
    assert_eq!(h.at("GB", T0 + 3600 + 1799), Some(120.0));
    assert_eq!(h.at("GB", T0 + 3600 + 1800), None);
    let single = parse_hourly_csv("datetime,zone,g_per_kwh\n2024-01-01T00:00:00Z,GB,100\n")
        .expect("one row");
    assert_eq!(single.step_s("GB"), Some(3600));
    assert_eq!(single.at("GB", T0 + 3599), Some(100.0));
    assert_eq!(single.at("GB", T0 + 3600), None);
}
