//! The optional top-level `x-nodus:` block: what compose cannot say.
//!
//! ```yaml
//! x-nodus:
//!   harden: true                 # false = pass the file through unchanged (testing/opt-out)
//!   settle: 3s                   # longest settle of app services before the final census
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
//!       ddl_log: true            # dev only: log DDL with the client address (doctor --last-loss)
//!       roles:
//!         - name: langfuse
//!           password_env: LANGFUSE_DB_PASSWORD   # or password: ${LANGFUSE_DB_PASSWORD}
//!           login: true
//!   snapshots:
//!     on_down: true
//!     on_restart: auto           # auto | always | never: auto snapshots on `restart` only when
//!                                # an application service starts in it (databases alone keep
//!                                # their containers and volumes; the census checks them)
//!     keep: { last: 3, hourly: 168, daily: 30, weekly: 12 }
//!     store: ../.nodus-store     # deduplicating snapshot store (default <state>/snapshots/.store)
//!     trust_mtime: true          # unchanged large files (size + mtime) are not re-read
//!   watch:                       # `nodus watch` rules (beside compose's develop.watch)
//!     - paths: [config/**/*.yaml, init/*.sql]   # globs relative to the stack file
//!       services: [api, worker]
//!       action: restart          # restart | recreate | rebuild | sync | sync+restart
//!       target: /app/config      # in the container (sync actions)
//! ```
//! Unknown keys are rejected, every one of them with its place and the valid keys there
//! ([`parse`]; the types themselves accept unknown keys so that all of them can be collected).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XNodus {
    /// Global hardening switch (default true).
    #[serde(default = "yes")]
    pub harden: bool,
    /// Compose duration: the longest settle after app services started (it ends as soon as two
    /// consecutive censuses agree; see guard/settle.rs).
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
    /// Dev only, postgres: log every DDL statement with the client's address
    /// (`log_statement=ddl`, `log_line_prefix` with `%h`), so `nodus doctor --last-loss` can name
    /// the container that dropped a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl_log: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
pub struct SnapshotPolicy {
    /// Snapshot stateful volumes on `down`/`stop`/`restart` (default true).
    #[serde(default = "yes")]
    pub on_down: bool,
    /// Which `restart`s snapshot (when `on_down` is true): see [`OnRestart`].
    #[serde(default)]
    pub on_restart: OnRestart,
    #[serde(default)]
    pub keep: Retention,
    /// The deduplicating snapshot store (relative to the stack file's directory); default
    /// `<state dir>/snapshots/.store`. Stacks naming the same path share chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Take a large file whose size and modification time match the previous snapshot's (and
    /// that was modified before that snapshot began) from the previous snapshot without reading
    /// it through the chunker (default true; see snapshot/cas/reuse.rs). `false`: every byte is
    /// cut and hashed on every snapshot.
    #[serde(default = "yes")]
    pub trust_mtime: bool,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            on_down: true,
            on_restart: OnRestart::Auto,
            keep: Retention::default(),
            store: None,
            trust_mtime: true,
        }
    }
}

/// When `restart` snapshots the volumes of the databases it stops.
///
/// A snapshot is there to put back what a transition lost. `down` removes containers (an
/// anonymous volume, a data dir off the volume, a volume renamed with the project: all gone), so
/// it always snapshots. A `restart` keeps every container and volume; between the clean stop and
/// the census after the start only the restarted services run, and of them only an
/// application (an ORM's schema sync at start, a seed script) changes a database's data. So by
/// default (`auto`) a restart snapshots only when it starts an application service (any service
/// that is not a database nodus knows); a restart of databases alone is checked by the censuses
/// before and after it and skips reading every volume through the engine. `always` snapshots
/// on every restart (as `down` does), `never` on none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    #[default]
    Auto,
    Always,
    Never,
}

/// Retention counts, applied per volume. Unset = 0 for that bucket; all unset = keep last 10.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// A key of `x-nodus` that nodus does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Path below `x-nodus`, e.g. `["services", "db", "databses"]`.
    pub path: Vec<String>,
    /// The keys valid at that place.
    pub valid: &'static [&'static str],
}

/// Why `x-nodus` could not be read.
#[derive(Debug)]
pub enum ParseError {
    /// Every unknown key, in document order.
    Unknown(Vec<UnknownKey>),
    /// A type error (the first one).
    Invalid(serde_yaml::Error),
}

/// Reads the `x-nodus` block, reporting every unknown key (not only the first).
pub fn parse(v: serde_yaml::Value) -> Result<XNodus, ParseError> {
    let mut unknown = Vec::new();
    let parsed = serde_ignored::deserialize(v, |p| {
        let path: Vec<String> = p.to_string().split('.').map(str::to_string).collect();
        let valid = valid_keys(&path[..path.len() - 1]);
        unknown.push(UnknownKey { path, valid });
    });
    match parsed {
        Ok(x) if unknown.is_empty() => Ok(x),
        Ok(_) => Err(ParseError::Unknown(unknown)),
        Err(e) if unknown.is_empty() => Err(ParseError::Invalid(e)),
        // A type error after unknown keys: the unknown keys first (often the cause).
        Err(_) => Err(ParseError::Unknown(unknown)),
    }
}

/// The keys valid in the mapping at `parent` (a path below `x-nodus`).
fn valid_keys(parent: &[String]) -> &'static [&'static str] {
    let p: Vec<&str> = parent.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => fields::<XNodus>(),
        ["services", _] => fields::<ServiceOptions>(),
        ["services", _, "databases", _] => fields::<DatabaseSpec>(),
        ["services", _, "roles", _] => fields::<RoleSpec>(),
        ["snapshots"] => fields::<SnapshotPolicy>(),
        ["snapshots", "keep"] => fields::<Retention>(),
        ["watch", _] => fields::<WatchRule>(),
        _ => &[],
    }
}

/// The field names serde expects for the struct `T` (asked from its `Deserialize` impl).
fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Ask<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Ask<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("fields only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Ask(&mut out));
    out
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn every_unknown_key_is_reported_with_the_valid_ones() {
        let v: serde_yaml::Value = serde_yaml::from_str(
            "hardne: true\nservices:\n  db:\n    databses: []\n    roles:\n      - name: a\n        pasword: x\nsnapshots:\n  keep: {lst: 3}\n",
        )
        .unwrap();
        let Err(ParseError::Unknown(u)) = parse(v) else {
            panic!("unknown keys must be reported")
        };
        let paths: Vec<String> = u.iter().map(|k| k.path.join(".")).collect();
        assert_eq!(
            paths,
            [
                "hardne",
                "services.db.databses",
                "services.db.roles.0.pasword",
                "snapshots.keep.lst"
            ]
        );
        assert!(u[0].valid.contains(&"harden"));
        assert!(u[1].valid.contains(&"databases"));
        assert!(u[2].valid.contains(&"password_env"));
        assert!(u[3].valid.contains(&"last"));
    }

    #[test]
    fn known_keys_parse() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("settle: 2s\nsnapshots:\n  keep: {last: 3}\n").unwrap();
        let x = parse(v).unwrap();
        assert_eq!(x.snapshots.keep.last, Some(3));
        assert_eq!(x.snapshots.store, None);
        let v: serde_yaml::Value =
            serde_yaml::from_str("snapshots:\n  store: ../shared-store\n").unwrap();
        assert_eq!(
            parse(v).unwrap().snapshots.store.as_deref(),
            Some("../shared-store")
        );
        let v: serde_yaml::Value = serde_yaml::from_str("snapshots:\n  stor: x\n").unwrap();
        let u = parse(v).unwrap_err();
        assert!(format!("{u:?}").contains("store"), "{u:?}");
    }
}
