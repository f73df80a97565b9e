//! Labels nodus puts on everything it creates. The compose-compatible ones make
//! `docker-compose -p NAME ps/logs` see nodus' containers; the `io.nodus.*` ones mark ownership.
//! nodus never touches a container, volume or network without its stack's project label.

use crate::engine::Labels;

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const VOLUME: &str = "com.docker.compose.volume";
pub const NETWORK: &str = "com.docker.compose.network";
pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const COMPOSE_VERSION: &str = "com.docker.compose.version";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";

/// Marks resources created by nodus.
pub const MANAGED: &str = "io.nodus.managed";
/// The nodus project (same value as [`PROJECT`]).
pub const NODUS_PROJECT: &str = "io.nodus.project";
/// On a data volume `nodus import --migrate-data` filled: where the data was copied from (the old
/// container's volume name or bind-mount source). `up` then knows that volume already holds that
/// data and does not offer to move it again.
pub const MIGRATED_FROM: &str = "io.nodus.migrated-from";
/// A container nodus created for its own use (snapshot/restore helper, probe): not a service.
pub const HELPER: &str = "io.nodus.helper";

/// The filter that selects everything belonging to a project.
pub fn project_filter(project: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(PROJECT.to_string(), project.to_string());
    l.insert(MANAGED.to_string(), "true".to_string());
    l
}

/// Base labels for any resource of a project.
pub fn base(project: &str) -> Labels {
    let mut l = project_filter(project);
    l.insert(NODUS_PROJECT.to_string(), project.to_string());
    l
}

/// True when `labels` say the resource belongs to `project` and was created by nodus.
pub fn owned_by(labels: &Labels, project: &str) -> bool {
    labels.get(PROJECT).map(String::as_str) == Some(project)
        && labels.get(MANAGED).map(String::as_str) == Some("true")
}
