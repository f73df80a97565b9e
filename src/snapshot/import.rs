//! `snapshot export` and `snapshot import` over a project's snapshots: which snapshot goes where,
//! and the streaming between the export file (see [`super::export`]) and the snapshot store's
//! tar API ([`super::open_tar_reader`], [`super::import_tar`]). Blocking: run these on a
//! blocking thread.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use indicatif::ProgressBar;
use serde::Serialize;

use super::export::{self, ExportInfo};
use super::manifest::{Manifest, MANIFEST_FILE};
use super::store::{SnapshotEntry, SnapshotStore};
use super::{Result, SnapshotError};
use crate::stack::StatefulService;

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub snapshot: String,
    pub path: PathBuf,
    pub sha256_file: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub data_bytes: u64,
    pub encrypted: bool,
    pub recipients: usize,
}

/// Exports a committed snapshot (either format) to `out` (see [`export::output_path`]).
pub fn export_entry(
    entry: &SnapshotEntry,
    out: &Path,
    recipients: &[age::x25519::Recipient],
    force: bool,
    progress: Option<ProgressBar>,
) -> Result<Exported> {
    let manifest = entry.manifest_checked()?;
    let path = export::output_path(out, &entry.id, !recipients.is_empty());
    export::check_target(&path, force)?;
    // The manifest byte for byte, as the store holds it.
    let mpath = entry.dir.join(MANIFEST_FILE);
    let manifest_json = std::fs::read(&mpath).map_err(|e| SnapshotError::io(&mpath, e))?;
    // Reading the snapshot (chunks decompressed and re-hashed) runs on its own thread, ahead of
    // the tar + zstd (+ age) + SHA-256 writer on this one.
    let source = super::open_tar_reader(entry)?;
    let (tx, rx) = mpsc::sync_channel::<Msg>(8);
    let (written, failed) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut src = source;
            match feed(&mut src, &tx) {
                Ok(()) => None,
                // The writer stopped first: its error is the one to report.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => None,
                Err(e) => {
                    let _ = tx.send(Msg::Fail(e.to_string()));
                    Some(e.to_string())
                }
            }
        });
        let mut tar = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        };
        let written = export::write_export(
            &path,
            &manifest_json,
            &entry.id,
            manifest.archive.raw_bytes,
            &mut tar,
            recipients,
            progress,
        );
        drop(tar);
        let failed = reader
            .join()
            .unwrap_or_else(|_| Some("the snapshot reader thread panicked".into()));
        (written, failed)
    });
    let pending = match (written, failed) {
        // The snapshot could not be read: name it, not the temporary file.
        (Err(_), Some(reason)) => {
            return Err(SnapshotError::Corrupt {
                id: entry.id.clone(),
                path: entry.data_path(),
                reason: format!("{reason}; nothing was exported"),
            })
        }
        (w, _) => w?,
    };
    let done = Exported {
        snapshot: entry.id.clone(),
        path: pending.path.clone(),
        sha256_file: export::sidecar_path(&pending.path),
        sha256: pending.sha256.clone(),
        bytes: pending.bytes,
        data_bytes: pending.data_bytes,
        encrypted: pending.encrypted,
        recipients: recipients.len(),
    };
    pending.commit(force)?;
    Ok(done)
}

/// The manifest an imported snapshot gets in this project, and what changed from the exported
/// one. `service` (`--service`) maps the snapshot to another service of the same kind.
pub fn map_manifest(
    exported: &Manifest,
    project: &str,
    stateful: &[StatefulService],
    service: Option<&str>,
) -> Result<(Manifest, Vec<String>)> {
    let want = service.unwrap_or(&exported.service);
    let names = || {
        stateful
            .iter()
            .map(|s| s.service.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let st = stateful.iter().find(|s| s.service == want).ok_or_else(|| {
        SnapshotError::Other(format!(
            "the export is a snapshot of service {want}, which is not a stateful service of project {project} (stateful: {}); pass --service NAME to import it for another one",
            if stateful.is_empty() { "none".to_string() } else { names() }
        ))
    })?;
    if st.kind != exported.kind {
        return Err(SnapshotError::Other(
            format!(
                "the export is a {:?} snapshot, but {} is {:?}; nothing was imported",
                exported.kind, st.service, st.kind
            )
            .to_lowercase(),
        ));
    }
    let base = st
        .data_dir
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if !exported.archive.top.is_empty() && exported.archive.top != base {
        return Err(SnapshotError::Other(format!(
            "the export holds a directory named {:?} (data dir {}), but {} keeps its data in {}: it could not be restored there; nothing was imported",
            exported.archive.top, exported.data_dir, st.service, st.data_dir
        )));
    }
    let mut m = exported.clone();
    let mut changes = Vec::new();
    if m.project != project {
        changes.push(format!("project {} → {project}", m.project));
        m.project = project.to_string();
    }
    if m.service != st.service {
        changes.push(format!("service {} → {}", m.service, st.service));
        m.service = st.service.clone();
    }
    if let Some(v) = &st.volume_name {
        if m.volume.name.as_deref() != Some(v.as_str()) {
            changes.push(format!(
                "volume {} → {v}",
                m.volume.name.as_deref().unwrap_or("-")
            ));
            m.volume.name = Some(v.clone());
            m.volume.kind = "volume".into();
            // Where it was mounted belonged to the other volume.
            m.volume.mount_target = None;
        }
    }
    if m.data_dir != st.data_dir {
        changes.push(format!("data dir {} → {}", m.data_dir, st.data_dir));
        m.data_dir = st.data_dir.clone();
    }
    Ok((m, changes))
}

/// Refuses an id the project already has.
pub fn check_new_id(store: &SnapshotStore, id: &str) -> Result<()> {
    if store.dir().join(id).exists() {
        return Err(SnapshotError::Other(format!(
            "snapshot {id} is already in this project's snapshots (imported before?); nothing was imported"
        )));
    }
    Ok(())
}

/// Writes the (already [`export::scan`]ned) export at `path` as a new snapshot with `manifest`.
/// The tar goes to the store's writer on another thread; the file is decrypted and
/// decompressed on this one. A difference from what the scan checked makes the writer's
/// stream fail, so nothing is listed.
pub fn import_file(
    store: &SnapshotStore,
    path: &Path,
    identities: Option<&[Box<dyn age::Identity + Send + Sync>]>,
    info: &ExportInfo,
    manifest: Manifest,
    progress: Option<ProgressBar>,
) -> Result<Manifest> {
    check_new_id(store, &manifest.id)?;
    let (tx, rx) = mpsc::sync_channel::<Msg>(8);
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut r = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
                done: false,
            };
            super::import_tar(store, manifest, &mut r)
        });
        let fed = export::read_data(path, identities, info, progress, |r| {
            feed(r, &tx).map_err(|e| SnapshotError::Other(e.to_string()))
        });
        if let Err(e) = &fed {
            let _ = tx.send(Msg::Fail(e.to_string()));
        }
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| SnapshotError::Other("the snapshot writer thread panicked".into()))?;
        match (fed, written) {
            (Err(e), _) => Err(e),
            (Ok(()), w) => w,
        }
    })
}

enum Msg {
    Data(Vec<u8>),
    End,
    Fail(String),
}

fn feed(r: &mut dyn Read, tx: &mpsc::SyncSender<Msg>) -> io::Result<()> {
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot writer stopped");
    loop {
        let mut buf = vec![0u8; super::pipeline::CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return tx.send(Msg::End).map_err(|_| gone());
        }
        buf.truncate(filled);
        tx.send(Msg::Data(buf)).map_err(|_| gone())?;
    }
}

/// The reading end: data until `End`; `Fail` or a vanished sender is an error, never an end.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Fail(why)) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the export reader stopped",
                    ))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
