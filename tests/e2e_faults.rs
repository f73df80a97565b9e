//! Fault and load tests of nodus' own promises (real engine): many guarded cycles with a writer
//! committing rows between them, `docker kill` during committed writes, UNLOGGED tables emptied
//! by crash recovery, and the engine becoming unreachable in the middle of `up`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Commits `n` rows, one transaction each, through psql in the container; returns how many
/// commits were acknowledged.
fn commit_rows(s: &TestStack, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let out = docker(&[
            "exec",
            &s.container("db"),
            "psql",
            "-U",
            "postgres",
            "-d",
            "app",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atqc",
            "INSERT INTO ledger (note) VALUES ('w')",
        ]);
        if out.status.success() {
            ok += 1;
        }
    }
    ok
}

fn ledger_rows(s: &TestStack) -> usize {
    s.psql("db", "app", "SELECT count(*) FROM ledger")
        .parse()
        .unwrap()
}

/// `n` guarded down/up cycles; between them a writer commits rows. Every committed row must be
/// there after each up, and nodus must neither report a loss nor warn about one.
fn guarded_cycles(name: &str, n: usize) {
    let s = TestStack::new(name, &pg_stack("", "x-nodus:\n  settle: 1s\n"));
    s.nodus(&["up", "--timeout", "300s"]).ok();
    s.psql(
        "db",
        "app",
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())",
    );
    let mut committed = 0;
    let mut false_alarms = 0;
    let started = Instant::now();
    for i in 1..=n {
        committed += commit_rows(&s, 5);
        let d = s.nodus(&["down", "--no-snapshot"]);
        d.ok();
        let u = s.nodus(&["up", "--timeout", "300s"]);
        u.ok();
        for r in [&d, &u] {
            if r.stderr.contains("loss")
                || r.stderr.contains("missing")
                || r.stderr.contains("warning")
            {
                false_alarms += 1;
                eprintln!("cycle {i}: unexpected warning:\n{}", r.stderr);
            }
        }
        let rows = ledger_rows(&s);
        assert_eq!(rows, committed, "cycle {i}: committed rows lost");
    }
    assert_eq!(false_alarms, 0, "false alarms");
    eprintln!(
        "guarded_cycles: {n} cycles, {committed} committed rows, 0 lost, 0 false alarms, {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn ten_guarded_cycles_with_a_writer_lose_nothing() {
    guarded_cycles("cyc10", 10);
}

/// The long version (run by hand; the result is in the README):
/// `cargo test --test e2e_faults hundred -- --ignored --nocapture`
#[test]
#[ignore]
fn hundred_guarded_cycles_with_a_writer_lose_nothing() {
    guarded_cycles("cyc100", 100);
}

#[test]
fn docker_kill_during_committed_writes_then_up_reports_crash_recovery_and_keeps_every_row() {
    let s = TestStack::new("kill", &pg_stack("", "x-nodus:\n  settle: 1s\n"));
    s.nodus(&["up", "--timeout", "300s"]).ok();
    s.psql(
        "db",
        "app",
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())",
    );
    // A writer committing one row per transaction until the server goes away.
    let container = s.container("db");
    let writer = std::thread::spawn(move || {
        let mut acked = 0usize;
        loop {
            let out = docker(&[
                "exec",
                &container,
                "psql",
                "-U",
                "postgres",
                "-d",
                "app",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atqc",
                "INSERT INTO ledger (note) VALUES ('w')",
            ]);
            if !out.status.success() {
                return acked;
            }
            acked += 1;
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    docker_ok(&["kill", &s.container("db")]);
    let acked = writer.join().unwrap();
    assert!(acked > 0, "the writer committed nothing before the kill");

    let u = s.nodus(&["up", "--timeout", "300s"]);
    u.ok();
    assert!(
        u.stderr.contains("did not shut down cleanly"),
        "unclean shutdown not reported:\n{}",
        u.stderr
    );
    assert!(
        u.stderr.contains("crash recovery"),
        "crash recovery not reported:\n{}",
        u.stderr
    );
    let rows = ledger_rows(&s);
    assert!(
        rows >= acked,
        "{acked} commits acknowledged, {rows} rows after recovery"
    );
    s.nodus(&["verify"]).ok();
}

/// A running stack whose `app` database holds an UNLOGGED table `sessions` (50 rows) and a
/// logged table `users` (20 rows).
fn unlogged_stack(name: &str) -> TestStack {
    let s = TestStack::new(name, &pg_stack("", "x-nodus:\n  settle: 1s\n"));
    s.nodus(&["up", "--timeout", "300s"]).ok();
    s.psql(
        "db",
        "app",
        "CREATE UNLOGGED TABLE sessions (id int PRIMARY KEY); INSERT INTO sessions SELECT generate_series(1, 50); \
         CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users SELECT generate_series(1, 20);",
    );
    s
}

/// Issue 11: postgres killed outside nodus (`docker kill`) after the last census: the next `up`
/// finds the unclean shutdown before starting it, crash recovery empties the UNLOGGED table, and
/// that is a loss (exit 3) naming UNLOGGED and the unclean shutdown, while the logged table keeps
/// its rows and is not blamed.
#[test]
fn unlogged_table_emptied_after_an_outside_kill_is_a_loss() {
    let s = unlogged_stack("unlogkill");
    // A clean down and up: the census after this start holds both tables with their rows
    // (a clean shutdown writes UNLOGGED tables out, so they survive it).
    s.nodus(&["down", "--no-snapshot"]).ok();
    s.nodus(&["up", "--timeout", "300s"]).ok();
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM sessions"), "50");
    // The services delete some rows of a logged table: their own doing, not a loss.
    s.psql("db", "app", "DELETE FROM users WHERE id > 18");

    docker_ok(&["kill", &s.container("db")]);
    let u = s.nodus(&["up", "--timeout", "300s"]);
    u.code(3);
    let text = u.stderr.to_lowercase();
    assert!(text.contains("did not shut down cleanly"), "{}", u.stderr);
    assert!(
        text.contains("unlogged"),
        "cause does not say UNLOGGED:\n{}",
        u.stderr
    );
    assert!(text.contains("unclean shutdown"), "{}", u.stderr);
    assert!(u.stderr.contains("public.sessions 50 → 0"), "{}", u.stderr);
    // the logged table kept every committed row; its deletes are only mentioned as a warning
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM users"), "18");
    assert!(
        !u.stderr
            .lines()
            .any(|l| l.contains("error") && l.contains("users")),
        "{}",
        u.stderr
    );
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM sessions"), "0");
}

#[test]
// Racy, so not in the default run: `down --timeout 0s` sends SIGKILL right after SIGINT, and when
// postgres finishes its shutdown checkpoint first the control file says "shut down", no crash
// recovery runs and the UNLOGGED table keeps its rows (seen once in three full runs). The
// deterministic version is `unlogged_table_emptied_after_an_outside_kill_is_a_loss`.
#[ignore = "racy kill timing; see the comment"]
fn unlogged_table_emptied_by_crash_recovery_is_named_as_such() {
    let s = unlogged_stack("unlogged");
    // A grace period of 0: the engine kills postgres right after the stop signal.
    let d = s.nodus(&["down", "--no-snapshot", "--timeout", "0s"]);
    d.ok();
    assert!(
        d.stderr.contains("did not shut down cleanly"),
        "{}",
        d.stderr
    );
    let u = s.nodus(&["up", "--timeout", "300s"]);
    u.code(3);
    let text = u.stderr.to_lowercase();
    assert!(
        text.contains("unlogged"),
        "cause does not say UNLOGGED:\n{}",
        u.stderr
    );
    assert!(
        text.contains("shut down cleanly") || text.contains("unclean"),
        "cause does not say unclean shutdown:\n{}",
        u.stderr
    );
    assert!(u.stderr.contains("sessions"), "{}", u.stderr);
    // the logged table kept every row
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM users"), "20");
}

/// A unix-socket proxy to the engine that the test can cut: every connection is forwarded to
/// the real socket until a client request matches `trigger`; then that request is dropped, every
/// connection is closed and the socket stops existing (the engine became unreachable).
struct CuttableProxy {
    dir: tempfile::TempDir,
    cut: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
}

impl CuttableProxy {
    fn start(trigger: impl Fn(&str) -> bool + Send + Sync + 'static) -> CuttableProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let trigger = Arc::new(trigger);
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (c, r, o) = (cut.clone(), requests.clone(), open.clone());
        std::thread::spawn(move || loop {
            if c.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&path);
                for s in o.lock().unwrap().drain(..) {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).unwrap();
                    let upstream = UnixStream::connect("/var/run/docker.sock").unwrap();
                    o.lock().unwrap().push(client.try_clone().unwrap());
                    o.lock().unwrap().push(upstream.try_clone().unwrap());
                    let (mut cr, mut uw) =
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let (mut ur, mut cw) = (upstream, client);
                    let (c2, r2, t2) = (c.clone(), r.clone(), trigger.clone());
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buf[..n]);
                            for line in text.lines().filter(|l| l.ends_with("HTTP/1.1")) {
                                r2.fetch_add(1, Ordering::SeqCst);
                                if t2(line) {
                                    c2.store(true, Ordering::SeqCst);
                                }
                            }
                            if c2.load(Ordering::SeqCst) {
                                let _ = cr.shutdown(std::net::Shutdown::Both);
                                let _ = uw.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            if uw.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut ur, &mut cw);
                        let _ = cw.shutdown(std::net::Shutdown::Write);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return,
            }
        });
        CuttableProxy { dir, cut, requests }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.path().join("engine.sock").display())
    }
}

#[test]
fn engine_unreachable_in_the_middle_of_up_exits_4_and_the_next_up_finishes_the_job() {
    let cache = format!(
        "  cache:\n    image: {REDIS_IMAGE}\n    depends_on:\n      db:\n        condition: service_healthy\n"
    );
    let s = TestStack::new("cut", &pg_stack(&cache, "x-nodus:\n  settle: 1s\n"));
    // Data first, so "nothing is lost" means something.
    s.nodus(&["up", "db", "--timeout", "300s"]).ok();
    s.create_tables("db", "app", 3, 10);
    s.nodus(&["down", "--no-snapshot"]).ok();

    // Cut the engine when nodus starts the second container (db is up, cache created, not started).
    let starts = Arc::new(AtomicU64::new(0));
    let st = starts.clone();
    let proxy = CuttableProxy::start(move |line| {
        let is_start = line.starts_with("POST ")
            && line.contains("/containers/")
            && line
                .split_whitespace()
                .nth(1)
                .is_some_and(|p| p.split('?').next().unwrap_or_default().ends_with("/start"));
        is_start && st.fetch_add(1, Ordering::SeqCst) + 1 == 2
    });
    let host = proxy.docker_host();
    let r = s.nodus_env(
        &s.project.clone(),
        &[("DOCKER_HOST", host.as_str())],
        &["up", "--timeout", "300s"],
    );
    assert!(
        proxy.cut.load(Ordering::SeqCst),
        "the proxy never cut ({} requests)",
        proxy.requests.load(Ordering::SeqCst)
    );
    r.code(4);
    assert!(
        r.stderr.contains("hint:") && r.stderr.to_lowercase().contains("engine"),
        "no clear error:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    // `status` says which command did not finish, where and why.
    let st = s.nodus(&["status"]);
    st.ok();
    assert!(
        st.stderr
            .contains("did not finish: failed during starting cache"),
        "{}",
        st.stderr
    );

    // The next run (engine reachable again) reports what was left half-done, finishes it, and
    // says so; nothing is lost.
    let again = s.nodus(&["up", "--timeout", "300s"]);
    again.ok();
    assert!(
        again.stderr.contains("up --timeout 300s` (started ")
            && again
                .stderr
                .contains("did not finish: failed during starting cache"),
        "the unfinished run is not reported:\n{}",
        again.stderr
    );
    assert!(again.stderr.contains("left is settled"), "{}", again.stderr);
    // and once settled, nothing is reported any more
    let st = s.nodus(&["status"]);
    assert!(!st.stderr.contains("did not finish"), "{}", st.stderr);
    // db kept running from the interrupted run; cache, created but never started, is started
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l.contains("cache") && l.contains("started")),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("lost"), "{}", again.stderr);
    let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &s.container("cache")]);
    assert_eq!(state, "true");
    assert_eq!(s.table_count("db", "app"), 3);
    assert_eq!(s.psql("db", "app", "SELECT count(*) FROM t3"), "10");
}
