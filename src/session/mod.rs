//! Sessions with a stack's containers, compose style: finding a service's containers, streaming
//! their logs (interleaved with coloured prefixes), attached commands (`exec`, `run`, `psql`) with
//! a TTY in raw mode, stdin streamed and the exit code passed through, and one-off containers.
//!
//! Everything goes through the [`Engine`](crate::engine::Engine) trait; commands stay thin.

pub mod attach;
pub mod logs;
pub mod oneoff;
pub mod pull;
pub mod tty;

use crate::engine::{ContainerInfo, Engine, EngineError, RunState};
use crate::labels;

/// A container of the stack, with its service.
#[derive(Debug, Clone)]
pub struct ServiceContainer {
    pub service: String,
    pub container: ContainerInfo,
}

/// The project's service containers (not nodus' helpers; one-off `run` containers only with
/// `oneoff`), sorted by service then name; restricted to `services` when not empty.
pub async fn containers(
    engine: &dyn Engine,
    project: &str,
    services: &[String],
    oneoff: bool,
) -> Result<Vec<ServiceContainer>, EngineError> {
    let all = engine
        .list_containers(&labels::project_filter(project))
        .await?;
    let mut out: Vec<ServiceContainer> = all
        .into_iter()
        .filter(|c| !c.labels.contains_key(labels::HELPER))
        .filter(|c| oneoff || c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True"))
        .filter_map(|c| {
            let service = c.labels.get(labels::SERVICE)?.clone();
            (services.is_empty() || services.contains(&service)).then_some(ServiceContainer {
                service,
                container: c,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.service.as_str(), a.container.name.as_str())
            .cmp(&(b.service.as_str(), b.container.name.as_str()))
    });
    Ok(out)
}

/// Why a service has no container to work with.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("service {service} has no container; start it with `nodus up {service}`")]
    NotCreated { service: String },
    #[error("service {service} is not running (container {container} is {state}); start it with `nodus up {service}`")]
    NotRunning {
        service: String,
        container: String,
        state: String,
    },
    #[error("port {port}/{protocol} of service {service} is not published")]
    NotPublished {
        service: String,
        port: u16,
        protocol: String,
    },
    #[error("no {kind} service in the stack; name one")]
    NoServiceOfKind { kind: String },
    #[error("{0}")]
    Refused(String),
}

/// The running container of `service` (the lowest-numbered one when scaled).
pub async fn running_container(
    engine: &dyn Engine,
    project: &str,
    service: &str,
) -> anyhow::Result<ContainerInfo> {
    let found = containers(engine, project, &[service.to_string()], false).await?;
    let Some(first) = found.first() else {
        return Err(SessionError::NotCreated {
            service: service.to_string(),
        }
        .into());
    };
    match found
        .iter()
        .find(|c| c.container.state == RunState::Running)
    {
        Some(c) => Ok(engine.inspect_container(&c.container.id).await?),
        None => Err(SessionError::NotRunning {
            service: service.to_string(),
            container: first.container.name.clone(),
            state: format!("{:?}", first.container.state).to_lowercase(),
        }
        .into()),
    }
}

/// `-e KEY=VALUE` as given; `-e KEY` takes KEY's value from the environment (dropped when unset).
pub fn env_args(given: &[String]) -> Vec<String> {
    given
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

/// Runs a command attached in a running container (stdin streamed, TTY when asked) and returns
/// its exit code.
pub async fn exec(
    engine: &dyn Engine,
    container_id: &str,
    spec: &crate::engine::ExecSpec,
) -> anyhow::Result<i64> {
    let attached = engine.exec_attach(container_id, spec).await?;
    let exec_id = attached.id.clone();
    attach::pump(
        engine,
        attached,
        attach::ResizeTarget::Exec(&exec_id),
        attach::PumpOptions {
            tty: spec.tty,
            stdin: spec.stdin,
        },
    )
    .await?;
    Ok(engine.exec_exit_code(&exec_id).await?.unwrap_or(-1))
}

/// The stack's services of `kind`, in file order.
pub fn services_of_kind(
    hardened: &crate::stack::Hardened,
    kind: crate::stack::ServiceKind,
) -> Vec<String> {
    hardened
        .compose
        .services
        .keys()
        .filter(|s| {
            hardened
                .stateful_service(s)
                .is_some_and(|st| st.kind == kind)
        })
        .cloned()
        .collect()
}
