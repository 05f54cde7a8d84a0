//! The command line: `--version`, `import FILE` (all or nothing, gzip too) and
//! `token create` printing a token that the database knows by its hash.

use std::io::Write as _;
use std::process::Command;

use inferwatt_collector::ingest::auth::hash_token;
use inferwatt_collector::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_inferwatt-collector");

#[test]
fn version_names_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn import_is_all_or_nothing_and_reads_gzip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let good = "model_usage,site=s1,host=h1,model=m,server=x requests=2i,output_tokens=10i,interval_s=1 1800000000\n\
                model_usage,site=s1,host=h1,model=m,server=x requests=3i,output_tokens=20i,interval_s=1 1800000001\n";
    let bad = format!("{good}model_usage,site=s1,host=h1 requests=oops 1800000002\n");
    std::fs::write(dir.path().join("bad.lp"), bad).expect("write");
    let out = Command::new(BIN)
        .args(["import", "--precision", "s", "--db"])
        .arg(&db)
        .arg(dir.path().join("bad.lp"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert_eq!(
        Store::open(&db).expect("db").count_points().expect("count"),
        0
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(good.as_bytes()).expect("compress");
    std::fs::write(
        dir.path().join("good.lp.gz"),
        gz.finish().expect("compress"),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["import", "--precision", "s", "--db"])
        .arg(&db)
        .arg(dir.path().join("good.lp.gz"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 points written"));
    let store = Store::open(&db).expect("db");
    let rows = store
        .sum_model_usage(1_799_990_000_000_000_000, 1_800_000_001_000_000_000)
        .expect("query");
    assert_eq!((rows[0].requests, rows[0].output_tokens), (5, 30));
}

#[test]
fn token_create_prints_a_token_stored_by_hash_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let out = Command::new(BIN)
        .args([
            "token", "create", "--site", "fra1", "--host", "gpu-7", "--db",
        ])
        .arg(&db)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let store = Store::open(&db).expect("db");
    let row = store
        .find_token(&hash_token(&token))
        .expect("find")
        .expect("stored");
    assert_eq!((row.site.as_str(), row.host.as_str()), ("fra1", "gpu-7"));
    drop(store);
    let mut raw = std::fs::read(&db).expect("read db");
    raw.extend(std::fs::read(dir.path().join("c.db-wal")).unwrap_or_default());
    assert!(
        raw.windows(64).any(|w| w == hash_token(&token).as_bytes()),
        "hash stored"
    );
    assert!(
        !raw.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself must not be stored"
    );
}
