//! compose's `up` flags over the in-memory engine: `--remove-orphans`, `--force-recreate`,
//! `--no-recreate`, `--no-deps`, `--pull`.

use super::tests::*;
use super::*;
use crate::engine::fake::FakeEngine;
use crate::stack::ServiceKind;

// ---- compose habits: up flags ---------------------------------------------------------------

#[tokio::test]
async fn remove_orphans_stops_them_guarded_then_removes() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    // A postgres service deleted from the file: an orphan database.
    e.add_container(
        "nt-olddb-1",
        "postgres:16",
        &owned("olddb"),
        RunState::Running,
    );

    // Without the flag, it is left alone.
    l.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert!(e.container("nt-olddb-1").is_some());

    e.clear_calls();
    let mut rec = Rec::new(&e);
    let opts = UpOptions {
        remove_orphans: true,
        ..up_opts()
    };
    let report = l.up(&opts, &mut rec).await.unwrap();
    assert_eq!(report.removed, ["olddb"]);
    assert_eq!(report.stopped, ["olddb"]);
    assert!(e.container("nt-olddb-1").is_none());
    let log = rec.log();
    assert_eq!(log[0], "before_stop Up olddb", "{log:?}");
    assert_eq!(log[1], "after_stop Up olddb", "{log:?}");
    let calls = e.calls();
    assert_eq!(calls[0], "stop nt-olddb-1", "{calls:?}");
    assert_eq!(calls[1], "remove_container nt-olddb-1", "{calls:?}");
}

#[tokio::test]
async fn orphan_databases_are_known_to_the_guard() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    e.add_container(
        "nt-olddb-1",
        "postgres:16",
        &owned("olddb"),
        RunState::Running,
    );
    let info = ContainerInfo {
        env: vec!["PGDATA=/pgdata".into()],
        ..e.container("nt-olddb-1").unwrap()
    };
    let st = l
        .orphan_stateful("olddb", &info)
        .expect("a postgres orphan");
    assert_eq!(st.kind, ServiceKind::Postgres);
    assert_eq!(st.data_dir, "/pgdata");
    // Services still in the stack are not orphans; unknown images are not databases.
    assert!(l.orphan_stateful("db", &info).is_none());
    let app = ContainerInfo {
        image: "api:1".into(),
        ..info
    };
    assert!(l.orphan_stateful("oldapp", &app).is_none());
}

#[tokio::test]
async fn force_recreate_and_no_recreate() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let l = lc(&e, &h, &ui);
    l.up(&up_opts(), &mut NoHooks).await.unwrap();

    let mut rec = Rec::new(&e);
    let opts = UpOptions {
        force_recreate: true,
        ..up_opts()
    };
    let report = l.up(&opts, &mut rec).await.unwrap();
    assert_eq!(report.recreated, ["db", "cache", "api"]);
    // The database's stop is guarded like any recreation.
    assert!(
        rec.log().iter().any(|x| x == "before_stop Up db"),
        "{:?}",
        rec.log()
    );

    // A changed definition is kept with --no-recreate.
    let changed = STACK.replace(
        "image: redis:7",
        "image: redis:7\n    environment: { A: b }",
    );
    let h2 = hardened(&changed);
    let l2 = lc(&e, &h2, &ui);
    let opts = UpOptions {
        no_recreate: true,
        ..up_opts()
    };
    let report = l2.up(&opts, &mut NoHooks).await.unwrap();
    assert!(report.recreated.is_empty(), "{report:?}");
    assert_eq!(report.unchanged.len(), 3);
    // Without it, the change is applied.
    let report = l2.up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(report.recreated, ["cache"]);
}

#[tokio::test]
async fn no_deps_starts_only_the_named_service() {
    let e = FakeEngine::new().with_images(IMAGES);
    let h = hardened(STACK);
    let ui = ui();
    let opts = UpOptions {
        services: vec!["api".into()],
        no_deps: true,
        ..up_opts()
    };
    let report = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    assert_eq!(report.created, ["api"]);
    assert!(e.container("nt-db-1").is_none());
}

#[tokio::test]
async fn pull_policies() {
    let h = hardened(STACK);
    let ui = ui();
    // never: a missing image is an error, nothing pulled or created.
    let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
    e.add_pullable("api:1");
    let opts = UpOptions {
        pull: ImagePull::Never,
        ..up_opts()
    };
    let err = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Engine(EngineError::ImageUnavailable { image, .. }) if image == "api:1"),
        "{err:?}"
    );
    assert!(e.calls().is_empty(), "{:?}", e.calls());

    // always: every image is pulled, present or not.
    let e = FakeEngine::new().with_images(IMAGES);
    for i in ["postgres:16", "redis:7", "api:1"] {
        e.add_pullable(i);
    }
    let opts = UpOptions {
        pull: ImagePull::Always,
        ..up_opts()
    };
    lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    let pulls: Vec<String> = e
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("pull "))
        .collect();
    assert_eq!(pulls, ["pull postgres:16", "pull redis:7", "pull api:1"]);
}
