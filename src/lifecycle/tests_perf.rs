//! Readiness probes and parallel stops over the in-memory engine, on paused (virtual) time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::engine::fake::{FakeEngine, FakeHealth};
use crate::engine::{ExecOutput, Health};
use crate::stack::{ComposeFile, ServiceKind};

fn hardened(yaml: &str, stateful: &[(&str, ServiceKind)]) -> Hardened {
    let compose: ComposeFile = serde_yaml::from_str(yaml).unwrap();
    Hardened {
        compose,
        stateful: stateful
            .iter()
            .map(|(s, kind)| StatefulService {
                service: s.to_string(),
                kind: *kind,
                data_dir: "/data".into(),
                volume_key: None,
                volume_name: None,
            })
            .collect(),
        findings: Vec::new(),
    }
}

fn lc<'a>(engine: &'a FakeEngine, h: &'a Hardened, ui: &'a Ui) -> Lifecycle<'a> {
    Lifecycle {
        engine,
        project: "np",
        hardened: h,
        ui,
        working_dir: Path::new("/work/np"),
        config_files: vec!["/work/np/compose.yaml".into()],
        env: Box::leak(Box::default()),
    }
}

/// postgres `db` and redis `cache`, independent of each other, and `app` depending on both.
fn db_cache_app() -> Hardened {
    hardened(
        "services:\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n  app:\n    image: api:1\n    depends_on: [db, cache]\n",
        &[("db", ServiceKind::Postgres), ("cache", ServiceKind::Redis)],
    )
}

fn opts() -> UpOptions {
    UpOptions {
        services: Vec::new(),
        timeout: Duration::from_secs(60),
        ..UpOptions::default()
    }
}

/// Answers a readiness probe of `service` once virtual time reaches `at`; everything else exits 0.
fn ready_at(e: &FakeEngine, at: Instant, probes: &'static [&'static str]) {
    e.set_exec_handler(move |c, cmd| {
        let is_probe = probes.iter().any(|p| cmd.join(" ").contains(p));
        let ok = !is_probe || Instant::now() >= at;
        ExecOutput {
            exit_code: if ok { 0 } else { 2 },
            stdout: if ok && cmd.first().map(String::as_str) == Some("redis-cli") {
                b"PONG\n".to_vec()
            } else {
                Vec::new()
            },
            stderr: format!("{}: not yet", c.name).into_bytes(),
        }
    });
}

/// The engine's health check would report healthy only after its interval (here: never); the
/// service itself answers at t = 3.33 s, and nodus sees it ready by t + 100 ms — postgres
/// (pg_isready through exec: no published port), redis (PING) and an app whose health command
/// nodus runs itself.
#[tokio::test(start_paused = true)]
async fn a_service_ready_at_t_is_seen_ready_by_t_plus_100ms() {
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, ServiceKind)],
        &'static [&'static str],
    );
    let cases: [Case; 3] = [
        (
            "services:\n  db:\n    image: postgres:16\n    healthcheck: { test: pg_isready, interval: 30s }\n",
            "postgres:16",
            &[("db", ServiceKind::Postgres)],
            &["pg_isready"],
        ),
        (
            "services:\n  db:\n    image: redis:7\n    healthcheck: { test: [CMD, redis-cli, ping], interval: 30s }\n",
            "redis:7",
            &[("db", ServiceKind::Redis)],
            &["redis-cli ping"],
        ),
        (
            "services:\n  db:\n    image: api:1\n    healthcheck: { test: curl -f http://localhost/health, interval: 30s }\n",
            "api:1",
            &[],
            &["curl -f"],
        ),
    ];
    for (yaml, image, stateful, probes) in cases {
        let e = FakeEngine::new().with_images(&[image]);
        e.tweak(image, |b| b.health = FakeHealth::StaysStarting);
        let t0 = Instant::now();
        let t = t0 + Duration::from_millis(3330);
        ready_at(&e, t, probes);
        let h = hardened(yaml, stateful);
        let ui = Ui::plain();
        let report = lc(&e, &h, &ui).up(&opts(), &mut NoHooks).await.unwrap();
        assert_eq!(report.created, ["db"]);
        let seen = Instant::now();
        assert!(
            seen >= t && seen <= t + Duration::from_millis(100),
            "{image}: ready at {:?}, seen at {:?}",
            t - t0,
            seen - t0
        );
        // The engine still says starting: readiness came from the service.
        assert_eq!(e.container("np-db-1").unwrap().health, Health::Starting);
    }
}

/// A probe that cannot tell (here: pg_isready missing from the image, exit 127) is dropped and
/// the engine's health status decides, as before.
#[tokio::test(start_paused = true)]
async fn an_unusable_probe_falls_back_to_the_engine_status() {
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    e.tweak("postgres:16", |b| b.polls = 4);
    e.set_exec_handler(|_, _| ExecOutput {
        exit_code: 127,
        stdout: Vec::new(),
        stderr: b"pg_isready: not found".to_vec(),
    });
    let h = hardened(
        "services:\n  db:\n    image: postgres:16\n    healthcheck: { test: pg_isready }\n",
        &[("db", ServiceKind::Postgres)],
    );
    let ui = Ui::plain();
    lc(&e, &h, &ui).up(&opts(), &mut NoHooks).await.unwrap();
    assert_eq!(e.container("np-db-1").unwrap().health, Health::Healthy);
}

/// Stops go in waves like compose: the two apps (independent of each other) stop together, the
/// database they depend on after both. Each stop takes 1 s: 2 s in all, not 3.
#[tokio::test(start_paused = true)]
async fn parallel_stops_keep_dependents_before_their_dependencies() {
    let e = FakeEngine::new().with_images(&["postgres:16", "api:1"]);
    for image in ["postgres:16", "api:1"] {
        e.tweak(image, |b| b.stop_delay = Duration::from_secs(1));
    }
    let h = hardened(
        "services:\n  db:\n    image: postgres:16\n  a:\n    image: api:1\n    depends_on: [db]\n  b:\n    image: api:1\n    depends_on: [db]\n",
        &[("db", ServiceKind::Postgres)],
    );
    let ui = Ui::plain();
    let l = lc(&e, &h, &ui);
    l.up(&opts(), &mut NoHooks).await.unwrap();
    e.clear_calls();
    let t0 = Instant::now();
    let report = l.stop(&[], None, &mut NoHooks).await.unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    assert_eq!(report.stopped, ["b", "a", "db"]);
    let calls = e.calls();
    assert!(
        e.call_index("stop np-db-1") > e.call_index("stop np-a-1"),
        "{calls:?}"
    );
    assert!(
        e.call_index("stop np-db-1") > e.call_index("stop np-b-1"),
        "{calls:?}"
    );

    // down: the same waves, and the app containers (no data) are removed too.
    l.start(&opts(), &mut NoHooks).await.unwrap();
    let t0 = Instant::now();
    let report = l
        .down(
            &DownOptions {
                remove_volumes: false,
                timeout: None,
            },
            &mut NoHooks,
        )
        .await
        .unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    assert_eq!(report.stopped, ["b", "a", "db"]);
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, ["a", "b", "db"]);
}

/// A wave's containers start together, like compose: db and cache (independent) in the first
/// wave, the app that depends on both in the second. Each start takes 1 s: 2 s in all, not 3 —
/// for `up` (create + start) and for `restart` (start only).
#[tokio::test(start_paused = true)]
async fn a_waves_containers_are_started_together() {
    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7", "api:1"]);
    for image in ["postgres:16", "redis:7", "api:1"] {
        e.tweak(image, |b| b.start_delay = Duration::from_secs(1));
    }
    // Every probe answers at once (postgres' pg_isready, redis' PING).
    ready_at(&e, Instant::now(), &[]);
    let h = db_cache_app();
    let ui = Ui::plain();
    let l = lc(&e, &h, &ui);
    let t0 = Instant::now();
    let report = l.up(&opts(), &mut NoHooks).await.unwrap();
    let took = Instant::now() - t0;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2500),
        "up took {took:?}"
    );
    let mut created = report.created.clone();
    created.sort();
    assert_eq!(created, ["app", "cache", "db"]);
    for first in ["start np-db-1", "start np-cache-1"] {
        assert!(
            e.call_index("start np-app-1") > e.call_index(first),
            "{:?}",
            e.calls()
        );
    }

    e.clear_calls();
    let t0 = Instant::now();
    let report = l.restart(&opts(), &mut NoHooks).await.unwrap();
    let took = Instant::now() - t0;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2500),
        "restart took {took:?}"
    );
    assert_eq!(report.started.len(), 3);
    assert!(e.call_index("start np-app-1") > e.call_index("start np-db-1"));
}

/// Holds the named services stopped until `after_stop` (as a snapshot does); records when
/// `after_stop` ran relative to the engine's calls.
struct Holds(
    &'static [&'static str],
    FakeEngine,
    Arc<std::sync::Mutex<Vec<String>>>,
);

#[async_trait::async_trait]
impl Hooks for Holds {
    fn holds_stopped(&self, _t: Transition, service: &str) -> bool {
        self.0.contains(&service)
    }
    async fn after_stop(&mut self, _t: Transition, _s: &[StoppedService]) -> anyhow::Result<()> {
        *self.2.lock().unwrap() = self.1.calls();
        Ok(())
    }
}

/// A restart starts a service that depends on nothing as soon as its own stop ended, while a
/// slower one is still stopping (the engine starts one container faster than two at once);
/// a service a hook holds (a snapshot of its volume) starts only after `after_stop`, and one
/// that was killed only in the start waves (after its last shutdown was read).
#[tokio::test(start_paused = true)]
async fn a_restart_starts_a_service_as_soon_as_its_own_stop_ended() {
    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7", "api:1"]);
    e.tweak("redis:7", |b| b.stop_delay = Duration::from_secs(1));
    ready_at(&e, Instant::now(), &[]);
    let h = db_cache_app();
    let ui = Ui::plain();
    let l = lc(&e, &h, &ui);
    l.up(&opts(), &mut NoHooks).await.unwrap();

    e.clear_calls();
    let report = l.restart(&opts(), &mut NoHooks).await.unwrap();
    let calls = e.calls();
    assert!(
        e.call_index("start np-db-1") < e.call_index("stop np-cache-1"),
        "db starts while cache is still stopping: {calls:?}"
    );
    // The app depends on both: it starts in its wave, after both are ready.
    assert!(e.call_index("start np-app-1") > e.call_index("start np-cache-1"));
    assert!(e.call_index("stop np-app-1") < e.call_index("stop np-db-1"));
    assert_eq!(report.started, ["db", "cache", "app"], "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("start ")).count(), 3);

    // Held by a hook: db starts only after `after_stop`.
    e.clear_calls();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut holds = Holds(&["db", "cache", "app"], e.clone(), seen.clone());
    let report = l.restart(&opts(), &mut holds).await.unwrap();
    let at_after_stop = seen.lock().unwrap().clone();
    assert!(
        !at_after_stop.iter().any(|c| c.starts_with("start ")),
        "nothing started before after_stop: {at_after_stop:?}"
    );
    assert_eq!(report.started, ["db", "cache", "app"]);

    // Killed on its stop (exit 137): not started early; the start waves read its shutdown.
    e.tweak("postgres:16", |b| b.stop_exit_code = 137);
    e.clear_calls();
    let report = l.restart(&opts(), &mut NoHooks).await.unwrap();
    let calls = e.calls();
    assert!(
        e.call_index("start np-db-1") > e.call_index("stop np-cache-1"),
        "{calls:?}"
    );
    assert_eq!(report.started, ["db", "cache", "app"]);
}

/// Real time (the probes below dial real loopback sockets).
fn short_opts() -> UpOptions {
    UpOptions {
        services: Vec::new(),
        timeout: Duration::from_secs(5),
        ..UpOptions::default()
    }
}

/// Redis publishing its port here is asked `PING` over that port: no exec in the container.
#[tokio::test]
async fn redis_readiness_over_its_published_port_needs_no_exec() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"+PONG\r\n").await;
        }
    });
    let e = FakeEngine::new().with_images(&["redis:7"]);
    e.tweak("redis:7", |b| b.health = FakeHealth::StaysStarting);
    // redis-cli through exec would never say PONG: only the TCP probe can make it ready.
    let execs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = execs.clone();
    e.set_exec_handler(move |_, _| {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ExecOutput {
            exit_code: 1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    });
    let yaml = format!(
        "services:\n  cache:\n    image: redis:7\n    healthcheck: {{ test: [CMD, redis-cli, ping], interval: 30s }}\n    ports: [\"127.0.0.1:{port}:6379\"]\n"
    );
    let h = hardened(&yaml, &[("cache", ServiceKind::Redis)]);
    let ui = Ui::plain();
    lc(&e, &h, &ui)
        .up(&short_opts(), &mut NoHooks)
        .await
        .unwrap();
    assert_eq!(execs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A postgres readiness probe whose TCP connection fails is "not yet": it does not also ask
/// `pg_isready` through exec on every poll (that answer could not change the outcome).
#[tokio::test]
async fn a_failed_postgres_probe_costs_no_exec() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    e.tweak("postgres:16", |b| b.health = FakeHealth::StaysStarting);
    let execs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = execs.clone();
    e.set_exec_handler(move |_, _| {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ExecOutput {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    });
    let yaml = format!(
        "services:\n  db:\n    image: postgres:16\n    healthcheck: {{ test: pg_isready, interval: 30s }}\n    ports: [\"127.0.0.1:{closed}:5432\"]\n"
    );
    let h = hardened(&yaml, &[("db", ServiceKind::Postgres)]);
    let ui = Ui::plain();
    let opts = UpOptions {
        timeout: Duration::from_secs(1),
        ..short_opts()
    };
    let err = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap_err();
    assert!(matches!(err, LifecycleError::NotHealthy { .. }), "{err}");
    assert_eq!(execs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Holds the named services (as a snapshot does) and releases them in turn, a second apart
/// (the snapshot of one volume ends before another's); records the engine's calls at each
/// release and when it returns.
struct ReleasesInTurn {
    holds: &'static [&'static str],
    order: &'static [&'static str],
    engine: FakeEngine,
    seen: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

#[async_trait]
impl Hooks for ReleasesInTurn {
    fn holds_stopped(&self, _t: Transition, service: &str) -> bool {
        self.holds.contains(&service)
    }
    async fn after_stop_releasing(
        &mut self,
        _t: Transition,
        _s: &[StoppedService],
        release: &Release,
    ) -> anyhow::Result<()> {
        for s in self.order {
            release.release(s);
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.seen.lock().unwrap().push(self.engine.calls());
        }
        Ok(())
    }
}

/// A service a hook holds stopped (its snapshot) starts in a restart as soon as the hook
/// releases it, while the hook still works on the others — not before, and not if it was
/// killed; in a chain, only once no later hook holds it.
#[tokio::test(start_paused = true)]
async fn a_restart_starts_a_held_service_as_soon_as_its_hook_releases_it() {
    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7", "api:1"]);
    ready_at(&e, Instant::now(), &[]);
    let h = db_cache_app();
    let ui = Ui::plain();
    let l = lc(&e, &h, &ui);
    l.up(&opts(), &mut NoHooks).await.unwrap();

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = |calls: &[String], c: &str| calls.iter().any(|x| x == &format!("start {c}"));
    e.clear_calls();
    let mut hook = ReleasesInTurn {
        holds: &["db", "cache", "app"],
        order: &["cache", "app", "db"],
        engine: e.clone(),
        seen: seen.clone(),
    };
    let report = l.restart(&opts(), &mut hook).await.unwrap();
    let at = seen.lock().unwrap().clone();
    assert!(
        started(&at[0], "np-cache-1"),
        "cache started on its release: {:?}",
        at[0]
    );
    assert!(!started(&at[0], "np-db-1"), "db is still held: {:?}", at[0]);
    assert!(started(&at[2], "np-db-1"), "{:?}", at[2]);
    // The app depends on both: it starts in its wave, after the hook returned.
    assert!(!started(&at[2], "np-app-1"), "{:?}", at[2]);
    assert_eq!(report.started, ["db", "cache", "app"]);
    let calls = e.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("start ")).count(),
        3,
        "{calls:?}"
    );

    // Killed: released, but it starts in the waves (its last shutdown is read first).
    e.tweak("postgres:16", |b| b.oom_on_stop = true);
    seen.lock().unwrap().clear();
    e.clear_calls();
    let mut hook = ReleasesInTurn {
        holds: &["db", "cache", "app"],
        order: &["db", "cache"],
        engine: e.clone(),
        seen: seen.clone(),
    };
    l.restart(&opts(), &mut hook).await.unwrap();
    let at = seen.lock().unwrap().clone();
    assert!(!started(&at[1], "np-db-1"), "{:?}", at[1]);
    assert!(started(&at[1], "np-cache-1"), "{:?}", at[1]);
    assert!(started(&e.calls(), "np-db-1"));
    e.tweak("postgres:16", |b| b.oom_on_stop = false);

    // A chain: the first hook releases db and cache; a later one holds db until it returns.
    seen.lock().unwrap().clear();
    e.clear_calls();
    let later = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut chain = HookChain(vec![
        Box::new(ReleasesInTurn {
            holds: &["db", "cache"],
            order: &["db", "cache"],
            engine: e.clone(),
            seen: seen.clone(),
        }),
        Box::new(Holds(&["db"], e.clone(), later.clone())),
    ]);
    l.restart(&opts(), &mut chain).await.unwrap();
    let at = seen.lock().unwrap().clone();
    assert!(started(&at[1], "np-cache-1"), "{:?}", at[1]);
    assert!(
        !started(&at[1], "np-db-1"),
        "the later hook holds db: {:?}",
        at[1]
    );
    let at_later = later.lock().unwrap().clone();
    assert!(!started(&at_later, "np-db-1"), "{at_later:?}");
    assert!(started(&e.calls(), "np-db-1"));
}

/// Opens the prune's gate when `db` is ready, noting whether the old snapshot was still there.
struct OpenGateWhenReady {
    gate: std::sync::mpsc::Sender<()>,
    old: std::path::PathBuf,
    old_present_at_ready: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Hooks for OpenGateWhenReady {
    async fn service_ready(&mut self, _t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        if svc.service == "db" {
            self.old_present_at_ready
                .store(self.old.is_dir(), std::sync::atomic::Ordering::SeqCst);
            let _ = self.gate.send(());
        }
        Ok(())
    }
}

/// In a restart the retention prune after the snapshots runs while the services start: the
/// prune is held back until db is ready, so the restart completes only if the start did not
/// wait for it; the prune is done (and reported) once the restart returns.
#[tokio::test]
async fn a_restart_starts_services_while_old_snapshots_are_pruned() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = FakeEngine::new().with_images(super::tests::IMAGES);
    let h = super::tests::hardened(super::tests::STACK);
    let ui = Ui::plain();
    let l = super::tests::lc(&e, &h, &ui);
    l.up(&super::tests::up_opts(), &mut NoHooks).await.unwrap();
    e.set_archive(
        "nt-db-1",
        "/var/lib/postgresql/data",
        crate::snapshot::create::tests::data_tar(b"16\n"),
    );

    let d = tempfile::tempdir().unwrap();
    let (store, _) = crate::snapshot::SnapshotStore::open(d.path().join("snapshots/nt")).unwrap();
    let old = crate::snapshot::create::tests::stored(
        &store,
        "20250101T000000Z-db-aaaaaa",
        "2025-01-01T00:00:00Z",
        "nt_data",
    );
    let (gate, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate_timed_out = Arc::new(AtomicBool::new(false));
    let timed_out = gate_timed_out.clone();
    let snapshots = crate::snapshot::SnapshotHook::for_test(
        Arc::new(e.clone()),
        "nt",
        store.dir().to_path_buf(),
        store.cas_dir().to_path_buf(),
        crate::stack::xnodus::Retention {
            last: Some(1),
            ..Default::default()
        },
    )
    .before_prune(move || {
        if gate_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            timed_out.store(true, Ordering::SeqCst);
        }
    });
    let outcome = snapshots.outcome();
    let old_present_at_ready = Arc::new(AtomicBool::new(false));
    let mut chain = HookChain(vec![
        Box::new(snapshots),
        Box::new(OpenGateWhenReady {
            gate,
            old: store.dir().join(&old.id),
            old_present_at_ready: old_present_at_ready.clone(),
        }),
    ]);
    let report = l
        .restart(&super::tests::up_opts(), &mut chain)
        .await
        .unwrap();
    assert_eq!(report.started, ["db", "cache", "api"]);
    assert!(
        !gate_timed_out.load(Ordering::SeqCst),
        "the start waited for the prune"
    );
    assert!(old_present_at_ready.load(Ordering::SeqCst));
    let o = outcome.lock().unwrap().clone();
    assert_eq!(o.taken.len(), 1, "{:?}", o.failed);
    assert_eq!(o.pruned, std::slice::from_ref(&old.id));
    assert!(!store.dir().join(&old.id).exists());
}
