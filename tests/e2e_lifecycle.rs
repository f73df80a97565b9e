//! End-to-end lifecycle tests: the real binary against the real Docker engine and real PostgreSQL
//! (stand-in images built locally by scripts/build-images.sh).

mod common;

use common::*;

#[test]
fn sixty_tables_survive_down_and_up() {
    let s = TestStack::new("sixty", &pg_stack("", ""));

    // render writes the hardened file that plain docker-compose accepts
    s.nodus(&["render"]).ok();
    let rendered = s.path().join(".nodus/compose.yaml");
    assert!(rendered.exists(), "render must write .nodus/compose.yaml");
    let cfg = run(std::process::Command::new("docker-compose").args([
        "-f",
        rendered.to_str().unwrap(),
        "config",
        "-q",
    ]));
    assert!(
        cfg.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&cfg.stderr)
    );

    s.nodus(&["up"]).ok();
    let ctr = s.container("db");

    // hardening reached the engine
    let inspect = docker_ok(&[
        "inspect",
        "-f",
        "{{.Config.StopSignal}} {{.Config.StopTimeout}}",
        &ctr,
    ]);
    assert_eq!(inspect, "SIGINT 60");
    let mounts = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}};{{end}}",
        &ctr,
    ]);
    let pgdata_mount = mounts
        .split(';')
        .find(|m| m.ends_with(" /var/lib/postgresql/data"))
        .unwrap_or_else(|| panic!("no mount at PGDATA: {mounts}"));
    assert!(pgdata_mount.starts_with("volume "), "{pgdata_mount}");
    let vol_name = pgdata_mount.split(' ').nth(1).unwrap().to_string();
    assert!(
        vol_name.starts_with(&s.project),
        "PGDATA must be on a named project volume, got {vol_name}"
    );
    // nodus reports ready from postgres itself (a query answered), which can be before the
    // engine's own health check first ran; the health check is there and turns healthy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let health = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &ctr]);
        if health == "healthy" {
            break;
        }
        assert!(
            health == "starting" && std::time::Instant::now() < deadline,
            "health {health}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // compose sees nodus' containers
    let ps = run(std::process::Command::new("docker-compose").args([
        "-f",
        rendered.to_str().unwrap(),
        "-p",
        &s.project,
        "ps",
    ]));
    let ps_out = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.status.success(),
        "docker-compose ps: {}",
        String::from_utf8_lossy(&ps.stderr)
    );
    assert!(
        ps_out.contains(&ctr),
        "docker-compose -p {} ps does not list {ctr}:\n{ps_out}",
        s.project
    );

    s.create_tables("db", "app", 60, 10);
    assert_eq!(s.table_count("db", "app"), 60);

    let down = s.nodus(&["down"]);
    down.ok();
    assert!(
        docker(&["inspect", &ctr]).status.code() != Some(0),
        "container must be removed by down"
    );
    docker_ok(&["volume", "inspect", &vol_name]);
    assert!(
        down.stderr.contains("shut down cleanly") || down.stderr.contains("clean"),
        "down should report the clean shutdown:\n{}",
        down.stderr
    );

    s.nodus(&["up"]).ok();
    assert_eq!(s.table_count("db", "app"), 60);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t60"), "10");
}

#[test]
fn up_twice_changes_nothing_and_status_lists_services() {
    let s = TestStack::new("idem", &pg_stack("", ""));
    // --json: one document with what the lifecycle did and the guard's verdict
    let first = s.nodus(&["--json", "up"]);
    first.ok();
    let v = first.one_json();
    assert_eq!(v["transition"], "up", "{v}");
    assert_eq!(v["report"]["created"], serde_json::json!(["db"]), "{v}");
    assert_eq!(v["guard"]["verdict"], "baseline", "{v}");
    let id1 = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    let again = s.nodus(&["--json", "up"]);
    again.ok();
    let id2 = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    // nothing started, so nothing to check: no verdict
    let v = again.one_json();
    assert_eq!(v["report"]["unchanged"], serde_json::json!(["db"]), "{v}");
    assert!(v["guard"].is_null(), "{v}");
    let r = s.nodus(&["--json", "restart"]);
    r.ok();
    let v = r.one_json();
    assert_eq!(v["transition"], "restart", "{v}");
    assert_eq!(v["guard"]["verdict"], "ok", "{v}");
    assert_eq!(id1, id2, "second up must not recreate the container");

    let st = s.nodus(&["status", "--json"]);
    st.ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("status --json is JSON");
    let text = v.to_string();
    assert!(text.contains("\"db\""), "{text}");
    assert!(text.contains("running"), "{text}");
}

#[test]
fn down_volumes_without_yes_and_without_tty_refuses() {
    let s = TestStack::new("volrefuse", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    let r = s.nodus(&["down", "--volumes"]);
    r.code(2);
    assert!(
        r.stderr.contains("--yes"),
        "must print the exact command to run:\n{}",
        r.stderr
    );
    // nothing was touched
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &s.container("db")]),
        "true"
    );
    let volumes = || {
        docker_ok(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", s.project),
        ])
    };
    // compose's `down -v`: nodus' `-v` is --verbose; the volumes stay, and it says so.
    let r = s.nodus(&["down", "-v"]);
    r.ok();
    assert!(r.stderr.contains("`nodus down --volumes`"), "{}", r.stderr);
    assert!(!volumes().is_empty());
    s.nodus(&["down", "--volumes", "--yes"]).ok();
    let vols = volumes();
    assert!(vols.is_empty(), "volumes left: {vols}");
}

#[test]
fn concurrent_ups_do_not_interleave() {
    let s = TestStack::new("lock", &pg_stack("", ""));
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_nodus"))
            .current_dir(s.path())
            .env("NO_COLOR", "1")
            .args([
                "-f",
                s.stack_file().to_str().unwrap(),
                "-p",
                &s.project,
                "up",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nodus")
    };
    let a = spawn();
    let b = spawn();
    let oa = a.wait_with_output().unwrap();
    let ob = b.wait_with_output().unwrap();
    let ea = String::from_utf8_lossy(&oa.stderr);
    let eb = String::from_utf8_lossy(&ob.stderr);
    assert!(oa.status.success(), "first up: {ea}");
    assert!(ob.status.success(), "second up: {eb}");
    assert!(
        ea.contains("waiting for another nodus command")
            || eb.contains("waiting for another nodus command"),
        "one of the two must have waited for the lock:\n--- a\n{ea}\n--- b\n{eb}"
    );
    let ids = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
    ]);
    assert_eq!(
        ids.lines().count(),
        1,
        "exactly one container expected, got {ids}"
    );
}

#[test]
fn anonymous_volume_postgres_renders_and_runs_on_named_volume() {
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: pw\n    volumes:\n      - /var/lib/postgresql/data\n"
    );
    let s = TestStack::new("anon", &yaml);
    let r = s.nodus(&["render", "-o", "-"]);
    r.ok();
    let doc: serde_yaml::Value = serde_yaml::from_str(&r.stdout).expect("rendered YAML");
    let vols = &doc["services"]["db"]["volumes"];
    let m = vols
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["target"].as_str() == Some("/var/lib/postgresql/data"))
        .expect("PGDATA mount");
    assert_eq!(m["type"].as_str(), Some("volume"));
    let src = m["source"].as_str().expect("named source");
    assert!(
        doc["volumes"].as_mapping().unwrap().contains_key(src),
        "volume {src} declared"
    );
}

#[test]
fn unknown_service_lists_services_and_engine_unreachable_exits_4() {
    let s = TestStack::new("errs", &pg_stack("", ""));
    let r = s.nodus(&["up", "nope"]);
    // A usage error (issue 8): exit 2.
    r.code(2);
    assert!(
        r.stderr.contains("nope") && r.stderr.contains("db"),
        "{}",
        r.stderr
    );

    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args([
            "-f",
            s.stack_file().to_str().unwrap(),
            "-p",
            &s.project,
            "status",
        ]));
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp://127.0.0.1:1"));
}

/// `docker network prune` removes a network that only stopped containers use (and an
/// interrupted `nodus down` removes it before the containers): the engine then refuses to start
/// them. `start` says what to do; `up` recreates them on the new network, data kept.
#[test]
fn a_stopped_stack_whose_network_was_removed_comes_back_with_up() {
    let s = TestStack::new("netgone", &pg_stack("", ""));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 5);
    let old = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    s.nodus(&["stop"]).ok();
    docker_ok(&["network", "rm", &format!("{}_default", s.project)]);

    let start = s.nodus(&["start"]);
    assert_ne!(start.code, 0, "{}", start.all());
    assert!(
        start.stderr.contains("was removed since it stopped")
            && start.stderr.contains("`nodus up` recreates"),
        "{}",
        start.all()
    );

    let up = s.nodus(&["up"]);
    up.ok();
    assert!(
        up.stderr
            .contains("recreating the container (its volumes are kept)"),
        "{}",
        up.all()
    );
    assert!(!up.stderr.contains("definition changed"), "{}", up.all());
    let new = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    assert_ne!(old, new, "recreated");
    assert_eq!(s.table_count("db", "app"), 3);
}
