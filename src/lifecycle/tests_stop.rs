//! Stopping over the in-memory engine: `down`, `stop`, `start`, `restart`, stop evidence, orphans.

use super::tests::*;
use super::*;
use crate::engine::fake::FakeEngine;
use crate::engine::Labels;

#[tokio::test]
async fn down_stops_in_reverse_order_removes_containers_and_network_keeps_volumes() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    e.clear_calls();
    let mut rec = Rec::new(&e);
    let report = l.down(&down_opts(false), &mut rec).await.unwrap();
    assert_eq!(
        e.calls(),
        [
            "stop nt-api-1",
            "stop nt-cache-1",
            "stop nt-db-1",
            "remove_container nt-api-1",
            "remove_container nt-cache-1",
            // While db's snapshot is taken (none here).
            "remove_network nt_default",
            "remove_container nt-db-1",
        ]
    );
    assert_eq!(
        rec.log(),
        [
            "before_stop Down api,cache,db",
            "after_stop Down api,cache,db"
        ]
    );
    assert_eq!(report.stopped, ["api", "cache", "db"]);
    assert_eq!(report.removed, ["api", "cache", "db"]);
    assert!(e.volume("nt_data").is_some(), "volumes are kept");
    assert!(report.volumes_removed.is_empty());
    // Each container stopped with its own grace period.
    assert_eq!(
        e.stop_timeouts(),
        [
            ("nt-api-1".to_string(), None),
            ("nt-cache-1".to_string(), None),
            ("nt-db-1".to_string(), Some(60))
        ]
    );
    let ev = &report.evidence["db"];
    assert_eq!(ev.exit_code, Some(0));
    assert_eq!(ev.clean_shutdown, Some(true));
    assert!(ev
        .log_line
        .as_deref()
        .unwrap()
        .contains("database system is shut down"));
    assert!(!ev.killed);
    assert_eq!(
        report.evidence["cache"].clean_shutdown, None,
        "only postgres is checked"
    );
    assert!(e.container_names().is_empty());
    assert!(e.network_names().is_empty());
}

#[tokio::test]
async fn down_timeout_override() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    let opts = DownOptions {
        remove_volumes: false,
        timeout: Some(Duration::from_millis(2500)),
    };
    l.down(&opts, &mut NoHooks).await.unwrap();
    assert!(
        e.stop_timeouts().iter().all(|(_, t)| *t == Some(3)),
        "{:?}",
        e.stop_timeouts()
    );
}

#[tokio::test]
async fn down_volumes_removes_only_labelled_stack_volumes() {
    let yaml = format!("{STACK}  scratch:\n  ext:\n    external: true\n");
    let e = FakeEngine::new().with_images(IMAGES);
    e.add_volume("nt_scratch", &Labels::new()); // declared, but not ours
    e.add_volume("ext", &Labels::new()); // external
    e.add_volume("unrelated", &Labels::new());
    e.add_volume("other_data", &labels::base("other"));
    let h = hardened(&yaml);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(l.removable_volumes().await.unwrap(), ["nt_data"]);
    let report = l.down(&down_opts(true), &mut NoHooks).await.unwrap();
    assert_eq!(report.volumes_removed, ["nt_data"]);
    assert_eq!(
        e.volume_names(),
        ["ext", "nt_scratch", "other_data", "unrelated"]
    );
}

#[tokio::test]
async fn stop_evidence_killed_postgres() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    e.tweak("postgres:16", |b| b.stop_exit_code = 137);
    e.clear_calls();
    let mut rec = Rec::new(&e);
    let report = l.stop(&["db".into()], None, &mut rec).await.unwrap();
    assert_eq!(e.calls(), ["stop nt-db-1"], "only the selected service");
    let ev = &report.evidence["db"];
    assert_eq!(ev.exit_code, Some(137));
    assert!(ev.killed);
    assert_eq!(
        ev.clean_shutdown,
        Some(false),
        "the shut-down line is from no earlier run either"
    );
    assert_eq!(ev.log_line, None);
    assert_eq!(rec.log(), ["before_stop Stop db", "after_stop Stop db"]);
    assert!(e.container("nt-db-1").is_some(), "stop keeps containers");
}

#[tokio::test]
async fn stale_shutdown_line_from_an_earlier_run_does_not_count() {
    let logs = "LOG:  database system is ready to accept connections\nLOG:  database system is shut down\nLOG:  database system is ready to accept connections\n";
    assert_eq!(postgres_shutdown(logs), (false, None));
    let logs = "x\nLOG:  database system is ready to accept connections\n2024 LOG:  database system is shut down\n";
    assert_eq!(
        postgres_shutdown(logs),
        (true, Some("2024 LOG:  database system is shut down".into()))
    );
    assert_eq!(postgres_shutdown(""), (false, None));

    // Through the lifecycle: start again after a clean stop, then get killed.
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    l.stop(&[], None, &mut NoHooks).await.unwrap();
    l.start(&up_opts(), &mut NoHooks).await.unwrap();
    e.tweak("postgres:16", |b| b.oom_on_stop = true);
    let report = l.stop(&[], None, &mut NoHooks).await.unwrap();
    let ev = &report.evidence["db"];
    assert!(ev.oom_killed && ev.killed);
    assert_eq!(ev.clean_shutdown, Some(false));
}

#[tokio::test]
async fn start_and_restart() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    let err = l.start(&up_opts(), &mut NoHooks).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::NoContainer { service } if service == "db"),
        "{err:?}"
    );
    assert!(err.to_string().contains("nodus up db"));
    assert_eq!(e.calls(), Vec::<String>::new());

    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    l.stop(&[], None, &mut NoHooks).await.unwrap();
    e.clear_calls();
    let mut rec = Rec::new(&e);
    let report = l.start(&up_opts(), &mut rec).await.unwrap();
    assert_eq!(report.started, ["db", "cache", "api"]);
    assert_eq!(
        e.calls(),
        ["start nt-db-1", "start nt-cache-1", "start nt-api-1"]
    );
    assert_eq!(rec.log().last().unwrap(), "all_ready Start db,cache,api");
    assert!(rec.log()[0].starts_with("service_ready Start db healthy"));

    e.clear_calls();
    let mut rec = Rec::new(&e);
    let report = l.restart(&up_opts(), &mut rec).await.unwrap();
    assert_eq!(report.stopped, ["api", "cache", "db"]);
    assert_eq!(report.started, ["db", "cache", "api"]);
    // db and cache depend on nothing: each starts again as soon as its own stop ended (no
    // hook holds them); the api in its wave, after both.
    assert_eq!(
        e.calls(),
        [
            "stop nt-api-1",
            "stop nt-cache-1",
            "start nt-cache-1",
            "stop nt-db-1",
            "start nt-db-1",
            "start nt-api-1"
        ]
    );
    let log = rec.log();
    assert_eq!(log[0], "before_stop Restart api,cache,db");
    assert_eq!(log[1], "after_stop Restart api,cache,db");
    assert!(log[2].starts_with("service_ready Restart db healthy Postgres"));
    assert!(log[3].starts_with("service_ready Restart cache"));
    assert!(log[4].starts_with("service_ready Restart api"));
    assert_eq!(log[5], "all_ready Restart db,cache,api");
    assert_eq!(log.len(), 6);

    // Restarting one service stops only it; its running dependencies are left alone.
    e.clear_calls();
    let report = l
        .restart(
            &UpOptions {
                services: vec!["api".into()],
                timeout: Duration::from_secs(5),
                ..UpOptions::default()
            },
            &mut NoHooks,
        )
        .await
        .unwrap();
    assert_eq!(e.calls(), ["stop nt-api-1", "start nt-api-1"]);
    assert_eq!(report.unchanged, ["db", "cache"]);
}

#[tokio::test]
async fn orphans_show_in_status_and_go_on_down() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    e.add_container("nt-old-1", "redis:7", &owned("old"), RunState::Running);
    // A helper container of nodus is not a service.
    let mut helper = owned("db");
    helper.insert(labels::HELPER.into(), "snapshot".into());
    e.add_container("nt-helper", "postgres:16", &helper, RunState::Exited);

    let st = l.status().await.unwrap();
    let names: Vec<(&str, bool)> = st.iter().map(|s| (s.service.as_str(), s.orphan)).collect();
    assert_eq!(
        names,
        [
            ("db", false),
            ("cache", false),
            ("api", false),
            ("old", true)
        ]
    );
    let db = &st[0];
    assert_eq!(db.container.as_deref(), Some("nt-db-1"));
    assert_eq!(
        (db.state.as_str(), db.health.as_str()),
        ("running", "healthy")
    );
    assert_eq!(db.image, "postgres:16");
    assert_eq!(db.volumes, ["nt_data"]);
    let api = &st[2];
    assert_eq!(api.ports.len(), 1);
    assert!(api.ports[0].starts_with("127.0.0.1:"), "{:?}", api.ports);
    assert!(api.ports[0].ends_with("->8080/tcp"), "{:?}", api.ports);

    e.clear_calls();
    let mut rec = Rec::new(&e);
    l.down(&down_opts(false), &mut rec).await.unwrap();
    assert_eq!(e.calls()[0], "stop nt-old-1", "orphans first");
    assert_eq!(rec.log()[0], "before_stop Down old,api,cache,db");
    assert!(e.container("nt-old-1").is_none());
    assert!(
        e.container("nt-helper").is_some(),
        "helpers are not touched"
    );

    // Status before anything exists.
    let e = FakeEngine::new();
    let l = lc(&e, &h, &ui);
    let st = l.status().await.unwrap();
    assert_eq!(st[0].state, "not created");
    assert_eq!(st[0].volumes, ["nt_data"]);
}

#[tokio::test]
async fn stateful_restart_on_up_of_stopped_container() {
    // Same hash, stopped → start (no recreate).
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    l.stop(&["api".into()], None, &mut NoHooks).await.unwrap();
    e.clear_calls();
    let report = l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(report.started, ["api"]);
    assert_eq!(e.calls(), ["start nt-api-1"]);
}

/// Stands for a snapshot that takes a while (and, with `fail`, then fails): records the
/// networks and containers there are when it ends.
struct SlowSnapshot {
    engine: FakeEngine,
    fail: bool,
    seen: Option<(Vec<String>, Vec<String>)>,
}

#[async_trait::async_trait]
impl Hooks for SlowSnapshot {
    async fn after_stop(&mut self, _t: Transition, _s: &[StoppedService]) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.seen = Some((self.engine.network_names(), self.engine.container_names()));
        if self.fail {
            anyhow::bail!("the snapshot hook failed");
        }
        Ok(())
    }
}

/// `down` removes the networks while the snapshots are taken (no container runs any more); a
/// `down` that ends before removing the containers leaves stopped containers whose network is
/// gone, and the next `up` recreates them (a `start` says what to do).
#[tokio::test(start_paused = true)]
async fn down_removes_the_network_while_the_snapshots_are_taken() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    let mut slow = SlowSnapshot {
        engine: e.clone(),
        fail: false,
        seen: None,
    };
    l.down(&down_opts(false), &mut slow).await.unwrap();
    let (networks, containers) = slow.seen.unwrap();
    assert!(networks.is_empty(), "network still there: {networks:?}");
    assert!(
        containers.contains(&"nt-db-1".to_string()),
        "the snapshotted container is kept until its snapshot ends: {containers:?}"
    );
    assert!(e.container_names().is_empty());

    // Interrupted: the containers stay, stopped, without their network.
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    let mut failing = SlowSnapshot {
        engine: e.clone(),
        fail: true,
        seen: None,
    };
    l.down(&down_opts(false), &mut failing).await.unwrap_err();
    assert!(e.network_names().is_empty());
    assert!(e.container("nt-db-1").is_some());
    let err = l.start(&up_opts(), &mut NoHooks).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::NetworkGone { network, .. } if network == "nt_default"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`nodus up` recreates"), "{err}");
    let report = l.up(&up_opts(), &mut NoHooks).await.unwrap();
    // Those without data were removed meanwhile.
    assert_eq!(report.recreated, ["db"]);
    for c in ["nt-db-1", "nt-cache-1", "nt-api-1"] {
        assert_eq!(e.container(c).unwrap().state, RunState::Running, "{c}");
    }
    assert!(e.volume("nt_data").is_some());
}

/// A stopped stack whose network was removed (`docker network prune` removes networks only
/// stopped containers use; or removed and created again: another ID) comes back with `up`.
#[tokio::test]
async fn up_recreates_stopped_containers_whose_network_was_removed() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    let labels = e
        .inspect_network("nt_default")
        .await
        .unwrap()
        .unwrap()
        .labels;
    l.stop(&[], None, &mut NoHooks).await.unwrap();
    e.remove_network("nt_default").await.unwrap();
    // Same name, another network.
    e.create_network("nt_default", &labels).await.unwrap();
    let report = l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(report.recreated, ["db", "cache", "api"]);
    for c in ["nt-db-1", "nt-cache-1", "nt-api-1"] {
        assert_eq!(e.container(c).unwrap().state, RunState::Running, "{c}");
    }
    // A running stack is left as it is.
    e.clear_calls();
    let report = l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert!(report.recreated.is_empty());
    assert_eq!(report.unchanged.len(), 3);
}
