//! Settle over the in-memory engine on paused time: none for a stack of databases only, and it
//! ends as soon as two consecutive censuses agree (at most `x-nodus.settle`).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use super::*;
use crate::engine::fake::FakeEngine;
use crate::engine::ExecOutput;
use crate::guard::verdict::Status;
use crate::lifecycle::{Lifecycle, UpOptions};
use crate::stack::{ComposeFile, Hardened, ServiceKind};

/// Redis whose key count follows `keys` (indexed by the number of `INFO keyspace` calls so far;
/// the last value repeats), so a test scripts what each census sees.
fn engine(keys: &'static [u64], infos: Arc<AtomicUsize>) -> FakeEngine {
    let e = FakeEngine::new().with_images(&["redis:7", "api:1"]);
    e.set_exec_handler(move |_, cmd| {
        let line = cmd.join(" ");
        let stdout = if line.contains("INFO keyspace") {
            let n = infos.fetch_add(1, Ordering::SeqCst);
            let k = keys[n.min(keys.len() - 1)];
            format!("# Keyspace\r\ndb0:keys={k},expires=0,avg_ttl=0\r\n")
        } else if line == "redis-cli ping" {
            "PONG\n".to_string()
        } else {
            String::new()
        };
        ExecOutput {
            exit_code: 0,
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
        }
    });
    e
}

fn hardened(yaml: &str) -> Hardened {
    Hardened {
        compose: serde_yaml::from_str::<ComposeFile>(yaml).unwrap(),
        stateful: vec![StatefulService {
            service: "cache".into(),
            kind: ServiceKind::Redis,
            data_dir: "/data".into(),
            volume_key: None,
            volume_name: None,
        }],
        findings: Vec::new(),
    }
}

/// Runs `up` with the guard; returns the virtual time all_ready took (after the last service was
/// ready) and the number of censuses of redis.
async fn up(yaml: &str, keys: &'static [u64], settle: &str) -> (Duration, usize, Verdict) {
    let infos = Arc::new(AtomicUsize::new(0));
    let e = engine(keys, infos.clone());
    let h = hardened(yaml);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GuardConfig {
        project: "ns".into(),
        state: StateDir::open(dir.path()).unwrap(),
        stateful: h.stateful.clone(),
        nodus: serde_yaml::from_str(&format!("settle: {settle}")).unwrap(),
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
        project: "ns",
        hardened: &h,
        ui: &ui,
        working_dir: std::path::Path::new("/work/ns"),
        config_files: vec![],
        env: &Env::new(),
    };
    let opts = UpOptions {
        services: Vec::new(),
        timeout: Duration::from_secs(60),
        ..UpOptions::default()
    };
    // Time from the first census to the end: the early census of redis is the first INFO call.
    let mut timed = Timed {
        inner: &mut guard,
        ready_at: None,
    };
    lc.up(&opts, &mut timed).await.unwrap();
    let took = Instant::now() - timed.ready_at.expect("all_ready ran");
    let v = shared.lock().unwrap().verdict.take().unwrap();
    (took, infos.load(Ordering::SeqCst), v)
}

/// Notes when all_ready starts, then hands over to the guard. The fake engine's start times are
/// from 2023: they are set to the real time, as the engine would for a container started now.
struct Timed<'a> {
    inner: &'a mut Guard,
    ready_at: Option<Instant>,
}

#[async_trait::async_trait]
impl crate::lifecycle::Hooks for Timed<'_> {
    async fn service_ready(&mut self, t: Transition, s: &RunningService) -> anyhow::Result<()> {
        self.inner.service_ready(t, &started_now(s)).await
    }
    async fn all_ready(&mut self, t: Transition, s: &[RunningService]) -> anyhow::Result<()> {
        self.ready_at = Some(Instant::now());
        let s: Vec<RunningService> = s.iter().map(started_now).collect();
        self.inner.all_ready(t, &s).await
    }
}

fn started_now(s: &RunningService) -> RunningService {
    let mut s = s.clone();
    s.container.started_at = Some(census::now_rfc3339());
    s
}

const DB_ONLY: &str = "services:\n  cache:\n    image: redis:7\n";
const WITH_APP: &str =
    "services:\n  cache:\n    image: redis:7\n  api:\n    image: api:1\n    depends_on: [cache]\n";

#[tokio::test(start_paused = true)]
async fn no_settle_for_a_stack_of_databases_only() {
    let (took, censuses, v) = up(DB_ONLY, &[4], "2s").await;
    // The early census at ready is the settled one too: no wait, no second census.
    assert_eq!(censuses, 1);
    assert_eq!(took, Duration::ZERO);
    assert_eq!(v.verdict, Status::Baseline);
    assert_eq!(v.totals.redis_keys, 4, "{v:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_app_started_means_a_fresh_settled_census_even_without_settle() {
    // `settle: 0s` with an app started: the early census (10 keys) is not reused; the census
    // after the app started sees what it did (7 keys).
    let (took, censuses, v) = up(WITH_APP, &[10, 7], "0s").await;
    assert_eq!(censuses, 2);
    assert_eq!(took, Duration::ZERO);
    assert_eq!(v.totals.redis_keys, 7, "{v:#?}");
}

#[tokio::test(start_paused = true)]
async fn settle_ends_when_two_consecutive_censuses_agree() {
    // early census 10; the app deletes keys: settle sees 10, 8, then 8 again: done after two
    // steps, well before the 5 s bound.
    let (took, censuses, v) = up(WITH_APP, &[10, 10, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8], "5s").await;
    assert_eq!(censuses, 4, "early + three settle censuses");
    assert_eq!(took, settle::SETTLE_STEP * 2);
    // The settled census is the last one: 8 keys, a loss against the early census of 10.
    assert_eq!(v.totals.redis_keys, 8, "{v:#?}");
}

#[tokio::test(start_paused = true)]
async fn settle_is_bounded_while_the_data_keeps_changing() {
    let (took, censuses, v) = up(WITH_APP, &[10, 9, 8, 7, 6, 5, 4, 3, 2, 1], "1200ms").await;
    assert_eq!(took, Duration::from_millis(1200));
    // early + first settle census + at 0.5 s, 1.0 s and the bound 1.2 s.
    assert_eq!(censuses, 5);
    assert_eq!(v.totals.redis_keys, 6, "{v:#?}");
}
