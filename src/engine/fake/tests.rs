//! Tests of the fake engine's own behaviour (what lifecycle tests rely on).

use super::*;

fn spec(name: &str, image: &str, health: bool) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        networks: vec![NetworkAttachment {
            network: "net".into(),
            aliases: vec![],
        }],
        mounts: vec![MountSpec {
            kind: MountKind::Volume,
            source: "data".into(),
            target: "/data".into(),
            read_only: false,
        }],
        ports: vec![PortSpec {
            container_port: 5432,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: None,
        }],
        healthcheck: health.then(|| HealthSpec {
            test: vec!["CMD".into(), "true".into()],
            interval_ns: 0,
            timeout_ns: 0,
            retries: 0,
            start_period_ns: 0,
        }),
        ..ContainerSpec::default()
    }
}

#[tokio::test]
async fn lifecycle_of_a_container() {
    let e = FakeEngine::new().with_images(&["postgres:16"]);
    assert!(
        e.create_container(&spec("db", "postgres:16", true))
            .await
            .is_err(),
        "network missing"
    );
    e.create_network("net", &Labels::new()).await.unwrap();
    let id = e
        .create_container(&spec("db", "postgres:16", true))
        .await
        .unwrap();
    assert!(
        e.create_container(&spec("db", "postgres:16", true))
            .await
            .is_err(),
        "name conflict"
    );
    // the named volume was created implicitly, without labels
    assert!(e.volume("data").unwrap().labels.is_empty());
    e.start_container(&id).await.unwrap();
    let i = e.container("db").unwrap();
    assert_eq!((i.state, i.health), (RunState::Running, Health::Starting));
    assert_eq!(i.ports[0].host_port, 49153);
    assert_eq!(
        e.inspect_container(&id).await.unwrap().health,
        Health::Starting
    );
    assert_eq!(
        e.inspect_container(&id).await.unwrap().health,
        Health::Healthy
    );
    assert!(e.remove_container(&id, false).await.is_err());
    assert!(e.remove_network("net").await.is_err(), "in use");
    e.stop_container(&id, Some(60)).await.unwrap();
    let i = e.inspect_container("db").await.unwrap();
    assert_eq!((i.state, i.exit_code), (RunState::Exited, Some(0)));
    assert!(e
        .logs(&id, 50)
        .await
        .unwrap()
        .contains("database system is shut down"));
    assert!(e.remove_volume("data").await.is_err(), "in use");
    e.remove_container(&id, false).await.unwrap();
    e.remove_network("net").await.unwrap();
    e.remove_volume("data").await.unwrap();
    assert_eq!(
        e.calls(),
        [
            "create_network net",
            "create_container db",
            "start db",
            "stop db",
            "remove_container db",
            "remove_network net",
            "remove_volume data"
        ]
    );
    assert_eq!(e.stop_timeouts(), [("db".to_string(), Some(60))]);
}

#[tokio::test]
async fn scripted_behaviours() {
    let e = FakeEngine::new().with_images(&["bad", "crash", "slow", "plain"]);
    e.create_network("net", &Labels::new()).await.unwrap();
    e.tweak("bad", |b| b.health = FakeHealth::Unhealthy);
    e.tweak("crash", |b| b.health = FakeHealth::Exits(3));
    e.tweak("slow", |b| {
        b.health = FakeHealth::StaysStarting;
        b.stop_exit_code = 137
    });
    for (n, img) in [("b", "bad"), ("c", "crash"), ("s", "slow"), ("p", "plain")] {
        let mut sp = spec(n, img, img != "plain");
        sp.mounts.clear();
        let id = e.create_container(&sp).await.unwrap();
        e.start_container(&id).await.unwrap();
        for _ in 0..3 {
            e.inspect_container(n).await.unwrap();
        }
    }
    assert_eq!(e.container("b").unwrap().health, Health::Unhealthy);
    let c = e.container("c").unwrap();
    assert_eq!((c.state, c.exit_code), (RunState::Exited, Some(3)));
    assert_eq!(e.container("s").unwrap().health, Health::Starting);
    let p = e.container("p").unwrap();
    assert_eq!((p.state, p.health), (RunState::Running, Health::None));
    e.stop_container("s", None).await.unwrap();
    assert_eq!(e.container("s").unwrap().exit_code, Some(137));
    // pulls
    assert!(e.pull_image("nope", &|_| {}).await.is_err());
    e.add_pullable("later");
    e.pull_image("later", &|_| {}).await.unwrap();
    assert!(e.image_exists("later").await.unwrap());
    // archives
    let mut s = e.download_archive("p", "/data").await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), empty_tar());
    e.upload_archive("p", "/data", bytes_stream(b"abc".to_vec()))
        .await
        .unwrap();
    assert_eq!(e.uploaded("p", "/data").unwrap(), b"abc");
    // exec
    e.set_exec_handler(|_, cmd| ExecOutput {
        exit_code: 0,
        stdout: cmd.join(" ").into_bytes(),
        stderr: vec![],
    });
    let out = e
        .exec("p", &["echo".into(), "hi".into()], &[], None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"echo hi");
    let (xid, mut st) = e
        .exec_stream("p", &["dump".into()], &[], None)
        .await
        .unwrap();
    assert_eq!(&st.next().await.unwrap().unwrap()[..], b"dump");
    assert_eq!(e.exec_exit_code(&xid).await.unwrap(), Some(0));
    assert!(
        e.exec("c", &["x".into()], &[], None).await.is_err(),
        "not running"
    );
}

#[tokio::test]
async fn label_filters() {
    let e = FakeEngine::new();
    let mut l = Labels::new();
    l.insert("a".into(), "1".into());
    e.add_volume("mine", &l);
    e.add_volume("other", &Labels::new());
    assert_eq!(e.list_volumes(&l).await.unwrap().len(), 1);
    assert_eq!(e.list_volumes(&Labels::new()).await.unwrap().len(), 2);
}
