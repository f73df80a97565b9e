//! What every database holds: postgres tables with exact row counts, redis keys per db, qdrant
//! collections and points.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::lifecycle::RunningService;

#[derive(Debug, thiserror::Error)]
pub enum CensusError {
    #[error("service {service} (container {container}): {message}")]
    Failed {
        service: String,
        container: String,
        message: String,
    },
}

/// A census of several services at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Census {
    /// RFC 3339.
    pub taken_at: String,
    pub services: BTreeMap<String, ServiceCensus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceCensus {
    Postgres(PgCensus),
    Redis(RedisCensus),
    Qdrant(QdrantCensus),
    /// The service could not be counted (not running, port unreachable...).
    Unavailable {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PgCensus {
    /// `pg_control_system().system_identifier`: changes only when a new cluster is initialised.
    pub system_identifier: String,
    /// Databases that accept connections (templates excluded).
    pub databases: BTreeMap<String, DbCensus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DbCensus {
    /// Keyed by `schema.table`.
    pub tables: BTreeMap<String, TableCensus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    Permanent,
    Unlogged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCensus {
    pub persistence: Persistence,
    pub rows: i64,
    /// True when `rows` is a planner estimate (`--fast`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RedisCensus {
    /// Keys per logical database (db index → key count).
    pub keys: BTreeMap<u32, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QdrantCensus {
    /// Collection → points.
    pub collections: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CensusOptions {
    /// Planner estimates instead of `count(*)`.
    pub fast: bool,
}

/// Census of one running stateful service.
pub async fn take_service(
    engine: &dyn Engine,
    svc: &RunningService,
    opts: &CensusOptions,
) -> Result<ServiceCensus, CensusError> {
    let _ = (engine, svc, opts);
    todo!("census")
}
