//! Bringing services up: up, start, restart; (re)creation. What they need from the engine
//! first (networks, volumes, images) is in `resources.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::BuiltSpec;
use super::status::describe;
use super::wait::Want;
use super::{
    by_service, is_running, service_label, Hooks, ImagePull, Lifecycle, LifecycleError, Report,
    RunningService, Transition, UpOptions,
};
use crate::engine::{ContainerInfo, ContainerSpec, EngineError, MountKind, MountSpec};
use crate::labels;
use crate::stack::model::DependsCondition;
use crate::stack::plan;

/// What is left to do for a service of a wave once its dependencies are ready and the container
/// it replaces (if any) is gone.
enum Prepared {
    /// Running and unchanged: its ID.
    Running(String),
    /// An existing container to start.
    Start(Box<ContainerInfo>),
    /// A container this transition started already (a restart's early start): its ID. It
    /// counts as started and is waited for like the others.
    Started(String),
    /// A container to create from this spec, then start ("created" or "recreated").
    Create(Box<ContainerSpec>, &'static str),
}

enum Action {
    Unchanged(ContainerInfo),
    Start(ContainerInfo),
    Started(ContainerInfo),
    Recreate(ContainerInfo, Why),
    Create,
}

/// Why a container is recreated (what `up` says).
enum Why {
    /// Its definition (config hash) changed.
    Changed,
    /// `--force-recreate`, or `nodus watch`'s `recreate` action.
    Asked,
    /// It is stopped and this network it was attached to is gone: it cannot start again.
    NetworkGone(String),
    /// docker compose made it; nodus takes it over.
    Compose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `up`: create what is missing, recreate what changed.
    Converge,
    /// `start`/`restart`: only start existing containers.
    StartOnly,
    /// [`Lifecycle::recreate`]: like `Converge`, and the selected services are recreated even
    /// when their definition did not change.
    Recreate,
}

/// Like compose on recreation: anonymous volumes of the old container are mounted into the new
/// one at the same path (where the new spec has an anonymous volume there, or nothing: a VOLUME
/// of the image), so their data is not silently left behind. Returns (volume, target) carried.
pub(super) fn carry_anonymous_volumes(
    spec: &mut ContainerSpec,
    old: &ContainerInfo,
) -> Vec<(String, String)> {
    let anonymous = |name: &str| name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
    let mut carried = Vec::new();
    for m in old
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume && anonymous(&m.name_or_source))
    {
        match spec.mounts.iter_mut().find(|n| n.target == m.target) {
            Some(n) if n.kind == MountKind::Volume && n.source.is_empty() => {
                n.source = m.name_or_source.clone();
            }
            Some(_) => continue,
            None => spec.mounts.push(MountSpec {
                kind: MountKind::Volume,
                source: m.name_or_source.clone(),
                target: m.target.clone(),
                read_only: false,
            }),
        }
        carried.push((m.name_or_source.clone(), m.target.clone()));
    }
    carried
}

/// A service's config hash combined with the ID of the image it runs (services with a built
/// image: a rebuild changes the hash, so their containers are recreated).
fn with_image_id(config_hash: &str, image_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        format!("{config_hash}\n{image_id}").as_bytes(),
    ))
}

impl<'a> Lifecycle<'a> {
    fn note_orphans(&self, containers: &[ContainerInfo]) {
        for c in containers {
            if let Some(svc) = service_label(c) {
                if !self.compose().services.contains_key(svc) {
                    self.ui.status(format!(
                        "container {} belongs to service {svc}, which is no longer in the stack (orphan); `nodus down` removes it",
                        c.name
                    ));
                }
            }
        }
    }

    pub async fn up(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        self.bring_up(
            opts,
            Transition::Up,
            Mode::Converge,
            &BTreeSet::new(),
            hooks,
        )
        .await
        .map(|r| self.timed(r))
    }

    /// `started_early`: services whose containers this transition started already (see
    /// [`Lifecycle::restart`]); they count as started.
    async fn bring_up(
        &self,
        opts: &UpOptions,
        transition: Transition,
        mode: Mode,
        started_early: &BTreeSet<String>,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let compose = self.compose();
        let mut order = plan::start_order(compose, &opts.services)?;
        if opts.no_deps && !opts.services.is_empty() {
            // `--no-deps`: only what was named; dependencies are used as they are.
            order.retain(|s| opts.services.contains(s));
        }
        let mut report = Report::default();

        // 1. Specs: every error about the stack comes before anything is touched.
        let mut specs: BTreeMap<String, BuiltSpec> = BTreeMap::new();
        let mut warned = BTreeSet::new();
        for name in &order {
            let built = self.build_spec(name)?;
            for w in &built.warnings {
                if warned.insert(w.clone()) {
                    self.ui.warn(w);
                }
            }
            specs.insert(name.clone(), built);
        }

        // 1b. Images of `build:` services: built (when needed) before anything is touched, so a
        //     failed build leaves running services as they were. The image ID is part of the
        //     config hash of the services using it: a rebuilt image recreates exactly those.
        let built_images = if mode == Mode::StartOnly {
            BTreeMap::new()
        } else {
            let builder = crate::build::Builder {
                engine: self.engine,
                project: self.project,
                compose,
                env: self.env,
                ui: self.ui,
            };
            let _t = crate::timing::span("build");
            let outcomes = builder.run(&order, opts.build).await?;
            report.built = outcomes
                .iter()
                .filter(|o| o.built)
                .map(|o| o.image.clone())
                .collect();
            crate::build::image_ids(&outcomes)
        };
        for built in specs.values_mut() {
            if let Some(id) = built_images.get(&built.spec.image) {
                built.config_hash = with_image_id(&built.config_hash, id);
                built
                    .spec
                    .labels
                    .insert(labels::CONFIG_HASH.into(), built.config_hash.clone());
            }
        }

        // 2. What exists, and what to do per service.
        let containers = self.project_containers().await?;
        if mode != Mode::StartOnly && !opts.remove_orphans {
            self.note_orphans(&containers);
        }
        let orphans = if mode == Mode::Converge && opts.remove_orphans {
            containers.clone()
        } else {
            Vec::new()
        };
        let mut existing = by_service(containers);
        // Containers docker compose made for this project: adopted like a changed container.
        let mut compose_made = if mode == Mode::Converge {
            self.compose_containers().await?
        } else {
            BTreeMap::new()
        };
        let mut actions: BTreeMap<String, Action> = BTreeMap::new();
        let mut network_ids = BTreeMap::new();
        for name in &order {
            let built = &specs[name];
            let action = match existing.remove(name) {
                Some(c) => {
                    let asked = opts.force_recreate
                        || (mode == Mode::Recreate && opts.services.contains(name));
                    let same = c.labels.get(labels::CONFIG_HASH) == Some(&built.config_hash)
                        && !(mode == Mode::Recreate && opts.services.contains(name));
                    let mode = if mode == Mode::Recreate {
                        Mode::Converge
                    } else {
                        mode
                    };
                    match mode {
                        Mode::Converge if opts.force_recreate => Action::Recreate(c, Why::Asked),
                        Mode::Converge if !same && !opts.no_recreate => {
                            Action::Recreate(c, if asked { Why::Asked } else { Why::Changed })
                        }
                        Mode::Converge | Mode::StartOnly | Mode::Recreate => {
                            if !same && opts.no_recreate {
                                self.ui.detail(format!(
                                    "service {name}: its definition changed; kept as it is (--no-recreate)"
                                ));
                            } else if !same {
                                self.ui.warn(format!(
                                    "service {name}: its definition changed since container {} was created; `nodus up` applies the change",
                                    c.name
                                ));
                            }
                            if started_early.contains(name) {
                                Action::Started(c)
                            } else if is_running(&c) {
                                Action::Unchanged(c)
                            } else if let Some(net) =
                                self.network_gone(&c, &mut network_ids).await?
                            {
                                // A stopped container whose network was removed since (`docker
                                // network prune`, an interrupted `down`) cannot start again.
                                if mode != Mode::Converge {
                                    return Err(LifecycleError::NetworkGone {
                                        service: name.clone(),
                                        container: c.name,
                                        network: net,
                                    });
                                }
                                Action::Recreate(c, Why::NetworkGone(net))
                            } else {
                                Action::Start(c)
                            }
                        }
                    }
                }
                None if mode == Mode::StartOnly => {
                    return Err(LifecycleError::NoContainer {
                        service: name.clone(),
                    });
                }
                None if compose_made.contains_key(name) => {
                    let c = compose_made.remove(name).expect("checked");
                    self.ui.status(format!(
                        "{name}: container {} was made by docker compose for project {}; nodus takes it over (its volumes are kept)",
                        c.name, self.project
                    ));
                    Action::Recreate(c, Why::Compose)
                }
                None => {
                    match self.engine.inspect_container(&built.spec.name).await {
                        Ok(c) => {
                            return Err(LifecycleError::Foreign {
                                kind: "container",
                                name: c.name,
                                project: self.project.to_string(),
                            })
                        }
                        Err(EngineError::ContainerNotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    Action::Create
                }
            };
            actions.insert(name.clone(), action);
        }

        // 3. Networks and volumes: check everything before creating anything.
        let (networks, volumes) = if mode != Mode::StartOnly {
            self.check_resources(&order).await?
        } else {
            (Vec::new(), Vec::new())
        };

        // 4. Images of the containers to create (all of them with `--pull always`).
        //    Built images are there already; `pull_policy:` overrides `--pull` per service.
        let mut checked = BTreeSet::new();
        for name in &order {
            let image = &specs[name].spec.image;
            if built_images.contains_key(image) {
                continue;
            }
            let pull = match crate::stack::build::pull_policy(&compose.services[name]) {
                Ok(Some(crate::stack::build::PullPolicy::Never)) => ImagePull::Never,
                Ok(Some(crate::stack::build::PullPolicy::Always)) => ImagePull::Always,
                _ => opts.pull,
            };
            let creating = matches!(actions[name], Action::Create | Action::Recreate(..));
            if (creating || (mode == Mode::Converge && pull == ImagePull::Always))
                && checked.insert(image.clone())
            {
                self.ensure_image_with(image, pull).await?;
            }
        }

        // 4b. `--remove-orphans`: stopped (guarded) and removed before anything new starts.
        if !orphans.is_empty() {
            self.remove_orphans(&orphans, transition, hooks, &mut report)
                .await?;
        }

        // 5. Create networks and volumes.
        let create_span = crate::timing::span("create");
        for (name, labels) in &networks {
            self.engine.create_network(name, labels).await?;
            self.ui.detail(format!("created network {name}"));
        }
        for (name, labels) in &volumes {
            self.engine.create_volume(name, labels).await?;
            self.ui.status(format!("created volume {name}"));
            report.volumes_created.push(name.clone());
        }
        drop(create_span);

        // 6. Services in waves, like compose: a wave is every service whose dependencies are all
        //    in earlier waves. A wave's containers are created together, then started together
        //    (as compose does), then waited for together; the wave's ready services are handed to
        //    `wave_ready` together (the guard's early censuses), before any dependent starts.
        let must_complete: BTreeSet<&str> = order
            .iter()
            .flat_map(|n| compose.services[n].depends_on.iter())
            .filter(|(_, d)| d.condition == DependsCondition::ServiceCompletedSuccessfully)
            .map(|(dep, _)| dep.as_str())
            .collect();
        let width = self.width(&order);
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut ready = Vec::new();
        let mut recovering: Vec<String> = Vec::new();
        for wave in plan::waves(compose, &order) {
            // 6a. One after the other: the dependencies' conditions, and the guarded stop of
            //     containers to replace (the hooks run one at a time).
            let mut todo: Vec<(String, Prepared)> = Vec::new();
            for name in &wave {
                let svc = &compose.services[name];
                for (dep, d) in &svc.depends_on {
                    if let Some(id) = ids.get(dep) {
                        let want = match d.condition {
                            DependsCondition::ServiceStarted => Want::Started,
                            DependsCondition::ServiceHealthy => Want::Healthy,
                            DependsCondition::ServiceCompletedSuccessfully => Want::Completed,
                        };
                        let _t = crate::timing::span("ready");
                        self.wait_until(dep, id, want, opts.timeout).await?;
                    }
                }
                let action = actions.remove(name).expect("an action per service");
                let prepared = match action {
                    Action::Unchanged(c) => Prepared::Running(c.id),
                    Action::Start(c) => Prepared::Start(Box::new(c)),
                    Action::Started(c) => Prepared::Started(c.id),
                    Action::Recreate(c, why) => {
                        crate::interrupt::set_step(format!("recreating {name}"));
                        let old = self.engine.inspect_container(&c.id).await?;
                        let mut spec = specs[name].spec.clone();
                        let carried = carry_anonymous_volumes(&mut spec, &old);
                        self.retire(name, old, &why, transition, hooks, &mut report)
                            .await?;
                        for (vol, target) in carried {
                            self.ui.detail(format!(
                                "{name}: keeping anonymous volume {vol} at {target}"
                            ));
                        }
                        Prepared::Create(Box::new(spec), "recreated")
                    }
                    Action::Create => {
                        Prepared::Create(Box::new(specs[name].spec.clone()), "created")
                    }
                };
                todo.push((name.clone(), prepared));
            }

            // 6b. The wave's new containers are created together (and postgres' last shutdown
            //     read), then every container of the wave is started together.
            let names = |f: fn(&Prepared) -> bool| {
                todo.iter()
                    .filter(|(_, p)| f(p))
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let created = {
                let creating = todo.iter().any(|(_, p)| matches!(p, Prepared::Create(..)));
                if creating {
                    crate::interrupt::set_step(format!(
                        "creating {}",
                        names(|p| matches!(p, Prepared::Create(..)))
                    ));
                }
                let _t = creating.then(|| crate::timing::span("create"));
                futures_util::future::try_join_all(todo.iter().map(|(name, p)| async move {
                    Ok::<_, LifecycleError>(match p {
                        Prepared::Running(id) | Prepared::Started(id) => (id.clone(), None),
                        Prepared::Start(c) => {
                            (c.id.clone(), self.unclean_before_start(name, c).await)
                        }
                        Prepared::Create(spec, _) => (self.create_from(spec).await?, None),
                    })
                }))
                .await?
            };
            // Postgres found stopped without a clean shutdown: the guard judges its UNLOGGED
            // tables with that in mind.
            for ((name, _), (_, unclean)) in todo.iter().zip(&created) {
                if let Some(ev) = unclean {
                    hooks
                        .unclean_stop_found(transition, name, ev)
                        .await
                        .map_err(LifecycleError::hook)?;
                }
            }
            {
                let to_start =
                    |p: &Prepared| !matches!(p, Prepared::Running(_) | Prepared::Started(_));
                let starting = todo.iter().any(|(_, p)| to_start(p));
                if starting {
                    crate::interrupt::set_step(format!("starting {}", names(to_start)));
                }
                let _t = starting.then(|| crate::timing::span("start"));
                futures_util::future::try_join_all(todo.iter().zip(&created).map(
                    |((name, p), (id, _))| async move {
                        match p {
                            Prepared::Running(_) | Prepared::Started(_) => Ok(()),
                            _ => self.start_service(name, id).await,
                        }
                    },
                ))
                .await?;
            }
            let mut started: Vec<(String, String, &'static str, Want)> = Vec::new();
            for ((name, p), (id, unclean)) in todo.into_iter().zip(created) {
                let verb = match p {
                    Prepared::Running(_) => {
                        report.unchanged.push(name.clone());
                        "running"
                    }
                    Prepared::Start(_) | Prepared::Started(_) => {
                        report.started.push(name.clone());
                        "started"
                    }
                    Prepared::Create(_, verb) => {
                        if verb == "recreated" {
                            report.recreated.push(name.clone());
                        } else {
                            report.created.push(name.clone());
                        }
                        verb
                    }
                };
                if unclean.is_some() {
                    recovering.push(name.clone());
                }
                let want = if must_complete.contains(name.as_str()) {
                    Want::Completed
                } else {
                    Want::Ready
                };
                started.push((name, id, verb, want));
            }

            crate::interrupt::set_step(format!(
                "waiting for {} to be ready",
                started
                    .iter()
                    .map(|(n, ..)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let infos = {
                let _t = crate::timing::span("ready");
                self.wait_all(&started, opts.timeout).await?
            };
            let wave_ready: Vec<RunningService> = started
                .iter()
                .zip(infos)
                .map(|((name, ..), info)| RunningService {
                    service: name.clone(),
                    container: info,
                    stateful: self.stateful(name),
                })
                .collect();
            {
                let _t = crate::timing::span("census");
                hooks
                    .wave_ready(transition, &wave_ready)
                    .await
                    .map_err(LifecycleError::hook)?;
            }
            for ((name, id, verb, _), rs) in started.into_iter().zip(wave_ready) {
                self.ui.success(format!(
                    "{name:<width$}  {verb} ({})",
                    describe(&rs.container)
                ));
                if recovering.contains(&name) {
                    self.note_crash_recovery(&name, &id).await;
                }
                ids.insert(name, id);
                ready.push(rs);
            }
        }
        // The guard times its settle and census itself (settle is part of all_ready).
        hooks
            .all_ready(transition, &ready)
            .await
            .map_err(LifecycleError::hook)?;
        Ok(report)
    }

    /// `up` of `opts.services` that recreates them (stop, remove, create, start) even when their
    /// definition did not change (`nodus watch`'s `recreate` action); their dependencies are
    /// only converged.
    pub async fn recreate(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        self.bring_up(
            opts,
            Transition::Up,
            Mode::Recreate,
            &BTreeSet::new(),
            hooks,
        )
        .await
    }

    pub async fn start(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        self.bring_up(
            opts,
            Transition::Start,
            Mode::StartOnly,
            &BTreeSet::new(),
            hooks,
        )
        .await
        .map(|r| self.timed(r))
    }

    pub async fn restart(
        &self,
        opts: &UpOptions,
        hooks: &mut dyn Hooks,
    ) -> Result<Report, LifecycleError> {
        let compose = self.compose();
        let start = plan::start_order(compose, &opts.services)?;
        let stop = plan::stop_order(compose, &opts.services)?;
        let mut by = by_service(self.project_containers().await?);
        if let Some(missing) = start.iter().find(|s| !by.contains_key(*s)) {
            return Err(LifecycleError::NoContainer {
                service: missing.clone(),
            });
        }
        let targets: Vec<(String, ContainerInfo)> = stop
            .iter()
            .filter_map(|s| by.remove(s).map(|c| (s.clone(), c)))
            .collect();
        let mut report = Report::default();
        // A service that depends on nothing here and stopped cleanly starts as soon as its own
        // stop ended, or, when a hook holds it stopped (a snapshot of its volume), as soon as
        // the hook releases it, while the others are still stopping or snapshotted: the engine
        // starts one container faster than several at once. The rest starts in waves as `up`
        // does.
        let first: BTreeSet<String> = plan::waves(compose, &start)
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let started_early = self
            .stop_then_start(&targets, Transition::Restart, hooks, &first, &mut report)
            .await?;
        let started = self
            .bring_up(
                opts,
                Transition::Restart,
                Mode::StartOnly,
                &started_early,
                hooks,
            )
            .await?;
        report.started = started.started;
        report.unchanged = started.unchanged;
        Ok(self.timed(report))
    }

    async fn create_from(&self, spec: &ContainerSpec) -> Result<String, LifecycleError> {
        let id = self.engine.create_container(spec).await?;
        for att in spec.networks.iter().skip(1) {
            self.engine
                .connect_network(&att.network, &id, &att.aliases)
                .await?;
        }
        Ok(id)
    }

    /// Stops (with hooks, for stateful services) and removes a container that is replaced.
    async fn retire(
        &self,
        name: &str,
        c: ContainerInfo,
        why: &Why,
        transition: Transition,
        hooks: &mut dyn Hooks,
        report: &mut Report,
    ) -> Result<(), LifecycleError> {
        let c_name = &c.name;
        self.ui.status(match why {
            Why::Compose => {
                format!("{name}: replacing container {c_name} (made by docker compose) with nodus' own")
            }
            Why::Changed => format!("{name}: its definition changed; recreating container {c_name}"),
            Why::Asked => format!("{name}: recreating container {c_name}"),
            Why::NetworkGone(net) => format!(
                "{name}: network {net} of container {c_name} was removed since it stopped; recreating the container (its volumes are kept)"
            ),
        });
        let with_hooks = self.stateful(name).is_some();
        let targets = vec![(name.to_string(), c.clone())];
        self.stop_services(&targets, None, transition, hooks, with_hooks, report)
            .await?;
        let _t = crate::timing::span("remove");
        self.engine.remove_container(&c.id, false).await?;
        Ok(())
    }
}
