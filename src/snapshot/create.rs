//! x
pub struct SnapshotHook; pub struct SnapshotOutcome; pub struct SnapshotRequest; pub fn snapshot_container(){}
