//! Lifecycle tests over the in-memory engine.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::status::health_str;
use super::up::carry_anonymous_volumes;
use super::*;
use crate::engine::fake::{FakeEngine, FakeHealth, ImageBehavior};
use crate::engine::{ContainerSpec, Health, Labels, MountKind, MountSpec};
use crate::stack::{ComposeFile, ServiceKind};

pub(super) const STACK: &str = r#"
services:
  db:
    image: postgres:16
    volumes: [data:/var/lib/postgresql/data]
    healthcheck: { test: pg_isready, interval: 1s }
    stop_signal: SIGINT
    stop_grace_period: 60s
  cache:
    image: redis:7
  api:
    image: api:1
    depends_on:
      db: { condition: service_healthy }
      cache: { condition: service_started }
    ports: ["127.0.0.1::8080"]
volumes:
  data:
"#;

pub(super) const IMAGES: &[&str] = &["postgres:16", "redis:7", "api:1", "migrate:1"];

pub(super) fn hardened(yaml: &str) -> Hardened {
    let compose: ComposeFile = serde_yaml::from_str(yaml).unwrap();
    let stateful = compose
        .services
        .iter()
        .filter(|(_, s)| {
            s.image
                .as_deref()
                .is_some_and(|i| i.starts_with("postgres"))
        })
        .map(|(name, _)| StatefulService {
            service: name.clone(),
            kind: ServiceKind::Postgres,
            data_dir: "/var/lib/postgresql/data".into(),
            volume_key: Some("data".into()),
            volume_name: Some("nt_data".into()),
        })
        .collect();
    Hardened {
        compose,
        stateful,
        findings: Vec::new(),
    }
}

pub(super) fn ui() -> Ui {
    Ui::plain()
}

pub(super) fn lc<'a>(engine: &'a FakeEngine, h: &'a Hardened, ui: &'a Ui) -> Lifecycle<'a> {
    Lifecycle {
        engine,
        project: "nt",
        hardened: h,
        ui,
        working_dir: Path::new("/work/nt"),
        config_files: vec!["/work/nt/compose.yaml".into()],
        env: Box::leak(Box::default()),
    }
}

pub(super) fn up_opts() -> UpOptions {
    UpOptions {
        services: Vec::new(),
        timeout: Duration::from_secs(5),
        ..UpOptions::default()
    }
}

pub(super) fn down_opts(remove_volumes: bool) -> DownOptions {
    DownOptions {
        remove_volumes,
        timeout: None,
    }
}

/// Records hook calls (with the engine call count at that moment).
#[derive(Clone)]
pub(super) struct Rec {
    log: Arc<Mutex<Vec<String>>>,
    engine: FakeEngine,
    pub(super) fail_all_ready: bool,
}

impl Rec {
    pub(super) fn new(engine: &FakeEngine) -> Rec {
        Rec {
            log: Arc::default(),
            engine: engine.clone(),
            fail_all_ready: false,
        }
    }
    pub(super) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn push(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

#[async_trait]
impl Hooks for Rec {
    async fn before_stop(
        &mut self,
        t: Transition,
        running: &[RunningService],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let names: Vec<&str> = running.iter().map(|r| r.service.as_str()).collect();
        for r in running {
            assert_eq!(
                r.container.state,
                RunState::Running,
                "before_stop sees running containers"
            );
        }
        self.push(format!("before_stop {t:?} {}", names.join(",")));
        Ok(running
            .iter()
            .map(|r| {
                (
                    r.service.clone(),
                    serde_json::json!({ "census": r.service }),
                )
            })
            .collect())
    }
    async fn after_stop(
        &mut self,
        t: Transition,
        stopped: &[StoppedService],
    ) -> anyhow::Result<()> {
        for s in stopped {
            assert_eq!(s.pre_stop, Some(serde_json::json!({ "census": s.service })));
            // The container still exists when after_stop runs (snapshots happen here).
            assert!(self.engine.container(&s.container.name).is_some());
            assert_eq!(s.container.state, RunState::Exited);
        }
        let names: Vec<&str> = stopped.iter().map(|r| r.service.as_str()).collect();
        self.push(format!("after_stop {t:?} {}", names.join(",")));
        Ok(())
    }
    async fn service_ready(&mut self, t: Transition, svc: &RunningService) -> anyhow::Result<()> {
        let stateful = svc
            .stateful
            .as_ref()
            .map(|s| format!("{:?}", s.kind))
            .unwrap_or_default();
        self.push(format!(
            "service_ready {t:?} {} {} {stateful} @{}",
            svc.service,
            health_str(svc.container.health),
            self.engine.calls().len()
        ));
        Ok(())
    }
    async fn all_ready(&mut self, t: Transition, started: &[RunningService]) -> anyhow::Result<()> {
        let names: Vec<&str> = started.iter().map(|r| r.service.as_str()).collect();
        self.push(format!("all_ready {t:?} {}", names.join(",")));
        if self.fail_all_ready {
            return Err(anyhow::Error::new(crate::error::DataLossDetected {
                summary: "db lost 3 rows".into(),
                restore_command: None,
                fix: None,
            })
            .context("after up"));
        }
        Ok(())
    }
}

pub(super) fn owned(service: &str) -> Labels {
    let mut l = labels::base("nt");
    l.insert(labels::SERVICE.into(), service.into());
    l
}

/// Independent services are waited for together: two that each take six polls (~0.55 s of
/// back-off) to become healthy are both up after about one such wait, not two. Virtual time.
#[tokio::test(start_paused = true)]
async fn independent_services_become_ready_concurrently() {
    let e = FakeEngine::new().with_images(IMAGES);
    for image in ["postgres:16", "redis:7"] {
        let mut b = ImageBehavior::for_image(image);
        b.polls = 6;
        e.set_behavior(image, b);
    }
    let h = hardened(
        r#"
services:
  db:
    image: postgres:16
    healthcheck: { test: pg_isready, interval: 1s }
  cache:
    image: redis:7
    healthcheck: { test: redis-cli ping, interval: 1s }
  api:
    image: api:1
    depends_on: [db]
"#,
    );
    let ui = ui();
    let mut rec = Rec::new(&e);
    let t = tokio::time::Instant::now();
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut rec).await.unwrap();
    let waited = t.elapsed();
    assert_eq!(report.created, ["db", "cache", "api"]);
    // Polls back off from PROBE_MIN to at most PROBE_MAX (probe.rs).
    let one_wait = super::probe::PROBE_MIN + 5 * super::probe::PROBE_MAX;
    assert!(
        waited >= one_wait && waited < one_wait * 3 / 2,
        "db and cache were not waited for together: {waited:?}"
    );
    // api (depends on db) was created only after db's hook ran.
    let log = rec.log();
    assert!(log[0].starts_with("service_ready Up db"), "{log:?}");
    assert!(log[2].starts_with("service_ready Up api"), "{log:?}");
}

#[tokio::test]
async fn up_creates_network_volumes_containers_in_dependency_order() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let mut rec = Rec::new(&e);
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut rec).await.unwrap();
    assert_eq!(
        e.calls(),
        [
            "create_network nt_default",
            "create_volume nt_data",
            // db and cache (one wave): created together, then started together.
            "create_container nt-db-1",
            "create_container nt-cache-1",
            "start nt-db-1",
            "start nt-cache-1",
            "create_container nt-api-1",
            "start nt-api-1",
        ]
    );
    assert_eq!(report.created, ["db", "cache", "api"]);
    assert_eq!(report.volumes_created, ["nt_data"]);
    // db and cache have no dependencies: they start together (one wave) and are waited for
    // together. db was ready (healthy) and its hook ran before anything depending on it was
    // created: after 6 engine calls (network, volume, create db and cache, start both).
    assert_eq!(
        rec.log(),
        [
            "service_ready Up db healthy Postgres @6",
            "service_ready Up cache none  @6",
            "service_ready Up api none  @8",
            "all_ready Up db,cache,api",
        ]
    );
    // Resources carry our labels.
    let net = e.network("nt_default").unwrap();
    assert!(labels::owned_by(&net.labels, "nt"));
    assert_eq!(net.labels[labels::NETWORK], "default");
    let vol = e.volume("nt_data").unwrap();
    assert!(labels::owned_by(&vol.labels, "nt"));
    assert_eq!(vol.labels[labels::VOLUME], "data");
    let db = e.container("nt-db-1").unwrap();
    assert_eq!(db.labels[labels::SERVICE], "db");
    assert_eq!(db.labels[labels::ONEOFF], "False");
    assert_eq!(db.health, Health::Healthy);
    assert_eq!(e.spec_of("nt-db-1").unwrap().stop_timeout_secs, Some(60));
}

#[tokio::test]
async fn up_twice_changes_nothing() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    e.clear_calls();
    let mut rec = Rec::new(&e);
    let report = l.up(&up_opts(), &mut rec).await.unwrap();
    assert_eq!(report.unchanged, ["db", "cache", "api"]);
    assert!(report.created.is_empty() && report.recreated.is_empty() && report.started.is_empty());
    assert!(report.volumes_created.is_empty());
    assert_eq!(e.calls(), Vec::<String>::new());
    // Hooks still see every service ready.
    assert_eq!(rec.log().last().unwrap(), "all_ready Up db,cache,api");
}

#[tokio::test]
async fn changed_definition_recreates_only_that_service() {
    let e = FakeEngine::new().with_images(IMAGES);
    let ui = ui();
    let h = hardened(STACK);
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    e.clear_calls();

    // A stateless service: no hooks around its stop.
    let changed = hardened(&STACK.replace(
        "    image: api:1\n",
        "    image: api:1\n    environment: {FOO: bar}\n",
    ));
    let mut rec = Rec::new(&e);
    let report = lc(&e, &changed, &ui)
        .up(&up_opts(), &mut rec)
        .await
        .unwrap();
    assert_eq!(report.recreated, ["api"]);
    assert_eq!(report.unchanged, ["db", "cache"]);
    assert_eq!(
        e.calls(),
        [
            "stop nt-api-1",
            "remove_container nt-api-1",
            "create_container nt-api-1",
            "start nt-api-1"
        ]
    );
    assert!(!rec.log().iter().any(|l| l.starts_with("before_stop")));
    assert_eq!(e.container("nt-api-1").unwrap().env, ["FOO=bar"]);

    // A stateful service: recreation is a stop, so the hooks run around it, with its grace period.
    e.clear_calls();
    let changed2 = hardened(&STACK.replace(
        "    stop_grace_period: 60s\n",
        "    stop_grace_period: 90s\n",
    ));
    let mut rec = Rec::new(&e);
    let report = lc(&e, &changed2, &ui)
        .up(&up_opts(), &mut rec)
        .await
        .unwrap();
    // api is recreated too: it went back to the definition without FOO.
    assert_eq!(report.recreated, ["db", "api"]);
    assert_eq!(
        e.calls()[..4],
        [
            "stop nt-db-1",
            "remove_container nt-db-1",
            "create_container nt-db-1",
            "start nt-db-1"
        ]
    );
    assert_eq!(
        e.stop_timeouts().last().unwrap(),
        &("nt-api-1".to_string(), None)
    );
    assert!(
        e.stop_timeouts()
            .contains(&("nt-db-1".to_string(), Some(60))),
        "old container's own grace period"
    );
    let log = rec.log();
    assert_eq!(log[0], "before_stop Up db");
    assert_eq!(log[1], "after_stop Up db");
    assert!(log[2].starts_with("service_ready Up db healthy"));
    assert_eq!(report.evidence["db"].clean_shutdown, Some(true));
}

#[tokio::test]
async fn docker_compose_volume_is_adopted() {
    let e = FakeEngine::new().with_images(IMAGES);
    let mut compose_labels = Labels::new();
    compose_labels.insert(labels::PROJECT.into(), "nt".into());
    compose_labels.insert(labels::VOLUME.into(), "data".into());
    e.add_volume("nt_data", &compose_labels);
    let before = e.volume("nt_data").unwrap();
    let h = hardened(STACK);
    let ui = ui();
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert!(report.volumes_created.is_empty());
    assert!(!e.calls().iter().any(|c| c.starts_with("create_volume")));
    assert_eq!(
        e.volume("nt_data").unwrap(),
        before,
        "same volume, same creation time"
    );
    // down --volumes removes it: it carries the project's label.
    lc(&e, &h, &ui)
        .down(&down_opts(true), &mut NoHooks)
        .await
        .unwrap();
    assert!(e.volume("nt_data").is_none());
}

#[tokio::test]
async fn completed_successfully_dependency() {
    let yaml = r#"
services:
  migrate:
    image: migrate:1
  api:
    image: api:1
    depends_on:
      migrate: { condition: service_completed_successfully }
"#;
    let h = hardened(yaml);
    let ui = ui();
    let e = FakeEngine::new().with_images(IMAGES);
    e.tweak("migrate:1", |b| {
        b.health = FakeHealth::Exits(0);
        b.polls = 2
    });
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(report.created, ["migrate", "api"]);
    assert_eq!(e.container("nt-migrate-1").unwrap().state, RunState::Exited);

    let e = FakeEngine::new().with_images(IMAGES);
    e.tweak("migrate:1", |b| b.health = FakeHealth::Exits(2));
    let err = lc(&e, &h, &ui)
        .up(&up_opts(), &mut NoHooks)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Exited { service, exit_code: 2, .. } if service == "migrate"),
        "{err:?}"
    );
    assert!(!e.calls().contains(&"create_container nt-api-1".to_string()));
}

#[tokio::test]
async fn selected_services_bring_their_dependencies() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let opts = UpOptions {
        services: vec!["db".into()],
        timeout: Duration::from_secs(5),
        ..UpOptions::default()
    };
    let report = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    assert_eq!(report.created, ["db"]);
    let opts = UpOptions {
        services: vec!["api".into()],
        timeout: Duration::from_secs(5),
        ..UpOptions::default()
    };
    let report = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    assert_eq!(report.unchanged, ["db"]);
    assert_eq!(report.created, ["cache", "api"]);
    let opts = UpOptions {
        services: vec!["nope".into()],
        timeout: Duration::from_secs(5),
        ..UpOptions::default()
    };
    let err = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap_err();
    assert!(matches!(
        err,
        LifecycleError::Stack(StackError::UnknownService { .. })
    ));
}

#[tokio::test]
async fn extra_networks_are_connected_before_start() {
    let yaml = "services:\n  a:\n    image: api:1\n    networks:\n      front: {aliases: [web]}\n      back:\nnetworks:\n  front:\n  back:\n";
    let h = hardened(yaml);
    let ui = ui();
    let e = FakeEngine::new().with_images(IMAGES);
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(
        e.calls(),
        [
            "create_network nt_front",
            "create_network nt_back",
            "create_container nt-a-1",
            "connect_network nt_back nt-a-1",
            "start nt-a-1"
        ]
    );
    lc(&e, &h, &ui)
        .down(&down_opts(false), &mut NoHooks)
        .await
        .unwrap();
    assert!(e.network_names().is_empty());
}

#[tokio::test]
async fn container_of_finds_by_label() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(&STACK.replace(
        "  cache:\n    image: redis:7\n",
        "  cache:\n    image: redis:7\n    container_name: custom-cache\n",
    ));
    let ui = ui();
    let l = lc(&e, &h, &ui);
    assert!(l.container_of("cache").await.unwrap().is_none());
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(
        l.container_of("cache").await.unwrap().unwrap().name,
        "custom-cache"
    );
    l.stop(&["cache".into()], None, &mut NoHooks).await.unwrap();
    assert!(
        l.container_of("cache").await.unwrap().is_none(),
        "not running"
    );
    assert_eq!(
        l.any_container_of("cache").await.unwrap().unwrap().state,
        RunState::Exited
    );
}

#[tokio::test]
async fn data_loss_from_a_hook_keeps_exit_code_3() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let mut rec = Rec::new(&e);
    rec.fail_all_ready = true;
    let err = lc(&e, &h, &ui).up(&up_opts(), &mut rec).await.unwrap_err();
    assert!(matches!(err, LifecycleError::Hook(_)));
    let any = anyhow::Error::new(err).context("nodus up");
    assert_eq!(crate::error::classify(&any).0, crate::error::EXIT_DATA_LOSS);
}

#[tokio::test]
async fn environment_entries_without_value_come_from_the_project_env() {
    let h = hardened(
        "services:\n  a:\n    image: x\n    environment: [NODUS_T_PW, NODUS_T_OTHER, SET=1]\n",
    );
    let mut env = crate::stack::Env::new();
    env.insert("NODUS_T_PW".into(), "from-dotenv".into());
    env.insert("SET".into(), "ignored".into());
    let e = FakeEngine::new();
    let ui = ui();
    let mut l = lc(&e, &h, &ui);
    l.env = &env;
    let built = l.build_spec("a").unwrap();
    let vars = &built.spec.env;
    assert!(
        vars.contains(&"NODUS_T_PW=from-dotenv".to_string()),
        "{vars:?}"
    );
    assert!(vars.contains(&"SET=1".to_string()), "{vars:?}");
    assert!(
        !vars.iter().any(|v| v.starts_with("NODUS_T_OTHER")),
        "{vars:?}"
    );
    // The model stays unresolved (the rendered compose file never holds the values).
    assert_eq!(h.compose.services["a"].environment["NODUS_T_PW"], None);
    // The resolved value is part of the config hash: another value means another container.
    let mut env2 = env.clone();
    env2.insert("NODUS_T_PW".into(), "changed".into());
    l.env = &env2;
    assert_ne!(l.build_spec("a").unwrap().config_hash, built.config_hash);
}

#[tokio::test]
async fn recreation_keeps_anonymous_volumes() {
    let yaml = "services:\n  a:\n    image: api:1\n    volumes: [/cache]\n";
    let e = FakeEngine::new().with_images(IMAGES);
    let ui = ui();
    let h = hardened(yaml);
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    let before = e.container("nt-a-1").unwrap().mounts[0]
        .name_or_source
        .clone();
    assert_eq!(before.len(), 64);
    let h2 = hardened(&yaml.replace("[/cache]", "[/cache]\n    environment: {X: '1'}"));
    let report = lc(&e, &h2, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(report.recreated, ["a"]);
    let after = e.container("nt-a-1").unwrap().mounts;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].name_or_source, before, "same anonymous volume");
}

#[test]
fn carry_anonymous_volumes_rules() {
    let anon = "a".repeat(64);
    let old = ContainerInfo {
        id: "x".into(),
        name: "x".into(),
        image: "i".into(),
        labels: Labels::new(),
        state: RunState::Exited,
        health: Health::None,
        exit_code: Some(0),
        oom_killed: false,
        started_at: None,
        finished_at: None,
        ports: vec![],
        mounts: vec![
            // an image VOLUME the spec does not mention: carried
            crate::engine::MountInfo {
                kind: MountKind::Volume,
                name_or_source: anon.clone(),
                target: "/var/lib/data".into(),
            },
            // a named volume no longer mounted: not carried
            crate::engine::MountInfo {
                kind: MountKind::Volume,
                name_or_source: "nt_old".into(),
                target: "/old".into(),
            },
            // an anonymous volume where the spec now mounts a named one: not carried
            crate::engine::MountInfo {
                kind: MountKind::Volume,
                name_or_source: "b".repeat(64),
                target: "/named".into(),
            },
        ],
        env: vec![],
        stop_signal: None,
        stop_timeout_secs: None,
        networks: vec![],
        network_ids: Default::default(),
    };
    let mut spec = ContainerSpec {
        mounts: vec![MountSpec {
            kind: MountKind::Volume,
            source: "nt_named".into(),
            target: "/named".into(),
            read_only: false,
        }],
        ..ContainerSpec::default()
    };
    let carried = carry_anonymous_volumes(&mut spec, &old);
    assert_eq!(carried, [(anon.clone(), "/var/lib/data".to_string())]);
    assert_eq!(spec.mounts.len(), 2);
    assert_eq!(spec.mounts[1].source, anon);
    assert_eq!(spec.mounts[0].source, "nt_named");
}
