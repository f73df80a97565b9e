//! Orphans: containers of the project whose service is no longer in the stack file. `up
//! --remove-orphans` (and `down`) stop them like any other service — with the guard's census
//! before the stop when the orphan is a database nodus can count — then remove them.

use super::{service_label, Hooks, Lifecycle, LifecycleError, Report, Transition};
use crate::engine::{ContainerInfo, MountKind};
use crate::stack::harden::{default_data_dir, guess_kind};
use crate::stack::{Service, StatefulService};

impl<'a> Lifecycle<'a> {
    /// What nodus can tell about an orphan's data from its container: its kind (from the image)
    /// and data directory (PGDATA, else the image family's default), for the guard's census.
    /// None for services still in the stack (they have their own entry) and for non-databases.
    pub(super) fn orphan_stateful(
        &self,
        service: &str,
        c: &ContainerInfo,
    ) -> Option<StatefulService> {
        if self.compose().services.contains_key(service) {
            return None;
        }
        let kind = guess_kind(&c.image)?;
        let svc = Service {
            image: Some(c.image.clone()),
            ..Service::default()
        };
        let data_dir = c
            .env_var("PGDATA")
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .or_else(|| default_data_dir(kind, &svc))?;
        let volume_name = c
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .filter(|m| {
                data_dir
                    .trim_end_matches('/')
                    .starts_with(m.target.trim_end_matches('/'))
            })
            .max_by_key(|m| m.target.len())
            .map(|m| m.name_or_source.clone());
        Some(StatefulService {
            service: service.to_string(),
            kind,
            data_dir,
            volume_key: None,
            volume_name,
        })
    }

    /// Stops (guarded) and removes the orphans among `containers`.
    pub(super) async fn remove_orphans(
        &self,
        containers: &[ContainerInfo],
        transition: Transition,
        hooks: &mut dyn Hooks,
        report: &mut Report,
    ) -> Result<(), LifecycleError> {
        let orphans: Vec<(String, ContainerInfo)> = containers
            .iter()
            .filter_map(|c| {
                let svc = service_label(c)?;
                (!self.compose().services.contains_key(svc)).then(|| (svc.to_string(), c.clone()))
            })
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        for (svc, c) in &orphans {
            self.ui.status(format!(
                "container {} belongs to service {svc}, which is no longer in the stack (orphan); removing it (--remove-orphans)",
                c.name
            ));
        }
        self.stop_services(&orphans, None, transition, hooks, true, report)
            .await?;
        for (svc, c) in &orphans {
            self.engine.remove_container(&c.id, false).await?;
            self.ui.success(format!("{svc}  removed ({})", c.name));
            report.removed.push(svc.clone());
        }
        Ok(())
    }
}
