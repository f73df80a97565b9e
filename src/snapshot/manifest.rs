//! The snapshot manifest (`manifest.json`), the verification sidecar (`verified.json`) and ids.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::{StopEvidence, Transition};
use crate::stack::ServiceKind;

/// Manifest format version of single-file snapshots (`data.tar.zst`).
pub const FORMAT: u32 = 1;
/// Manifest format version of snapshots kept in the deduplicating store (`store` is set).
pub const FORMAT_STORE: u32 = 2;
/// The ordered chunk list of a store-backed snapshot, inside its directory.
pub const CHUNKS_FILE: &str = "chunks";
/// File names inside a snapshot directory.
pub const DATA_FILE: &str = "data.tar.zst";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const VERIFIED_FILE: &str = "verified.json";

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Down,
    Stop,
    Restart,
    /// `nodus snapshot create`.
    Manual,
    /// Taken by `snapshot restore` of the volume it is about to replace.
    Safety,
    /// Taken by `up` before it copies a service's data to the volume the stack now gives it.
    Move,
}

impl Reason {
    pub fn for_transition(t: Transition) -> Reason {
        match t {
            Transition::Down => Reason::Down,
            Transition::Stop => Reason::Stop,
            Transition::Restart => Reason::Restart,
            Transition::Restore => Reason::Safety,
            Transition::Up | Transition::Start => Reason::Manual,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Down => "down",
            Reason::Stop => "stop",
            Reason::Restart => "restart",
            Reason::Manual => "manual",
            Reason::Safety => "safety",
            Reason::Move => "move",
        }
    }
}

/// The volume the data dir lives on, as the engine knew it at snapshot time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeIdentity {
    /// "volume", "bind", "tmpfs" or "container" (the data dir was not on a mount).
    pub kind: String,
    /// Engine volume name, or host path for a bind mount.
    pub name: Option<String>,
    /// Where it was mounted in the container (the data dir or a parent of it).
    #[serde(default)]
    pub mount_target: Option<String>,
    pub created_at: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub driver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub file: String,
    /// "zstd"
    pub compression: String,
    /// The configured level.
    pub level: i32,
    /// The lowest level used while adapting to the engine's speed (see `pipeline::Codec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<i32>,
    /// Bytes of tar as the engine streamed it.
    pub raw_bytes: u64,
    /// Bytes of `file`.
    pub compressed_bytes: u64,
    /// SHA-256 of `file` (hex).
    pub sha256: String,
    /// The top-level entry of the tar (the data dir's base name, as the archive endpoint names it).
    pub top: String,
}

/// One snapshot: what, where, when, how big, and what the database held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub project: String,
    pub service: String,
    pub kind: ServiceKind,
    /// The stack files at snapshot time.
    #[serde(default)]
    pub stack_files: Vec<String>,
    pub volume: VolumeIdentity,
    pub container: String,
    pub image: String,
    /// The data dir inside the container (PGDATA for postgres).
    pub data_dir: String,
    pub archive: ArchiveInfo,
    /// The guard's census just before the stop (its `pre_stop` JSON), when there was one.
    #[serde(default)]
    pub census: Option<serde_json::Value>,
    /// How the container stopped, when the snapshot followed a stop nodus did.
    #[serde(default)]
    pub stop: Option<StopEvidence>,
    /// False when the stop evidence shows the database was killed (or did not log a clean
    /// shutdown): the archive is crash-consistent only and postgres will run recovery on it.
    pub clean: bool,
    /// Why `clean` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unclean_reason: Option<String>,
    pub reason: Reason,
    pub nodus_version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Wall time of the archive transfer, milliseconds.
    pub duration_ms: u64,
    /// Set for snapshots kept in the deduplicating store: the tar stream is the chunks listed in
    /// `archive.file` (the chunk list), read from the store at `store.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,
}

/// Where a store-backed snapshot's chunks live and what it added to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRef {
    /// The store directory (absolute).
    pub path: String,
    /// The store's id (its `config` file): a snapshot is never read from another store.
    pub store_id: String,
    /// Chunks in the chunk list.
    pub chunks: u64,
    /// Chunks this snapshot was the first to store.
    pub new_chunks: u64,
    /// Compressed bytes of those chunks: what this snapshot added to the store.
    pub added_bytes: u64,
    /// "fastcdc-v2020 min/avg/max" of the chunker used.
    pub chunker: String,
    /// Bytes of unchanged files whose chunks were taken from `reused_from` (the previous
    /// snapshot of the volume) without being read (see `cas/reuse.rs`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reused_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Seconds since the epoch, on the engine host's clock: every file of this snapshot was
    /// read after this second began (the container's stop). A later snapshot trusts a file's
    /// unchanged size and mtime only when the mtime is before it. None: trust nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_cutoff: Option<i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    pub fn created(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.created_at)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
    /// The group retention is applied per: the volume name, else the service.
    pub fn retention_key(&self) -> String {
        match (&self.volume.kind[..], &self.volume.name) {
            ("volume", Some(n)) => format!("volume:{n}"),
            (_, Some(n)) => format!("{}:{n}", self.volume.kind),
            _ => format!("service:{}", self.service),
        }
    }
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }
}

/// Whether clean-shutdown evidence lets us call the snapshot clean; returns the reason if not.
pub fn unclean_reason(kind: ServiceKind, evidence: Option<&StopEvidence>) -> Option<String> {
    let ev = evidence?;
    if ev.oom_killed {
        return Some("the container was OOM-killed".into());
    }
    if ev.killed {
        return Some(format!(
            "the container was killed (exit code {}) instead of shutting down cleanly",
            ev.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into())
        ));
    }
    if kind == ServiceKind::Postgres && ev.clean_shutdown == Some(false) {
        return Some("postgres did not log \"database system is shut down\"".into());
    }
    None
}

/// Outcome of the last `snapshot verify` (sidecar file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    /// RFC 3339.
    pub verified_at: String,
    pub sha256: String,
    #[serde(default)]
    pub entries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub nodus_version: String,
}

/// `<UTC yyyymmddThhmmssZ>-<service>-<6 hex>`.
pub fn new_id(at: DateTime<Utc>, service: &str) -> String {
    format!(
        "{}-{}-{}",
        at.format("%Y%m%dT%H%M%SZ"),
        sanitize(service),
        short_random_hex()
    )
}

/// Parses the timestamp out of an id (for sorting ids that have no readable manifest).
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ts = id.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// True for names that look like a committed snapshot id (not `.partial`, not hidden).
pub fn is_snapshot_id(name: &str) -> bool {
    !name.starts_with('.')
        && !name.contains('/')
        && !name.ends_with(".partial")
        && id_time(name).is_some()
        && name.as_bytes().get(16) == Some(&b'-')
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 6 hex digits, unique enough within one second for one service.
pub fn short_random_hex() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    // Address of a stack variable: differs between runs under ASLR.
    let probe = 0u8;
    h.update((&probe as *const u8 as usize).to_le_bytes());
    hex::encode(&h.finalize()[..3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn sample(id: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            id: id.to_string(),
            project: "demo".into(),
            service: "db".into(),
            kind: ServiceKind::Postgres,
            stack_files: vec!["/src/demo/compose.yaml".into()],
            volume: VolumeIdentity {
                kind: "volume".into(),
                name: Some("demo_pgdata".into()),
                mount_target: Some("/var/lib/postgresql/data".into()),
                created_at: Some("2025-01-01T00:00:00Z".into()),
                labels: BTreeMap::from([("com.docker.compose.project".into(), "demo".into())]),
                driver: Some("local".into()),
            },
            container: "demo-db-1".into(),
            image: "postgres:16".into(),
            data_dir: "/var/lib/postgresql/data".into(),
            archive: ArchiveInfo {
                file: DATA_FILE.into(),
                compression: "zstd".into(),
                level: 3,
                min_level: None,
                raw_bytes: 1000,
                compressed_bytes: 100,
                sha256: "ab".repeat(32),
                top: "data".into(),
            },
            census: Some(
                serde_json::json!({"kind": "postgres", "system_identifier": "7", "databases": {}}),
            ),
            stop: Some(StopEvidence {
                exit_code: Some(0),
                clean_shutdown: Some(true),
                log_line: Some("database system is shut down".into()),
                killed: false,
                oom_killed: false,
            }),
            clean: true,
            unclean_reason: None,
            reason: Reason::Down,
            nodus_version: env!("CARGO_PKG_VERSION").into(),
            created_at: "2025-06-29T23:00:00Z".into(),
            duration_ms: 12,
            store: None,
        }
    }

    #[test]
    fn manifest_round_trip() {
        let m = sample("20250629T230000Z-db-abcdef");
        let bytes = m.to_json();
        let back: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["reason"], "down");
        assert_eq!(v["kind"], "postgres");
        assert_eq!(v["archive"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(
            back.created(),
            Some(Utc.with_ymd_and_hms(2025, 6, 29, 23, 0, 0).unwrap())
        );
        assert_eq!(back.retention_key(), "volume:demo_pgdata");
    }

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let t = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap();
        let id = new_id(t, "my db");
        assert!(id.starts_with("20250304T050607Z-my_db-"), "{id}");
        assert_eq!(id.len(), "20250304T050607Z-my_db-".len() + 6);
        assert_eq!(id_time(&id), Some(t));
        assert!(is_snapshot_id(&id));
        assert!(!is_snapshot_id(&format!("{id}.partial")));
        assert!(!is_snapshot_id(".trash-x"));
        assert!(!is_snapshot_id("notes.txt"));
        assert_ne!(new_id(t, "db"), new_id(t, "db"));
    }

    #[test]
    fn killed_postgres_is_not_clean() {
        let killed = StopEvidence {
            exit_code: Some(137),
            killed: true,
            ..Default::default()
        };
        assert!(unclean_reason(ServiceKind::Postgres, Some(&killed))
            .unwrap()
            .contains("killed"));
        let no_log = StopEvidence {
            exit_code: Some(0),
            clean_shutdown: Some(false),
            ..Default::default()
        };
        assert!(unclean_reason(ServiceKind::Postgres, Some(&no_log)).is_some());
        assert!(unclean_reason(ServiceKind::Redis, Some(&no_log)).is_none());
        let oom = StopEvidence {
            oom_killed: true,
            ..Default::default()
        };
        assert!(unclean_reason(ServiceKind::Redis, Some(&oom)).is_some());
        assert!(unclean_reason(ServiceKind::Postgres, None).is_none());
    }
}
