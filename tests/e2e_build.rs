//! End-to-end tests of `build:` services against the real engine (classic builder, API 1.41):
//! the stand-in postgres image is the `FROM` base (nothing can be pulled, so `pull` is never set).

mod common;

use common::*;

/// Removes the images this test built (they carry the project label), after the containers.
struct Images(String);
impl Drop for Images {
    fn drop(&mut self) {
        cleanup_project(&self.0);
        let filter = format!("label=io.nodus.project={}", self.0);
        let ids = docker_ok(&["image", "ls", "-q", "--filter", &filter]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            docker(&["rmi", "-f", id]);
        }
    }
}

const KEEP_RUNNING: &str =
    r#"CMD ["sh", "-c", "trap 'exit 0' TERM INT; while sleep 1; do :; done"]"#;

fn dockerfile(run: &str) -> String {
    format!(
        "FROM {PG_IMAGE}\nARG GREETING=none\nCOPY hello.txt /hello.txt\nRUN {run}\nENTRYPOINT []\n{KEEP_RUNNING}\n"
    )
}

fn image_id(image: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", image])
}

fn container_id(name: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Id}}", name])
}

#[test]
fn built_service_builds_once_rebuilds_on_change_and_a_failed_build_touches_nothing() {
    let extra = "  app:\n    build:\n      context: ./app\n      args:\n        GREETING: hi\n        API_TOKEN: tok-s3cret-value\n    depends_on: [db]\n";
    let s = TestStack::new("build", &pg_stack(extra, ""));
    let _images = Images(s.project.clone());
    let app_dir = s.path().join("app");
    std::fs::create_dir(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("Dockerfile"),
        dockerfile("echo \"greeting=$GREETING\" > /greeting.txt"),
    )
    .unwrap();
    std::fs::write(app_dir.join("hello.txt"), "hello one\n").unwrap();
    std::fs::write(app_dir.join(".dockerignore"), "notes.txt\n").unwrap();
    std::fs::write(app_dir.join("notes.txt"), "not sent\n").unwrap();
    let image = format!("{}-app", s.project);

    // First up builds and runs it: the COPY'd file is there, the build arg reached the build.
    let r = s.nodus(&["up", "--no-doctor"]);
    r.ok();
    assert!(r.stderr.contains("building image"), "{}", r.stderr);
    assert!(!r.all().contains("tok-s3cret-value"), "{}", r.all());
    let app = s.container("app");
    assert_eq!(docker_ok(&["exec", &app, "cat", "/hello.txt"]), "hello one");
    assert_eq!(
        docker_ok(&["exec", &app, "cat", "/greeting.txt"]),
        "greeting=hi"
    );
    let label = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.nodus.build.hash\"}}",
        &image,
    ]);
    assert!(label.starts_with("blake3:"), "{label}");
    let (img1, db1, app1) = (
        image_id(&image),
        container_id(&s.container("db")),
        container_id(&app),
    );

    // Second up: no build, nothing recreated.
    let r = s.nodus(&["up", "--no-doctor"]);
    r.ok();
    assert!(!r.stderr.contains("building image"), "{}", r.stderr);
    assert_eq!(image_id(&image), img1);
    assert_eq!(container_id(&app), app1);

    // A .dockerignore'd file changed: no build (dry-run agrees).
    std::fs::write(app_dir.join("notes.txt"), "still not sent\n").unwrap();
    let dry = s.nodus(&["--json", "build", "--dry-run"]);
    let doc = dry.ok().one_json();
    assert_eq!(doc["images"][0]["needed"], false, "{doc}");
    let r = s.nodus(&["up", "--no-doctor"]);
    r.ok();
    assert!(!r.stderr.contains("building image"), "{}", r.stderr);
    assert_eq!(image_id(&image), img1);

    // A context file changed: rebuilt, app recreated, the database keeps its container.
    std::fs::write(app_dir.join("hello.txt"), "hello two\n").unwrap();
    let r = s.nodus(&["up", "--no-doctor"]);
    r.ok();
    assert!(r.stderr.contains("building image"), "{}", r.stderr);
    let img2 = image_id(&image);
    assert_ne!(img2, img1);
    assert_eq!(container_id(&s.container("db")), db1);
    let app2 = container_id(&app);
    assert_ne!(app2, app1);
    assert_eq!(docker_ok(&["exec", &app, "cat", "/hello.txt"]), "hello two");

    // A failing RUN: exit 1, the error names the step, running services keep their containers.
    std::fs::write(
        app_dir.join("Dockerfile"),
        dockerfile("echo \"token $API_TOKEN\" && echo broken-step-output && false"),
    )
    .unwrap();
    std::fs::write(
        app_dir.join("Dockerfile"),
        std::fs::read_to_string(app_dir.join("Dockerfile"))
            .unwrap()
            .replace("ARG GREETING=none\n", "ARG GREETING=none\nARG API_TOKEN\n"),
    )
    .unwrap();
    let r = s.nodus(&["up", "--no-doctor"]);
    r.code(1);
    assert!(r.stderr.contains("failed at step"), "{}", r.stderr);
    assert!(r.stderr.contains("broken-step-output"), "{}", r.stderr);
    assert!(r.stderr.contains("service app"), "{}", r.stderr);
    assert!(r.stderr.contains("token ****"), "{}", r.stderr);
    assert!(!r.all().contains("tok-s3cret-value"), "{}", r.all());
    assert_eq!(container_id(&s.container("db")), db1);
    assert_eq!(container_id(&app), app2);
    for name in [s.container("db"), app.clone()] {
        assert_eq!(
            docker_ok(&["inspect", "-f", "{{.State.Running}}", &name]),
            "true"
        );
    }
    assert_eq!(image_id(&image), img2);
}

#[test]
fn target_stage_and_inline_dockerfile() {
    let yaml = format!(
        "services:\n  staged:\n    build:\n      context: ./staged\n      target: second\n  inline:\n    build:\n      context: ./inline\n      dockerfile_inline: |\n        FROM {PG_IMAGE}\n        COPY data.txt /data.txt\n        RUN echo inline-built > /inline.txt\n"
    );
    let s = TestStack::new("buildstages", &yaml);
    let _images = Images(s.project.clone());
    let staged = s.path().join("staged");
    let inline = s.path().join("inline");
    std::fs::create_dir(&staged).unwrap();
    std::fs::create_dir(&inline).unwrap();
    std::fs::write(
        staged.join("Dockerfile"),
        format!(
            "FROM {PG_IMAGE} AS first\nRUN echo first > /stage.txt\nFROM {PG_IMAGE} AS second\nRUN echo second > /stage.txt\nFROM {PG_IMAGE} AS third\nRUN echo third > /stage.txt\n"
        ),
    )
    .unwrap();
    std::fs::write(inline.join("data.txt"), "from the context\n").unwrap();

    // `nodus build` builds without starting anything.
    s.nodus(&["build"]).ok();
    let filter = format!("label=com.docker.compose.project={}", s.project);
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &filter]), "");
    let cat =
        |image: &str, file: &str| docker_ok(&["run", "--rm", "--entrypoint", "cat", image, file]);
    assert_eq!(
        cat(&format!("{}-staged", s.project), "/stage.txt"),
        "second"
    );
    let inline_image = format!("{}-inline", s.project);
    assert_eq!(cat(&inline_image, "/inline.txt"), "inline-built");
    assert_eq!(cat(&inline_image, "/data.txt"), "from the context");
}
