//! RAPL over a fake powercap tree: discovery, deltas, wrap-around, permissions.

use std::fs;
use std::path::Path;

use inferwatt_agent::sources::rapl::{RaplError, RaplReader};

fn zone(root: &Path, dir: &str, name: &str, energy_uj: u64, max_uj: u64) {
    let d = root.join(dir);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("name"), format!("{name}\n")).expect("name");
    fs::write(d.join("energy_uj"), format!("{energy_uj}\n")).expect("energy");
    fs::write(d.join("max_energy_range_uj"), format!("{max_uj}\n")).expect("max");
    fs::write(d.join("enabled"), "1\n").expect("enabled");
}

fn set(root: &Path, dir: &str, energy_uj: u64) {
    fs::write(root.join(dir).join("energy_uj"), format!("{energy_uj}\n")).expect("energy");
}

const MAX: u64 = 262_143_328_850;

/// Two sockets with DRAM subzones, the core subzone, and a psys zone that must not count.
fn two_socket(root: &Path) {
    zone(root, "intel-rapl:0", "package-0", 1_000_000, MAX);
    zone(root, "intel-rapl:0:0", "core", 500_000, MAX);
    zone(root, "intel-rapl:0:1", "dram", 200_000, MAX);
    zone(root, "intel-rapl:1", "package-1", 3_000_000, MAX);
    zone(root, "intel-rapl:1:0", "dram", 400_000, MAX);
    zone(root, "intel-rapl:2", "psys", 9_000_000, MAX);
    zone(root, "intel-rapl-mmio:0", "package-0", 7_000_000, MAX);
}

#[test]
fn deltas_sum_packages_and_dram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    two_socket(root);
    let mut r = RaplReader::open(root).expect("opens").expect("zones found");
    assert_eq!(r.zone_counts(), (2, 2));
    assert_eq!(
        r.read_delta().expect("reads"),
        None,
        "first call is a baseline"
    );
    set(root, "intel-rapl:0", 1_000_000 + 40_000_000);
    set(root, "intel-rapl:1", 3_000_000 + 35_500_000);
    set(root, "intel-rapl:0:1", 200_000 + 5_000_000);
    set(root, "intel-rapl:1:0", 400_000 + 4_000_000);
    set(root, "intel-rapl:0:0", 99_999_999); // core is inside package: ignored
    set(root, "intel-rapl:2", 99_999_999); // psys: ignored
    let d = r.read_delta().expect("reads").expect("delta");
    assert!((d.cpu_j - 75.5).abs() < 1e-9, "{d:?}");
    assert!((d.dram_j.expect("dram") - 9.0).abs() < 1e-9, "{d:?}");
}

#[test]
fn wrap_around_uses_max_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    zone(root, "intel-rapl:0", "package-0", MAX - 1_000_000, MAX);
    let mut r = RaplReader::open(root).expect("opens").expect("zones found");
    assert_eq!(r.read_delta().expect("reads"), None);
    set(root, "intel-rapl:0", 2_500_000);
    let d = r.read_delta().expect("reads").expect("delta");
    assert!((d.cpu_j - 3.5).abs() < 1e-9, "{d:?}");
    assert_eq!(d.dram_j, None, "no DRAM zone");
}

#[test]
fn no_rapl_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(RaplReader::open(dir.path().join("absent"))
        .expect("ok")
        .is_none());
    // only psys (laptops without package access) or only mmio: nothing to measure
    zone(dir.path(), "intel-rapl:0", "psys", 1, MAX);
    zone(dir.path(), "intel-rapl-mmio:0", "package-0", 1, MAX);
    assert!(RaplReader::open(dir.path()).expect("ok").is_none());
}

#[test]
fn garbage_counter_is_a_parse_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    zone(dir.path(), "intel-rapl:0", "package-0", 5, MAX);
    let mut r = RaplReader::open(dir.path()).expect("opens").expect("zones");
    r.read_delta().expect("baseline");
    fs::write(dir.path().join("intel-rapl:0/energy_uj"), "oops\n").expect("write");
    let err = r.read_delta().expect_err("garbage");
    assert!(matches!(err, RaplError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("'oops'"), "{err}");
    // after an error the next good reading is a new baseline, not a bogus delta
    set(dir.path(), "intel-rapl:0", 10);
    assert_eq!(r.read_delta().expect("reads"), None);
}

#[cfg(unix)]
#[test]
fn root_only_counter_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    zone(dir.path(), "intel-rapl:0", "package-0", 5, MAX);
    let energy = dir.path().join("intel-rapl:0/energy_uj");
    fs::set_permissions(&energy, fs::Permissions::from_mode(0o000)).expect("chmod");
    if fs::read(&energy).is_ok() {
        // running as root: permissions are not enforced, nothing to test
        return;
    }
    let err = RaplReader::open(dir.path()).expect_err("not readable");
    assert!(matches!(err, RaplError::NotReadable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("CVE-2020-8694") && msg.contains("energy_uj") && msg.contains("host.rapl"),
        "{msg}"
    );
}
