//! `nodus render` through the real binary: the seed stacks and fixtures render, plain
//! `docker-compose config -q` accepts the result (no daemon needed), and the loading errors and
//! project-name rules show up on the command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs nodus in `cwd` with a clean compose-related environment.
fn nodus(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = Command::cargo_bin("nodus")
        .expect("nodus binary")
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("NODUS_STACK")
        .env_remove("NODUS_STATE_DIR")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("NODUS_POSTGRES_IMAGE")
        .env_remove("NODUS_REDIS_IMAGE")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run nodus");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(o: &Out) {
    assert_eq!(
        o.code, 0,
        "nodus failed\nstdout:\n{}\nstderr:\n{}",
        o.stdout, o.stderr
    );
}

/// `docker-compose -f FILE config` (v1, python: a strict YAML 1.1 reader and the compose schema).
fn compose_config(file: &Path, quiet: bool) -> String {
    let mut cmd = StdCommand::new("docker-compose");
    cmd.arg("-f").arg(file).arg("config");
    if quiet {
        cmd.arg("-q");
    }
    // compose reads .env from its project directory and COMPOSE_* from the environment
    cmd.env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_FILE");
    let out = cmd
        .output()
        .expect("run docker-compose (expected at /usr/bin/docker-compose)");
    assert!(
        out.status.success(),
        "docker-compose config rejected {}:\n{}\n--- file ---\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("rendered output is not YAML: {e}\n{text}"))
}

#[test]
fn seed_stacks_render_and_compose_accepts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("templates/stacks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let state = tmp.path().join(format!("state-{stem}"));
        let out_file = tmp.path().join(format!("{stem}.yaml"));
        let args = [
            "-f",
            path.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "render",
            "-o",
            out_file.to_str().unwrap(),
        ];
        let o = nodus(tmp.path(), &args, &[]);
        ok(&o);
        assert!(
            !o.stderr.contains("warning:"),
            "{stem}: unexpected warning:\n{}",
            o.stderr
        );
        compose_config(&out_file, true);

        // -o - prints the same document
        let o = nodus(
            tmp.path(),
            &[
                "-f",
                path.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "render",
                "-o",
                "-",
            ],
            &[],
        );
        ok(&o);
        assert_eq!(
            o.stdout,
            std::fs::read_to_string(&out_file).unwrap(),
            "{stem}"
        );
        let doc = yaml(&o.stdout);
        // every postgres in the seed stacks ends up hardened
        for (name, svc) in doc["services"].as_mapping().unwrap() {
            let image = svc["image"].as_str().unwrap_or_default();
            if image.contains("postgres") || image.contains("pgvector") {
                assert_eq!(
                    svc["stop_signal"].as_str(),
                    Some("SIGINT"),
                    "{stem} {name:?}"
                );
                assert!(svc["healthcheck"]["test"].is_sequence(), "{stem} {name:?}");
                let on_volume = svc["volumes"].as_sequence().unwrap().iter().any(|v| {
                    v["type"].as_str() == Some("volume")
                        && v["target"].as_str() == Some("/var/lib/postgresql/data")
                        && v["source"].is_string()
                });
                assert!(on_volume, "{stem} {name:?}: PGDATA not on a named volume");
            }
        }
    }
    assert_eq!(
        seen, 4,
        "templates/stacks/ should hold the four seed stacks"
    );
}

#[test]
fn seed_stacks_render_with_standin_images() {
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("NODUS_POSTGRES_IMAGE", "nodus/postgres-standin:15"),
        ("NODUS_REDIS_IMAGE", "nodus/redis-standin:7"),
    ];
    let path = repo().join("templates/stacks/dev.yaml");
    let o = nodus(
        tmp.path(),
        &[
            "-f",
            path.to_str().unwrap(),
            "--state-dir",
            tmp.path().to_str().unwrap(),
            "--json",
            "render",
            "-o",
            "-",
        ],
        &env,
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("render --json is JSON");
    assert_eq!(v["project"], "nodus-dev");
    assert_eq!(v["path"], "-");
    let doc = yaml(v["yaml"].as_str().unwrap());
    assert_eq!(
        doc["services"]["postgres"]["image"].as_str(),
        Some("nodus/postgres-standin:15")
    );
    let stateful = v["stateful"].as_array().unwrap();
    let pg = stateful
        .iter()
        .find(|s| s["service"] == "postgres")
        .expect("postgres is stateful");
    assert_eq!(pg["kind"], "postgres");
    assert_eq!(pg["volume_key"], "pgdata");
    assert_eq!(pg["volume_name"], "nodus-dev_pgdata");
    let redis = stateful
        .iter()
        .find(|s| s["service"] == "redis")
        .expect("redis is stateful");
    assert_eq!(redis["kind"], "redis");
    assert_eq!(redis["data_dir"], "/data");
}

#[test]
fn anonymous_pgdata_becomes_a_named_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("anon");
    copy_dir(&fixture("anon-postgres"), &dir);
    // default output path: .nodus/compose.yaml beside the discovered compose.yaml
    let o = nodus(&dir, &["-v", "render"], &[]);
    ok(&o);
    let rendered = dir.join(".nodus/compose.yaml");
    assert!(rendered.is_file(), "render must write .nodus/compose.yaml");
    let mode = std::fs::metadata(&rendered).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the rendered file may hold passwords");
    assert!(
        o.stderr.contains(".nodus/compose.yaml"),
        "status line names the file:\n{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("anonymous volume"),
        "-v shows the fix:\n{}",
        o.stderr
    );

    let text = std::fs::read_to_string(&rendered).unwrap();
    assert!(text.starts_with("# Generated by nodus"), "{text}");
    let doc = yaml(&text);
    let vols = doc["services"]["db"]["volumes"].as_sequence().unwrap();
    assert_eq!(vols.len(), 1, "{text}");
    assert_eq!(vols[0]["type"].as_str(), Some("volume"));
    assert_eq!(vols[0]["source"].as_str(), Some("db_data"));
    assert_eq!(vols[0]["target"].as_str(), Some("/var/lib/postgresql/data"));
    assert!(doc["volumes"]["db_data"].is_mapping(), "{text}");

    // plain compose run on .nodus/compose.yaml picks the same project from the .env beside it
    let dotenv = std::fs::read_to_string(dir.join(".nodus/.env")).unwrap();
    assert!(
        dotenv.lines().any(|l| l == "COMPOSE_PROJECT_NAME=anon"),
        "{dotenv}"
    );

    // compose resolves the file from inside .nodus/
    let cfg = yaml(&compose_config(&rendered, false));
    assert_eq!(
        cfg["services"]["db"]["volumes"][0]["source"].as_str(),
        Some("db_data")
    );
    assert_eq!(
        cfg["services"]["db"]["stop_signal"].as_str(),
        Some("SIGINT")
    );
}

#[test]
fn relative_paths_env_files_and_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    copy_dir(&fixture("app"), &dir);
    let dir = dir.canonicalize().unwrap();
    let o = nodus(&dir, &["render"], &[("GREETING", "from-process")]);
    ok(&o);
    // the bind-mounted PGDATA is kept, with a warning saying how to migrate
    assert!(o.stderr.contains("warning: db:"), "{}", o.stderr);
    assert!(o.stderr.contains("bind mount"), "{}", o.stderr);
    assert!(o.stderr.contains("1 warning"), "{}", o.stderr);

    let rendered = dir.join(".nodus/compose.yaml");
    let text = std::fs::read_to_string(&rendered).unwrap();
    let doc = yaml(&text);
    let db = &doc["services"]["db"];
    let init = dir.join("init");
    let pgdata = dir.join("pgdata");
    assert_eq!(
        db["volumes"][0]["source"].as_str(),
        Some(init.to_str().unwrap()),
        "{text}"
    );
    assert_eq!(db["volumes"][0]["read_only"].as_bool(), Some(true));
    assert_eq!(db["volumes"][1]["type"].as_str(), Some("bind"));
    assert_eq!(
        db["volumes"][1]["source"].as_str(),
        Some(pgdata.to_str().unwrap())
    );
    // .env feeds interpolation; env_file is merged, explicit environment wins
    assert_eq!(db["image"].as_str(), Some("postgres:15-alpine"));
    assert_eq!(
        db["environment"]["POSTGRES_DB"].as_str(),
        Some("fixture_db")
    );
    assert_eq!(db["environment"]["POSTGRES_USER"].as_str(), Some("fixture"));
    assert_eq!(
        db["environment"]["POSTGRES_PASSWORD"].as_str(),
        Some("explicit-wins")
    );
    assert_eq!(
        db["env_file"][0].as_str(),
        Some(dir.join("db.env").to_str().unwrap())
    );
    // the redis anonymous volume in long syntax became named
    assert_eq!(
        doc["services"]["cache"]["volumes"][0]["source"].as_str(),
        Some("cache_data")
    );
    // override file merged: ports concatenated, environment added; unknown keys kept
    let web = &doc["services"]["web"];
    assert_eq!(web["ports"].as_sequence().unwrap().len(), 2, "{text}");
    assert_eq!(web["environment"]["DEBUG"].as_str(), Some("yes"));
    assert_eq!(
        web["build"].as_str(),
        Some(dir.join("web").to_str().unwrap())
    );
    assert_eq!(web["x-team"].as_str(), Some("frontend"));
    assert_eq!(
        web["deploy"]["resources"]["limits"]["memory"].as_str(),
        Some("256m")
    );
    // process environment beats .env; `$$` stays escaped for compose
    assert!(text.contains("echo $$HOME from-process"), "{text}");

    // docker-compose reading the file from .nodus/ sees the same absolute paths and literal `$`
    let cfg = yaml(&compose_config(&rendered, false));
    let cdb = &cfg["services"]["db"];
    let sources: Vec<&str> = cdb["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["source"].as_str())
        .collect();
    assert!(sources.contains(&init.to_str().unwrap()), "{sources:?}");
    assert!(sources.contains(&pgdata.to_str().unwrap()), "{sources:?}");
    assert_eq!(
        cfg["services"]["web"]["build"]["context"].as_str(),
        Some(dir.join("web").to_str().unwrap())
    );
    let cmd = &cfg["services"]["web"]["command"];
    assert!(format!("{cmd:?}").contains("$$HOME"), "{cmd:?}");
}

#[test]
fn required_variable_error_names_file_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    copy_dir(&fixture("app"), &dir);
    std::fs::write(dir.join(".env"), "PG_IMAGE=postgres:15\n").unwrap();
    let o = nodus(&dir, &["render"], &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("services.db.environment.POSTGRES_DB"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("set APP_DB in .env"), "{}", o.stderr);
    // nothing was rendered, and the project name was not remembered
    assert!(!dir.join(".nodus/compose.yaml").exists());
    assert!(!dir.join(".nodus/project").exists());

    std::fs::write(dir.join(".env"), "APP_DB=x\nthis is not a variable\n").unwrap();
    let o = nodus(&dir, &["render"], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(".env:2:"), "{}", o.stderr);
}

#[test]
fn bad_yaml_reports_file_line_and_column() {
    let file = fixture("bad-yaml/compose.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let o = nodus(
        tmp.path(),
        &[
            "-f",
            file.to_str().unwrap(),
            "--state-dir",
            tmp.path().to_str().unwrap(),
            "render",
            "-o",
            "-",
        ],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let want = format!("{}:6:", file.display());
    assert!(
        o.stderr.contains(&want),
        "expected {want}LINE:COL in:\n{}",
        o.stderr
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn unknown_xnodus_key_lists_the_valid_ones() {
    let file = fixture("bad-xnodus/compose.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let o = nodus(
        tmp.path(),
        &[
            "-f",
            file.to_str().unwrap(),
            "--state-dir",
            tmp.path().to_str().unwrap(),
            "render",
            "-o",
            "-",
        ],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("{}:9:", file.display())),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("extentions"), "{}", o.stderr);
    for alt in ["`name`", "`owner`", "`extensions`"] {
        assert!(o.stderr.contains(alt), "{alt} missing:\n{}", o.stderr);
    }
}

fn project_of(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, Out) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["render", "-o", "-"]);
    let o = nodus(dir, &all, env);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    (v["project"].as_str().unwrap().to_string(), o)
}

#[test]
fn project_name_flag_env_name_key_and_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Stack.Dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  db:\n    image: postgres:15\n",
    )
    .unwrap();
    let state = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();

    let s = state("s1");
    assert_eq!(project_of(&dir, &["--state-dir", &s], &[]).0, "mystackdir");
    let s = state("s2");
    assert_eq!(
        project_of(
            &dir,
            &["--state-dir", &s],
            &[("COMPOSE_PROJECT_NAME", "FromEnv")]
        )
        .0,
        "fromenv"
    );
    let s = state("s3");
    assert_eq!(
        project_of(
            &dir,
            &["--state-dir", &s, "-p", "flag_wins"],
            &[("COMPOSE_PROJECT_NAME", "x")]
        )
        .0,
        "flag_wins"
    );

    std::fs::write(
        dir.join("compose.yaml"),
        "name: Named-Stack\nservices:\n  db:\n    image: postgres:15\n",
    )
    .unwrap();
    let s = state("s4");
    assert_eq!(project_of(&dir, &["--state-dir", &s], &[]).0, "named-stack");
    // COMPOSE_PROJECT_NAME in .env counts like the environment variable
    std::fs::write(dir.join(".env"), "COMPOSE_PROJECT_NAME=dotenv_name\n").unwrap();
    let s = state("s5");
    assert_eq!(project_of(&dir, &["--state-dir", &s], &[]).0, "dotenv_name");

    // a name with nothing usable left is an error
    let s = state("s6");
    let o = nodus(
        &dir,
        &["--state-dir", &s, "-p", "!!!", "render", "-o", "-"],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("invalid project name"), "{}", o.stderr);
}

#[test]
fn renaming_the_project_warns_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    copy_dir(&fixture("anon-postgres"), &dir);
    // `up` under nt-stack-first recorded the name (only commands that create resources do).
    let first = nodus(&dir, &["-p", "nt-stack-first", "render"], &[]);
    ok(&first);
    std::fs::write(dir.join(".nodus/project"), "nt-stack-first\n").unwrap();
    assert!(
        !first.stderr.contains("project name changed"),
        "{}",
        first.stderr
    );
    let again = nodus(&dir, &["-p", "nt-stack-first", "render"], &[]);
    ok(&again);
    assert!(
        !again.stderr.contains("project name changed"),
        "{}",
        again.stderr
    );

    let renamed = nodus(&dir, &["-q", "-p", "nt-stack-second", "render"], &[]);
    ok(&renamed);
    let err = &renamed.stderr;
    assert!(
        err.contains("project name changed from nt-stack-first to nt-stack-second"),
        "warning shown even with -q:\n{err}"
    );
    assert!(err.contains("NEW, EMPTY volumes"), "{err}");
    assert!(
        err.contains("nt-stack-first_db_data → nt-stack-second_db_data"),
        "{err}"
    );
    assert!(err.contains("run with -p nt-stack-first"), "{err}");
    // `render` creates no resources: it does not record the new name, so the warning stays
    // until `up` runs under it, and the real name is still quiet.
    let o = nodus(&dir, &["-p", "nt-stack-second", "render"], &[]);
    assert!(o.stderr.contains("project name changed"), "{}", o.stderr);
    let o = nodus(&dir, &["-p", "nt-stack-first", "render"], &[]);
    assert!(!o.stderr.contains("project name changed"), "{}", o.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join(".nodus/project")).unwrap(),
        "nt-stack-first\n"
    );
}

#[test]
fn json_output_lists_findings_and_stateful_services() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("anon");
    copy_dir(&fixture("anon-postgres"), &dir);
    let o = nodus(&dir, &["--json", "render"], &[]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON on stdout");
    assert!(
        v["path"].as_str().unwrap().ends_with(".nodus/compose.yaml"),
        "{v}"
    );
    let findings = v["findings"].as_array().unwrap();
    assert!(findings.iter().all(|f| f["level"] == "fixed"), "{v}");
    assert!(findings
        .iter()
        .any(|f| f["message"].as_str().unwrap().contains("anonymous volume")));
    assert_eq!(v["stateful"][0]["service"], "db");
    assert_eq!(v["stateful"][0]["volume_name"], "anon_db_data");
    assert!(
        v.get("yaml").is_none(),
        "the document is only inlined with -o -"
    );
}

#[test]
fn no_stack_file_is_an_error_naming_the_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let o = nodus(tmp.path(), &["render"], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no stack file found"), "{}", o.stderr);
    assert!(o.stderr.contains("compose.yaml"), "{}", o.stderr);
}
