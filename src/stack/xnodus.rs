//! The optional top-level `x-nodus:` block: what compose cannot say.
//!
//! ```yaml
//! x-nodus:
//!   harden: true                 # false = pass the file through unchanged (testing/opt-out)
//!   settle: 3s                   # wait after all services are healthy before the final census
//!   state_dir: .nodus-app        # state dir, relative to the stack file (default .nodus); for
//!                                # several stacks in one directory
//!   services:
//!     db:
//!       kind: postgres           # postgres | redis | qdrant | mysql | mariadb | mongo | other
//!       stateful: true
//!       data_dir: /var/lib/postgresql/data
//!       harden: true
//!       databases:
//!         - name: langfuse_db
//!           owner: langfuse
//!           extensions: [uuid-ossp, pg_trgm]
//!       roles:
//!         - name: langfuse
//!           password_env: LANGFUSE_DB_PASSWORD   # or password: ${LANGFUSE_DB_PASSWORD}
//!           login: true
//!   snapshots:
//!     on_down: true
//!     keep: { last: 3, hourly: 168, daily: 30, weekly: 12 }
//!   watch:                       # `nodus watch` rules (beside compose's develop.watch)
//!     - paths: [config/**/*.yaml, init/*.sql]   # globs relative to the stack file
//!       services: [api, worker]
//!       action: restart          # restart | recreate | rebuild | sync | sync+restart
//!       target: /app/config      # in the container (sync actions)
//! ```
//! Unknown keys are rejected, listing the valid ones.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XNodus {
    /// Global hardening switch (default true).
    #[serde(default = "yes")]
    pub harden: bool,
    /// Compose duration to wait after everything is healthy before the settled census.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    /// The state dir, relative to the stack file's directory (default `.nodus`); `--state-dir`
    /// wins. Lets several stacks share a directory without sharing a ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub services: IndexMap<String, ServiceOptions>,
    #[serde(default)]
    pub snapshots: SnapshotPolicy,
    /// `nodus watch` rules for what compose's `develop.watch` cannot say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchRule>,
}

impl Default for XNodus {
    fn default() -> Self {
        XNodus {
            harden: true,
            settle: None,
            state_dir: None,
            services: IndexMap::new(),
            snapshots: SnapshotPolicy::default(),
            watch: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Postgres,
    Redis,
    Qdrant,
    Mysql,
    Mariadb,
    Mongo,
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOptions {
    /// Overrides the kind guessed from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ServiceKind>,
    /// Forces a service to be treated as stateful (or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    /// The data directory inside the container (defaults per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Per-service hardening switch (default: the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harden: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    /// Literal (usually `${VAR}`, interpolated like the rest of the file). Never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default = "yes")]
    pub login: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    /// Snapshot stateful volumes on `down`/`stop`/`restart` (default true).
    #[serde(default = "yes")]
    pub on_down: bool,
    #[serde(default)]
    pub keep: Retention,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            on_down: true,
            keep: Retention::default(),
        }
    }
}

/// Retention counts, applied per volume. Unset = 0 for that bucket; all unset = keep last 10.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
}

/// One `x-nodus.watch` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    /// Globs relative to the stack file's directory (gitignore-style `**` allowed).
    pub paths: Vec<String>,
    /// Services the rule acts on.
    pub services: Vec<String>,
    pub action: WatchAction,
    /// Where changed files go in the container (`sync`, `sync+restart`), relative to the glob's
    /// fixed leading directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What `nodus watch` does when a rule's paths change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchAction {
    #[serde(rename = "restart")]
    Restart,
    #[serde(rename = "recreate")]
    Recreate,
    #[serde(rename = "rebuild")]
    Rebuild,
    #[serde(rename = "sync")]
    Sync,
    #[serde(rename = "sync+restart")]
    SyncRestart,
}
