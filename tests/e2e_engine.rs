//! Engine discovery against the real engine: docker contexts (by `--context`, `DOCKER_CONTEXT`
//! and `currentContext`), a context whose socket is missing, and an `ssh://` engine behind an
//! sshd from Debian's packages on a loopback port other than 22.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs nodus for `s` with a clean engine environment plus `env`.
fn nodus(s: &TestStack, env: &[(&str, &str)], args: &[&str]) -> Res {
    let out = run(Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(s.path())
        .env("NO_COLOR", "1")
        .env_remove("NODUS_STACK")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_CONFIG")
        .envs(env.iter().copied())
        .args(["-f", s.stack_file().to_str().unwrap(), "-p", &s.project])
        .args(args));
    Res {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `docker …` with its own DOCKER_CONFIG (contexts live there), must succeed.
fn docker_cfg(config: &Path, args: &[&str]) {
    let out = run(Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .args(args));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn contexts_are_followed_by_flag_env_and_current_context() {
    let s = TestStack::new("ctx", &pg_stack("", ""));
    let cfg = s.path().join("docker-config");
    // The engine's socket at a non-default path, as Colima or OrbStack would have it.
    let sock = s.path().join("engine.sock");
    std::os::unix::fs::symlink("/var/run/docker.sock", &sock).unwrap();
    let name = format!("nt-ctx-{}", std::process::id());
    docker_cfg(
        &cfg,
        &[
            "context",
            "create",
            &name,
            "--docker",
            &format!("host=unix://{}", sock.display()),
        ],
    );
    let cfg_s = cfg.to_str().unwrap();

    // --context
    let r = nodus(&s, &[("DOCKER_CONFIG", cfg_s)], &["--context", &name, "up"]);
    r.ok();
    let r = nodus(
        &s,
        &[("DOCKER_CONFIG", cfg_s)],
        &["--context", &name, "status"],
    );
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "engine: context {name} (--context) → unix://{}",
            sock.display()
        )),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains(&s.container("db")), "{}", r.all());
    nodus(
        &s,
        &[("DOCKER_CONFIG", cfg_s)],
        &["--context", &name, "census"],
    )
    .ok();

    // DOCKER_CONTEXT
    let r = nodus(
        &s,
        &[("DOCKER_CONFIG", cfg_s), ("DOCKER_CONTEXT", &name)],
        &["status"],
    );
    r.ok();
    assert!(
        r.stderr
            .contains(&format!("engine: context {name} (DOCKER_CONTEXT)")),
        "{}",
        r.all()
    );

    // currentContext in config.json
    docker_cfg(&cfg, &["context", "use", &name]);
    let r = nodus(&s, &[("DOCKER_CONFIG", cfg_s)], &["--json", "status"]);
    r.ok();
    let v = r.one_json();
    let found = v["engine"]["found"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        found.starts_with(&format!("context {name} (currentContext in "))
            && found.contains("config.json"),
        "{v}"
    );
    // DOCKER_HOST overrides currentContext, as in the docker CLI.
    let r = nodus(
        &s,
        &[
            ("DOCKER_CONFIG", cfg_s),
            ("DOCKER_HOST", "unix:///var/run/docker.sock"),
        ],
        &["status"],
    );
    r.ok();
    assert!(
        r.stderr
            .contains("engine: DOCKER_HOST → unix:///var/run/docker.sock — Docker Engine"),
        "{}",
        r.all()
    );

    nodus(&s, &[("DOCKER_CONFIG", cfg_s)], &["down"]).ok();
    assert_eq!(
        docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", s.project)
        ]),
        ""
    );
}

#[test]
fn a_context_with_a_missing_socket_or_no_such_context_is_exit_4() {
    let s = TestStack::new("ctxmiss", &pg_stack("", ""));
    let cfg = s.path().join("docker-config");
    let missing = s.path().join("gone/docker.sock");
    let name = format!("nt-ctxmiss-{}", std::process::id());
    docker_cfg(
        &cfg,
        &[
            "context",
            "create",
            &name,
            "--docker",
            &format!("host=unix://{}", missing.display()),
        ],
    );
    let cfg_s = cfg.to_str().unwrap();
    let r = nodus(
        &s,
        &[("DOCKER_CONFIG", cfg_s)],
        &["--context", &name, "status"],
    );
    r.code(4);
    assert!(r.stderr.contains(&format!("context {name}")), "{}", r.all());
    assert!(
        r.stderr.contains(&missing.display().to_string()),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("docker context ls"), "{}", r.all());

    let r = nodus(
        &s,
        &[("DOCKER_CONFIG", cfg_s)],
        &["--context", "no-such-context", "status"],
    );
    r.code(4);
    assert!(
        r.stderr
            .contains("context no-such-context (--context) does not exist")
            && r.stderr.contains(&name),
        "{}",
        r.all()
    );
}

/// An sshd on a loopback port with key authentication, and an `ssh` on PATH that uses this
/// test's key and known_hosts (the user's own ~/.ssh is left alone).
struct Sshd {
    child: Child,
    port: u16,
    bin: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let out = run(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        path.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "ssh-keygen failed");
}

fn start_sshd(dir: &Path) -> Sshd {
    let d = dir.join("ssh");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    keygen(&d.join("host_key"));
    keygen(&d.join("id"));
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
    let port = free_port();
    let cfg = d.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
            d = d.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd (openssh-server: scripts/ensure-env.sh installs it)");
    let client = d.join("ssh_config");
    std::fs::write(
        &client,
        format!(
            "Host *\n  IdentityFile {d}/id\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n",
            d = d.display()
        ),
    )
    .unwrap();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            client.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Sshd { child, port, bin }
}

#[test]
fn an_ssh_engine_on_a_non_default_port_runs_the_whole_cycle() {
    let s = TestStack::new("ssh", &pg_stack("", ""));
    let sshd = start_sshd(s.path());
    let path = format!(
        "{}:{}",
        sshd.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let host = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let env = [("PATH", path.as_str()), ("DOCKER_HOST", host.as_str())];

    nodus(&s, &env, &["up"]).ok();
    s.create_tables("db", "app", 3, 50);
    let r = nodus(&s, &env, &["status"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!("engine: DOCKER_HOST → {host}")),
        "{}",
        r.all()
    );
    let r = nodus(&s, &env, &["census"]);
    r.ok();
    assert!(r.all().contains("t3"), "{}", r.all());
    // down snapshots the data volume over the ssh bridge.
    nodus(&s, &env, &["down"]).ok();
    let project_filter = format!("label=com.docker.compose.project={}", s.project);
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &project_filter]), "");
    nodus(&s, &env, &["up"]).ok();
    s.psql("db", "app", "DROP TABLE t1");
    nodus(&s, &env, &["snapshot", "restore", "--latest", "--yes"]).ok();
    assert_eq!(
        s.table_count("db", "app"),
        3,
        "restore over ssh brought t1 back"
    );

    // A wrong port fails with ssh's own message and exit 4, not a hang.
    let wrong = format!("ssh://root@127.0.0.1:{}", free_port());
    let r = nodus(
        &s,
        &[("PATH", path.as_str()), ("DOCKER_HOST", wrong.as_str())],
        &["status"],
    );
    r.code(4);
    assert!(r.stderr.contains(&wrong), "{}", r.all());
    assert!(r.stderr.contains("ssh: "), "{}", r.all());
    assert!(r.stderr.to_lowercase().contains("refused"), "{}", r.all());
    nodus(&s, &env, &["down"]).ok();
}

/// With nothing configured and the default socket dead, nodus probes the well-known sockets and
/// uses the first that answers (here a Colima socket in HOME), saying how it found it; when
/// none answers, the error lists what was tried. The default socket is hidden in a private
/// mount namespace (`unshare -m`, root), so the real engine stays untouched for other tests.
#[test]
fn a_dead_default_socket_makes_nodus_probe_the_well_known_ones() {
    let s = TestStack::new(
        "probe",
        &format!("services:\n  c:\n    image: {REDIS_IMAGE}\n"),
    );
    let home = s.path().join("home");
    let colima = home.join(".colima/default");
    std::fs::create_dir_all(&colima).unwrap();
    let sock = colima.join("docker.sock");
    std::fs::write(&sock, "").unwrap();
    let real = std::fs::canonicalize(nodus::engine::resolve::DEFAULT_SOCKET).unwrap();
    let nodus_bin = env!("CARGO_BIN_EXE_nodus");
    let stack = s.stack_file();
    let status = |bind_colima: bool| {
        let script = format!(
            "{bind} mount --bind /dev/null {real} && exec {nodus_bin} -f {stack} -p {project} status",
            bind = if bind_colima {
                format!("mount --bind {} {} &&", real.display(), sock.display())
            } else {
                String::new()
            },
            real = real.display(),
            stack = stack.display(),
            project = s.project,
        );
        let out = run(Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .current_dir(s.path())
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = status(true);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("engine: found Colima") && err.contains(".colima/default/docker.sock"),
        "{err}"
    );
    // Nothing answers: exit 4, every place tried is named.
    let (code, err) = status(false);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("tried, in order"), "{err}");
    assert!(err.contains("(default socket)"), "{err}");
    assert!(
        err.contains(".colima/default/docker.sock (Colima)"),
        "{err}"
    );
}
