//! Which postgres containers do not answer on their published port from here (postgres listening
//! only on localhost inside the container, a firewall, a remote engine...), remembered per
//! container id in the state dir (`pg-exec-only.json`), so that only the first census of such a
//! container pays for the TCP attempt; later ones go straight to `psql` in the container. The
//! first time a container is found so, `-v` says it (once).
//!
//! A new container (recreated, new id) is tried over TCP again. The file is bounded (the most
//! recent [`KEEP`] ids) and written atomically; an unreadable file is treated as empty.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::output::Ui;

/// How many container ids the file keeps.
const KEEP: usize = 64;
/// File name in the state dir.
pub const FILE: &str = "pg-exec-only.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Routes {
    /// Container id → when it was found (RFC 3339) and what was tried.
    #[serde(default)]
    exec_only: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    service: String,
    tried: String,
    since: String,
}

#[derive(Default)]
struct Memo {
    path: Option<PathBuf>,
    routes: Routes,
    ui: Option<Ui>,
}

fn memo() -> std::sync::MutexGuard<'static, Memo> {
    static M: OnceLock<Mutex<Memo>> = OnceLock::new();
    M.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Loads what the state dir remembers (called once the project, hence the state dir, is known).
pub fn init(state_dir: &std::path::Path, ui: &Ui) {
    let path = state_dir.join(FILE);
    let routes = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut m = memo();
    m.path = Some(path);
    m.routes = routes;
    m.ui = Some(ui.clone());
}

/// Whether the container's published port is known not to answer.
pub fn exec_only(container_id: &str) -> bool {
    memo().routes.exec_only.contains_key(container_id)
}

/// Records that `container_id`'s published port (`tried`) does not answer while psql in the
/// container does; says so at `-v` (once per container).
pub fn remember(container_id: &str, service: &str, tried: &str, why: &str) {
    let mut m = memo();
    if m.routes.exec_only.contains_key(container_id) {
        return;
    }
    if let Some(ui) = &m.ui {
        ui.detail(format!(
            "{service}: postgres does not answer on {tried} ({why}); it may listen only inside its container (listen_addresses). Using psql in the container instead, now and for later commands on this container"
        ));
    }
    m.routes.exec_only.insert(
        container_id.to_string(),
        Entry {
            service: service.to_string(),
            tried: tried.to_string(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    );
    while m.routes.exec_only.len() > KEEP {
        let oldest = m
            .routes
            .exec_only
            .iter()
            .min_by(|a, b| a.1.since.cmp(&b.1.since))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => m.routes.exec_only.remove(&k),
            None => break,
        };
    }
    if let Some(path) = &m.path {
        let mut bytes = serde_json::to_vec_pretty(&m.routes).expect("routes serialise");
        bytes.push(b'\n');
        if let Err(e) = crate::state::atomic_write(path, &bytes, 0o600) {
            tracing::debug!("cannot write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_containers_survive_a_reload() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), &Ui::plain());
        assert!(!exec_only("abc"));
        remember("abc", "db", "127.0.0.1:5433", "connection closed");
        assert!(exec_only("abc"));
        // A new process reads the file.
        memo().routes = Routes::default();
        init(d.path(), &Ui::plain());
        assert!(exec_only("abc"));
        assert!(!exec_only("other"));
    }
}
