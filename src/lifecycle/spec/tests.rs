//! Tests of container specs built from the hardened stack.

use super::*;

fn hardened(yaml: &str) -> Hardened {
    Hardened {
        compose: serde_yaml::from_str(yaml).unwrap(),
        stateful: Vec::new(),
        findings: Vec::new(),
    }
}

fn env(k: &str) -> Option<String> {
    match k {
        "FROM_SHELL" => Some("shell-value".into()),
        "HOME" => Some("/home/dev".into()),
        _ => None,
    }
}

fn build(yaml: &str, svc: &str) -> Result<BuiltSpec, SpecError> {
    let h = hardened(yaml);
    let s = h.compose.services[svc].clone();
    container_spec(
        "proj",
        svc,
        &s,
        &h,
        Path::new("/work/app"),
        &["/work/app/compose.yaml".to_string()],
        &env,
    )
}

const FULL: &str = r#"
services:
  db:
    image: postgres:16
    labels: { team: data, com.docker.compose.project: evil }
    environment:
      POSTGRES_PASSWORD: secret
      FROM_SHELL:
      UNSET_VAR:
    command: postgres -c 'shared_buffers=256MB' -c "log_line_prefix=%m [%p] "
    volumes:
      - pgdata:/var/lib/postgresql/data
      - ./init:/docker-entrypoint-initdb.d:ro
      - ../shared:/shared
      - ~/cache:/cache
      - /anon
      - type: tmpfs
        target: /tmp/x
    ports:
      - "5432"
      - "127.0.0.1:15432:5432"
      - "127.0.0.1::5433"
      - "8080:80/udp"
      - "9000-9001:7000-7001"
      - target: 6000
        published: "16000"
        host_ip: 0.0.0.0
    networks:
      back:
        aliases: [database]
    healthcheck:
      test: pg_isready -U postgres
      interval: 2s
      timeout: 1500ms
      retries: 30
      start_period: 1m
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    restart: unless-stopped
    user: "999"
    working_dir: /var/lib/postgresql
    hostname: dbhost
    extra_hosts: ["host.docker.internal:host-gateway", "other=10.0.0.1"]
    tmpfs: /run
    shm_size: 256m
    privileged: true
    cap_add: [SYS_PTRACE]
    init: true
    tty: true
    stdin_open: true
    deploy: { resources: { limits: { memory: 1g } } }
    x-custom: ignored
  app:
    image: app
    container_name: my-app
    entrypoint: ["/bin/sh", "-c"]
    command: ["echo hi"]
    healthcheck: { disable: true }
volumes:
  pgdata:
  named: { name: exact-name }
  ext: { external: true }
networks:
  back: {}
"#;

#[test]
fn full_service() {
    let b = build(FULL, "db").unwrap();
    let s = &b.spec;
    assert_eq!(s.name, "proj-db-1");
    assert_eq!(s.image, "postgres:16");
    // labels
    assert_eq!(
        s.labels[labels::PROJECT],
        "proj",
        "our labels win over the service's"
    );
    assert_eq!(s.labels["team"], "data");
    assert_eq!(s.labels[labels::SERVICE], "db");
    assert_eq!(s.labels[labels::CONTAINER_NUMBER], "1");
    assert_eq!(s.labels[labels::ONEOFF], "False");
    assert_eq!(s.labels[labels::COMPOSE_VERSION], COMPOSE_VERSION);
    assert_eq!(s.labels[labels::WORKING_DIR], "/work/app");
    assert_eq!(s.labels[labels::CONFIG_FILES], "/work/app/compose.yaml");
    assert_eq!(s.labels[labels::CONFIG_HASH], b.config_hash);
    assert!(labels::owned_by(&s.labels, "proj"));
    assert_eq!(s.labels[labels::NODUS_PROJECT], "proj");
    // env
    assert_eq!(
        s.env,
        ["POSTGRES_PASSWORD=secret", "FROM_SHELL=shell-value"]
    );
    // command
    assert_eq!(
        s.cmd.as_ref().unwrap(),
        &[
            "postgres",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "log_line_prefix=%m [%p] "
        ]
    );
    assert_eq!(s.entrypoint, None);
    // mounts
    let m = |k: MountKind, src: &str, t: &str, ro: bool| MountSpec {
        kind: k,
        source: src.into(),
        target: t.into(),
        read_only: ro,
    };
    assert_eq!(
        s.mounts,
        vec![
            m(
                MountKind::Volume,
                "proj_pgdata",
                "/var/lib/postgresql/data",
                false
            ),
            m(
                MountKind::Bind,
                "/work/app/init",
                "/docker-entrypoint-initdb.d",
                true
            ),
            m(MountKind::Bind, "/work/shared", "/shared", false),
            m(MountKind::Bind, "/home/dev/cache", "/cache", false),
            m(MountKind::Volume, "", "/anon", false),
            m(MountKind::Tmpfs, "", "/tmp/x", false),
        ]
    );
    // ports
    let p = |c: u16, proto: &str, ip: &str, h: Option<u16>| PortSpec {
        container_port: c,
        protocol: proto.into(),
        host_ip: ip.into(),
        host_port: h,
    };
    assert_eq!(
        s.ports,
        vec![
            p(5432, "tcp", "", None),
            p(5432, "tcp", "127.0.0.1", Some(15432)),
            p(5433, "tcp", "127.0.0.1", None),
            p(80, "udp", "", Some(8080)),
            p(7000, "tcp", "", Some(9000)),
            p(7001, "tcp", "", Some(9001)),
            p(6000, "tcp", "0.0.0.0", Some(16000)),
        ]
    );
    // networks
    assert_eq!(
        s.networks,
        vec![NetworkAttachment {
            network: "proj_back".into(),
            aliases: vec!["db".into(), "database".into()]
        }]
    );
    // health
    let h = s.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "pg_isready -U postgres"]);
    assert_eq!(h.interval_ns, 2_000_000_000);
    assert_eq!(h.timeout_ns, 1_500_000_000);
    assert_eq!(h.retries, 30);
    assert_eq!(h.start_period_ns, 60_000_000_000);
    // the rest
    assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(s.stop_timeout_secs, Some(90));
    assert_eq!(s.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(s.user.as_deref(), Some("999"));
    assert_eq!(s.working_dir.as_deref(), Some("/var/lib/postgresql"));
    assert_eq!(s.hostname.as_deref(), Some("dbhost"));
    assert_eq!(
        s.extra_hosts,
        ["host.docker.internal:host-gateway", "other:10.0.0.1"]
    );
    assert_eq!(s.tmpfs, ["/run"]);
    assert_eq!(s.shm_size, Some(256 * 1024 * 1024));
    assert!(s.privileged && s.tty && s.stdin_open);
    assert_eq!(s.cap_add, ["SYS_PTRACE"]);
    assert_eq!(s.init, Some(true));
    // warnings: deploy, not x-custom
    assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
    assert!(b.warnings[0].contains("service db: `deploy` is not applied by nodus"));
    assert!(b.warnings[0].contains("docker compose -f .nodus/compose.yaml"));
}

#[test]
fn container_name_entrypoint_disable_and_default_network() {
    let b = build(FULL, "app").unwrap();
    assert_eq!(b.spec.name, "my-app");
    assert_eq!(b.spec.entrypoint.as_ref().unwrap(), &["/bin/sh", "-c"]);
    assert_eq!(b.spec.cmd.as_ref().unwrap(), &["echo hi"]);
    assert_eq!(b.spec.healthcheck.as_ref().unwrap().test, ["NONE"]);
    assert_eq!(
        b.spec.networks,
        vec![NetworkAttachment {
            network: "proj_default".into(),
            aliases: vec!["app".into()]
        }]
    );
    assert!(b.warnings.is_empty());
}

#[test]
fn volume_names() {
    let h = hardened(FULL);
    assert_eq!(
        stack_volumes("proj", &h.compose),
        vec![
            StackVolume {
                key: "pgdata".into(),
                name: "proj_pgdata".into(),
                external: false
            },
            StackVolume {
                key: "named".into(),
                name: "exact-name".into(),
                external: false
            },
            StackVolume {
                key: "ext".into(),
                name: "ext".into(),
                external: true
            },
        ]
    );
    let y = "services:\n  a:\n    image: x\n    volumes: [named:/n, ext:/e]\nvolumes:\n  named: {name: exact-name}\n  ext: {external: true}\n";
    let b = build(y, "a").unwrap();
    assert_eq!(b.spec.mounts[0].source, "exact-name");
    assert_eq!(b.spec.mounts[1].source, "ext");
}

#[test]
fn errors() {
    // A service with `build:` and no `image:` runs compose v2's `<project>-<service>`.
    assert_eq!(
        build("services:\n  a: {build: .}\n", "a")
            .unwrap()
            .spec
            .image,
        "proj-a"
    );
    let e = build("services:\n  a: {image: x, pull_policy: often}\n", "a").unwrap_err();
    assert!(e.to_string().contains("pull_policy"), "{e}");
    let e = build("services:\n  a: {image: x, volumes: ['nope:/data']}\n", "a").unwrap_err();
    assert!(e.to_string().contains("volume `nope`"), "{e}");
    let e = build("services:\n  a: {image: x, networks: [nope]}\n", "a").unwrap_err();
    assert!(e.to_string().contains("network `nope`"), "{e}");
    let e = build("services:\n  a: {image: x, ports: ['abc']}\n", "a").unwrap_err();
    assert!(e.to_string().contains("service a: ports:"), "{e}");
    let e = build("services:\n  a: {image: x, command: \"echo 'oops\"}\n", "a").unwrap_err();
    assert!(e.to_string().contains("unterminated"), "{e}");
    let e = build("services:\n  a: {image: x, stop_grace_period: 10}\n", "a").unwrap_err();
    assert!(e.to_string().contains("stop_grace_period"), "{e}");
}

#[test]
fn build_keys_nodus_does_not_apply_warn() {
    let y = "services:\n  a: {image: x, build: {context: ., ssh: [default]}, pull_policy: build, secrets: [s]}\n";
    let b = build(y, "a").unwrap();
    assert_eq!(b.warnings.len(), 2, "{:?}", b.warnings);
    assert!(b.warnings[0].contains("`build.ssh` is not applied"));
    assert!(b.warnings[1].contains("`secrets` is not applied"));
}

#[test]
fn config_hash_follows_resolved_env() {
    let y = "services:\n  a: {image: x, environment: [FROM_SHELL]}\n";
    let h = hardened(y);
    let s = &h.compose.services["a"];
    let dir = Path::new("/d");
    let one = container_spec("p", "a", s, &h, dir, &[], &|_| Some("1".into())).unwrap();
    let two = container_spec("p", "a", s, &h, dir, &[], &|_| Some("2".into())).unwrap();
    let again = container_spec("p", "a", s, &h, dir, &[], &|_| Some("1".into())).unwrap();
    assert_ne!(one.config_hash, two.config_hash);
    assert_eq!(one.config_hash, again.config_hash);
}

#[test]
fn shell_split() {
    assert_eq!(split_command("a b  c").unwrap(), ["a", "b", "c"]);
    assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
    assert_eq!(
        split_command(r#"sh -c "echo \"hi\" \$HOME""#).unwrap(),
        ["sh", "-c", r#"echo "hi" $HOME"#]
    );
    assert_eq!(
        split_command(r"a\ b 'c d' e''f").unwrap(),
        ["a b", "c d", "ef"]
    );
    assert_eq!(split_command("''").unwrap(), [""]);
    assert_eq!(split_command(r#""a\nb""#).unwrap(), [r"a\nb"]);
    assert!(split_command("'x").is_err());
    assert!(split_command("\"x").is_err());
    assert!(split_command("x\\").is_err());
}

#[test]
fn ports() {
    let one = |s: &str| {
        let v = parse_port(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        let p = &v[0];
        (
            p.host_ip.clone(),
            p.host_port,
            p.container_port,
            p.protocol.clone(),
        )
    };
    assert_eq!(one("5432"), ("".into(), None, 5432, "tcp".into()));
    assert_eq!(
        one("[::1]:8080:80"),
        ("::1".into(), Some(8080), 80, "tcp".into())
    );
    assert_eq!(
        one("0.0.0.0:53:53/udp"),
        ("0.0.0.0".into(), Some(53), 53, "udp".into())
    );
    assert_eq!(parse_port("7000-7002").unwrap().len(), 3);
    assert!(parse_port("8000-8001:80").is_err());
    assert!(parse_port("0").is_err());
    assert!(parse_port("70000").is_err());
    assert!(parse_port("80/xyz").is_err());
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
    assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
    assert_eq!(parse_bytes("1.5GB").unwrap(), 3 << 29);
    assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
    assert_eq!(parse_bytes("100").unwrap(), 100);
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("1x").is_err());
}
