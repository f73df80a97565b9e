//! What `up` refuses before touching anything (foreign containers, volumes and networks, missing
//! images and external resources) and how a start fails (an unhealthy dependency, an exit, a
//! health timeout): over the in-memory engine.

use std::time::Instant;

use super::tests::{down_opts, hardened, lc, ui, up_opts, Rec, IMAGES, STACK};
use super::*;
use crate::engine::fake::{FakeEngine, FakeHealth};
use crate::engine::Labels;

/// `up` of every service, which must fail: the error.
async fn up_fails(e: &FakeEngine, h: &Hardened, ui: &Ui) -> LifecycleError {
    lc(e, h, ui)
        .up(&up_opts(), &mut NoHooks)
        .await
        .expect_err("up must fail")
}

#[tokio::test]
async fn foreign_container_is_refused_and_nothing_touched() {
    let e = FakeEngine::new().with_images(IMAGES);
    e.add_container("nt-cache-1", "redis:7", &Labels::new(), RunState::Running);
    let h = hardened(STACK);
    let ui = ui();
    let err = up_fails(&e, &h, &ui).await;
    match &err {
        LifecycleError::Foreign {
            kind,
            name,
            project,
        } => {
            assert_eq!(
                (*kind, name.as_str(), project.as_str()),
                ("container", "nt-cache-1", "nt")
            )
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("nodus will not touch it"));
    assert_eq!(e.calls(), Vec::<String>::new());
    assert_eq!(e.container("nt-cache-1").unwrap().state, RunState::Running);
    // down does not touch it either: it is not found by label.
    lc(&e, &h, &ui)
        .down(&down_opts(true), &mut NoHooks)
        .await
        .unwrap();
    assert!(e.container("nt-cache-1").is_some());
    assert_eq!(e.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn foreign_volume_and_network_are_refused() {
    let h = hardened(STACK);
    let ui = ui();

    let e = FakeEngine::new().with_images(IMAGES);
    e.add_volume("nt_data", &Labels::new());
    let err = up_fails(&e, &h, &ui).await;
    assert!(
        matches!(&err, LifecycleError::Foreign { kind: "volume", name, .. } if name == "nt_data"),
        "{err:?}"
    );
    assert_eq!(
        e.calls(),
        Vec::<String>::new(),
        "not even the network was created"
    );
    assert!(e.volume("nt_data").is_some());

    let e = FakeEngine::new().with_images(IMAGES);
    let mut other = labels::base("someone-else");
    other.insert(labels::NETWORK.into(), "default".into());
    e.add_network("nt_default", &other);
    let err = up_fails(&e, &h, &ui).await;
    assert!(
        matches!(&err, LifecycleError::Foreign { kind: "network", name, .. } if name == "nt_default"),
        "{err:?}"
    );
    assert_eq!(e.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn unhealthy_dependency_fails_up_naming_it() {
    let e = FakeEngine::new().with_images(IMAGES);
    e.tweak("postgres:16", |b| b.health = FakeHealth::Unhealthy);
    let h = hardened(STACK);
    let ui = ui();
    let mut rec = Rec::new(&e);
    let t = Instant::now();
    let err = lc(&e, &h, &ui).up(&up_opts(), &mut rec).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "fails fast, not after the 5s timeout"
    );
    match &err {
        LifecycleError::NotHealthy {
            service,
            container,
            logs,
            ..
        } => {
            assert_eq!(service, "db");
            assert_eq!(container, "nt-db-1");
            assert!(logs.contains("ready to accept connections"), "{logs}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(
        !e.calls().iter().any(|c| c.contains("nt-api-1")),
        "{:?}",
        e.calls()
    );
    assert!(
        rec.log().is_empty(),
        "no service_ready for an unhealthy service"
    );
}

#[tokio::test]
async fn exiting_service_fails_with_exit_code_and_logs() {
    let e = FakeEngine::new().with_images(IMAGES);
    e.tweak("postgres:16", |b| b.health = FakeHealth::Exits(1));
    let h = hardened(STACK);
    let ui = ui();
    let err = up_fails(&e, &h, &ui).await;
    match &err {
        LifecycleError::Exited {
            service,
            exit_code,
            logs,
            ..
        } => {
            assert_eq!((service.as_str(), *exit_code), ("db", 1));
            assert!(logs.contains("exiting with code 1"), "{logs}");
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn health_timeout() {
    let e = FakeEngine::new().with_images(IMAGES);
    e.tweak("postgres:16", |b| b.health = FakeHealth::StaysStarting);
    let h = hardened(STACK);
    let ui = ui();
    let opts = UpOptions {
        services: vec![],
        timeout: Duration::from_millis(300),
        ..UpOptions::default()
    };
    let t = Instant::now();
    let err = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::NotHealthy { service, .. } if service == "db"),
        "{err:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn missing_image_is_pulled_or_fails_before_anything_is_created() {
    let h = hardened(STACK);
    let ui = ui();
    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
    e.add_pullable("api:1");
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(e.calls()[0], "pull api:1");

    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
    let err = up_fails(&e, &h, &ui).await;
    assert!(
        matches!(&err, LifecycleError::Engine(EngineError::ImageUnavailable { image, .. }) if image == "api:1"),
        "{err:?}"
    );
    assert_eq!(e.calls(), ["pull api:1"]);
    let code = crate::error::classify(&anyhow::Error::new(err)).0;
    assert_eq!(code, crate::error::EXIT_ERROR);
}

#[tokio::test]
async fn external_resources_must_exist() {
    let yaml = "services:\n  a:\n    image: api:1\n    networks: [shared]\n    volumes: [ext:/x]\nnetworks:\n  shared: {external: true}\nvolumes:\n  ext: {external: true, name: the-ext}\n";
    let h = hardened(yaml);
    let ui = ui();
    let e = FakeEngine::new().with_images(IMAGES);
    let err = up_fails(&e, &h, &ui).await;
    assert!(
        matches!(&err, LifecycleError::ExternalMissing { kind: "network", name } if name == "shared"),
        "{err:?}"
    );
    e.add_network("shared", &Labels::new());
    let err = up_fails(&e, &h, &ui).await;
    assert!(
        matches!(&err, LifecycleError::ExternalMissing { kind: "volume", name } if name == "the-ext"),
        "{err:?}"
    );
    e.add_volume("the-ext", &Labels::new());
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(e.calls(), ["create_container nt-a-1", "start nt-a-1"]);
    // down leaves external resources alone.
    lc(&e, &h, &ui)
        .down(&down_opts(true), &mut NoHooks)
        .await
        .unwrap();
    assert!(e.network("shared").is_some() && e.volume("the-ext").is_some());
}
