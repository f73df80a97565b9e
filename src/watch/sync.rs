//! `sync`: changed files go into the running container through the Engine API archive upload
//! (no bind mount, no restart: works for image-only services); deleted files are deleted there.

use std::path::Path;

use futures_util::StreamExt as _;

use super::batch::SyncItem;
use crate::engine::{Engine, EngineError};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Synced {
    pub copied: usize,
    pub deleted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("copying into container {container}: {source}")]
    Upload {
        container: String,
        source: EngineError,
    },
    #[error("deleting {paths} in container {container}: {reason}")]
    Delete {
        container: String,
        paths: String,
        reason: String,
    },
}

/// A tar (in memory) holding each existing item at its container path (relative to `/`), with
/// the parent directories it needs.
fn build_tar(items: &[SyncItem]) -> Result<Vec<u8>, SyncError> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for it in items {
        let name = it.container.trim_start_matches('/');
        let err = |source| SyncError::Read {
            path: it.host.display().to_string(),
            source,
        };
        let meta = std::fs::symlink_metadata(&it.host).map_err(err)?;
        if meta.is_dir() {
            b.append_dir_all(name, &it.host).map_err(err)?;
        } else {
            b.append_path_with_name(&it.host, name).map_err(err)?;
        }
    }
    b.into_inner().map_err(|source| SyncError::Read {
        path: "(archive)".into(),
        source,
    })
}

/// Copies the items whose host file exists and deletes the others in `container`.
pub async fn sync(
    engine: &dyn Engine,
    container: &str,
    items: &[SyncItem],
) -> Result<Synced, SyncError> {
    let (present, gone): (Vec<SyncItem>, Vec<SyncItem>) = items
        .iter()
        .cloned()
        .partition(|i| Path::new(&i.host).symlink_metadata().is_ok());
    let mut out = Synced::default();
    if !present.is_empty() {
        let tar = {
            let present = present.clone();
            tokio::task::spawn_blocking(move || build_tar(&present))
                .await
                .map_err(|e| SyncError::Read {
                    path: "(archive)".into(),
                    source: std::io::Error::other(e),
                })??
        };
        let stream =
            futures_util::stream::once(async move { Ok::<_, EngineError>(tar.into()) }).boxed();
        engine
            .upload_archive(container, "/", stream)
            .await
            .map_err(|source| SyncError::Upload {
                container: container.into(),
                source,
            })?;
        out.copied = present.len();
    }
    if !gone.is_empty() {
        let mut cmd: Vec<String> = vec!["rm".into(), "-rf".into(), "--".into()];
        cmd.extend(gone.iter().map(|g| g.container.clone()));
        let paths = gone
            .iter()
            .map(|g| g.container.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let r = engine
            .exec(container, &cmd, &[], None)
            .await
            .map_err(|e| SyncError::Delete {
                container: container.into(),
                paths: paths.clone(),
                reason: e.to_string(),
            })?;
        if r.exit_code != 0 {
            return Err(SyncError::Delete {
                container: container.into(),
                paths,
                reason: String::from_utf8_lossy(&r.stderr).trim().to_string(),
            });
        }
        out.deleted = gone.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_holds_files_at_their_container_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "hello").unwrap();
        std::fs::create_dir_all(d.path().join("dir/sub")).unwrap();
        std::fs::write(d.path().join("dir/sub/b.txt"), "b").unwrap();
        let tar = build_tar(&[
            SyncItem {
                host: d.path().join("a.txt"),
                container: "/app/conf/a.txt".into(),
            },
            SyncItem {
                host: d.path().join("dir"),
                container: "/app/dir".into(),
            },
        ])
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"app/conf/a.txt".to_string()), "{names:?}");
        assert!(names.iter().any(|n| n == "app/dir/sub/b.txt"), "{names:?}");
    }
}
