use std::io::Read;

use crate::snapshot::manifest::Manifest;
use crate::snapshot::store::SnapshotEntry;
use crate::snapshot::{Result, SnapshotError};

/// The tar stream of a store-backed snapshot.
pub fn open_snapshot(entry: &SnapshotEntry, _m: &Manifest) -> Result<Box<dyn Read + Send>> {
    Err(SnapshotError::Other(format!(
        "snapshot {}: store-backed snapshots are not readable yet",
        entry.id
    )))
}
