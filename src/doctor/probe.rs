//! Looking inside volumes: one short-lived helper container (labelled as this project's helper)
//! mounts the volumes read-only and reports, per volume, whether it holds a PostgreSQL data
//! directory (`PG_VERSION`, at the root or in the usual sub-directories) and its size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::{ContainerSpec, Engine, EngineError, MountKind, MountSpec, RunState};
use crate::labels;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeContent {
    /// `PG_VERSION`'s content when the volume holds a postgres data dir.
    pub pg_version: Option<String>,
    /// Where in the volume (`""` = its root, `/data`, `/18/docker`...).
    pub pg_subdir: Option<String>,
    pub size_kib: Option<u64>,
}

/// How many volumes one helper container mounts.
const BATCH: usize = 40;

const SCRIPT: &str = r#"for d in /nodus-probe/*; do
  [ -d "$d" ] || continue
  n=${d#/nodus-probe/}
  for p in "$d" "$d/data" "$d/pgdata" "$d/pgdata/data" "$d"/*/docker; do
    if [ -f "$p/PG_VERSION" ]; then echo "PG $n ${p#$d}/ $(head -n1 "$p/PG_VERSION")"; break; fi
  done
  echo "SIZE $n $(du -sk "$d" 2>/dev/null | cut -f1)"
done"#;

/// Probes `volumes` with `image` (any locally present image with a POSIX shell, `du` and `head`).
pub async fn probe(
    engine: &dyn Engine,
    project: &str,
    image: &str,
    volumes: &[String],
) -> Result<BTreeMap<String, VolumeContent>, EngineError> {
    let mut out = BTreeMap::new();
    for chunk in volumes.chunks(BATCH) {
        out.extend(probe_batch(engine, project, image, chunk).await?);
    }
    Ok(out)
}

async fn probe_batch(
    engine: &dyn Engine,
    project: &str,
    image: &str,
    volumes: &[String],
) -> Result<BTreeMap<String, VolumeContent>, EngineError> {
    let mut labels = labels::base(project);
    labels.insert(labels::HELPER.to_string(), "true".to_string());
    labels.insert(
        "io.nodus.helper.purpose".to_string(),
        "doctor-probe".to_string(),
    );
    let spec = ContainerSpec {
        name: format!(
            "{project}-nodus-doctor-probe-{}",
            crate::snapshot::manifest::short_random_hex()
        ),
        image: image.to_string(),
        entrypoint: Some(vec!["sh".into(), "-c".into(), SCRIPT.into()]),
        cmd: Some(vec![]),
        user: Some("0:0".into()),
        labels,
        mounts: volumes
            .iter()
            .enumerate()
            .map(|(i, v)| MountSpec {
                kind: MountKind::Volume,
                source: v.clone(),
                target: format!("/nodus-probe/{i}"),
                read_only: true,
            })
            .collect(),
        restart: Some("no".into()),
        ..Default::default()
    };
    let id = engine.create_container(&spec).await?;
    let result = run_and_read(engine, &id).await;
    let _ = engine.remove_container(&id, true).await;
    let text = result?;
    let mut out: BTreeMap<String, VolumeContent> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(tag), Some(idx)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(name) = idx.parse::<usize>().ok().and_then(|i| volumes.get(i)) else {
            continue;
        };
        let e = out.entry(name.clone()).or_insert(VolumeContent {
            pg_version: None,
            pg_subdir: None,
            size_kib: None,
        });
        match tag {
            "PG" => {
                let sub = parts
                    .next()
                    .unwrap_or("/")
                    .trim_end_matches('/')
                    .to_string();
                e.pg_subdir = Some(sub);
                e.pg_version = parts.next().map(str::to_string);
            }
            "SIZE" => e.size_kib = parts.next().and_then(|s| s.parse().ok()),
            _ => {}
        }
    }
    Ok(out)
}

async fn run_and_read(engine: &dyn Engine, id: &str) -> Result<String, EngineError> {
    engine.start_container(id).await?;
    let start = Instant::now();
    loop {
        let c = engine.inspect_container(id).await?;
        if matches!(c.state, RunState::Exited | RunState::Dead) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(EngineError::api(
                "probe volumes",
                id,
                "the probe did not finish within 120s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    engine.logs(id, 100_000).await
}

/// "12.3 MiB" style sizes.
pub fn human_size(kib: u64) -> String {
    let b = kib as f64 * 1024.0;
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= size as f64 {
            return format!("{:.1} {unit}", b / size as f64);
        }
    }
    format!("{} B", b as u64)
}
