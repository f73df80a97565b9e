//! Status of services and lookup of their containers.

use super::spec;
use super::{by_service, is_running, Lifecycle, LifecycleError, ServiceStatus};
use crate::engine::{ContainerInfo, Health, MountKind, RunState};
use crate::labels;

pub(super) fn describe(info: &ContainerInfo) -> String {
    match (info.state, info.health) {
        (RunState::Running, Health::None) => "running".into(),
        (RunState::Running, h) => health_str(h).into(),
        (RunState::Exited, _) => format!("exited {}", info.exit_code.unwrap_or(-1)),
        (s, _) => state_str(s).into(),
    }
}

fn state_str(s: RunState) -> &'static str {
    match s {
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Restarting => "restarting",
        RunState::Removing => "removing",
        RunState::Exited => "exited",
        RunState::Dead => "dead",
        RunState::Unknown => "unknown",
    }
}

pub(super) fn health_str(h: Health) -> &'static str {
    match h {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// "127.0.0.1:49153->5432/tcp"
pub fn format_port(p: &crate::engine::PublishedPort) -> String {
    let ip = if p.host_ip.contains(':') {
        format!("[{}]", p.host_ip)
    } else if p.host_ip.is_empty() {
        "0.0.0.0".to_string()
    } else {
        p.host_ip.clone()
    };
    format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
}

impl<'a> Lifecycle<'a> {
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, LifecycleError> {
        let mut by = by_service(self.project_containers().await?);
        let mut out = Vec::new();
        for (name, svc) in &self.compose().services {
            match by.remove(name) {
                Some(c) => out.push(self.status_of(name, &c, false)),
                None => out.push(ServiceStatus {
                    service: name.clone(),
                    container: None,
                    state: "not created".into(),
                    health: "none".into(),
                    image: svc.image.clone().unwrap_or_default(),
                    volumes: spec::stack_volumes(self.project, self.compose())
                        .into_iter()
                        .filter(|v| spec::service_volume_keys(svc).contains(&v.key))
                        .map(|v| v.name)
                        .collect(),
                    ports: Vec::new(),
                    orphan: false,
                }),
            }
        }
        for (name, c) in by {
            out.push(self.status_of(&name, &c, true));
        }
        Ok(out)
    }

    fn status_of(&self, service: &str, c: &ContainerInfo, orphan: bool) -> ServiceStatus {
        let state = match (c.state, c.exit_code) {
            (RunState::Exited, Some(code)) => format!("exited ({code})"),
            (s, _) => state_str(s).to_string(),
        };
        ServiceStatus {
            service: service.to_string(),
            container: Some(c.name.clone()),
            state,
            // The engine keeps the last health of a stopped container; it means nothing then.
            health: if is_running(c) {
                health_str(c.health).to_string()
            } else {
                "none".to_string()
            },
            image: c.image.clone(),
            volumes: c
                .mounts
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
                .map(|m| m.name_or_source.clone())
                .collect(),
            ports: c.ports.iter().map(format_port).collect(),
            orphan,
        }
    }

    /// Running container of a service, if any (used by census, snapshots, backups).
    pub async fn container_of(
        &self,
        service: &str,
    ) -> Result<Option<ContainerInfo>, LifecycleError> {
        Ok(self.any_container_of(service).await?.filter(is_running))
    }

    /// The container of a service in any state (stopped ones too), freshly inspected.
    pub async fn any_container_of(
        &self,
        service: &str,
    ) -> Result<Option<ContainerInfo>, LifecycleError> {
        let mut filter = labels::project_filter(self.project);
        filter.insert(labels::SERVICE.to_string(), service.to_string());
        let found = self.engine.list_containers(&filter).await?;
        let found: Vec<ContainerInfo> = found
            .into_iter()
            .filter(|c| {
                !c.labels.contains_key(labels::HELPER)
                    && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
            })
            .collect();
        match by_service(found).remove(service) {
            Some(c) => Ok(Some(self.engine.inspect_container(&c.id).await?)),
            None => Ok(None),
        }
    }
}
