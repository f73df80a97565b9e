//! Where a service's data lives, as the engine sees it: the mount holding the data dir and the
//! volume's identity (name, creation time, labels).

use super::census::ServiceCensus;
use super::ledger::{MountIdentity, ServiceIdentity, VolumeIdentity};
use crate::engine::{ContainerInfo, Engine, MountKind};
use crate::lifecycle::RunningService;
use crate::stack::{ServiceKind, StatefulService};

/// The data directory actually used: PGDATA for postgres when set, else the stack's data dir.
pub fn effective_data_dir(st: &StatefulService, c: &ContainerInfo) -> String {
    if st.kind == ServiceKind::Postgres {
        if let Some(p) = c.env_var("PGDATA").filter(|p| !p.is_empty()) {
            return p.trim_end_matches('/').to_string();
        }
    }
    st.data_dir.trim_end_matches('/').to_string()
}

/// True when `path` is `dir` or inside it.
fn path_within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A generated volume name (64 hex characters).
pub fn looks_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The mount that holds `data_dir` (the deepest one containing it).
pub fn data_mount(
    c: &ContainerInfo,
    st: &StatefulService,
    data_dir: &str,
) -> Option<MountIdentity> {
    let m = c
        .mounts
        .iter()
        .filter(|m| path_within(data_dir, &m.target))
        .max_by_key(|m| m.target.len())?;
    let anonymous = m.kind == MountKind::Volume
        && looks_anonymous(&m.name_or_source)
        && st.volume_name.as_deref() != Some(m.name_or_source.as_str());
    Some(MountIdentity {
        kind: m.kind.clone(),
        source: m.name_or_source.clone(),
        target: m.target.clone(),
        anonymous,
    })
}

/// Identity of a running service's data. Engine errors leave the volume unknown (None).
pub async fn identify(
    engine: &dyn Engine,
    svc: &RunningService,
    census: Option<&ServiceCensus>,
) -> Option<ServiceIdentity> {
    let st = svc.stateful.as_ref()?;
    let data_dir = effective_data_dir(st, &svc.container);
    let mount = data_mount(&svc.container, st, &data_dir);
    let volume = match &mount {
        Some(m) if m.kind == MountKind::Volume => match engine.inspect_volume(&m.source).await {
            Ok(Some(v)) => Some(VolumeIdentity {
                name: v.name,
                created_at: v.created_at,
                labels: v.labels,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("inspecting volume {}: {e}", m.source);
                None
            }
        },
        _ => None,
    };
    let system_identifier = match census {
        Some(ServiceCensus::Postgres(p)) if !p.system_identifier.is_empty() => {
            Some(p.system_identifier.clone())
        }
        _ => None,
    };
    Some(ServiceIdentity {
        kind: st.kind,
        container: Some(svc.container.name.clone()),
        container_id: Some(svc.container.id.clone()),
        started_at: svc.container.started_at.clone(),
        data_dir,
        volume_key: st.volume_key.clone(),
        mount,
        volume,
        system_identifier,
        stop_evidence: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Health, MountInfo, RunState};

    fn container(env: &[&str], mounts: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "p-db-1".into(),
            image: "postgres:16".into(),
            labels: Default::default(),
            state: RunState::Running,
            health: Health::Healthy,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            ports: vec![],
            mounts: mounts
                .iter()
                .map(|(src, tgt)| MountInfo {
                    kind: MountKind::Volume,
                    name_or_source: src.to_string(),
                    target: tgt.to_string(),
                })
                .collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            stop_signal: None,
            stop_timeout_secs: None,
            networks: vec![],
            network_ids: Default::default(),
        }
    }

    fn st() -> StatefulService {
        StatefulService {
            service: "db".into(),
            kind: ServiceKind::Postgres,
            data_dir: "/var/lib/postgresql/data".into(),
            volume_key: Some("db_data".into()),
            volume_name: Some("p_db_data".into()),
        }
    }

    #[test]
    fn pgdata_below_the_mount_is_on_it() {
        let c = container(
            &["PGDATA=/var/lib/postgresql/data/pgdata"],
            &[("p_db_data", "/var/lib/postgresql/data")],
        );
        let dir = effective_data_dir(&st(), &c);
        assert_eq!(dir, "/var/lib/postgresql/data/pgdata");
        let m = data_mount(&c, &st(), &dir).unwrap();
        assert_eq!(m.source, "p_db_data");
        assert!(!m.anonymous);
    }

    #[test]
    fn pgdata_off_the_volume_has_no_mount() {
        let c = container(
            &["PGDATA=/pgdata"],
            &[("p_db_data", "/var/lib/postgresql/data")],
        );
        let dir = effective_data_dir(&st(), &c);
        assert!(data_mount(&c, &st(), &dir).is_none());
        // a sibling path with the same prefix is not inside
        let c = container(
            &["PGDATA=/var/lib/postgresql/data2"],
            &[("p_db_data", "/var/lib/postgresql/data")],
        );
        assert!(data_mount(&c, &st(), &effective_data_dir(&st(), &c)).is_none());
    }

    #[test]
    fn anonymous_volume_is_recognised() {
        let anon = "0123456789abcdef".repeat(4);
        let c = container(&[], &[(&anon, "/var/lib/postgresql/data")]);
        let m = data_mount(&c, &st(), "/var/lib/postgresql/data").unwrap();
        assert!(m.anonymous);
    }
}
