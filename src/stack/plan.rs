//! Dependency ordering and config hashes.

use super::{ComposeFile, StackError};

/// Services to act on in `depends_on` order (dependencies first). `selected` empty = all;
/// otherwise the selected services plus everything they depend on, transitively.
pub fn start_order(compose: &ComposeFile, selected: &[String]) -> Result<Vec<String>, StackError> {
    let _ = (compose, selected);
    todo!("start order")
}

/// A stable hash of a service's generated definition (the `com.docker.compose.config-hash` label).
pub fn config_hash(service: &super::Service) -> String {
    let _ = service;
    todo!("config hash")
}
