//! The census ledger: per project, what every stateful service held at each transition, with the
//! identity of its data (volume, cluster) and how it stopped. The baseline every later census is
//! compared with.
//!
//! One JSON document per project (`.nodus/ledger/<project>.json`, mode 0600), rewritten atomically.
//! A torn or unparseable ledger is never trusted: it is moved aside (`.corrupt-<time>`), reported,
//! and a fresh ledger marked "untrusted since" is started until `nodus verify --accept`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::census::{Census, ServiceCensus};
use crate::engine::{Labels, MountKind};
use crate::lifecycle::StopEvidence;
use crate::stack::ServiceKind;

pub const LEDGER_VERSION: u32 = 1;
/// Entries kept (the latest entry of every service is always kept too).
pub const MAX_ENTRIES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Right before services were stopped.
    Pre,
    /// Right after each service became ready, before its dependents started.
    PostReady,
    /// After every service was ready and the settle time passed.
    PostSettled,
    /// Recorded by `nodus verify --accept` as the new baseline.
    Accepted,
}

impl Phase {
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Pre => "before the services stopped",
            Phase::PostReady => "right after start",
            Phase::PostSettled => "after start",
            Phase::Accepted => "accepted with `nodus verify --accept`",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeIdentity {
    pub name: String,
    pub created_at: Option<String>,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountIdentity {
    pub kind: MountKind,
    /// Volume name or host path.
    pub source: String,
    pub target: String,
    /// A volume with a generated name (not declared in the stack): a new one comes with every new
    /// container.
    pub anonymous: bool,
}

/// Where a service's data lives and what the engine says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceIdentity {
    pub kind: ServiceKind,
    pub container: Option<String>,
    /// The container's ID and start time: the same pair later means the service kept running
    /// (nothing to compare across).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The data directory actually used (PGDATA for postgres).
    pub data_dir: String,
    /// Compose volume key after hardening (None: not on a named volume).
    pub volume_key: Option<String>,
    /// The mount holding `data_dir` (None: the data is in the container's own filesystem).
    pub mount: Option<MountIdentity>,
    /// The mounted volume as inspected.
    pub volume: Option<VolumeIdentity>,
    pub system_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_evidence: Option<StopEvidence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Identifies the nodus command that wrote the entry (pre and post entries of one `restart`
    /// share it).
    pub session: String,
    /// `up`, `down`, `stop`, `start`, `restart`, `restore`, or `verify`.
    pub transition: String,
    pub phase: Phase,
    /// RFC 3339.
    pub time: String,
    pub project: String,
    pub nodus_version: String,
    pub engine_id: Option<String>,
    /// `nodus down --volumes`: the user chose to delete the data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volumes_removed: bool,
    pub census: Census,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceIdentity>,
}

impl Entry {
    /// A copy holding only `service`'s census and identity.
    pub fn narrowed(&self, service: &str) -> Entry {
        let mut e = self.clone();
        e.census.services.retain(|k, _| k == service);
        e.services.retain(|k, _| k == service);
        e
    }

    /// The census of `service`, when it was counted.
    pub fn census_of(&self, service: &str) -> Option<&ServiceCensus> {
        self.census
            .services
            .get(service)
            .filter(|c| c.is_available())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Untrusted {
    /// Where the corrupt ledger was kept.
    pub corrupt_copy: String,
    pub since: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerDoc {
    pub version: u32,
    pub project: String,
    /// Set when an earlier ledger was corrupt: history before `since` is unknown. Cleared by
    /// `nodus verify --accept`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<Untrusted>,
    /// Losses detected and not accepted yet, per service. Until `nodus verify --accept` (or the
    /// data coming back), every comparison of that service is made against the baseline the loss
    /// was found against, so a loss can never become the new normal silently.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outstanding: BTreeMap<String, Outstanding>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outstanding {
    pub detected_at: String,
    /// The command that found it (`up`, `verify`...).
    pub detected_by: String,
    pub summary: String,
    /// The cause inferred when it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<super::cause::Cause>,
    /// A snapshot that can undo it must be older than this (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_before: Option<String>,
    /// The census the loss was found against (narrowed to the service).
    pub baseline: Entry,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path} is torn or unreadable ({reason}); it is not trusted and was kept as {kept}; run `nodus verify --accept` to start a new baseline")]
    Corrupt {
        path: PathBuf,
        reason: String,
        kept: PathBuf,
    },
    #[error("ledger {path} was written by a newer nodus (format {found}, this nodus reads {LEDGER_VERSION}); upgrade nodus")]
    TooNew { path: PathBuf, found: u32 },
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    pub doc: LedgerDoc,
    /// Nothing is written (the file on disk is from a newer nodus).
    read_only: bool,
}

impl Ledger {
    /// Opens the ledger (empty when the file does not exist). A torn ledger is moved aside, a
    /// fresh one marked untrusted is written, and the `Corrupt` error is returned beside it for
    /// the caller to report. A ledger from a newer nodus is opened empty and read-only.
    pub fn open(path: &Path, project: &str) -> Result<(Ledger, Option<LedgerError>), LedgerError> {
        let empty = |untrusted| LedgerDoc {
            version: LEDGER_VERSION,
            project: project.to_string(),
            untrusted,
            outstanding: BTreeMap::new(),
            entries: Vec::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((
                    Ledger {
                        path: path.to_path_buf(),
                        doc: empty(None),
                        read_only: false,
                    },
                    None,
                ))
            }
            Err(e) => {
                return Err(LedgerError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        let reason = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => format!("invalid JSON: {e}"),
            Ok(v) => {
                let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0) as u32;
                if version > LEDGER_VERSION {
                    let err = LedgerError::TooNew {
                        path: path.to_path_buf(),
                        found: version,
                    };
                    return Ok((
                        Ledger {
                            path: path.to_path_buf(),
                            doc: empty(None),
                            read_only: true,
                        },
                        Some(err),
                    ));
                }
                match serde_json::from_value::<LedgerDoc>(v) {
                    Ok(doc) if doc.version == LEDGER_VERSION => {
                        return Ok((
                            Ledger {
                                path: path.to_path_buf(),
                                doc,
                                read_only: false,
                            },
                            None,
                        ))
                    }
                    Ok(doc) => format!("unknown format version {}", doc.version),
                    Err(e) => format!("unexpected content: {e}"),
                }
            }
        };
        // Torn or unreadable: keep it aside, never delete it, start an untrusted ledger.
        let kept = corrupt_name(path);
        std::fs::rename(path, &kept).map_err(|e| LedgerError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            doc: empty(Some(Untrusted {
                corrupt_copy: kept.display().to_string(),
                since: super::census::now_rfc3339(),
                reason: reason.clone(),
            })),
            read_only: false,
        };
        ledger.save()?;
        Ok((
            ledger,
            Some(LedgerError::Corrupt {
                path: path.to_path_buf(),
                reason,
                kept,
            }),
        ))
    }

    /// Reads the ledger for a look only: no side effects (a torn ledger is left where it is for
    /// the guard to set aside and report). None when it is missing, torn, untrusted or of another
    /// format version.
    pub fn peek(path: &Path) -> Option<Ledger> {
        let doc: LedgerDoc = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        (doc.version == LEDGER_VERSION && doc.untrusted.is_none()).then(|| Ledger {
            path: path.to_path_buf(),
            doc,
            read_only: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[Entry] {
        &self.doc.entries
    }

    pub fn untrusted(&self) -> Option<&Untrusted> {
        self.doc.untrusted.as_ref()
    }

    /// `verify --accept`: the history before is no longer needed to trust the ledger.
    pub fn mark_trusted(&mut self) {
        self.doc.untrusted = None;
    }

    /// Appends an entry (call [`Ledger::save`] to persist).
    pub fn push(&mut self, entry: Entry) {
        self.doc.entries.push(entry);
    }

    /// The entry of `session` in `phase`, if any.
    pub fn find_mut(&mut self, session: &str, phase: Phase) -> Option<&mut Entry> {
        self.doc
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.session == session && e.phase == phase)
    }

    /// The latest entry that counted `service`, ignoring the post-start entries of
    /// `current_session` (a transition is compared with what was there before it started, which
    /// for `restart` is its own pre entry).
    pub fn latest_for(&self, service: &str, current_session: Option<&str>) -> Option<&Entry> {
        self.doc.entries.iter().rev().find(|e| {
            let own_post = current_session == Some(e.session.as_str()) && e.phase != Phase::Pre;
            !own_post && e.census_of(service).is_some()
        })
    }

    /// What `service` is compared with: the baseline of an outstanding (unaccepted) loss, else
    /// [`Ledger::latest_for`]. Narrowed to the service.
    pub fn baseline(&self, service: &str, current_session: Option<&str>) -> Option<Entry> {
        if let Some(o) = self.doc.outstanding.get(service) {
            return Some(o.baseline.clone());
        }
        self.latest_for(service, current_session)
            .map(|e| e.narrowed(service))
    }

    pub fn outstanding(&self, service: &str) -> Option<&Outstanding> {
        self.doc.outstanding.get(service)
    }

    /// Remembers a detected loss (keeps the first one: its baseline is the state before any loss).
    pub fn set_outstanding(
        &mut self,
        service: &str,
        baseline: &Entry,
        detected_by: &str,
        summary: &str,
        cause: Option<super::cause::Cause>,
        restore_before: Option<String>,
    ) {
        self.doc
            .outstanding
            .entry(service.to_string())
            .or_insert_with(|| Outstanding {
                detected_at: super::census::now_rfc3339(),
                detected_by: detected_by.to_string(),
                summary: summary.to_string(),
                cause,
                restore_before,
                baseline: baseline.narrowed(service),
            });
    }

    /// The loss of `service` is resolved (data back) or accepted.
    pub fn clear_outstanding(&mut self, service: &str) -> Option<Outstanding> {
        self.doc.outstanding.remove(service)
    }

    /// The latest entry of any phase.
    pub fn latest(&self) -> Option<&Entry> {
        self.doc.entries.last()
    }

    /// Trims to [`MAX_ENTRIES`] (keeping the latest entry of every service) and writes atomically
    /// with mode 0600.
    pub fn save(&mut self) -> Result<(), LedgerError> {
        if self.read_only {
            return Ok(());
        }
        trim(&mut self.doc.entries, MAX_ENTRIES);
        let io = |e| LedgerError::Io {
            path: self.path.clone(),
            source: e,
        };
        if let Some(dir) = self.path.parent() {
            crate::state::ensure_private_dir(dir).map_err(io)?;
        }
        let bytes =
            serde_json::to_vec_pretty(&self.doc).map_err(|e| io(std::io::Error::other(e)))?;
        crate::state::atomic_write(&self.path, &bytes, 0o600).map_err(io)
    }
}

fn corrupt_name(path: &Path) -> PathBuf {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{}.corrupt-{ts}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Keeps the last `max` entries plus, for every service, the latest entry that counted it.
fn trim(entries: &mut Vec<Entry>, max: usize) {
    if entries.len() <= max {
        return;
    }
    let mut keep: BTreeSet<usize> = (entries.len() - max..entries.len()).collect();
    let mut seen = BTreeSet::new();
    for (i, e) in entries.iter().enumerate().rev() {
        for (svc, c) in &e.census.services {
            if c.is_available() && seen.insert(svc.clone()) {
                keep.insert(i);
            }
        }
    }
    let mut i = 0;
    entries.retain(|_| {
        let k = keep.contains(&i);
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::census::{RedisCensus, ServiceCensus};
    use std::os::unix::fs::PermissionsExt;

    fn entry(session: &str, phase: Phase, services: &[(&str, u64)]) -> Entry {
        let mut census = Census {
            taken_at: "2025-01-01T00:00:00Z".into(),
            services: BTreeMap::new(),
        };
        for (s, keys) in services {
            census.services.insert(
                s.to_string(),
                ServiceCensus::Redis(RedisCensus {
                    keys: [(0, *keys)].into(),
                    expires: BTreeMap::new(),
                }),
            );
        }
        Entry {
            session: session.into(),
            transition: "down".into(),
            phase,
            time: "2025-01-01T00:00:00Z".into(),
            project: "p".into(),
            nodus_version: "0".into(),
            engine_id: None,
            volumes_removed: false,
            census,
            services: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip_with_private_mode() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ledger/p.json");
        let (mut l, problem) = Ledger::open(&path, "p").unwrap();
        assert!(problem.is_none());
        assert!(l.entries().is_empty());
        l.push(entry("s1", Phase::Pre, &[("cache", 3)]));
        l.save().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (l2, problem) = Ledger::open(&path, "p").unwrap();
        assert!(problem.is_none(), "{problem:?}");
        assert_eq!(l2.entries(), l.entries());
    }

    #[test]
    fn peek_reads_without_side_effects() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.json");
        assert!(Ledger::peek(&path).is_none(), "missing");
        let (mut l, _) = Ledger::open(&path, "p").unwrap();
        l.push(entry("s1", Phase::Pre, &[("cache", 3)]));
        l.save().unwrap();
        assert_eq!(Ledger::peek(&path).unwrap().entries(), l.entries());
        // Torn: not trusted, and left exactly where and as it is.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(Ledger::peek(&path).is_none());
        assert_eq!(std::fs::read(&path).unwrap(), &full[..full.len() / 2]);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn torn_ledger_is_kept_aside_reported_and_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.json");
        let (mut l, _) = Ledger::open(&path, "p").unwrap();
        l.push(entry("s1", Phase::Pre, &[("cache", 3)]));
        l.save().unwrap();
        let full = std::fs::read(&path).unwrap();
        // a torn write: the first half of the document
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();

        let (l, problem) = Ledger::open(&path, "p").unwrap();
        let Some(LedgerError::Corrupt { kept, reason, .. }) = problem else {
            panic!("expected Corrupt, got {problem:?}")
        };
        assert!(reason.contains("JSON"), "{reason}");
        // nothing from the torn file is trusted
        assert!(l.entries().is_empty());
        assert!(l.latest_for("cache", None).is_none());
        // the bad file is kept, byte for byte
        assert_eq!(std::fs::read(&kept).unwrap(), &full[..full.len() / 2]);
        assert!(kept
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("p.json.corrupt-"));
        // the fresh ledger remembers it is untrusted, also for the next command
        let u = l.untrusted().unwrap();
        assert_eq!(u.corrupt_copy, kept.display().to_string());
        let (l2, problem) = Ledger::open(&path, "p").unwrap();
        assert!(problem.is_none());
        assert!(l2.untrusted().is_some());
    }

    #[test]
    fn empty_and_wrong_shape_files_are_corrupt() {
        let d = tempfile::tempdir().unwrap();
        for content in [
            "",
            "{\"version\":1}",
            "[1,2,3]",
            "{\"version\":0,\"project\":\"p\",\"entries\":[]}",
        ] {
            let path = d.path().join("p.json");
            std::fs::write(&path, content).unwrap();
            let (_, problem) = Ledger::open(&path, "p").unwrap();
            assert!(
                matches!(problem, Some(LedgerError::Corrupt { .. })),
                "{content:?}: {problem:?}"
            );
        }
    }

    #[test]
    fn newer_format_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.json");
        let content = "{\"version\":99,\"whatever\":true}";
        std::fs::write(&path, content).unwrap();
        let (mut l, problem) = Ledger::open(&path, "p").unwrap();
        assert!(matches!(
            problem,
            Some(LedgerError::TooNew { found: 99, .. })
        ));
        l.push(entry("s", Phase::Pre, &[("c", 1)]));
        l.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }

    #[test]
    fn latest_for_skips_own_post_entries_and_unavailable() {
        let d = tempfile::tempdir().unwrap();
        let (mut l, _) = Ledger::open(&d.path().join("p.json"), "p").unwrap();
        l.push(entry("s1", Phase::PostSettled, &[("db", 1), ("cache", 1)]));
        l.push(entry("s2", Phase::Pre, &[("db", 2)]));
        let mut unavailable = entry("s2", Phase::PostReady, &[]);
        unavailable.census.services.insert(
            "cache".into(),
            ServiceCensus::Unavailable {
                reason: "not running".into(),
            },
        );
        l.push(unavailable);
        l.push(entry("s2", Phase::PostSettled, &[("db", 3)]));
        // for session s2, its own post entries do not count, its pre entry does
        assert_eq!(l.latest_for("db", Some("s2")).unwrap().phase, Phase::Pre);
        // another session sees the latest
        assert_eq!(
            l.latest_for("db", Some("s3")).unwrap().phase,
            Phase::PostSettled
        );
        // unavailable censuses are skipped
        assert_eq!(l.latest_for("cache", None).unwrap().session, "s1");
        assert!(l.latest_for("nope", None).is_none());
    }

    #[test]
    fn outstanding_loss_pins_the_baseline_until_cleared() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.json");
        let (mut l, _) = Ledger::open(&path, "p").unwrap();
        l.push(entry("s1", Phase::Pre, &[("db", 10), ("cache", 1)]));
        l.push(entry("s2", Phase::PostSettled, &[("db", 4)]));
        assert_eq!(l.baseline("db", Some("s3")).unwrap().session, "s2");
        let before = l.entries()[0].clone();
        l.set_outstanding("db", &before, "up", "db: lost rows", None, None);
        // a second detection does not move the baseline
        let later = l.entries()[1].clone();
        l.set_outstanding("db", &later, "verify", "again", None, None);
        l.save().unwrap();
        let (mut l, _) = Ledger::open(&path, "p").unwrap();
        let b = l.baseline("db", Some("s3")).unwrap();
        assert_eq!(b.session, "s1");
        assert!(
            !b.census.services.contains_key("cache"),
            "narrowed to the service"
        );
        assert_eq!(l.outstanding("db").unwrap().detected_by, "up");
        // other services are unaffected
        assert_eq!(l.baseline("cache", None).unwrap().session, "s1");
        l.clear_outstanding("db");
        assert_eq!(l.baseline("db", Some("s3")).unwrap().session, "s2");
    }

    #[test]
    fn trimming_keeps_latest_entry_per_service() {
        let mut entries = vec![entry("old", Phase::Pre, &[("rare", 1)])];
        for i in 0..10 {
            entries.push(entry(&format!("s{i}"), Phase::Pre, &[("db", i)]));
        }
        trim(&mut entries, 3);
        let sessions: Vec<&str> = entries.iter().map(|e| e.session.as_str()).collect();
        assert_eq!(sessions, vec!["old", "s7", "s8", "s9"]);
    }
}
