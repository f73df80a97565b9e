//! Real-engine tests of `DockerEngine`. They need a Docker engine and the stand-in images, which
//! are built (once per test binary) with `scripts/build-images.sh`. Every test works under its own
//! project label `nt-engine-<test>-<pid>` and removes only what carries that label (plus the
//! anonymous volumes its own containers created).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{stream, FutureExt, StreamExt};
use nodus::engine::*;
use nodus::labels;

const PG_IMAGE: &str = "nodus/postgres-standin:15";
const REDIS_IMAGE: &str = "nodus/redis-standin:7";

/// Builds the stand-in images once per test binary (the script itself takes a file lock, so
/// parallel test binaries are fine too; it skips images that are up to date).
fn ensure_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn engine() -> DockerEngine {
    ensure_images();
    DockerEngine::connect()
        .await
        .expect("these tests need a reachable Docker engine (DOCKER_HOST or /var/run/docker.sock)")
}

fn project(test: &str) -> String {
    format!("nt-engine-{test}-{}", std::process::id())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Removes everything labelled with `project` (containers, then volumes and networks), the
/// anonymous volumes of those containers, and the given anonymous volumes.
async fn cleanup(engine: &DockerEngine, project: &str, anonymous: &[String]) {
    let filter = labels::project_filter(project);
    let mut anonymous = anonymous.to_vec();
    for c in engine.list_containers(&filter).await.unwrap_or_default() {
        for m in &c.mounts {
            let hex64 = m.name_or_source.len() == 64
                && m.name_or_source.bytes().all(|b| b.is_ascii_hexdigit());
            if m.kind == MountKind::Volume && hex64 {
                anonymous.push(m.name_or_source.clone());
            }
        }
        let _ = engine.remove_container(&c.id, true).await;
    }
    for v in engine.list_volumes(&filter).await.unwrap_or_default() {
        let _ = engine.remove_volume(&v.name).await;
    }
    for v in &anonymous {
        let _ = engine.remove_volume(v).await;
    }
    for n in engine.list_networks(&filter).await.unwrap_or_default() {
        let _ = engine.remove_network(&n.name).await;
    }
}

/// Runs `body`, then cleans up even when it panicked.
async fn with_cleanup<F, Fut>(engine: &DockerEngine, project: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    cleanup(engine, project, &[]).await;
    let result = AssertUnwindSafe(body()).catch_unwind().await;
    let anonymous = result.as_ref().map(Vec::clone).unwrap_or_default();
    cleanup(engine, project, &anonymous).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    // Nothing of ours is left behind.
    let filter = labels::project_filter(project);
    assert!(engine.list_containers(&filter).await.unwrap().is_empty());
    assert!(engine.list_volumes(&filter).await.unwrap().is_empty());
    assert!(engine.list_networks(&filter).await.unwrap().is_empty());
}

async fn wait_healthy(engine: &DockerEngine, id: &str, within: Duration) -> ContainerInfo {
    let deadline = Instant::now() + within;
    loop {
        let info = engine.inspect_container(id).await.unwrap();
        match info.health {
            Health::Healthy => return info,
            _ if info.state != RunState::Running => {
                panic!(
                    "container exited while waiting for health: {info:?}\n{}",
                    engine.logs(id, 50).await.unwrap()
                )
            }
            _ if Instant::now() > deadline => {
                panic!(
                    "not healthy after {within:?}: {info:?}\n{}",
                    engine.logs(id, 50).await.unwrap()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn collect(mut s: ByteStream) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
        chunks += 1;
    }
    Ok((out, chunks))
}

fn tar_entries(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.insert(path, data);
    }
    out
}

fn pg_spec(project: &str, volume: &str, networks: Vec<NetworkAttachment>) -> ContainerSpec {
    let mut labels = labels::base(project);
    labels.insert(labels::SERVICE.into(), "db".into());
    ContainerSpec {
        name: format!("{project}-db-1"),
        image: PG_IMAGE.into(),
        env: s(&["POSTGRES_PASSWORD=nt-secret", "POSTGRES_DB=app"]),
        labels,
        mounts: vec![
            MountSpec {
                kind: MountKind::Volume,
                source: volume.into(),
                target: "/var/lib/postgresql/data".into(),
                read_only: false,
            },
            // An anonymous volume.
            MountSpec {
                kind: MountKind::Volume,
                source: String::new(),
                target: "/scratch".into(),
                read_only: false,
            },
            MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: "/run/extra".into(),
                read_only: false,
            },
        ],
        ports: vec![PortSpec {
            container_port: 5432,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: None,
        }],
        networks,
        healthcheck: Some(HealthSpec {
            test: s(&["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]),
            interval_ns: 500_000_000,
            timeout_ns: 5_000_000_000,
            retries: 20,
            start_period_ns: 30_000_000_000,
        }),
        stop_signal: Some("SIGINT".into()),
        stop_timeout_secs: Some(60),
        restart: Some("no".into()),
        shm_size: Some(128 * 1024 * 1024),
        ..Default::default()
    }
}

#[tokio::test]
async fn postgres_lifecycle_archives_volumes_networks() {
    let engine = engine().await;
    let project = project("pg");
    let p = project.clone();
    let e = &engine;
    with_cleanup(&engine, &project, || async move {
        let project = p;
        let base = labels::base(&project);
        let filter = labels::project_filter(&project);

        let info = e.info().await.unwrap();
        assert!(
            !info.id.is_empty() && !info.server_version.is_empty() && !info.api_version.is_empty()
        );
        assert_eq!(info.endpoint, e.endpoint());
        assert!(e.image_exists(PG_IMAGE).await.unwrap());

        // Volume and networks with labels.
        let vol_name = format!("{project}_pgdata");
        let mut vol_labels = base.clone();
        vol_labels.insert(labels::VOLUME.into(), "pgdata".into());
        let vol = e.create_volume(&vol_name, &vol_labels).await.unwrap();
        assert_eq!(vol.name, vol_name);
        assert_eq!(vol.labels, vol_labels);
        let inspected = e.inspect_volume(&vol_name).await.unwrap().unwrap();
        assert!(inspected.created_at.is_some());
        assert_eq!(inspected.driver, "local");
        assert!(!inspected.mountpoint.is_empty());
        // Creating it again with the same labels is fine; with other labels it is refused.
        e.create_volume(&vol_name, &vol_labels).await.unwrap();
        let mut other = vol_labels.clone();
        other.insert("io.nodus.test.other".into(), "x".into());
        let err = e.create_volume(&vol_name, &other).await.unwrap_err();
        assert!(matches!(err, EngineError::Api { .. }), "{err:?}");

        let net_a = format!("{project}_default");
        let net_b = format!("{project}_backend");
        let id_a = e.create_network(&net_a, &base).await.unwrap();
        let id_b = e.create_network(&net_b, &base).await.unwrap();
        assert_eq!(
            e.create_network(&net_a, &base).await.unwrap(),
            id_a,
            "create is idempotent"
        );
        assert_eq!(e.inspect_network(&net_b).await.unwrap().unwrap().id, id_b);
        let nets: Vec<String> = e
            .list_networks(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(nets, vec![net_b.clone(), net_a.clone()]);
        assert_eq!(e.list_volumes(&filter).await.unwrap().len(), 1);

        // Container: first network at create time, the second connected before start.
        let spec = pg_spec(
            &project,
            &vol_name,
            vec![NetworkAttachment {
                network: net_a.clone(),
                aliases: s(&["db", "postgres"]),
            }],
        );
        let id = e.create_container(&spec).await.unwrap();
        e.connect_network(&net_b, &id, &s(&["pg-backend"]))
            .await
            .unwrap();
        e.connect_network(&net_b, &id, &s(&["pg-backend"]))
            .await
            .unwrap();
        let created = e.inspect_container(&id).await.unwrap();
        assert_eq!(created.state, RunState::Created);
        assert_eq!(created.exit_code, None);
        assert_eq!(created.name, spec.name);
        assert_eq!(created.image, PG_IMAGE);
        assert_eq!(created.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(created.stop_timeout_secs, Some(60));
        assert_eq!(created.env_var("POSTGRES_DB"), Some("app"));
        assert_eq!(created.env_var("PGDATA"), Some("/var/lib/postgresql/data"));
        assert_eq!(created.networks, vec![net_b.clone(), net_a.clone()]);
        assert!(labels::owned_by(&created.labels, &project));

        e.start_container(&id).await.unwrap();
        e.start_container(&id).await.unwrap(); // already running: fine
        let running = wait_healthy(e, &id, Duration::from_secs(120)).await;
        assert_eq!(running.state, RunState::Running);
        assert!(running.started_at.is_some());
        let port = running.published(5432).expect("5432 is published");
        assert_eq!(port.host_ip, "127.0.0.1");
        assert_ne!(port.host_port, 0);
        let data_mount = running
            .mounts
            .iter()
            .find(|m| m.target == "/var/lib/postgresql/data")
            .unwrap();
        assert_eq!(
            (&data_mount.kind, data_mount.name_or_source.as_str()),
            (&MountKind::Volume, vol_name.as_str())
        );
        let anon = running
            .mounts
            .iter()
            .find(|m| m.target == "/scratch")
            .expect("anonymous volume");
        assert_eq!(anon.kind, MountKind::Volume);
        assert!(!anon.name_or_source.is_empty());
        let anonymous = vec![anon.name_or_source.clone()];

        // The listing finds it by label.
        let listed = e.list_containers(&filter).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);

        // exec: output, exit codes, env, user.
        let out = e
            .exec(
                &id,
                &s(&[
                    "psql",
                    "-U",
                    "postgres",
                    "-d",
                    "app",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    "create table t(x int); insert into t values (7)",
                ]),
                &[],
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("INSERT 0 1"));
        let out = e
            .exec(
                &id,
                &s(&["sh", "-c", "echo out-$NT_VAR; echo err-line >&2; exit 3"]),
                &s(&["NT_VAR=x"]),
                Some("postgres"),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out-x\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err-line\n");
        let out = e
            .exec(&id, &s(&["id", "-un"]), &[], Some("postgres"))
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");

        // exec_stream: a dump streams out; the exit code is readable afterwards.
        let (exec_id, dump) = e
            .exec_stream(
                &id,
                &s(&["pg_dump", "-U", "postgres", "-d", "app", "-t", "t"]),
                &[],
                None,
            )
            .await
            .unwrap();
        let (dump, _) = collect(dump).await.unwrap();
        let dump = String::from_utf8_lossy(&dump);
        assert!(dump.contains("CREATE TABLE public.t"), "{dump}");
        assert_eq!(e.exec_exit_code(&exec_id).await.unwrap(), Some(0));
        // A failing command: stderr stays out of the stream, the stream ends with an error.
        let (exec_id, failing) = e
            .exec_stream(
                &id,
                &s(&["pg_dump", "-U", "postgres", "-d", "no_such_db"]),
                &[],
                None,
            )
            .await
            .unwrap();
        let err = collect(failing).await.unwrap_err();
        assert!(err.to_string().contains("no_such_db"), "{err}");
        assert_eq!(e.exec_exit_code(&exec_id).await.unwrap(), Some(1));

        // Upload a small tar and read it back (running container).
        let mut builder = tar::Builder::new(Vec::new());
        let content = b"hello from nodus\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "nt-upload/hello.txt", &content[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        // Sent in two chunks, as a stream.
        let (a, b) = tar.split_at(tar.len() / 2);
        let chunks: Vec<Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::copy_from_slice(a)),
            Ok(bytes::Bytes::copy_from_slice(b)),
        ];
        e.upload_archive(&id, "/tmp", Box::pin(stream::iter(chunks)))
            .await
            .unwrap();
        let (back, _) = collect(
            e.download_archive(&id, "/tmp/nt-upload/hello.txt")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            tar_entries(&back).get("hello.txt").map(Vec::as_slice),
            Some(&content[..])
        );
        // A failing source stream fails the upload with the source's error.
        let broken: Vec<Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::copy_from_slice(a)),
            Err(EngineError::api("read", "nt-source", "boom")),
        ];
        let err = e
            .upload_archive(&id, "/tmp", Box::pin(stream::iter(broken)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        // A missing path is an error at call time.
        let err = e
            .download_archive(&id, "/no/such/path")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, EngineError::Api { .. }), "{err:?}");

        // Stop with SIGINT: clean shutdown, exit code 0.
        e.stop_container(&id, Some(60)).await.unwrap();
        let stopped = e.inspect_container(&id).await.unwrap();
        assert_eq!(stopped.state, RunState::Exited);
        assert_eq!(stopped.exit_code, Some(0));
        assert!(!stopped.oom_killed);
        assert!(stopped.finished_at.is_some());
        let logs = e.logs(&id, 5).await.unwrap();
        assert!(logs.contains("database system is shut down"), "{logs}");
        assert!(logs.lines().count() <= 5);
        e.stop_container(&id, Some(60)).await.unwrap(); // already stopped: fine

        // The data directory of the stopped container, as a tar stream.
        let (pgdata, chunks) = collect(
            e.download_archive(&id, "/var/lib/postgresql/data")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert!(chunks > 1, "the archive arrives as a stream");
        let entries = tar_entries(&pgdata);
        assert_eq!(
            entries
                .get("data/PG_VERSION")
                .map(|v| String::from_utf8_lossy(v).trim().to_string()),
            Some("15".into())
        );

        // Restart on the same volume: the table is still there, init did not run again.
        e.start_container(&id).await.unwrap();
        wait_healthy(e, &id, Duration::from_secs(120)).await;
        let out = e
            .exec(
                &id,
                &s(&[
                    "psql",
                    "-U",
                    "postgres",
                    "-d",
                    "app",
                    "-tAc",
                    "select x from t",
                ]),
                &[],
                None,
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
        assert!(e
            .logs(&id, usize::MAX)
            .await
            .unwrap()
            .contains("Skipping initialization"));

        // Removal keeps the anonymous volume.
        e.remove_container(&id, true).await.unwrap();
        assert!(matches!(
            e.inspect_container(&id).await,
            Err(EngineError::ContainerNotFound(_))
        ));
        assert!(e.inspect_volume(&anonymous[0]).await.unwrap().is_some());
        assert!(e.inspect_volume(&vol_name).await.unwrap().is_some());
        anonymous
    })
    .await;
}

#[tokio::test]
async fn redis_append_only_survives_a_restart() {
    let engine = engine().await;
    let project = project("redis");
    let p = project.clone();
    let e = &engine;
    with_cleanup(&engine, &project, || async move {
        let project = p;
        let vol = format!("{project}_redis");
        e.create_volume(&vol, &labels::base(&project))
            .await
            .unwrap();
        let spec = ContainerSpec {
            name: format!("{project}-cache-1"),
            image: REDIS_IMAGE.into(),
            cmd: Some(s(&["redis-server", "--appendonly", "yes"])),
            labels: labels::base(&project),
            mounts: vec![MountSpec {
                kind: MountKind::Volume,
                source: vol.clone(),
                target: "/data".into(),
                read_only: false,
            }],
            healthcheck: Some(HealthSpec {
                test: s(&["CMD", "redis-cli", "ping"]),
                interval_ns: 500_000_000,
                timeout_ns: 3_000_000_000,
                retries: 20,
                start_period_ns: 0,
            }),
            ..Default::default()
        };
        let id = e.create_container(&spec).await.unwrap();
        e.start_container(&id).await.unwrap();
        wait_healthy(e, &id, Duration::from_secs(60)).await;
        let out = e
            .exec(&id, &s(&["redis-cli", "set", "k", "v1"]), &[], None)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
        e.stop_container(&id, Some(30)).await.unwrap();
        assert_eq!(e.inspect_container(&id).await.unwrap().exit_code, Some(0));
        e.start_container(&id).await.unwrap();
        wait_healthy(e, &id, Duration::from_secs(60)).await;
        let out = e
            .exec(&id, &s(&["redis-cli", "get", "k"]), &[], None)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
        let out = e
            .exec(
                &id,
                &s(&["redis-cli", "config", "get", "appendonly"]),
                &[],
                None,
            )
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("yes"));
        Vec::new()
    })
    .await;
}

#[tokio::test]
async fn missing_things_map_to_not_found() {
    let engine = engine().await;
    let ghost = project("ghost");
    assert!(matches!(
        engine.inspect_container(&ghost).await,
        Err(EngineError::ContainerNotFound(n)) if n == ghost
    ));
    assert!(matches!(
        engine.stop_container(&ghost, Some(1)).await,
        Err(EngineError::ContainerNotFound(_))
    ));
    assert!(matches!(
        engine.start_container(&ghost).await,
        Err(EngineError::ContainerNotFound(_))
    ));
    assert!(matches!(
        engine.remove_container(&ghost, true).await,
        Err(EngineError::ContainerNotFound(_))
    ));
    assert!(matches!(
        engine.logs(&ghost, 10).await,
        Err(EngineError::ContainerNotFound(_))
    ));
    assert!(matches!(
        engine.exec(&ghost, &s(&["true"]), &[], None).await,
        Err(EngineError::ContainerNotFound(_))
    ));
    assert!(matches!(
        engine.download_archive(&ghost, "/").await.err(),
        Some(EngineError::ContainerNotFound(_))
    ));
    assert!(engine.inspect_volume(&ghost).await.unwrap().is_none());
    assert!(matches!(
        engine.remove_volume(&ghost).await,
        Err(EngineError::VolumeNotFound(_))
    ));
    assert!(engine.inspect_network(&ghost).await.unwrap().is_none());
    assert!(matches!(
        engine.remove_network(&ghost).await,
        Err(EngineError::NetworkNotFound(_))
    ));
    assert!(!engine
        .image_exists("nodus/nt-no-such-image:1")
        .await
        .unwrap());
    // No registry is reachable here (and the image does not exist anyway).
    let err = engine
        .pull_image("nodus/nt-no-such-image:1", &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::ImageUnavailable { ref image, .. } if image == "nodus/nt-no-such-image:1"),
        "{err:?}"
    );
    let spec = ContainerSpec {
        name: ghost.clone(),
        image: "nodus/nt-no-such-image:1".into(),
        labels: labels::base(&ghost),
        ..Default::default()
    };
    assert!(matches!(
        engine.create_container(&spec).await,
        Err(EngineError::ImageUnavailable { .. })
    ));
}

#[tokio::test]
async fn unreachable_endpoints_are_named() {
    match DockerEngine::connect_to(Some("tcp://127.0.0.1:1")).await {
        Err(EngineError::Unreachable { endpoint, reason }) => {
            assert_eq!(endpoint, "tcp://127.0.0.1:1");
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!(
            "expected Unreachable, got {:?}",
            other.map(|e| e.endpoint().to_string())
        ),
    }
    let sock = "unix:///nonexistent/nt-engine/docker.sock";
    match DockerEngine::connect_to(Some(sock)).await {
        Err(err @ EngineError::Unreachable { .. }) => {
            let msg = err.to_string();
            assert!(msg.contains(sock), "{msg}");
        }
        other => panic!(
            "expected Unreachable, got {:?}",
            other.map(|e| e.endpoint().to_string())
        ),
    }
    // ssh engines are reached through the system ssh; its own reason is reported.
    match DockerEngine::connect_to(Some("ssh://someone@127.0.0.1:1")).await {
        Err(EngineError::Unreachable { endpoint, reason }) => {
            assert_eq!(endpoint, "ssh://someone@127.0.0.1:1");
            assert!(reason.starts_with("ssh: "), "{reason}");
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!(
            "expected Unreachable, got {:?}",
            other.map(|e| e.endpoint().to_string())
        ),
    }
}
