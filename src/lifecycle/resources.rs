//! What a transition needs from the engine before it creates or starts anything: the networks
//! and volumes of the services (foreign or missing external ones refused), their images (pulled
//! as `--pull` says), and whether a stopped container's networks are still there.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{self, SpecError};
use super::wait::Spin;
use super::{ImagePull, Lifecycle, LifecycleError};
use crate::engine::{ContainerInfo, EngineError, Labels, PullProgress};
use crate::labels;

impl<'a> Lifecycle<'a> {
    /// A network stopped container `c` was attached to that is gone: removed, or removed and
    /// created again under its name (another ID). The engine refuses to start such a container.
    /// `ids` keeps each network's current ID (None: missing) across the containers of one `up`,
    /// so a network is inspected once.
    pub(super) async fn network_gone(
        &self,
        c: &ContainerInfo,
        ids: &mut BTreeMap<String, Option<String>>,
    ) -> Result<Option<String>, LifecycleError> {
        for (name, id) in &c.network_ids {
            let now = match ids.get(name) {
                Some(now) => now.clone(),
                None => {
                    let now = self.engine.inspect_network(name).await?.map(|n| n.id);
                    ids.insert(name.clone(), now.clone());
                    now
                }
            };
            if now.as_ref() != Some(id) {
                return Ok(Some(name.clone()));
            }
        }
        Ok(None)
    }

    /// Networks and volumes the services in `order` need: errors for foreign or missing external
    /// ones; returns those to create (name, labels).
    #[allow(clippy::type_complexity)]
    pub(super) async fn check_resources(
        &self,
        order: &[String],
    ) -> Result<(Vec<(String, Labels)>, Vec<(String, Labels)>), LifecycleError> {
        let compose = self.compose();
        let project = self.project;

        let mut keys: Vec<String> = Vec::new();
        for name in order {
            for k in spec::service_network_keys(&compose.services[name]) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let mut networks = Vec::new();
        for key in keys {
            let net = spec::network(project, compose, &key).ok_or_else(|| {
                LifecycleError::Spec(SpecError::Invalid {
                    service: order.join(","),
                    field: "networks".into(),
                    message: format!("network `{key}` is not declared"),
                })
            })?;
            let found = self.engine.inspect_network(&net.name).await?;
            if self.to_create(
                "network",
                &net.name,
                net.external,
                found.map(|i| i.labels),
                "using it",
            )? {
                let declared = compose
                    .networks
                    .get(&key)
                    .map(|d| d.labels.clone())
                    .unwrap_or_default();
                networks.push((net.name, spec::network_labels(project, &key, &declared)));
            }
        }

        let used: BTreeSet<String> = order
            .iter()
            .flat_map(|n| spec::service_volume_keys(&compose.services[n]))
            .collect();
        let mut volumes = Vec::new();
        for v in spec::stack_volumes(project, compose) {
            if !used.contains(&v.key) {
                continue;
            }
            let found = self.engine.inspect_volume(&v.name).await?;
            let adopted = "nodus adopts it (its data is kept)";
            if self.to_create(
                "volume",
                &v.name,
                v.external,
                found.map(|i| i.labels),
                adopted,
            )? {
                let declared = compose
                    .volumes
                    .get(&v.key)
                    .map(|d| d.labels.clone())
                    .unwrap_or_default();
                volumes.push((v.name, spec::volume_labels(project, &v.key, &declared)));
            }
        }
        Ok((networks, volumes))
    }

    /// Whether network or volume `name` of the stack is to be created: not if it exists and is
    /// ours, external, or docker compose's for this project (`compose_note` says what is done
    /// with that one); a missing one is, unless external; another owner's is refused.
    fn to_create(
        &self,
        kind: &'static str,
        name: &str,
        external: bool,
        found: Option<Labels>,
        compose_note: &str,
    ) -> Result<bool, LifecycleError> {
        let project = self.project;
        let Some(found) = found else {
            if external {
                return Err(LifecycleError::ExternalMissing {
                    kind,
                    name: name.to_string(),
                });
            }
            return Ok(true);
        };
        if external || labels::owned_by(&found, project) {
            return Ok(false);
        }
        if found.get(labels::PROJECT).map(String::as_str) == Some(project) {
            self.ui.detail(format!(
                "{kind} {name} was created by docker compose for project {project}; {compose_note}"
            ));
            return Ok(false);
        }
        Err(LifecycleError::Foreign {
            kind,
            name: name.to_string(),
            project: project.to_string(),
        })
    }

    /// Makes `image` present locally as `pull` says: pulls a missing one (`Missing`), pulls it
    /// anyway (`Always`), or refuses to pull (`Never`).
    pub(super) async fn ensure_image_with(
        &self,
        image: &str,
        pull: ImagePull,
    ) -> Result<(), LifecycleError> {
        let present = self.engine.image_exists(image).await?;
        match pull {
            ImagePull::Missing if present => Ok(()),
            ImagePull::Never if present => Ok(()),
            ImagePull::Never => Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                reason: "it is not present locally and --pull never forbids pulling".into(),
            }
            .into()),
            ImagePull::Always | ImagePull::Missing => self.pull(image).await,
        }
    }

    /// Pulls `image` with a progress line.
    async fn pull(&self, image: &str) -> Result<(), LifecycleError> {
        self.ui.status(format!("pulling {image}..."));
        let spin = Spin(self.ui.spinner(format!("pulling {image}")));
        let pb = spin.0.clone();
        let img = image.to_string();
        let progress = move |p: PullProgress| {
            let msg = match (p.current, p.total) {
                (Some(c), Some(t)) if t > 0 => {
                    format!("pulling {img}: {} {}%", p.status, c.saturating_mul(100) / t)
                }
                _ => format!("pulling {img}: {}", p.status),
            };
            pb.set_message(msg);
        };
        let res = self.engine.pull_image(image, &progress).await;
        drop(spin);
        match res {
            Ok(()) => {
                self.ui.success(format!("pulled {image}"));
                Ok(())
            }
            Err(e @ (EngineError::Unreachable { .. } | EngineError::ImageUnavailable { .. })) => {
                Err(e.into())
            }
            Err(e) => Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                reason: e.to_string(),
            }
            .into()),
        }
    }
}
