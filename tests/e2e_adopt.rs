//! End-to-end: taking over projects docker compose made (v1 with the real docker-compose 1.29, v2
//! simulated with the labels compose v2 sets), and moving data to a new volume instead of
//! starting an empty database (harden: false → hardened).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn wait_pg(container: &str) {
    for _ in 0..240 {
        // ready on the network, not only the init phase's local socket
        if docker(&[
            "exec",
            container,
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .status
        .success()
            && docker(&[
                "exec",
                container,
                "psql",
                "-U",
                "postgres",
                "-h",
                "127.0.0.1",
                "-Atqc",
                "select 1",
            ])
            .status
            .success()
        {
            // the entrypoint's init phase restarts the server once; wait for the final one
            let logs = run(Command::new("docker").args(["logs", container]));
            if String::from_utf8_lossy(&logs.stderr).contains("init process complete")
                || String::from_utf8_lossy(&logs.stdout).contains("init process complete")
                || String::from_utf8_lossy(&logs.stderr).contains("Skipping initialization")
                || String::from_utf8_lossy(&logs.stdout).contains("Skipping initialization")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("postgres in {container} never became ready");
}

fn psql_in(container: &str, sql: &str) -> String {
    docker_ok(&[
        "exec",
        container,
        "psql",
        "-U",
        "postgres",
        "-d",
        "app",
        "-v",
        "ON_ERROR_STOP=1",
        "-Atq",
        "-c",
        sql,
    ])
}

fn tables_in(container: &str) -> usize {
    psql_in(
        container,
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')",
    )
    .parse()
    .unwrap()
}

fn make_tables(container: &str, n: usize) {
    psql_in(
        container,
        &format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP EXECUTE format('CREATE TABLE t%s (id int primary key)', i); \
             EXECUTE format('INSERT INTO t%s SELECT generate_series(1,50)', i); END LOOP; END $$;"
        ),
    );
}

fn compose_v1(s: &TestStack, args: &[&str]) -> Res {
    let out = run(Command::new("docker-compose")
        .current_dir(s.path())
        .args(["-p", &s.project, "-f", s.stack_file().to_str().unwrap()])
        .args(args));
    Res {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn containers_of(project: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).status.success()
}

const PG_ENV: &str = "    environment:\n      POSTGRES_PASSWORD: pw\n      POSTGRES_DB: app\n";

#[test]
fn compose_v1_project_on_an_anonymous_volume_is_adopted_and_its_data_moved() {
    // What docker-compose 1.x users have: no volume declared, the data on the image's VOLUME.
    let yaml = format!("version: '2.4'\nservices:\n  db:\n    image: {PG_IMAGE}\n{PG_ENV}");
    let s = TestStack::new("adopt-v1-anon", &yaml);
    compose_v1(&s, &["up", "-d"]).ok();
    let old = format!("{}_db_1", s.project);
    wait_pg(&old);
    make_tables(&old, 4);
    let anon = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        &old,
    ]);
    assert_eq!(anon.len(), 64, "anonymous volume: {anon}");

    // Without a terminal and without --yes: refuses with the command, changes nothing.
    let r = s.nodus(&["up"]);
    r.code(2);
    assert!(
        r.stderr.contains("--yes") && r.stderr.contains(&anon) && r.stderr.contains(&old),
        "{}",
        r.all()
    );
    assert_eq!(containers_of(&s.project), vec![old.clone()]);
    assert!(!volume_exists(&s.volume("db_data")));
    assert_eq!(tables_in(&old), 4);

    // With --yes: the data is copied over, the old container replaced, nothing lost.
    let r = s.nodus(&["up", "--yes"]);
    r.ok();
    assert!(
        !r.all().contains("LOSS") && r.stderr.contains("snapshot"),
        "{}",
        r.all()
    );
    assert_eq!(s.table_count("db", "app"), 4);
    assert_eq!(
        s.psql("db", "app", "select count(*) from t3"),
        "50",
        "rows copied"
    );
    let mount = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        &s.container("db"),
    ]);
    assert_eq!(mount, s.volume("db_data"));
    assert!(volume_exists(&anon), "the old volume is kept");
    assert!(
        !containers_of(&s.project).contains(&old),
        "the compose container was replaced"
    );
    // The move left a snapshot.
    let list = s.nodus(&["--json", "snapshot", "list"]);
    list.ok();
    assert!(list.stdout.contains("\"move\""), "{}", list.stdout);
    // And the next cycle is clean.
    s.nodus(&["down", "--no-snapshot"]).ok();
    let r = s.nodus(&["up"]);
    r.ok();
    assert_eq!(s.table_count("db", "app"), 4);
    s.nodus(&["down", "--no-snapshot"]).ok();
}

#[test]
fn compose_v1_project_on_a_named_volume_is_adopted_in_place() {
    let yaml = format!(
        "version: '2.4'\nservices:\n  db:\n    image: {PG_IMAGE}\n{PG_ENV}    volumes:\n      - pgdata:/var/lib/postgresql/data\nvolumes:\n  pgdata: {{}}\n"
    );
    let s = TestStack::new("adopt-v1-named", &yaml);
    compose_v1(&s, &["up", "-d"]).ok();
    let old = format!("{}_db_1", s.project);
    wait_pg(&old);
    make_tables(&old, 3);

    let r = s.nodus(&["up"]);
    r.ok();
    assert!(
        r.stderr.contains("made by docker compose") && !r.all().contains("LOSS"),
        "{}",
        r.all()
    );
    assert_eq!(s.table_count("db", "app"), 3);
    assert_eq!(containers_of(&s.project), vec![s.container("db")]);
    let mount = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        &s.container("db"),
    ]);
    assert_eq!(mount, s.volume("pgdata"));
    s.nodus(&["down", "--no-snapshot"]).ok();
}

#[test]
fn compose_v2_container_with_the_same_name_is_adopted() {
    let yaml = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n{PG_ENV}    volumes:\n      - pgdata:/var/lib/postgresql/data\nvolumes:\n  pgdata: {{}}\n"
    );
    let s = TestStack::new("adopt-v2", &yaml);
    let p = &s.project;
    let vol = s.volume("pgdata");
    // What compose v2 leaves: labelled volume and network, `<project>-<service>-1`.
    docker_ok(&[
        "volume",
        "create",
        "--label",
        &format!("com.docker.compose.project={p}"),
        "--label",
        "com.docker.compose.volume=pgdata",
        "--label",
        "com.docker.compose.version=2.24.0",
        &vol,
    ]);
    let name = s.container("db");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={p}"),
        "--label",
        "com.docker.compose.service=db",
        "--label",
        "com.docker.compose.container-number=1",
        "--label",
        "com.docker.compose.oneoff=False",
        "--label",
        "com.docker.compose.version=2.24.0",
        "-e",
        "POSTGRES_PASSWORD=pw",
        "-e",
        "POSTGRES_DB=app",
        "-v",
        &format!("{vol}:/var/lib/postgresql/data"),
        PG_IMAGE,
    ]);
    wait_pg(&name);
    make_tables(&name, 5);
    let old_id = docker_ok(&["inspect", "-f", "{{.Id}}", &name]);

    let r = s.nodus(&["up"]);
    r.ok();
    assert!(
        !r.stderr.contains("remove or rename it yourself") && !r.all().contains("LOSS"),
        "{}",
        r.all()
    );
    assert_ne!(docker_ok(&["inspect", "-f", "{{.Id}}", &name]), old_id);
    assert_eq!(
        docker_ok(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.nodus.managed\"}}",
            &name
        ]),
        "true"
    );
    assert_eq!(s.table_count("db", "app"), 5);
    s.nodus(&["down", "--no-snapshot"]).ok();
}

#[test]
fn a_container_of_another_project_is_still_refused() {
    let s = TestStack::new("adopt-foreign", &pg_stack("", ""));
    let name = s.container("db");
    // Same name, compose labels of ANOTHER project: never touched.
    docker_ok(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={}-other", s.project),
        "--label",
        "com.docker.compose.service=db",
        PG_IMAGE,
    ]);
    s.also_clean
        .borrow_mut()
        .push(format!("{}-other", s.project));
    let r = s.nodus(&["up"]);
    r.code(1);
    assert!(
        r.stderr.contains("remove or rename it yourself"),
        "{}",
        r.all()
    );
    assert!(docker(&["inspect", &name]).status.success());
}

#[test]
fn switching_harden_on_moves_the_data_instead_of_starting_empty() {
    let unhardened = format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n{PG_ENV}x-nodus:\n  harden: false\n  settle: 0s\n"
    );
    let s = TestStack::new("harden-switch", &unhardened);
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 6, 20);
    s.nodus(&["verify", "--accept"]).ok();

    s.write_stack(&format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n{PG_ENV}x-nodus:\n  settle: 0s\n"
    ));
    // No terminal, no --yes: refused, the service keeps running on its data.
    let r = s.nodus(&["up"]);
    r.code(2);
    assert!(
        r.stderr.contains("--yes") && r.stderr.contains(&s.volume("db_data")),
        "{}",
        r.all()
    );
    assert_eq!(s.table_count("db", "app"), 6);
    assert!(!volume_exists(&s.volume("db_data")));

    let r = s.nodus(&["up", "--yes"]);
    r.ok();
    assert!(!r.all().contains("LOSS"), "{}", r.all());
    assert_eq!(s.table_count("db", "app"), 6);
    let mount = docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/var/lib/postgresql/data\"}}{{.Name}}{{end}}{{end}}",
        &s.container("db"),
    ]);
    assert_eq!(mount, s.volume("db_data"));
    s.nodus(&["verify"]).ok();
    s.nodus(&["down", "--no-snapshot"]).ok();
}
