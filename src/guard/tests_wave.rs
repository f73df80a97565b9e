//! The early censuses of a start wave run together (over the in-memory engine, with redis
//! answering on real loopback ports).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::engine::fake::FakeEngine;
use crate::engine::ExecOutput;
use crate::lifecycle::{Lifecycle, UpOptions};
use crate::stack::{ComposeFile, Hardened, ServiceKind};

/// A redis on a loopback port: `PING` at once; `INFO keyspace` only once every redis sharing
/// `all_asked` has been asked too (so censuses taken one after the other never get an answer).
async fn redis(keys: u64, all_asked: Arc<tokio::sync::Barrier>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let all_asked = all_asked.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    if req.contains("PING") {
                        let _ = s.write_all(b"+PONG\r\n").await;
                    } else if req.contains("INFO") {
                        all_asked.wait().await;
                        let text = format!("# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n");
                        let reply = format!("${}\r\n{text}\r\n", text.len());
                        let _ = s.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    port
}

/// Two databases of one wave are counted at the same time: each redis answers `INFO keyspace`
/// only once both were asked, so counting them one after the other would run into the TCP
/// timeout and fall back to `redis-cli` through exec.
#[tokio::test]
async fn the_early_censuses_of_a_wave_run_together() {
    let all_asked = Arc::new(tokio::sync::Barrier::new(2));
    let p1 = redis(3, all_asked.clone()).await;
    let p2 = redis(4, all_asked).await;
    let e = FakeEngine::new().with_images(&["redis:7"]);
    let execs = Arc::new(AtomicUsize::new(0));
    let n = execs.clone();
    e.set_exec_handler(move |_, cmd| {
        if cmd.join(" ").contains("INFO") {
            n.fetch_add(1, Ordering::SeqCst);
        }
        ExecOutput {
            exit_code: 0,
            stdout: b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n".to_vec(),
            stderr: Vec::new(),
        }
    });
    let yaml = format!(
        "services:\n  a:\n    image: redis:7\n    ports: [\"127.0.0.1:{p1}:6379\"]\n  b:\n    image: redis:7\n    ports: [\"127.0.0.1:{p2}:6379\"]\n"
    );
    let redis_service = |s: &str| StatefulService {
        service: s.into(),
        kind: ServiceKind::Redis,
        data_dir: "/data".into(),
        volume_key: None,
        volume_name: None,
    };
    let h = Hardened {
        compose: serde_yaml::from_str::<ComposeFile>(&yaml).unwrap(),
        stateful: vec![redis_service("a"), redis_service("b")],
        findings: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = GuardConfig {
        project: "nw".into(),
        state: StateDir::open(dir.path()).unwrap(),
        stateful: h.stateful.clone(),
        nodus: XNodus::default(),
        env: Env::new(),
    };
    let shared = SharedOutcome::default();
    let mut guard = Guard::new(
        Arc::new(e.clone()),
        Ui::plain(),
        cfg,
        Transition::Up,
        shared.clone(),
    );
    let ui = Ui::plain();
    let lc = Lifecycle {
        engine: &e,
        project: "nw",
        hardened: &h,
        ui: &ui,
        working_dir: std::path::Path::new("/work/nw"),
        config_files: vec![],
        env: &Env::new(),
    };
    let opts = UpOptions {
        services: Vec::new(),
        timeout: Duration::from_secs(10),
        ..UpOptions::default()
    };
    lc.up(&opts, &mut guard).await.unwrap();
    assert_eq!(
        execs.load(Ordering::SeqCst),
        0,
        "a census fell back to exec"
    );
    let v = shared.lock().unwrap().verdict.take().unwrap();
    assert_eq!(v.totals.redis_keys, 7, "{v:#?}");
    // Both early censuses are in this session's one entry after ready.
    let ledger = Ledger::open(&guard_ledger(&dir), "nw").unwrap().0;
    let post_ready: Vec<_> = ledger
        .entries()
        .iter()
        .filter(|e| e.phase == Phase::PostReady)
        .collect();
    assert_eq!(post_ready.len(), 1);
    let counted: Vec<&String> = post_ready[0].census.services.keys().collect();
    assert_eq!(counted, ["a", "b"]);
}

fn guard_ledger(dir: &tempfile::TempDir) -> std::path::PathBuf {
    StateDir::open(dir.path()).unwrap().ledger_path("nw")
}
