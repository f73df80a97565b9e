//! Comparing two censuses.

use serde::Serialize;

use super::census::ServiceCensus;

/// Differences for one service; `is_loss()` decides exit code 3.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ServiceDiff {
    pub missing_databases: Vec<String>,
    /// database → missing `schema.table`s (all of them).
    pub missing_tables: std::collections::BTreeMap<String, Vec<String>>,
    /// database → (`schema.table`, rows before, rows after) where rows dropped.
    pub row_drops: std::collections::BTreeMap<String, Vec<(String, i64, i64)>>,
    pub new_databases: Vec<String>,
    pub new_tables: std::collections::BTreeMap<String, Vec<String>>,
    pub system_identifier_changed: Option<(String, String)>,
    /// Redis dbs / qdrant collections that lost keys/points: (name, before, after).
    pub other_drops: Vec<(String, u64, u64)>,
}

impl ServiceDiff {
    pub fn is_loss(&self) -> bool {
        !self.missing_databases.is_empty()
            || self.missing_tables.values().any(|v| !v.is_empty())
            || self.row_drops.values().any(|v| !v.is_empty())
            || !self.other_drops.is_empty()
    }
}

pub fn compare(before: &ServiceCensus, after: &ServiceCensus) -> ServiceDiff {
    let _ = (before, after);
    todo!("diff")
}
