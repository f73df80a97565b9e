//! The build context as the Docker CLI sends it.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

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
    /// Entries sent (files, directories, symlinks).
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
    #[error("Dockerfile {} does not exist", path.display())]
    DockerfileMissing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    BadPattern(#[from] super::ignore::PatternError),
}

/// Hash of the context as it would be sent (after `.dockerignore`) plus the Dockerfile (or the
/// inline text). Independent of mtimes.
pub fn digest(spec: &ContextSpec) -> Result<ContextDigest, ContextError> {
    let _ = spec;
    todo!()
}

/// The build's content hash: the context digest plus the build args (order-independent) and the
/// target. This is what goes in the image label.
pub fn digest_with<K: AsRef<str>, V: AsRef<str>>(
    context: &ContextDigest,
    args: &[(K, V)],
    target: Option<&str>,
) -> String {
    let _ = (context, args, target);
    todo!()
}

/// The context tar, produced on a blocking thread and delivered through a bounded channel in
/// chunks. Returns the name to pass as `dockerfile` to the Engine API too. Errors while
/// walking arrive as an `io::Error` item (wrapping a [`ContextError`]) ending the stream.
pub fn tar_stream(spec: &ContextSpec) -> Result<(String, TarStream), ContextError> {
    let _ = spec;
    todo!()
}

/// Synchronous form of [`tar_stream`]: writes the whole tar to `out`, returns the Dockerfile name.
pub fn write_tar<W: io::Write>(spec: &ContextSpec, out: W) -> Result<String, ContextError> {
    let _ = (spec, out);
    todo!()
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
