//! Volume snapshots (archive endpoint + zstd + SHA-256), restore, retention; logical backups.
