//! `ssh://` engines, as the docker CLI reaches them: the system `ssh` runs `docker system
//! dial-stdio` on the remote host and its stdin/stdout carry the Engine API.
//!
//! bollard connects to a unix socket that nodus serves in a private directory; every connection
//! accepted there is bridged to one `ssh … docker system dial-stdio`. All of them share one ssh
//! master connection (`ControlMaster=auto`, `ControlPersist`), so a command opens one ssh
//! connection, not one per request. ssh's own configuration, agent and known_hosts are used as they
//! are; a non-default port is passed with `-p`. Connecting is bounded (`ConnectTimeout`); without a
//! terminal ssh never prompts (`BatchMode=yes`), so a wrong key fails at once with ssh's message.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::process::Command;

use super::resolve::SshUrl;

/// Seconds ssh may take to connect before it gives up.
pub const SSH_CONNECT_TIMEOUT_SECS: u64 = 10;
/// How long the shared master connection outlives its last user.
const CONTROL_PERSIST: &str = "30s";

/// A local unix socket bridged to the remote engine. Dropping it stops accepting connections and
/// removes the socket.
pub struct SshBridge {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    last_error: Arc<Mutex<String>>,
}

/// `/tmp/nodus-ssh-<uid>`, 0700: short enough for unix socket paths everywhere (macOS allows 104
/// bytes; its per-user temp dir is already ~50).
fn runtime_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = PathBuf::from(format!("/tmp/nodus-ssh-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::other(format!(
            "{} is not a directory owned by this user",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// The options every ssh call of one engine shares (timeouts, the master's control socket, port,
/// user), without the host.
fn common_args(url: &SshUrl, control_dir: &Path, batch: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-o".into(),
        format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_SECS}"),
        "-o".into(),
        format!("ControlPath={}/cm-%C", control_dir.display()),
        "-o".into(),
        format!("ControlPersist={CONTROL_PERSIST}"),
    ];
    if batch {
        a.extend(["-o".into(), "BatchMode=yes".into()]);
    }
    if let Some(p) = url.port {
        a.extend(["-p".into(), p.to_string()]);
    }
    if let Some(u) = &url.user {
        a.extend(["-l".into(), u.clone()]);
    }
    a
}

/// Makes sure a master connection for `url` runs (one from an earlier command within
/// `ControlPersist` is reused): every dial-stdio connection then only opens a channel on it.
async fn ensure_master(url: &SshUrl, dir: &Path, batch: bool) -> std::io::Result<()> {
    let common = common_args(url, dir, batch);
    let check = Command::new("ssh")
        .args(&common)
        .args(["-O", "check", "--", &url.host])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if check.success() {
        return Ok(());
    }
    // `-f` puts the master in the background once it is authenticated. Its stderr goes to a file,
    // not a pipe: the backgrounded master may keep a pipe open, and waiting for its end would hang.
    let log = dir.join(format!(
        "master-{}-{}.log",
        std::process::id(),
        rand_suffix()
    ));
    let file = std::fs::File::create(&log)?;
    let status = Command::new("ssh")
        .args(&common)
        .args([
            "-o",
            "ControlMaster=auto",
            "-f",
            "-N",
            "-T",
            "--",
            &url.host,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let status = status?;
    if status.success() {
        return Ok(());
    }
    let msg: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(std::io::Error::other(if msg.is_empty() {
        format!("ssh exited with {status}")
    } else {
        format!("ssh: {}", msg.join("; "))
    }))
}

/// The `ssh` arguments for one dial-stdio connection.
pub fn ssh_args(url: &SshUrl, control_dir: &Path, batch: bool) -> Vec<String> {
    let mut a = common_args(url, control_dir, batch);
    // `auto`: should the master have gone, this connection opens its own.
    a.extend(["-o".into(), "ControlMaster=auto".into(), "-T".into()]);
    a.push("--".into());
    a.push(url.host.clone());
    a.extend(["docker", "system", "dial-stdio"].map(String::from));
    a
}

impl SshBridge {
    /// Opens (or reuses) the shared ssh master for `url`, then serves a local socket that reaches
    /// the engine behind it. ssh's own message is the error when the master cannot be opened
    /// (wrong host, port, user or key).
    pub async fn start(url: &SshUrl) -> std::io::Result<SshBridge> {
        let dir = runtime_dir()?;
        let batch = !std::io::stdin().is_terminal();
        ensure_master(url, &dir, batch).await?;
        let socket = dir.join(format!(
            "engine-{}-{}.sock",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let args = ssh_args(url, &dir, batch);
        let last_error = Arc::new(Mutex::new(String::new()));
        let errors = last_error.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let args = args.clone();
                let errors = errors.clone();
                tokio::spawn(async move {
                    if let Err(e) = bridge(conn, &args, errors.clone()).await {
                        set_error(&errors, format!("cannot run ssh: {e}"));
                    }
                });
            }
        });
        Ok(SshBridge {
            socket,
            task,
            last_error,
        })
    }

    /// The local socket bollard connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What ssh last wrote on stderr (its reason when a connection failed), trimmed.
    pub fn last_error(&self) -> Option<String> {
        let e = self.last_error.lock().ok()?.trim().to_string();
        (!e.is_empty()).then_some(e)
    }
}

impl Drop for SshBridge {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn set_error(slot: &Mutex<String>, msg: String) {
    if let Ok(mut s) = slot.lock() {
        *s = msg;
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n:08x}")
}

/// One accepted connection ↔ one `ssh … docker system dial-stdio`.
async fn bridge(
    conn: tokio::net::UnixStream,
    args: &[String],
    errors: Arc<Mutex<String>>,
) -> std::io::Result<()> {
    let mut child = Command::new("ssh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Collect stderr without ever waiting for its end: a backgrounded master may hold it open.
    let errs = errors.clone();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 8192 {
                buf.drain(..buf.len() - 8192);
            }
            let text = String::from_utf8_lossy(&buf);
            // ssh's notices about the shared connection are not failures.
            let meaningful: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| !l.contains("ControlSocket") && !l.contains("disabling multiplexing"))
                .collect();
            if !meaningful.is_empty() {
                set_error(&errs, meaningful.join("\n"));
            }
        }
    });
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        let r = tokio::io::copy(&mut rd, &mut stdin).await;
        drop(stdin);
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut stdout, &mut wr).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
        r
    };
    // The connection ends when the engine side closes (bollard dropped it, or ssh exited).
    tokio::select! {
        _ = down => {}
        _ = async { let _ = up.await; std::future::pending::<()>().await } => {}
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_port_user_and_sharing() {
        let url = SshUrl::parse("ssh://root@127.0.0.1:2222").unwrap();
        let a = ssh_args(&url, Path::new("/tmp/nodus-ssh-0"), true);
        let s = a.join(" ");
        assert!(s.contains("-p 2222"), "{s}");
        assert!(s.contains("-l root"), "{s}");
        assert!(s.contains("ControlMaster=auto"), "{s}");
        assert!(s.contains("ControlPath=/tmp/nodus-ssh-0/cm-%C"), "{s}");
        assert!(s.contains("BatchMode=yes"), "{s}");
        assert!(s.ends_with("-- 127.0.0.1 docker system dial-stdio"), "{s}");
        let b = ssh_args(&SshUrl::parse("ssh://box").unwrap(), Path::new("/x"), false);
        assert!(!b
            .iter()
            .any(|x| x == "-p" || x == "-l" || x == "BatchMode=yes"));
    }
}
