//! The build context as the Docker CLI sends it (`docker build`, classic builder), its content
//! hash, and the tar stream itself.
//!
//! **What is sent** (the CLI's `runBuild` + moby's `TarWithOptions`): every entry below the
//! context directory that `.dockerignore` does not exclude, walked depth-first in byte order of
//! the names (Go's `filepath.WalkDir` order), as a tar with `/`-separated relative paths,
//! directories as their own entries, uid/gid 0, the permission bits (with setuid/setgid/sticky)
//! and mtimes (whole seconds) from disk; symlinks are stored as symlinks with their target, never
//! followed; hard links are sent as plain files; sockets, FIFOs and devices are left out. The
//! ignore file is `<Dockerfile>.dockerignore` next to the Dockerfile when it exists (BuildKit's
//! rule), `.dockerignore` at the context root otherwise. An excluded directory is not walked
//! unless an exception pattern literally lies below it (Docker's optimisation; see
//! [`IgnoreRules::dir_has_exception`]). The `.dockerignore` and the Dockerfile are sent even when
//! the patterns exclude them (the CLI's `TrimBuildFilesFromExcludes`). A `dockerfile_inline`, or a
//! Dockerfile outside the context, is added as `.dockerfile.<hash>` at the end of the tar and that
//! name appended to the tar's `.dockerignore` (created if missing), so the daemon removes it from
//! what `COPY` sees (the CLI's `AddDockerfileToBuildContext`; the name is derived from the content
//! rather than random, so the same input gives the same tar).
//!
//! **The digest** ([`digest`]) is BLAKE3 over, in the same walk order, for every entry sent: its
//! kind, relative path, permission bits, and then the file's size and content or the symlink's
//! target, each length-prefixed; then the Dockerfile's name in the tar and, for a generated one,
//! its text. mtimes, uid/gid and the ignored files do not enter it: touching a file changes
//! nothing, editing one that is sent does. [`digest_with`] adds the build args and target. Files
//! are read sequentially through one 64 KiB buffer, never whole into memory.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use super::ignore::{IgnoreRules, MatchInfo, PatternError};

/// Size of the chunks the tar stream is delivered in.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the producing thread and the consumer (at most ~1 MiB).
const CHANNEL_CHUNKS: usize = 16;

/// What to send: a context directory and its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSpec {
    /// The context directory.
    pub dir: PathBuf,
    /// Dockerfile path relative to `dir` (default `"Dockerfile"`), or absolute (may lie outside
    /// the context). Ignored when `dockerfile_inline` is set.
    pub dockerfile: String,
    /// compose's `dockerfile_inline`: the Dockerfile's text.
    pub dockerfile_inline: Option<String>,
}

impl ContextSpec {
    /// A context `dir` with its `Dockerfile`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            dockerfile: "Dockerfile".to_string(),
            dockerfile_inline: None,
        }
    }
}

/// The content hash of a context as it would be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextDigest {
    /// `"blake3:<hex>"`.
    pub hash: String,
    /// Entries sent (files, directories, symlinks), the generated Dockerfile included.
    pub files: u64,
    /// Bytes of regular-file content sent.
    pub bytes: u64,
}

/// Why a context cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {} does not exist", dir.display())]
    ContextMissing { dir: PathBuf },
    #[error("build context {} is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("Dockerfile {} does not exist or is not a file", path.display())]
    DockerfileMissing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while being sent (was {expected} bytes)", path.display())]
    Changed { path: PathBuf, expected: u64 },
    #[error(transparent)]
    BadPattern(#[from] PatternError),
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Hash of the context as it would be sent (after `.dockerignore`) plus the Dockerfile (or the
/// inline text); see the module docs. Independent of mtimes. Blocking: reads every file sent
/// (call it from a blocking thread). Unreadable files are reported here, with their path.
pub fn digest(spec: &ContextSpec) -> Result<ContextDigest, ContextError> {
    let plan = Plan::new(spec)?;
    let entries = plan.walk()?;
    let mut h = blake3::Hasher::new();
    h.update(b"nodus-build-context-v1\0");
    let mut buf = vec![0u8; CHUNK];
    let mut files = 0u64;
    let mut bytes = 0u64;
    for e in &entries {
        files += 1;
        let path = e.path.as_os_str().as_encoded_bytes();
        let tag: &[u8] = match e.kind {
            EntryKind::Dir => b"d",
            EntryKind::File { .. } => b"f",
            EntryKind::Symlink { .. } => b"l",
        };
        h.update(tag);
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path);
        h.update(&e.mode.to_le_bytes());
        match &e.kind {
            EntryKind::Dir => {}
            EntryKind::File { size } => {
                h.update(&size.to_le_bytes());
                let f = fs::File::open(&e.abs).map_err(read_err(&e.abs))?;
                let mut r = ExactReader::new(f, *size, &e.abs);
                loop {
                    let n = r.read(&mut buf).map_err(|err| r.error(err))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                bytes += size;
            }
            EntryKind::Symlink { target } => {
                let t = target.as_os_str().as_encoded_bytes();
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t);
            }
        }
    }
    h.update(b"dockerfile\0");
    h.update(&(plan.dockerfile_name.len() as u64).to_le_bytes());
    h.update(plan.dockerfile_name.as_bytes());
    if let Some(text) = &plan.generated {
        files += 1;
        bytes += text.len() as u64;
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text);
    }
    Ok(ContextDigest {
        hash: format!("blake3:{}", h.finalize().to_hex()),
        files,
        bytes,
    })
}

/// The build's content hash: the context digest plus the build args (sorted by name, so their
/// order does not matter) and the target. This is what goes in the image label.
pub fn digest_with<K: AsRef<str>, V: AsRef<str>>(
    context: &ContextDigest,
    args: &[(K, V)],
    target: Option<&str>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"nodus-build-v1\0");
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(&context.hash);
    let mut sorted: Vec<(&str, &str)> =
        args.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    sorted.sort();
    field(&sorted.len().to_string());
    for (k, v) in sorted {
        field(k);
        field(v);
    }
    match target {
        Some(t) => {
            field("target");
            field(t);
        }
        None => field("no-target"),
    }
    format!("blake3:{}", h.finalize().to_hex())
}

/// The context tar, produced on a blocking thread and delivered through a bounded channel in
/// 64 KiB chunks (never the whole context in memory or in a temporary file). Returns the name
/// to pass as `dockerfile` to the Engine API too. The spec, Dockerfile and ignore file are
/// checked before returning; errors while walking arrive as one `io::Error` item wrapping a
/// [`ContextError`] (downcast with `get_ref`), after which the stream ends. Dropping the stream
/// stops the producing thread. The checks do a little blocking I/O (stat, reading the ignore
/// file and the Dockerfile); the walk and every file read happen on the producing thread.
pub fn tar_stream(spec: &ContextSpec) -> Result<(String, TarStream), ContextError> {
    let plan = Plan::new(spec)?;
    let name = plan.dockerfile_name.clone();
    Ok((name, spawn_producer(plan)?.0))
}

/// Starts the producing thread for a checked plan.
fn spawn_producer(plan: Plan) -> Result<(TarStream, std::thread::JoinHandle<()>), ContextError> {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let root = plan.root.clone();
    let producer = move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = plan
            .walk()
            .and_then(|entries| plan.write(&entries, &mut w))
            .and_then(|()| w.flush().map_err(read_err(&plan.root)));
        if let Err(e) = result {
            if !is_closed(&e) {
                let _ = tx.blocking_send(Err(io::Error::other(e)));
            }
        }
    };
    let handle = std::thread::Builder::new()
        .name("nodus-build-context".into())
        .spawn(producer)
        .map_err(read_err(&root))?;
    Ok((TarStream { rx }, handle))
}

/// Synchronous form of [`tar_stream`]: writes the whole tar to `out`, returns the Dockerfile name.
pub fn write_tar<W: Write>(spec: &ContextSpec, mut out: W) -> Result<String, ContextError> {
    let plan = Plan::new(spec)?;
    let entries = plan.walk()?;
    plan.write(&entries, &mut out)?;
    out.flush().map_err(read_err(&plan.root))?;
    Ok(plan.dockerfile_name)
}

/// The tar stream returned by [`tar_stream`] (`Send + Unpin + 'static`).
pub struct TarStream {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for TarStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Feeds the channel in `CHUNK`-sized pieces.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "tar stream dropped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The consumer went away: nothing to report.
fn is_closed(e: &ContextError) -> bool {
    matches!(e, ContextError::Read { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// Reads exactly `size` bytes (the size the header announced): a file that grew is cut at
/// `size`, one that shrank is an error.
struct ExactReader<'a> {
    inner: fs::File,
    remaining: u64,
    expected: u64,
    shrunk: bool,
    path: &'a Path,
}

impl<'a> ExactReader<'a> {
    fn new(inner: fs::File, size: u64, path: &'a Path) -> Self {
        Self {
            inner,
            remaining: size,
            expected: size,
            shrunk: false,
            path,
        }
    }

    /// The error to report after a failed read through this reader.
    fn error(&self, err: io::Error) -> ContextError {
        if self.shrunk {
            ContextError::Changed {
                path: self.path.to_path_buf(),
                expected: self.expected,
            }
        } else {
            read_err(self.path)(err)
        }
    }
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.shrunk = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// One entry to send.
#[derive(Debug, Clone)]
struct Entry {
    /// Context-relative, `/`-separated, for matching (lossy for names that are not UTF-8).
    rel: String,
    /// Context-relative, the name's exact bytes: what the tar and the digest get.
    path: PathBuf,
    abs: PathBuf,
    kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky.
    mode: u32,
    /// Seconds since the epoch.
    mtime: u64,
}

/// Where the Dockerfile comes from.
enum Dockerfile {
    /// Its context-relative path.
    InContext(String),
    /// Its text, added to the tar under a generated name.
    Generated(Vec<u8>),
}

/// A checked spec: where to walk, with which rules, and the Dockerfile.
struct Plan {
    root: PathBuf,
    rules: IgnoreRules,
    /// The `dockerfile` for the Engine API.
    dockerfile_name: String,
    /// The text of a Dockerfile added to the tar (inline, or from outside the context).
    generated: Option<Vec<u8>>,
}

impl Plan {
    fn new(spec: &ContextSpec) -> Result<Self, ContextError> {
        let meta = match fs::metadata(&spec.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContextError::ContextMissing {
                    dir: spec.dir.clone(),
                })
            }
            Err(e) => return Err(read_err(&spec.dir)(e)),
        };
        if !meta.is_dir() {
            return Err(ContextError::NotADirectory {
                dir: spec.dir.clone(),
            });
        }
        let root = fs::canonicalize(&spec.dir).map_err(read_err(&spec.dir))?;

        // The Dockerfile: inside the context (sent as it is), or generated.
        let (dockerfile, ignore_candidate) = match &spec.dockerfile_inline {
            Some(text) => (Dockerfile::Generated(text.clone().into_bytes()), None),
            None => {
                let given = if Path::new(&spec.dockerfile).is_absolute() {
                    PathBuf::from(&spec.dockerfile)
                } else {
                    spec.dir.join(&spec.dockerfile)
                };
                let mut path = given.clone();
                // The CLI falls back to a lowercase `dockerfile` for the default name.
                if spec.dockerfile == "Dockerfile" && !path.is_file() {
                    let lower = spec.dir.join("dockerfile");
                    if lower.is_file() {
                        path = lower;
                    }
                }
                if !path.is_file() {
                    return Err(ContextError::DockerfileMissing { path: given });
                }
                let real = fs::canonicalize(&path).map_err(read_err(&path))?;
                let candidate = {
                    let mut s = path.clone().into_os_string();
                    s.push(".dockerignore");
                    PathBuf::from(s)
                };
                match real.strip_prefix(&root) {
                    Ok(rel) if !rel.as_os_str().is_empty() => {
                        (Dockerfile::InContext(slash_path(rel)), Some(candidate))
                    }
                    _ => {
                        let text = fs::read(&real).map_err(read_err(&real))?;
                        (Dockerfile::Generated(text), Some(candidate))
                    }
                }
            }
        };

        // `<Dockerfile>.dockerignore` wins over `.dockerignore`.
        let ignore_file = ignore_candidate
            .filter(|c| c.is_file())
            .unwrap_or_else(|| root.join(".dockerignore"));
        let mut rules = match fs::read(&ignore_file) {
            Ok(raw) => IgnoreRules::parse(&String::from_utf8_lossy(&raw), &ignore_file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => IgnoreRules::default(),
            Err(e) => return Err(read_err(&ignore_file)(e)),
        };
        rules.keep(".dockerignore");
        let (dockerfile_name, generated) = match dockerfile {
            Dockerfile::InContext(rel) => {
                rules.keep(&rel);
                (rel, None)
            }
            Dockerfile::Generated(text) => {
                let hex = blake3::hash(&text).to_hex();
                (format!(".dockerfile.{}", &hex[..20]), Some(text))
            }
        };
        Ok(Plan {
            root,
            rules,
            dockerfile_name,
            generated,
        })
    }

    /// The entries sent, in Docker's walk order.
    fn walk(&self) -> Result<Vec<Entry>, ContextError> {
        let mut out = Vec::new();
        self.walk_dir(&self.root, "", None, &mut out)?;
        Ok(out)
    }

    fn walk_dir(
        &self,
        dir: &Path,
        rel_dir: &str,
        parent: Option<&MatchInfo>,
        out: &mut Vec<Entry>,
    ) -> Result<(), ContextError> {
        let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
            .map_err(read_err(dir))?
            .collect::<Result<_, _>>()
            .map_err(read_err(dir))?;
        children.sort_by(|a, b| {
            a.file_name()
                .as_encoded_bytes()
                .cmp(b.file_name().as_encoded_bytes())
        });
        for child in children {
            let abs = child.path();
            let name = child.file_name();
            let name = name.to_string_lossy();
            let rel = if rel_dir.is_empty() {
                name.into_owned()
            } else {
                format!("{rel_dir}/{name}")
            };
            let (skip, info) = self.rules.matches_using_parent(&rel, parent);
            if skip {
                // Docker descends into an excluded directory only for an exception inside it.
                let is_dir = child.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && self.rules.has_exclusions() && self.rules.dir_has_exception(&rel) {
                    self.walk_dir(&abs, &rel, Some(&info), out)?;
                }
                continue;
            }
            // fstatat on the open directory: no path walk from the root per entry.
            let meta = child.metadata().map_err(read_err(&abs))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File { size: meta.len() }
            } else if ft.is_symlink() {
                EntryKind::Symlink {
                    target: fs::read_link(&abs).map_err(read_err(&abs))?,
                }
            } else {
                tracing::debug!(path = %abs.display(), "not a file, directory or symlink: not sent");
                continue;
            };
            out.push(Entry {
                rel: rel.clone(),
                path: abs.strip_prefix(&self.root).unwrap_or(&abs).to_path_buf(),
                abs: abs.clone(),
                kind: kind.clone(),
                mode: mode_bits(&meta),
                mtime: mtime_secs(&meta),
            });
            if kind == EntryKind::Dir {
                self.walk_dir(&abs, &rel, Some(&info), out)?;
            }
        }
        Ok(())
    }

    /// Writes the tar of `entries` (plus the generated Dockerfile) to `out`.
    fn write<W: Write>(&self, entries: &[Entry], out: W) -> Result<(), ContextError> {
        let root = &self.root;
        let io_err = |e: io::Error| read_err(root)(e);
        let mut b = tar::Builder::new(out);
        let mut dockerignore_seen = false;
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(e.mtime);
            match &e.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    let mut dir = e.path.clone().into_os_string();
                    dir.push("/");
                    b.append_data(&mut h, dir, io::empty()).map_err(io_err)?;
                }
                EntryKind::File { size } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    if e.rel == ".dockerignore" && self.generated.is_some() {
                        // Name the generated Dockerfile in it, as the CLI does.
                        dockerignore_seen = true;
                        let mut text = fs::read(&e.abs).map_err(read_err(&e.abs))?;
                        text.truncate(*size as usize);
                        text.extend_from_slice(format!("\n{}\n", self.dockerfile_name).as_bytes());
                        h.set_size(text.len() as u64);
                        b.append_data(&mut h, &e.path, text.as_slice())
                            .map_err(io_err)?;
                        continue;
                    }
                    h.set_size(*size);
                    let f = fs::File::open(&e.abs).map_err(read_err(&e.abs))?;
                    let mut r = ExactReader::new(f, *size, &e.abs);
                    if let Err(err) = b.append_data(&mut h, &e.path, &mut r) {
                        return Err(r.error(err));
                    }
                }
                EntryKind::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &e.path, target).map_err(io_err)?;
                }
            }
        }
        if let Some(text) = &self.generated {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut file = |name: &str, data: &[u8]| -> Result<(), ContextError> {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o600);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(now);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data).map_err(io_err)
            };
            if !dockerignore_seen {
                file(
                    ".dockerignore",
                    format!("\n{}\n", self.dockerfile_name).as_bytes(),
                )?;
            }
            file(&self.dockerfile_name, text)?;
        }
        b.into_inner().map_err(io_err)?;
        Ok(())
    }
}

fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(unix)]
fn mode_bits(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_bits(meta: &fs::Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

fn mtime_secs(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
