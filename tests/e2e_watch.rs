//! End-to-end tests of `nodus watch`: the real binary in the background against the real engine,
//! files edited in the stack directory, results checked with the docker CLI. Waits poll with
//! generous deadlines (the machine may be loaded); no fixed sleep is an assertion.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LOOP: &str = "[\"sh\", \"-c\", \"trap 'exit 0' TERM INT; while true; do sleep 1; done\"]";
const WAIT: Duration = Duration::from_secs(180);

/// Stateless services on the redis stand-in image (busybox inside), marked `kind: other`.
fn apps(names: &[&str], extra: &str, x_watch: &str) -> String {
    let mut s = String::from("services:\n");
    for n in names {
        s.push_str(&format!(
            "  {n}:\n    image: {REDIS_IMAGE}\n    entrypoint: {LOOP}\n    environment:\n      MODE: one\n"
        ));
        if *n == "app" {
            s.push_str(extra);
        }
    }
    s.push_str("x-nodus:\n  settle: 1s\n  services:\n");
    for n in names {
        s.push_str(&format!("    {n}: {{ kind: other, stateful: false }}\n"));
    }
    s.push_str(x_watch);
    s
}

struct Watcher {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    _logs: tempfile::TempDir,
}

impl Watcher {
    fn start(s: &TestStack, args: &[&str]) -> Watcher {
        let logs = tempfile::tempdir().unwrap();
        let out = logs.path().join("stdout");
        let err = logs.path().join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_nodus"))
            .current_dir(s.path())
            .env("NO_COLOR", "1")
            .env_remove("NODUS_STACK")
            .env_remove("COMPOSE_PROJECT_NAME")
            .args([
                "-f",
                s.stack_file().to_str().unwrap(),
                "-p",
                &s.project,
                "watch",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn nodus watch");
        let w = Watcher {
            child: Some(child),
            out,
            err,
            _logs: logs,
        };
        w.wait_err("watching: info", "the watch to start");
        w
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The NDJSON events so far (`--json`).
    fn events(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    #[track_caller]
    fn wait_until(&self, what: &str, mut f: impl FnMut(&Watcher) -> bool) {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    #[track_caller]
    fn wait_err(&self, needle: &str, what: &str) {
        self.wait_until(what, |w| w.stderr().contains(needle));
    }

    /// SIGINT, then the exit code.
    fn interrupt(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        run(Command::new("kill").args(["-INT", &pid]));
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                panic!(
                    "nodus watch did not stop after SIGINT\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
}
fn started_at(s: &TestStack, svc: &str) -> String {
    inspect(&s.container(svc), "{{.State.StartedAt}}")
}
fn container_id(s: &TestStack, svc: &str) -> String {
    inspect(&s.container(svc), "{{.Id}}")
}
fn is_running(s: &TestStack, svc: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", &s.container(svc)])
        .stdout
        .starts_with(b"true")
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn count_events(w: &Watcher, event: &str, action: &str) -> usize {
    w.events()
        .iter()
        .filter(|e| e["event"] == event && e["action"] == action)
        .count()
}

#[test]
fn editing_a_mapped_file_restarts_exactly_that_service_with_a_census() {
    let x =
        "  watch:\n    - paths: [\"init/*.conf\"]\n      services: [db]\n      action: restart\n";
    let yaml = format!(
        "{}{}",
        pg_stack(
            &format!("  web:\n    image: {REDIS_IMAGE}\n    entrypoint: {LOOP}\n"),
            "x-nodus:\n  settle: 1s\n  services:\n    web: { kind: other, stateful: false }\n"
        ),
        x
    );
    let s = TestStack::new("watch-restart", &yaml);
    write(s.path(), "init/pg.conf", "a\n");
    let mut w = Watcher::start(&s, &["--json", "--verify-every", "off"]);
    s.create_tables("db", "app", 2, 10);
    let (db0, web0) = (started_at(&s, "db"), started_at(&s, "web"));
    let (dbid, webid) = (container_id(&s, "db"), container_id(&s, "web"));

    write(s.path(), "init/pg.conf", "b\n");
    w.wait_until("the restart of db", |w| {
        count_events(w, "change", "restart") == 1
    });
    let ev = w
        .events()
        .into_iter()
        .find(|e| e["event"] == "change")
        .unwrap();
    assert_eq!(ev["services"], serde_json::json!(["db"]));
    assert_eq!(ev["result"], "ok", "{ev}");
    assert_eq!(ev["paths"], serde_json::json!(["init/pg.conf"]));
    assert_eq!(ev["detail"]["transition"], "restart");
    assert_eq!(ev["detail"]["guard"]["verdict"], "ok", "{ev}");
    assert_ne!(started_at(&s, "db"), db0, "db was not restarted");
    assert_eq!(started_at(&s, "web"), web0, "web was restarted too");
    assert_eq!(container_id(&s, "db"), dbid);
    assert_eq!(container_id(&s, "web"), webid);
    // The census before and after the restart is in the ledger.
    let ledger = std::fs::read_to_string(s.path().join(".nodus/ledger.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    let restart: Vec<&serde_json::Value> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["transition"] == "restart")
        .collect();
    assert!(restart.iter().any(|e| e["phase"] == "pre"), "{ledger}");
    assert!(
        restart.iter().any(|e| e["phase"] == "post-settled"),
        "{ledger}"
    );
    assert!(restart.iter().all(
        |e| e["census"]["services"]["db"]["databases"]["app"]["tables"]["public.t1"]["rows"] == 10
    ));
    assert_eq!(w.interrupt(), 0);
    // Every line of stdout is one JSON object.
    assert!(w.events().iter().all(|e| e.is_object()));
}

#[test]
fn a_burst_of_twenty_writes_is_one_restart() {
    let x = "  watch:\n    - paths: [conf]\n      services: [app]\n      action: restart\n";
    let s = TestStack::new("watch-burst", &apps(&["app"], "", x));
    write(s.path(), "conf/a.txt", "0");
    let mut w = Watcher::start(
        &s,
        &["--json", "--verify-every", "off", "--debounce", "500ms"],
    );
    let start = Instant::now();
    for i in 0..20 {
        write(s.path(), &format!("conf/f{}.txt", i % 5), &i.to_string());
        std::thread::sleep(Duration::from_millis(10));
    }
    let burst = start.elapsed();
    w.wait_until("a restart", |w| count_events(w, "change", "restart") >= 1);
    // Wait well past another debounce period: still exactly one.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        burst < Duration::from_millis(500),
        "the burst took {burst:?}: the machine is too slow for this test to mean anything"
    );
    assert_eq!(count_events(&w, "change", "restart"), 1, "{}", w.stdout());
    let ev = w
        .events()
        .into_iter()
        .find(|e| e["event"] == "change")
        .unwrap();
    assert_eq!(ev["paths"].as_array().unwrap().len(), 5, "{ev}");
    assert_eq!(w.interrupt(), 0);
}

#[test]
fn a_stack_edit_recreates_only_the_changed_service_and_an_invalid_edit_changes_nothing() {
    let s = TestStack::new("watch-edit", &apps(&["app", "web"], "", ""));
    let mut w = Watcher::start(&s, &["--verify-every", "off"]);
    let (app0, web0) = (container_id(&s, "app"), container_id(&s, "web"));

    // Invalid: a tab-indented key. Reported with file:line:col; nothing touched.
    let good = std::fs::read_to_string(s.stack_file()).unwrap();
    std::fs::write(
        s.stack_file(),
        good.replace(
            "    environment:\n      MODE: one\n",
            "    environment:\n\tMODE: two\n",
        ),
    )
    .unwrap();
    w.wait_err("reload: invalid", "the invalid edit to be reported");
    let err = w.stderr();
    let re_line = err
        .lines()
        .find(|l| l.contains("reload: invalid"))
        .unwrap()
        .to_string();
    assert!(
        re_line.contains("stack.yaml:")
            && re_line.split("stack.yaml:").nth(1).is_some_and(|r| {
                let mut parts = r.split(':');
                parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
                    && parts
                        .next()
                        .is_some_and(|c| c.chars().take_while(|c| c.is_ascii_digit()).count() > 0)
            }),
        "no file:line:col in: {re_line}"
    );
    assert!(is_running(&s, "app") && is_running(&s, "web"));
    assert_eq!(container_id(&s, "app"), app0);
    assert_eq!(container_id(&s, "web"), web0);

    // Fixed, with app's environment changed: only app is recreated.
    let changed = good.replacen("      MODE: one\n", "      MODE: two\n", 1);
    assert!(changed.find("MODE: two").unwrap() < changed.find("  web:").unwrap());
    std::fs::write(s.stack_file(), changed).unwrap();
    w.wait_until("app to be recreated", |_| {
        // The container is briefly absent while it is recreated.
        let id = docker(&["inspect", "-f", "{{.Id}}", &s.container("app")]);
        id.status.success()
            && String::from_utf8_lossy(&id.stdout).trim() != app0
            && is_running(&s, "app")
    });
    w.wait_err("reload: ok", "the reload to finish");
    assert_eq!(container_id(&s, "web"), web0, "web was recreated too");
    assert!(inspect(&s.container("app"), "{{.Config.Env}}").contains("MODE=two"));
    assert_eq!(w.interrupt(), 0);
}

#[test]
fn sync_copies_new_files_into_an_image_only_service_and_deletes_removed_ones() {
    let x = "  watch:\n    - paths: [\"static/**\"]\n      services: [web]\n      action: sync\n      target: /srv/static\n";
    let s = TestStack::new("watch-sync", &apps(&["web"], "", x));
    std::fs::create_dir_all(s.path().join("static")).unwrap();
    let mut w = Watcher::start(&s, &["--verify-every", "off", "--debounce", "200ms"]);
    let started = started_at(&s, "web");
    write(s.path(), "static/css/site.css", "body{}\n");
    let c = s.container("web");
    w.wait_until("the file in the container", |_| {
        docker(&["exec", &c, "cat", "/srv/static/css/site.css"]).stdout == b"body{}\n"
    });
    std::fs::remove_file(s.path().join("static/css/site.css")).unwrap();
    w.wait_until("the file to disappear in the container", |_| {
        !docker(&["exec", &c, "test", "-e", "/srv/static/css/site.css"])
            .status
            .success()
    });
    assert_eq!(started_at(&s, "web"), started, "sync restarted the service");
    assert!(w.stderr().contains("sync: ok"), "{}", w.stderr());
    assert_eq!(w.interrupt(), 0);
}

#[test]
fn compose_develop_watch_restart_is_honoured() {
    let develop =
        "    develop:\n      watch:\n        - path: ./src\n          action: restart\n          ignore: [\"*.md\"]\n";
    let s = TestStack::new("watch-develop", &apps(&["app", "web"], develop, ""));
    write(s.path(), "src/main.sh", "echo 1\n");
    let mut w = Watcher::start(
        &s,
        &["--json", "--verify-every", "off", "--debounce", "200ms"],
    );
    let (app0, web0) = (started_at(&s, "app"), started_at(&s, "web"));
    // Ignored by the rule, then an editor temporary: nothing happens for those.
    write(s.path(), "src/README.md", "x");
    write(s.path(), "src/.main.sh.swp", "x");
    write(s.path(), "src/main.sh", "echo 2\n");
    w.wait_until("the restart of app", |w| {
        count_events(w, "change", "restart") == 1
    });
    let ev = w
        .events()
        .into_iter()
        .find(|e| e["event"] == "change")
        .unwrap();
    assert_eq!(ev["paths"], serde_json::json!(["src/main.sh"]), "{ev}");
    assert_ne!(started_at(&s, "app"), app0);
    assert_eq!(started_at(&s, "web"), web0);
    assert_eq!(w.interrupt(), 0);
}

#[test]
fn the_live_guard_alerts_a_dropped_table_naming_it() {
    let s = TestStack::new("watch-live", &pg_stack("", "x-nodus:\n  settle: 1s\n"));
    s.nodus(&["up"]).ok();
    s.create_tables("db", "app", 3, 10);
    s.nodus(&["verify", "--accept"]).ok();
    let mut w = Watcher::start(&s, &["--json", "--verify-every", "2s"]);
    // A census with the tables, then the drop.
    w.wait_until("a census", |w| count_events(w, "census", "census") >= 1);
    s.psql("db", "app", "DROP TABLE t2");
    let dropped = Instant::now();
    w.wait_until("the loss alert", |w| {
        w.events().iter().any(|e| e["event"] == "loss")
    });
    let ev = w
        .events()
        .into_iter()
        .find(|e| e["event"] == "loss")
        .unwrap();
    let msg = ev["message"].as_str().unwrap();
    assert!(msg.contains("public.t2"), "{msg}");
    assert!(msg.contains("database app"), "{msg}");
    assert_eq!(ev["services"], serde_json::json!(["db"]));
    assert!(w.stderr().contains("DATA LOSS in db"), "{}", w.stderr());
    eprintln!("alerted {:?} after the drop", dropped.elapsed());
    // Exit 3 at the end; the containers keep running.
    assert_eq!(w.interrupt(), 3);
    assert!(is_running(&s, "db"));
    // The loss stays outstanding for `nodus verify`.
    s.nodus(&["verify"]).code(3);
}

#[test]
fn sigint_leaves_the_stack_running_and_down_on_exit_brings_it_down() {
    let s = TestStack::new("watch-exit", &apps(&["app"], "", ""));
    let mut w = Watcher::start(&s, &["--verify-every", "off"]);
    assert!(is_running(&s, "app"));
    assert_eq!(w.interrupt(), 0);
    assert!(is_running(&s, "app"), "SIGINT stopped the stack");

    let mut w = Watcher::start(&s, &["--verify-every", "off", "--down-on-exit"]);
    assert_eq!(w.interrupt(), 0, "{}", w.stderr());
    assert!(w.stderr().contains("down: ok"), "{}", w.stderr());
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
    ]);
    assert!(
        left.is_empty(),
        "containers left after --down-on-exit: {left}"
    );
}

#[test]
fn a_manual_down_while_watching_is_noticed_and_changes_wait() {
    let x = "  watch:\n    - paths: [conf]\n      services: [app]\n      action: restart\n";
    let s = TestStack::new("watch-down", &apps(&["app"], "", x));
    std::fs::create_dir_all(s.path().join("conf")).unwrap();
    let mut w = Watcher::start(&s, &["--verify-every", "off", "--debounce", "200ms"]);
    s.nodus(&["down"]).ok();
    w.wait_err("stack-down: info", "the watch to notice the down");
    write(s.path(), "conf/x", "1");
    w.wait_err("restart: skipped", "the change to be skipped");
    s.nodus(&["up"]).ok();
    w.wait_err("stack-up: info", "the watch to notice the up");
    assert_eq!(w.interrupt(), 0);
}

#[test]
fn unknown_x_nodus_watch_keys_and_rebuild_rules_are_refused_at_start_up() {
    let x = "  watch:\n    - paths: [conf]\n      services: [app]\n      action: restart\n      delay: 1s\n";
    let s = TestStack::new("watch-refuse", &apps(&["app"], "", x));
    let r = s.nodus(&["watch"]);
    r.code(1);
    assert!(r.stderr.contains("unknown key `delay`"), "{}", r.stderr);
    assert!(
        r.stderr.contains("`paths`, `services`, `action`, `target`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("stack.yaml:"), "{}", r.stderr);

    let develop = "    develop:\n      watch:\n        - path: ./src\n          action: rebuild\n";
    s.write_stack(&apps(&["app"], develop, ""));
    let r = s.nodus(&["watch"]);
    r.code(1);
    assert!(
        r.stderr.contains("services.app.develop.watch[0]") && r.stderr.contains("rebuild"),
        "{}",
        r.stderr
    );
    // Refused before anything was started.
    assert!(docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project)
    ])
    .is_empty());
}

#[test]
fn a_new_database_in_x_nodus_is_provisioned_without_a_restart() {
    let base = pg_stack("", "x-nodus:\n  settle: 1s\n");
    let s = TestStack::new("watch-provision", &base);
    let mut w = Watcher::start(&s, &["--verify-every", "off", "--debounce", "200ms"]);
    let started = started_at(&s, "db");
    let exists = |s: &TestStack| {
        s.psql(
            "db",
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'reports_db'",
        ) == "1"
    };
    assert!(!exists(&s));
    s.write_stack(&pg_stack(
        "",
        "x-nodus:\n  settle: 1s\n  services:\n    db:\n      databases:\n        - name: reports_db\n",
    ));
    w.wait_err("reload: ok", "the reload");
    w.wait_until("reports_db to exist", |_| exists(&s));
    assert_eq!(started_at(&s, "db"), started, "db was restarted");
    assert_eq!(w.interrupt(), 0);
}
