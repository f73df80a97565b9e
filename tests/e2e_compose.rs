//! Compose habits end to end: the real binary against the real engine (stand-in images).
//! `up -d`, `ps`, `port`, `logs` (tail, follow + SIGINT), `exec` (exit code, stdin), `run --rm`,
//! `psql`, `redis-cli`, `top`, `config` (accepted by docker-compose), `--remove-orphans`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn stack_with_cache() -> String {
    pg_stack(&format!("  cache:\n    image: {REDIS_IMAGE}\n"), "")
}

/// nodus with piped stdin (`input`), like `echo input | nodus ...`.
fn nodus_stdin(s: &TestStack, args: &[&str], input: &str) -> Res {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .args(["-f", s.stack_file().to_str().unwrap(), "-p", &s.project])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nodus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Res {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn up_detached_then_ps_port_logs_exec_run_psql_config() {
    let s = TestStack::new("habits", &stack_with_cache());

    // `up -d` is accepted (nodus always detaches) and says "baseline" once, plurals right.
    let up = s.nodus(&["up", "-d", "--wait"]);
    up.ok();
    assert_eq!(
        up.stderr.matches("recorded as the baseline").count(),
        1,
        "{}",
        up.stderr
    );
    assert!(up.stderr.contains("2 volumes created"), "{}", up.stderr);

    // ps: compose's columns, IDs with -q, JSON.
    let ps = s.nodus(&["ps"]);
    ps.ok();
    assert!(ps.stdout.starts_with("NAME"), "{}", ps.stdout);
    assert!(ps.stdout.contains(&s.container("db")), "{}", ps.stdout);
    // nodus' readiness is the service answering (SELECT 1, PING), which may come before the
    // engine's first health check: compose's status column says either.
    assert!(
        ps.stdout.contains("running (healthy)") || ps.stdout.contains("running (starting)"),
        "{}",
        ps.stdout
    );
    let ids = s.nodus(&["-q", "ps"]);
    let db_id = docker_ok(&["inspect", "-f", "{{.Id}}", &s.container("db")]);
    assert!(ids.stdout.lines().any(|l| l == db_id), "{}", ids.stdout);
    let json = s.nodus(&["ps", "--format", "json"]).one_json();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");

    // port: the published address, as docker sees it.
    let port = s.nodus(&["port", "db", "5432"]);
    port.ok();
    let docker_port = docker_ok(&["port", &s.container("db"), "5432/tcp"]);
    assert_eq!(port.stdout.trim(), docker_port.lines().next().unwrap());
    s.nodus(&["port", "db", "9999"]).code(1);

    // logs --tail 5 SERVICE: that service's last lines, prefixed.
    let logs = s.nodus(&["logs", "--tail", "5", "db"]);
    logs.ok();
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", logs.stdout);
    assert!(
        lines.iter().all(|l| l.starts_with("db-1 | ")),
        "{}",
        logs.stdout
    );
    let last = docker(&["logs", "--tail", "1", &s.container("db")]);
    let last = format!(
        "{}{}",
        String::from_utf8_lossy(&last.stdout),
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(lines[4].trim_start_matches("db-1 | "), last.trim_end());
    let bare = s.nodus(&["logs", "--tail", "2", "--no-log-prefix", "cache"]);
    assert_eq!(bare.stdout.lines().count(), 2, "{}", bare.stdout);
    assert!(!bare.stdout.contains(" | "), "{}", bare.stdout);

    // exec: the command's exit code is nodus' exit code; stdin is streamed.
    s.nodus(&["exec", "db", "sh", "-c", "exit 7"]).code(7);
    s.nodus(&["exec", "-T", "db", "true"]).ok();
    let cat = nodus_stdin(
        &s,
        &["exec", "-T", "db", "cat"],
        "hello through stdin\nsecond line\n",
    );
    cat.ok();
    assert_eq!(cat.stdout, "hello through stdin\nsecond line\n");
    let env = s.nodus(&[
        "exec",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "db",
        "sh",
        "-c",
        "echo $GREETING $(pwd)",
    ]);
    assert_eq!(env.stdout.trim(), "hi /tmp", "{}", env.all());
    // An unknown service on the command line is a usage error.
    s.nodus(&["exec", "nope", "true"]).code(2);

    // psql -c and psql -- ARGS, as the configured user, in the configured database.
    let q = s.nodus(&["psql", "-c", "select 1"]);
    q.ok();
    assert!(q.stdout.contains("(1 row)"), "{}", q.all());
    let q = s.nodus(&["psql", "--", "-Atc", "select current_database()"]);
    assert_eq!(q.stdout.trim(), "app", "{}", q.all());
    let piped = nodus_stdin(&s, &["psql", "--", "-At"], "select 40 + 2;\n");
    assert_eq!(piped.stdout.trim(), "42", "{}", piped.all());
    s.nodus(&["psql", "-c", "select nope"]).code(1);
    s.nodus(&["psql", "cache"]).code(2);

    // redis-cli on the redis service.
    let pong = s.nodus(&["redis-cli", "--", "ping"]);
    assert_eq!(pong.stdout.trim(), "PONG", "{}", pong.all());

    // top: the processes of each running container.
    let top = s.nodus(&["top", "db"]);
    top.ok();
    assert!(top.stdout.contains("postgres"), "{}", top.stdout);

    // run --rm: a one-off container, gone afterwards, exit code passed through, and never on
    // the database's data volume (its data dir is empty in the one-off).
    let oneoff_filter = format!("label=com.docker.compose.project={}", s.project);
    let r = s.nodus(&[
        "run",
        "--rm",
        "db",
        "sh",
        "-c",
        "ls -A /var/lib/postgresql/data | wc -l; exit 3",
    ]);
    r.code(3);
    assert_eq!(r.stdout.trim(), "0", "{}", r.all());
    let left = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &oneoff_filter,
        "--filter",
        "label=com.docker.compose.oneoff=True",
        "-q",
    ]);
    assert!(left.is_empty(), "one-off containers left: {left}");
    // The service's own container is untouched and still has its data.
    assert_eq!(s.psql("db", "app", "select 1"), "1");
    // stdin reaches a one-off without a TTY (`run -T db psql < dump.sql`), and its end ends
    // the process' input.
    let piped = nodus_stdin(&s, &["run", "--rm", "-T", "cache", "wc", "-l"], "a\nb\nc\n");
    piped.ok();
    assert_eq!(piped.stdout.trim(), "3", "{}", piped.all());
    // Asking for the data volume while the database runs is refused.
    s.nodus(&["run", "--rm", "--with-data", "db", "true"])
        .code(1);
    // Without --rm the container stays (compose's default), marked one-off.
    let kept = s.nodus(&[
        "run",
        "--name",
        &format!("{}-keep", s.project),
        "cache",
        "true",
    ]);
    kept.ok();
    let oneoff = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.docker.compose.oneoff\"}}",
        &format!("{}-keep", s.project),
    ]);
    assert_eq!(oneoff, "True");
    // One-offs are not the service's container.
    let ps = s.nodus(&["ps", "-a"]);
    assert!(!ps.stdout.contains("-keep"), "{}", ps.stdout);

    // config: the merged, interpolated model that docker-compose accepts from stdin.
    for args in [&["config"][..], &["config", "--hardened"][..]] {
        let cfg = s.nodus(args);
        cfg.ok();
        assert!(cfg.stdout.contains("services:"), "{}", cfg.stdout);
        let mut dc = Command::new("docker-compose")
            .args(["-p", &s.project, "-f", "-", "config", "-q"])
            .current_dir(s.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-compose");
        dc.stdin
            .take()
            .unwrap()
            .write_all(cfg.stdout.as_bytes())
            .unwrap();
        let out = dc.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker-compose rejected `nodus {args:?}`: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cfg.stdout
        );
    }
    let hardened = s.nodus(&["config", "--hardened"]).stdout;
    assert!(hardened.contains("stop_signal: SIGINT"), "{hardened}");
    let plain = s.nodus(&["config"]).stdout;
    assert!(!plain.contains("stop_signal"), "{plain}");
    assert_eq!(s.nodus(&["config", "--services"]).stdout, "db\ncache\n");
}

#[test]
fn logs_follow_streams_new_lines_and_ends_on_sigint() {
    let s = TestStack::new("follow", &pg_stack("", ""));
    let up = s.nodus(&["up"]);
    up.ok();
    // One volume: singular.
    assert!(up.stderr.contains("1 volume created"), "{}", up.stderr);

    let mut child = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .args(["-f", s.stack_file().to_str().unwrap(), "-p", &s.project])
        .args(["logs", "-f", "--tail", "0", "db"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nodus logs -f");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    // With --tail 0 only lines written after it started appear: write marker lines (a failing
    // query is logged by the server) until one comes through.
    let mut n = 0;
    let mut marker_seen = |tag: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            n += 1;
            let marker = format!("{tag}_{n}");
            let _ = docker(&[
                "exec",
                &s.container("db"),
                "psql",
                "-U",
                "postgres",
                "-c",
                &format!("select {marker}"),
            ]);
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
                if line.contains(&format!("{tag}_")) {
                    assert!(line.starts_with("db-1 | "), "{line}");
                    return true;
                }
            }
        }
        false
    };
    assert!(
        marker_seen("follow_marker"),
        "no marker line streamed by logs -f"
    );
    // The service is recreated (a new container, as `watch` or a changed stack does): logs -f
    // picks the new container up, as compose does.
    s.nodus(&["up", "--force-recreate", "db"]).ok();
    assert!(
        marker_seen("recreated_marker"),
        "logs -f did not follow the recreated container"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "logs -f ended by itself"
    );

    // Ctrl-C ends it cleanly.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "logs -f did not end on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "exit after SIGINT: {status:?}");
}

#[test]
fn remove_orphans_stops_a_deleted_service_guarded() {
    let s = TestStack::new("orphans", &stack_with_cache());
    s.nodus(&["up"]).ok();
    docker_ok(&[
        "exec",
        &s.container("cache"),
        "redis-cli",
        "set",
        "k1",
        "v1",
    ]);

    // `cache` is deleted from the file: a plain `up` leaves it (and says so).
    s.write_stack(&pg_stack("", ""));
    let up = s.nodus(&["up"]);
    up.ok();
    assert!(up.stderr.contains("orphan"), "{}", up.stderr);
    assert!(docker(&["inspect", &s.container("cache")]).status.success());

    // --remove-orphans stops it (census first) and removes it.
    let up = s.nodus(&["up", "--remove-orphans"]);
    up.ok();
    assert!(
        !docker(&["inspect", &s.container("cache")]).status.success(),
        "orphan container still exists: {}",
        up.stderr
    );
    assert!(up.stderr.contains("removed"), "{}", up.stderr);
    // The guard counted it before the stop: a pre-stop ledger entry of this `up` holds the
    // orphan's census with its key.
    let ledger: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join(".nodus/ledger.json")).expect("ledger"),
    )
    .expect("ledger JSON");
    let entries = ledger["entries"].as_array().expect("entries").clone();
    let pre = entries
        .iter()
        .rev()
        .find(|e| e["transition"] == "up" && e["phase"] == "pre")
        .unwrap_or_else(|| panic!("no pre-stop entry of up: {ledger}"));
    let cache = &pre["census"]["services"]["cache"];
    assert_eq!(cache["kind"], "redis", "{pre}");
    assert!(cache.to_string().contains("1"), "{cache}");
    // `down --remove-orphans` is accepted.
    s.nodus(&["down", "--remove-orphans"]).ok();
}

#[test]
fn verbose_logs_are_plain_text_when_not_a_terminal() {
    let s = TestStack::new("plainlogs", &pg_stack("", ""));
    // No NO_COLOR here: stderr being a pipe must be enough.
    let out = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env_remove("NO_COLOR")
        .args([
            "-f",
            s.stack_file().to_str().unwrap(),
            "-p",
            &s.project,
            "-vv",
            "ps",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("DEBUG"), "no debug logs with -vv: {err}");
    assert!(
        !err.contains('\x1b'),
        "ANSI codes in logs to a pipe: {err:?}"
    );
}
