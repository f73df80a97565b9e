//! Taking over what docker compose made for this project, and finding stateful services whose
//! data would move to a new, empty volume.
//!
//! Containers made by compose (v1 `<project>_<service>_1`, v2 `<project>-<service>-1`) carry the
//! compose labels of the project and service but not nodus' `io.nodus.managed`: `up` adopts them
//! (stops them through the hooks, removes them keeping their volumes, creates its own container).
//! Before that, [`Lifecycle::data_moves`] finds every stateful service whose data sits somewhere
//! else than where the stack now puts it (an anonymous volume, the container's own filesystem, a
//! volume of another name) while that old place holds data: starting there would start an empty
//! database. The command copies the data over first (`crate::adopt`) or refuses.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::{by_service, is_running, Hooks, Lifecycle, LifecycleError, Report, Transition};
use super::{StatefulService, StoppedService};
use crate::engine::{ContainerInfo, ContainerSpec, EngineError, MountKind, MountSpec};
use crate::labels;
use crate::stack::plan;

/// Where a data dir lives, as a container sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataPlace {
    /// "volume", "anonymous volume", "bind mount", "container" (its own filesystem).
    pub what: String,
    /// Volume name or host path; empty for the container's filesystem.
    pub source: String,
}

impl std::fmt::Display for DataPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.is_empty() {
            write!(f, "the {} filesystem", self.what)
        } else {
            write!(f, "{} {}", self.what, self.source)
        }
    }
}

/// A stateful service whose data must be copied to a new volume before it starts there.
#[derive(Debug, Clone)]
pub struct DataMove {
    pub service: String,
    pub stateful: StatefulService,
    /// The container holding the data now (nodus' own or compose's), freshly inspected.
    pub container: ContainerInfo,
    /// Made by docker compose (not by nodus).
    pub compose_made: bool,
    /// The data dir in the old container.
    pub old_data_dir: String,
    pub from: DataPlace,
    /// The new volume and where the new container mounts it.
    pub to_volume: String,
    pub to_mount: MountSpec,
    /// The data dir in the new container.
    pub new_data_dir: String,
    /// Labels for the new volume when it has to be created.
    pub to_labels: crate::engine::Labels,
    /// The new volume exists already (empty).
    pub to_exists: bool,
}

/// Two places both holding data: nodus does not choose.
#[derive(Debug, Clone)]
pub struct MoveConflict {
    pub service: String,
    pub from: DataPlace,
    pub to_volume: String,
}

#[derive(Debug, Clone, Default)]
pub struct MovePlan {
    pub moves: Vec<DataMove>,
    pub conflicts: Vec<MoveConflict>,
}

/// A generated volume name (64 hex characters).
fn anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn within(path: &str, dir: &str) -> bool {
    let (p, d) = (path.trim_end_matches('/'), dir.trim_end_matches('/'));
    d.is_empty() || p == d || p.strip_prefix(d).is_some_and(|r| r.starts_with('/'))
}

/// True when the container was made by docker compose for `project` (not by nodus, not a
/// one-off `run` container, not a nodus helper).
pub fn compose_made(c: &ContainerInfo, project: &str) -> bool {
    c.labels.get(labels::PROJECT).map(String::as_str) == Some(project)
        && c.labels.get(labels::MANAGED).map(String::as_str) != Some("true")
        && !c.labels.contains_key(labels::HELPER)
        && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
        && c.labels.contains_key(labels::SERVICE)
}

/// Whether a tar stream holds anything besides its top directory (reads at most a few headers).
async fn tar_has_entries(mut stream: crate::engine::ByteStream) -> Result<bool, EngineError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut offset = 0usize;
    let mut entries = 0usize;
    loop {
        while buf.len() >= offset + 512 {
            let header = &buf[offset..offset + 512];
            if header.iter().all(|b| *b == 0) {
                return Ok(false);
            }
            let h = tar::Header::from_byte_slice(header);
            entries += 1;
            if entries >= 2 {
                return Ok(true);
            }
            let size = h.entry_size().unwrap_or(0) as usize;
            offset += 512 + size.div_ceil(512) * 512;
        }
        match stream.next().await {
            Some(chunk) => buf.extend_from_slice(&chunk?),
            None => return Ok(false),
        }
    }
}

impl<'a> Lifecycle<'a> {
    /// Containers docker compose made for this project, one per service.
    pub async fn compose_containers(
        &self,
    ) -> Result<BTreeMap<String, ContainerInfo>, LifecycleError> {
        let mut filter = crate::engine::Labels::new();
        filter.insert(labels::PROJECT.to_string(), self.project.to_string());
        let all = self.engine.list_containers(&filter).await?;
        Ok(by_service(
            all.into_iter()
                .filter(|c| compose_made(c, self.project))
                .collect(),
        ))
    }

    /// Whether `path` in container `id` holds anything (false when it does not exist).
    async fn holds_data(&self, id: &str, path: &str) -> Result<bool, LifecycleError> {
        let missing = |e: &EngineError| match e {
            EngineError::ContainerNotFound(_) => true,
            EngineError::Api { reason, .. } => {
                reason.contains("404")
                    || reason.contains("Could not find")
                    || reason.contains("No such")
            }
            _ => false,
        };
        let result = match self.engine.download_archive(id, path).await {
            Ok(stream) => tar_has_entries(stream).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(b) => Ok(b),
            Err(e) if missing(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether volume `volume` holds anything, through a helper container (created, never
    /// started) from `image` with the volume at `/nodus-probe`.
    async fn volume_holds_data(&self, volume: &str, image: &str) -> Result<bool, LifecycleError> {
        let mut l = labels::base(self.project);
        l.insert(labels::HELPER.to_string(), "true".to_string());
        l.insert("io.nodus.helper.purpose".to_string(), "probe".to_string());
        let spec = ContainerSpec {
            name: format!(
                "{}-nodus-probe-{}",
                self.project,
                crate::snapshot::manifest::short_random_hex()
            ),
            image: image.to_string(),
            entrypoint: Some(vec!["true".into()]),
            labels: l,
            mounts: vec![MountSpec {
                kind: MountKind::Volume,
                source: volume.to_string(),
                target: "/nodus-probe".into(),
                read_only: true,
            }],
            restart: Some("no".into()),
            ..Default::default()
        };
        let id = self.engine.create_container(&spec).await?;
        let r = self.holds_data(&id, "/nodus-probe").await;
        let _ = self.engine.remove_container(&id, true).await;
        r
    }

    /// The stateful services among `services` (none = all) whose data would move to a new
    /// volume on `up`: their current container (nodus' own, to be recreated, or one compose
    /// made) keeps the data dir elsewhere, and that place holds data.
    pub async fn data_moves(&self, services: &[String]) -> Result<MovePlan, LifecycleError> {
        let order = plan::start_order(self.compose(), services)?;
        let mut ours = by_service(self.project_containers().await?);
        let mut theirs = self.compose_containers().await?;
        let mut out = MovePlan::default();
        for name in &order {
            let Some(st) = self.stateful(name) else {
                continue;
            };
            let built = self.build_spec(name)?;
            let (c, by_compose) = match ours.remove(name) {
                Some(c) if c.labels.get(labels::CONFIG_HASH) == Some(&built.config_hash) => {
                    continue
                }
                Some(c) => (c, false),
                None => match theirs.remove(name) {
                    Some(c) => (c, true),
                    None => continue,
                },
            };
            let c = self.engine.inspect_container(&c.id).await?;
            let old_dir = crate::guard::identity::effective_data_dir(&st, &c);
            let new_dir = st.data_dir.trim_end_matches('/').to_string();
            // The new container's mount for the data dir: only a named volume can be new.
            let Some(new_mount) = built
                .spec
                .mounts
                .iter()
                .filter(|m| within(&new_dir, &m.target))
                .max_by_key(|m| m.target.len())
                .cloned()
            else {
                continue;
            };
            if new_mount.kind != MountKind::Volume || new_mount.source.is_empty() {
                continue;
            }
            let old_mount = c
                .mounts
                .iter()
                .filter(|m| within(&old_dir, &m.target))
                .max_by_key(|m| m.target.len());
            let from = match old_mount {
                Some(m) if m.kind == MountKind::Volume && m.name_or_source == new_mount.source => {
                    continue; // same volume: nothing moves
                }
                Some(m) if m.kind == MountKind::Tmpfs => continue,
                Some(m) => DataPlace {
                    what: match m.kind {
                        MountKind::Volume if anonymous(&m.name_or_source) => {
                            "anonymous volume".into()
                        }
                        MountKind::Volume => "volume".into(),
                        _ => "bind mount".into(),
                    },
                    source: m.name_or_source.clone(),
                },
                None => DataPlace {
                    what: format!("container {}", c.name),
                    source: String::new(),
                },
            };
            if !self.holds_data(&c.id, &old_dir).await? {
                continue;
            }
            let to_volume = self.engine.inspect_volume(&new_mount.source).await?;
            // `nodus import --migrate-data` already copied this very data there (census-checked).
            if to_volume.as_ref().is_some_and(|v| {
                !from.source.is_empty() && v.labels.get(labels::MIGRATED_FROM) == Some(&from.source)
            }) {
                continue;
            }
            let to_exists = to_volume.is_some();
            if to_exists && self.volume_holds_data(&new_mount.source, &c.image).await? {
                out.conflicts.push(MoveConflict {
                    service: name.clone(),
                    from,
                    to_volume: new_mount.source.clone(),
                });
                continue;
            }
            let key = st
                .volume_key
                .clone()
                .unwrap_or_else(|| new_mount.source.clone());
            let declared = self
                .compose()
                .volumes
                .get(&key)
                .map(|d| d.labels.clone())
                .unwrap_or_default();
            out.moves.push(DataMove {
                service: name.clone(),
                stateful: st.clone(),
                compose_made: by_compose,
                old_data_dir: old_dir,
                from,
                to_volume: new_mount.source.clone(),
                to_labels: super::spec::volume_labels(self.project, &key, &declared),
                to_mount: new_mount,
                new_data_dir: new_dir,
                to_exists,
                container: c,
            });
        }
        Ok(out)
    }

    /// Stops the container of a move (with the hooks: census, CHECKPOINT) when it runs; returns
    /// it stopped, with the census taken before the stop.
    pub async fn stop_for_move(
        &self,
        mv: &DataMove,
        hooks: &mut dyn Hooks,
    ) -> Result<Option<StoppedService>, LifecycleError> {
        if !is_running(&mv.container) {
            return Ok(None);
        }
        let mut report = Report::default();
        let targets = vec![(mv.service.clone(), mv.container.clone())];
        let mut stopped = self
            .stop_services(&targets, None, Transition::Up, hooks, true, &mut report)
            .await?;
        Ok(stopped.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[&str]) -> Vec<u8> {
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            for e in entries {
                let mut h = tar::Header::new_gnu();
                if e.ends_with('/') {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, e, std::io::empty()).unwrap();
                } else {
                    let body = vec![7u8; 700];
                    h.set_size(body.len() as u64);
                    b.append_data(&mut h, e, &body[..]).unwrap();
                }
            }
            b.finish().unwrap();
        }
        raw
    }

    fn stream(bytes: Vec<u8>, chunk: usize) -> crate::engine::ByteStream {
        let chunks: Vec<Result<bytes::Bytes, EngineError>> = bytes
            .chunks(chunk)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn empty_and_full_data_dirs() {
        assert!(!tar_has_entries(stream(tar_of(&["data/"]), 100))
            .await
            .unwrap());
        assert!(
            tar_has_entries(stream(tar_of(&["data/", "data/PG_VERSION"]), 100))
                .await
                .unwrap()
        );
        assert!(tar_has_entries(stream(tar_of(&["data/a", "data/b"]), 7))
            .await
            .unwrap());
        assert!(!tar_has_entries(stream(Vec::new(), 10)).await.unwrap());
    }

    #[test]
    fn compose_made_means_compose_labels_without_ours() {
        let mut c = ContainerInfo {
            id: "c1".into(),
            name: "p_db_1".into(),
            image: "postgres:15".into(),
            labels: Default::default(),
            state: crate::engine::RunState::Running,
            health: crate::engine::Health::None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            ports: vec![],
            mounts: vec![],
            env: vec![],
            stop_signal: None,
            stop_timeout_secs: None,
            networks: vec![],
            network_ids: Default::default(),
        };
        c.labels.insert(labels::PROJECT.into(), "p".into());
        c.labels.insert(labels::SERVICE.into(), "db".into());
        assert!(compose_made(&c, "p"));
        assert!(!compose_made(&c, "q"));
        c.labels.insert(labels::MANAGED.into(), "true".into());
        assert!(!compose_made(&c, "p"));
        c.labels.remove(labels::MANAGED);
        c.labels.insert(labels::ONEOFF.into(), "True".into());
        assert!(!compose_made(&c, "p"));
    }

    // ---- over the fake engine ----------------------------------------------------------------

    use crate::engine::fake::FakeEngine;
    use crate::engine::{Labels, RunState};
    use crate::lifecycle::tests::{hardened, lc, up_opts};
    use crate::lifecycle::{LifecycleError, NoHooks};
    use crate::output::Ui;

    const STACK: &str = "services:\n  db:\n    image: postgres:16\n    volumes: [data:/var/lib/postgresql/data]\n  cache:\n    image: redis:7\nvolumes:\n  data:\n";

    fn compose_labels(project: &str, service: &str) -> Labels {
        let mut l = Labels::new();
        l.insert(labels::PROJECT.into(), project.into());
        l.insert(labels::SERVICE.into(), service.into());
        l.insert(labels::CONTAINER_NUMBER.into(), "1".into());
        l.insert(labels::ONEOFF.into(), "False".into());
        l
    }

    #[tokio::test(start_paused = true)]
    async fn up_takes_over_compose_v1_and_v2_containers_of_the_project() {
        let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
        // v2: same name as nodus' container; v1: another name
        e.add_container(
            "nt-db-1",
            "postgres:16",
            &compose_labels("nt", "db"),
            RunState::Running,
        );
        e.add_container(
            "nt_cache_1",
            "redis:7",
            &compose_labels("nt", "cache"),
            RunState::Running,
        );
        let (h, ui) = (hardened(STACK), Ui::plain());
        let report = lc(&e, &h, &ui).up(&up_opts(), &mut NoHooks).await.unwrap();
        assert_eq!(report.recreated.len(), 2, "{report:?}");
        assert!(e.container("nt_cache_1").is_none(), "v1 container replaced");
        for name in ["nt-db-1", "nt-cache-1"] {
            let c = e.container(name).expect(name);
            assert_eq!(
                c.labels.get(labels::MANAGED).map(String::as_str),
                Some("true")
            );
            assert_eq!(c.state, RunState::Running);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_projects_container_is_not_taken_over() {
        let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
        e.add_container(
            "nt-db-1",
            "postgres:16",
            &compose_labels("other", "db"),
            RunState::Running,
        );
        let (h, ui) = (hardened(STACK), Ui::plain());
        let err = lc(&e, &h, &ui)
            .up(&up_opts(), &mut NoHooks)
            .await
            .unwrap_err();
        assert!(matches!(err, LifecycleError::Foreign { .. }), "{err:?}");
        assert_eq!(e.container("nt-db-1").unwrap().state, RunState::Running);
        assert!(e.calls().is_empty(), "{:?}", e.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn data_outside_the_new_volume_is_a_move_only_when_it_holds_data() {
        let e = FakeEngine::new().with_images(&["postgres:16", "redis:7"]);
        e.add_container(
            "nt_db_1",
            "postgres:16",
            &compose_labels("nt", "db"),
            RunState::Running,
        );
        let (h, ui) = (hardened(STACK), Ui::plain());
        // an empty data dir: nothing to move
        let plan = lc(&e, &h, &ui).data_moves(&[]).await.unwrap();
        assert!(plan.moves.is_empty() && plan.conflicts.is_empty());
        // data in the container's own filesystem: it must move to nt_data
        e.set_archive(
            "nt_db_1",
            "/var/lib/postgresql/data",
            tar_of(&["data/", "data/PG_VERSION"]),
        );
        let plan = lc(&e, &h, &ui).data_moves(&[]).await.unwrap();
        assert_eq!(plan.moves.len(), 1);
        let m = &plan.moves[0];
        assert_eq!(
            (m.service.as_str(), m.to_volume.as_str()),
            ("db", "nt_data")
        );
        assert!(m.compose_made && !m.to_exists);
        assert_eq!(m.from.what, "container nt_db_1");
        assert_eq!(
            m.to_labels.get(labels::MANAGED).map(String::as_str),
            Some("true")
        );
        // nothing was changed by looking
        assert!(e
            .calls()
            .iter()
            .all(|c| !c.starts_with("stop") && !c.starts_with("remove")));
    }
}
