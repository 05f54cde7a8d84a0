//! Durability against SIGKILL: the real `inferwatt-collector serve` binary is killed with
//! `kill -9` while writers send batches concurrently; after a restart every batch that got
//! a 204 must be stored, and every batch must be stored whole or not at all.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inferwatt_collector::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_inferwatt-collector");
const T0: i64 = 1_800_000_000_000_000_000;
const WRITERS: i64 = 4;
const POINTS: i64 = 40;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn spawn_server(config: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn collector")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "collector did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Batch `k` of writer `w`: POINTS points with timestamps in a range of their own.
fn batch(w: i64, k: i64) -> (String, i64) {
    let start = T0 + (w * 1_000_000 + k) * 1_000;
    let body = (0..POINTS)
        .map(|i| {
            format!(
                "model_energy,site=s1,host=h{w},gpu_uuid=GPU-{w},model=m,server=x active_j=1,idle_j=0,host_j=0,interval_s=1 {}\n",
                start + i + 1
            )
        })
        .collect();
    (body, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_batch_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let port = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndb_path = {:?}\nraw_retention_days = 0\n",
            db
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["token", "create", "--site", "s1", "--host", "*", "--config"])
        .arg(&config)
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(token.starts_with("iw_"), "{token}");

    let mut server = spawn_server(&config);
    let client = reqwest::Client::new();
    wait_healthy(&client, port).await;

    let acked: Arc<Mutex<HashSet<(i64, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, token, acked) = (client.clone(), token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for k in 0.. {
                let (body, _) = batch(w, k);
                let resp = client
                    .post(format!("http://127.0.0.1:{port}/api/v2/write?bucket=b"))
                    .header("Authorization", format!("Token {token}"))
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 204 => {
                        acked.lock().expect("lock").insert((w, k));
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return k, // the server is gone
                }
            }
            unreachable!()
        }));
    }
    // Let some batches land, then kill -9 mid-ingest.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    server.wait().expect("reap");
    let mut sent = Vec::new();
    for w in writers {
        sent.push(w.await.expect("writer"));
    }
    let acked = acked.lock().expect("lock").clone();

    // Restart: it must come up on the same database (WAL recovery) and serve again.
    let mut server = spawn_server(&config);
    wait_healthy(&client, port).await;
    let store = Store::open(&db).expect("open db");
    for w in 0..WRITERS {
        for k in 0..=sent[w as usize] {
            let (_, start) = batch(w, k);
            let stored: i64 = store
                .sum_model_energy(start, start + POINTS)
                .expect("query")
                .iter()
                .map(|r| r.points)
                .sum();
            if acked.contains(&(w, k)) {
                assert_eq!(stored, POINTS, "acknowledged batch {w}/{k} lost");
            } else {
                assert!(
                    stored == 0 || stored == POINTS,
                    "batch {w}/{k} half stored: {stored}"
                );
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}
