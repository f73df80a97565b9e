//! `up` with `build:` services over the fake engine: when images are built, shared builds, the
//! `--no-build` error, and a failed build leaving containers untouched.

use std::path::Path;

use super::tests::{hardened, lc, up_opts};
use super::*;
use crate::build::{BuildError, Policy};
use crate::engine::fake::FakeEngine;

/// A stack with a built `app` (context `dir`) next to a database.
fn stack(dir: &Path, extra: &str) -> Hardened {
    let ctx = dir.display();
    hardened(&format!(
        "services:\n  db:\n    image: postgres:16\n  app:\n    build:\n      context: {ctx}\n      args: [DB_PASSWORD=hunter2]\n    depends_on: [db]\n{extra}"
    ))
}

fn context_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM base\nCOPY app.txt /app.txt\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.txt"), "one\n").unwrap();
    dir
}

fn builds(e: &FakeEngine) -> Vec<String> {
    e.calls()
        .into_iter()
        .filter(|c| c.starts_with("build "))
        .collect()
}

fn id(e: &FakeEngine, name: &str) -> String {
    e.container(name).unwrap().id
}

#[tokio::test]
async fn builds_when_missing_or_changed_and_recreates_only_the_users() {
    let dir = context_dir();
    let h = stack(dir.path(), "");
    let ui = Ui::plain();
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e), ["build nt-app"]);
    assert_eq!(report.built, ["nt-app"]);
    assert_eq!(report.created, ["db", "app"]);
    let (opts, size) = e.builds()[0].clone();
    assert!(size > 0, "the context was streamed");
    assert_eq!(opts.args["DB_PASSWORD"], "hunter2");
    assert!(opts.labels.contains_key(crate::build::HASH_LABEL));
    assert_eq!(opts.dockerfile, "Dockerfile");
    let (db, app) = (id(&e, "nt-db-1"), id(&e, "nt-app-1"));

    // Nothing changed: no build, nothing recreated.
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e).len(), 1);
    assert!(report.built.is_empty());
    assert_eq!(report.unchanged, ["db", "app"]);

    // A context file changed: rebuilt, and only app is recreated.
    std::fs::write(dir.path().join("app.txt"), "two\n").unwrap();
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e).len(), 2);
    assert_eq!(report.recreated, ["app"]);
    assert_eq!(report.unchanged, ["db"]);
    assert_eq!(id(&e, "nt-db-1"), db);
    assert_ne!(id(&e, "nt-app-1"), app);

    // `--build` builds again although nothing changed (a new image ID: app recreated again).
    let mut opts = up_opts();
    opts.build.policy = Policy::Force;
    let report = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e).len(), 3);
    assert_eq!(report.recreated, ["app"]);
}

#[tokio::test]
async fn a_shared_build_is_built_once() {
    let dir = context_dir();
    let ctx = dir.path().display();
    let h = hardened(&format!(
        "services:\n  api:\n    image: app:dev\n    build: {ctx}\n  worker:\n    image: app:dev\n    build: {ctx}\n  other:\n    image: app:dev\n"
    ));
    let ui = Ui::plain();
    let e = FakeEngine::new();
    let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e), ["build app:dev"]);
    assert_eq!(report.created.len(), 3);
    assert!(!e.calls().iter().any(|c| c.starts_with("pull")));
}

#[tokio::test]
async fn no_build_with_a_missing_image_is_an_error_before_anything_starts() {
    let dir = context_dir();
    let h = stack(dir.path(), "");
    let ui = Ui::plain();
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    let mut opts = up_opts();
    opts.build.policy = Policy::Never;
    let err = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Build(BuildError::MissingNotAllowed { service, .. }) if service == "app"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--no-build"), "{err}");
    assert!(e.calls().is_empty(), "{:?}", e.calls());

    // With the image present, --no-build uses it as it is even when the context changed.
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    std::fs::write(dir.path().join("app.txt"), "changed\n").unwrap();
    std::fs::remove_file(dir.path().join("Dockerfile")).unwrap();
    let report = lc(&e, &h, &ui).up(&opts, &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e).len(), 1);
    assert_eq!(report.unchanged, ["db", "app"]);
}

#[tokio::test]
async fn a_failed_build_leaves_running_services_untouched() {
    let dir = context_dir();
    let h = stack(dir.path(), "");
    let ui = Ui::plain();
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    let (db, app) = (id(&e, "nt-db-1"), id(&e, "nt-app-1"));
    let calls_before = e.calls().len();

    std::fs::write(dir.path().join("app.txt"), "two\n").unwrap();
    let lines: Vec<String> = (1..=14).map(|i| format!("line {i}")).collect();
    let mut lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    lines.push("password is hunter2");
    e.fail_build(
        "nt-app",
        &lines,
        "The command '/bin/sh -c make' returned a non-zero code: 2",
    );
    let err = lc(&e, &h, &ui)
        .up(&up_opts(), &mut NoHooks)
        .await
        .unwrap_err();
    let LifecycleError::Build(BuildError::Failed {
        services,
        step,
        last_lines,
        ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(services, &["app"]);
    assert_eq!(step, "step 2/2 `RUN make`");
    assert_eq!(last_lines.len(), crate::build::FAILED_TAIL);
    assert_eq!(last_lines.last().unwrap(), "password is ****");
    let text = err.to_string();
    assert!(
        text.contains("service app") && text.contains("returned a non-zero code: 2"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let code = crate::error::classify(&anyhow::Error::new(err)).0;
    assert_eq!(code, crate::error::EXIT_ERROR);

    // Only the build happened: nothing stopped, removed or created.
    let after: Vec<String> = e.calls()[calls_before..].to_vec();
    assert_eq!(after, ["build nt-app"]);
    assert_eq!(id(&e, "nt-db-1"), db);
    assert_eq!(id(&e, "nt-app-1"), app);
    assert_eq!(e.container("nt-app-1").unwrap().state, RunState::Running);
}

#[tokio::test]
async fn pull_policies_per_service() {
    // `pull_policy: build` builds on every up; `never` on a plain image refuses to pull it.
    let dir = context_dir();
    let h = stack(dir.path(), "    pull_policy: build\n");
    let ui = Ui::plain();
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
    assert_eq!(builds(&e).len(), 2);

    let h = hardened("services:\n  api:\n    image: api:1\n    pull_policy: never\n");
    let e = FakeEngine::new();
    e.add_pullable("api:1");
    let err = lc(&e, &h, &ui)
        .up(&up_opts(), &mut NoHooks)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Engine(crate::engine::EngineError::ImageUnavailable { image, .. }) if image == "api:1"),
        "{err:?}"
    );
    assert!(e.calls().is_empty(), "{:?}", e.calls());
}
