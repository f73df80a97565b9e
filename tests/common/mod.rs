//! Shared helpers for the real-engine end-to-end tests.
//!
//! Every test gets its own project name and temp dir; cleanup removes only resources carrying that
//! project's label. Assertions about the engine go through the `docker` CLI, an independent client.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const PG_IMAGE: &str = "nodus/postgres-standin:15";
pub const REDIS_IMAGE: &str = "nodus/redis-standin:7";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the stand-in images once per machine (a file lock serialises test binaries).
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("nodus-test-images.lock"))
            .expect("open image lock");
        lock.lock().expect("lock images");
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-images.sh"))
            .status()
            .expect("run scripts/build-images.sh");
        assert!(status.success(), "scripts/build-images.sh failed");
    });
}

/// Runs a command, returning its output (never panics on non-zero exit).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// `docker ...` that must succeed; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct Res {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Res {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// stdout as exactly one JSON document (`--json`), nothing else beside it.
    #[track_caller]
    pub fn one_json(&self) -> serde_json::Value {
        let mut docs =
            serde_json::Deserializer::from_str(&self.stdout).into_iter::<serde_json::Value>();
        let first = match docs.next() {
            Some(Ok(v)) => v,
            other => panic!(
                "no JSON document on stdout ({other:?})\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        };
        assert!(
            docs.next().is_none(),
            "more than one document on stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        first
    }
}

/// A stack in a temp dir with a unique project name.
pub struct TestStack {
    pub dir: tempfile::TempDir,
    pub project: String,
    /// Extra projects this test created (renames), cleaned up too.
    pub also_clean: std::cell::RefCell<Vec<String>>,
}

impl TestStack {
    /// `name` must be unique per test; the pid keeps parallel runs apart.
    pub fn new(name: &str, yaml: &str) -> TestStack {
        ensure_images();
        let dir = tempfile::Builder::new()
            .prefix("nodus-e2e-")
            .tempdir()
            .expect("tempdir");
        let project = format!("nt-{name}-{}", std::process::id());
        let s = TestStack {
            dir,
            project,
            also_clean: Default::default(),
        };
        s.write_stack(yaml);
        s.cleanup();
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn stack_file(&self) -> PathBuf {
        self.dir.path().join("stack.yaml")
    }
    pub fn write_stack(&self, yaml: &str) {
        std::fs::write(self.stack_file(), yaml).expect("write stack");
    }

    /// Runs nodus with `-f stack.yaml -p <project>` plus `args`.
    pub fn nodus(&self, args: &[&str]) -> Res {
        self.nodus_as(&self.project, args)
    }

    /// Runs nodus with another project name (for rename scenarios).
    pub fn nodus_as(&self, project: &str, args: &[&str]) -> Res {
        self.nodus_env(project, &[], args)
    }

    /// Runs nodus with extra environment variables.
    pub fn nodus_env(&self, project: &str, env: &[(&str, &str)], args: &[&str]) -> Res {
        if project != self.project {
            self.also_clean.borrow_mut().push(project.to_string());
        }
        let out = run(Command::new(env!("CARGO_BIN_EXE_nodus"))
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("NODUS_STACK")
            .env_remove("COMPOSE_PROJECT_NAME")
            .envs(env.iter().copied())
            .args(["-f", self.stack_file().to_str().unwrap(), "-p", project])
            .args(args));
        Res {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{}-1", self.project, service)
    }
    pub fn volume(&self, key: &str) -> String {
        format!("{}_{}", self.project, key)
    }

    /// psql in the running service container; returns trimmed unaligned output.
    pub fn psql(&self, service: &str, db: &str, sql: &str) -> String {
        docker_ok(&[
            "exec",
            &self.container(service),
            "psql",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atq",
            "-c",
            sql,
        ])
    }

    /// Creates `n` tables t1..tn with `rows` rows each in `db`.
    pub fn create_tables(&self, service: &str, db: &str, n: usize, rows: usize) {
        let sql = format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP EXECUTE format('CREATE TABLE t%s (id int primary key, v text)', i); \
             EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1,{rows}) g', i); END LOOP; END $$;"
        );
        self.psql(service, db, &sql);
    }

    pub fn table_count(&self, service: &str, db: &str) -> usize {
        self.psql(
            service,
            db,
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')",
        )
        .parse()
        .expect("table count")
    }

    /// Removes every container, volume and network carrying this test's project label(s).
    pub fn cleanup(&self) {
        let mut projects = vec![self.project.clone()];
        projects.extend(self.also_clean.borrow().iter().cloned());
        for p in projects {
            cleanup_project(&p);
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if std::env::var_os("NODUS_KEEP_TEST_RESOURCES").is_none() {
            self.cleanup();
        }
    }
}

pub fn cleanup_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = docker_ok(&["ps", "-aq", "--filter", &filter]);
    for id in ids.lines().filter(|l| !l.is_empty()) {
        docker(&["rm", "-f", "-v", id]);
    }
    let vols = docker_ok(&["volume", "ls", "-q", "--filter", &filter]);
    for v in vols.lines().filter(|l| !l.is_empty()) {
        docker(&["volume", "rm", "-f", v]);
    }
    let nets = docker_ok(&["network", "ls", "-q", "--filter", &filter]);
    for n in nets.lines().filter(|l| !l.is_empty()) {
        docker(&["network", "rm", n]);
    }
}

/// A minimal postgres stack (+ optional extra YAML under `services:`).
pub fn pg_stack(extra_services: &str, x_nodus: &str) -> String {
    format!(
        "services:\n  db:\n    image: {PG_IMAGE}\n    environment:\n      POSTGRES_PASSWORD: secret-pw\n      POSTGRES_DB: app\n{extra_services}{x_nodus}"
    )
}
