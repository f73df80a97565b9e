//! Tests of the hardening rules and of the rendered compose file.

use super::*;
use crate::stack::{Env, SourceFile};

#[test]
fn ddl_log_adds_statement_logging_with_the_client_address() {
    let h = stack("services:\n  db:\n    image: postgres:16\n  other:\n    image: postgres:16\n    command: [\"postgres\", \"-c\", \"max_connections=50\"]\nx-nodus:\n  services:\n    db:\n      ddl_log: true\n    other:\n      ddl_log: true\n")
        .harden();
    let cmd = |s: &str| match &h.compose.services[s].command {
        Some(StringOrList::List(l)) => l.join(" "),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        cmd("db"),
        format!("postgres -c log_statement=ddl -c log_line_prefix={DDL_LOG_PREFIX}")
    );
    assert!(cmd("other").starts_with("postgres -c max_connections=50 -c log_statement=ddl"));
    assert!(DDL_LOG_PREFIX.contains("%h"));
    // Off by default.
    let plain = stack("services:\n  db:\n    image: postgres:16\n").harden();
    assert!(plain.compose.services["db"].command.is_none());
}

fn stack(text: &str) -> Stack {
    Stack::load(
        &[SourceFile {
            path: "stack.yaml".into(),
            text: text.into(),
        }],
        &Env::new(),
        Some(("proj", crate::stack::ProjectSource::Flag)),
        "d",
    )
    .unwrap()
}

fn fixes(h: &Hardened, needle: &str) -> bool {
    h.findings
        .iter()
        .any(|f| f.level == FindingLevel::Fixed && f.message.contains(needle))
}

fn warns(h: &Hardened, needle: &str) -> bool {
    h.findings
        .iter()
        .any(|f| f.level == FindingLevel::Warning && f.message.contains(needle))
}

fn mount<'a>(h: &'a Hardened, svc: &str, target: &str) -> Option<&'a ServiceVolume> {
    h.compose.services[svc]
        .volumes
        .iter()
        .find(|v| v.target == target)
}

#[test]
fn kinds_from_images() {
    use ServiceKind::*;
    for (img, kind) in [
        ("postgres:15-alpine", Some(Postgres)),
        ("docker.io/library/postgres@sha256:abc", Some(Postgres)),
        ("pgvector/pgvector:pg16", Some(Postgres)),
        ("timescale/timescaledb-ha:pg16", Some(Postgres)),
        ("postgis/postgis:16-3.4", Some(Postgres)),
        ("bitnami/postgresql:16", Some(Postgres)),
        ("nodus/postgres-standin:15", Some(Postgres)),
        ("redis:7.2", Some(Redis)),
        ("redis/redis-stack-server:latest", Some(Redis)),
        ("valkey/valkey:8", Some(Redis)),
        ("nodus/redis-standin:7", Some(Redis)),
        ("qdrant/qdrant", Some(Qdrant)),
        ("mariadb:11", Some(Mariadb)),
        ("mysql:8", Some(Mysql)),
        ("mongo:7", Some(Mongo)),
        ("edoburu/pgbouncer", None),
        ("ghcr.io/berriai/litellm:main", None),
        ("redisinsight/redisinsight", None),
        ("localhost:5000/app", None),
    ] {
        assert_eq!(guess_kind(img), kind, "{img}");
    }
}

#[test]
fn missing_volume_is_added() {
    let h = stack("services:\n  db:\n    image: postgres:15\n").harden();
    let m = mount(&h, "db", "/var/lib/postgresql/data").expect("named volume added");
    assert_eq!(m.source.as_deref(), Some("db_data"));
    assert!(h.compose.volumes.contains_key("db_data"));
    assert!(fixes(&h, "mounted named volume db_data"));
    let s = h.stateful_service("db").unwrap();
    assert_eq!(s.kind, ServiceKind::Postgres);
    assert_eq!(s.data_dir, "/var/lib/postgresql/data");
    assert_eq!(s.volume_key.as_deref(), Some("db_data"));
    assert_eq!(s.volume_name.as_deref(), Some("proj_db_data"));
}

#[test]
fn anonymous_volume_becomes_named() {
    let h = stack(
        "services:\n  db:\n    image: postgres:15\n    volumes: [/var/lib/postgresql/data]\n",
    )
    .harden();
    assert_eq!(h.compose.services["db"].volumes.len(), 1);
    let m = mount(&h, "db", "/var/lib/postgresql/data").unwrap();
    assert_eq!(m.kind, VolumeType::Volume);
    assert_eq!(m.source.as_deref(), Some("db_data"));
    assert!(fixes(
        &h,
        "anonymous volume at /var/lib/postgresql/data is replaced by named volume db_data"
    ));
}

#[test]
fn named_volume_at_data_dir_is_fine() {
    let h = stack(
        "services:\n  db:\n    image: postgres:15\n    volumes: ['pg:/var/lib/postgresql/data']\nvolumes:\n  pg:\n    name: shared_pg\n",
    )
    .harden();
    assert_eq!(h.compose.services["db"].volumes.len(), 1);
    assert!(
        !h.findings.iter().any(|f| f.message.contains("volume")),
        "{:?}",
        h.findings
    );
    let s = h.stateful_service("db").unwrap();
    assert_eq!(s.volume_key.as_deref(), Some("pg"));
    assert_eq!(
        s.volume_name.as_deref(),
        Some("shared_pg"),
        "the volume's name: wins"
    );
}

#[test]
fn external_volume_name_is_kept() {
    let h = stack("services:\n  r:\n    image: redis:7\n    volumes: ['cache:/data']\nvolumes:\n  cache:\n    external: true\n").harden();
    assert_eq!(
        h.stateful_service("r").unwrap().volume_name.as_deref(),
        Some("cache")
    );
}

#[test]
fn bind_mount_is_kept_with_a_warning() {
    let h = stack("services:\n  db:\n    image: postgres:15\n    volumes: ['./pgdata:/var/lib/postgresql/data']\n").harden();
    let m = mount(&h, "db", "/var/lib/postgresql/data").unwrap();
    assert_eq!(m.kind, VolumeType::Bind);
    assert_eq!(m.source.as_deref(), Some("./pgdata"));
    assert_eq!(h.compose.services["db"].volumes.len(), 1);
    assert!(warns(&h, "bind mount ./pgdata"));
    assert!(warns(&h, "cp -a"), "the warning explains how to migrate");
    assert!(
        !h.compose.volumes.contains_key("db_data"),
        "nothing moved silently"
    );
    assert_eq!(h.stateful_service("db").unwrap().volume_key, None);
}

#[test]
fn parent_of_pgdata_is_fixed() {
    let h = stack(
        "services:\n  db:\n    image: postgres:15\n    volumes: ['pg:/var/lib/postgresql']\nvolumes:\n  pg: {}\n",
    )
    .harden();
    let m = mount(&h, "db", "/var/lib/postgresql/data").expect("named volume at PGDATA");
    assert_eq!(m.source.as_deref(), Some("db_data"));
    assert!(
        mount(&h, "db", "/var/lib/postgresql").is_some(),
        "the user's mount stays"
    );
    assert!(fixes(&h, "a parent of /var/lib/postgresql/data"));
    assert!(fixes(&h, "VOLUME /var/lib/postgresql/data"));
    assert_eq!(
        h.stateful_service("db").unwrap().volume_key.as_deref(),
        Some("db_data")
    );
}

#[test]
fn pgdata_below_a_mounted_volume_is_fine() {
    // The common PGDATA=/var/lib/postgresql/data/pgdata pattern: the mount is at the image's VOLUME.
    let h = stack(
        "services:\n  db:\n    image: postgres:16\n    environment: {PGDATA: /var/lib/postgresql/data/pgdata}\n    volumes: ['pg:/var/lib/postgresql/data']\nvolumes:\n  pg: {}\n",
    )
    .harden();
    assert_eq!(h.compose.services["db"].volumes.len(), 1);
    let s = h.stateful_service("db").unwrap();
    assert_eq!(s.data_dir, "/var/lib/postgresql/data/pgdata");
    assert_eq!(s.volume_key.as_deref(), Some("pg"));
}

#[test]
fn pgdata_env_sets_the_data_dir() {
    let h =
        stack("services:\n  db:\n    image: postgres:15\n    environment: [PGDATA=/pg]\n").harden();
    assert!(mount(&h, "db", "/pg").is_some());
    assert_eq!(h.stateful_service("db").unwrap().data_dir, "/pg");
}

#[test]
fn postgres_18_layout() {
    let h = stack("services:\n  db:\n    image: postgres:18\n    volumes: ['pg:/var/lib/postgresql']\nvolumes:\n  pg: {}\n").harden();
    assert_eq!(
        h.compose.services["db"].volumes.len(),
        1,
        "{:?}",
        h.findings
    );
    assert_eq!(
        h.stateful_service("db").unwrap().data_dir,
        "/var/lib/postgresql/18/docker"
    );
}

#[test]
fn image_families_have_their_own_layout() {
    let h = stack("services:\n  db:\n    image: bitnami/postgresql:16\n    volumes: ['pg:/bitnami/postgresql']\n  r:\n    image: docker.io/bitnami/redis:7.2\nvolumes:\n  pg: {}\n").harden();
    assert_eq!(
        h.compose.services["db"].volumes.len(),
        1,
        "{:?}",
        h.findings
    );
    assert_eq!(
        h.stateful_service("db").unwrap().volume_key.as_deref(),
        Some("pg")
    );
    assert!(mount(&h, "r", "/bitnami/redis/data").is_some());
    let h = stack("services:\n  ts:\n    image: timescale/timescaledb-ha:pg16\n").harden();
    assert!(mount(&h, "ts", "/home/postgres/pgdata/data").is_some());
    let h = stack("services:\n  ts:\n    image: timescale/timescaledb-ha:pg16\n    volumes: ['t:/home/postgres']\nvolumes:\n  t: {}\n").harden();
    assert!(
        fixes(&h, "VOLUME /home/postgres/pgdata"),
        "{:?}",
        h.findings
    );
}

#[test]
fn parent_mount_is_fine_for_other_kinds() {
    let h = stack(
        "services:\n  q:\n    image: qdrant/qdrant\n    volumes: ['q:/qdrant']\nvolumes:\n  q: {}\n",
    )
    .harden();
    assert_eq!(h.compose.services["q"].volumes.len(), 1);
    assert_eq!(
        h.stateful_service("q").unwrap().volume_key.as_deref(),
        Some("q")
    );
}

#[test]
fn stop_signal_and_grace() {
    let h = stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n").harden();
    assert_eq!(
        h.compose.services["db"].stop_signal.as_deref(),
        Some("SIGINT")
    );
    assert_eq!(
        h.compose.services["r"].stop_signal, None,
        "only postgres gets a stop signal"
    );
    assert_eq!(
        h.compose.services["db"].stop_grace_period.as_deref(),
        Some("60s")
    );
    assert_eq!(
        h.compose.services["r"].stop_grace_period.as_deref(),
        Some("60s")
    );

    let h = stack("services:\n  db:\n    image: postgres:15\n    stop_signal: SIGTERM\n    stop_grace_period: 2m\n").harden();
    assert_eq!(
        h.compose.services["db"].stop_signal.as_deref(),
        Some("SIGTERM")
    );
    assert_eq!(
        h.compose.services["db"].stop_grace_period.as_deref(),
        Some("2m"),
        "longer grace kept"
    );
    assert!(
        h.findings.iter().all(|f| !f.message.contains("stop_")),
        "{:?}",
        h.findings
    );

    let h = stack("services:\n  db:\n    image: postgres:15\n    stop_signal: SIGKILL\n    stop_grace_period: 10s\n").harden();
    assert_eq!(
        h.compose.services["db"].stop_signal.as_deref(),
        Some("SIGKILL"),
        "kept"
    );
    assert!(warns(&h, "stop_signal SIGKILL kept"));
    assert_eq!(
        h.compose.services["db"].stop_grace_period.as_deref(),
        Some("60s")
    );
    assert!(fixes(&h, "stop_grace_period 60s (was 10s)"));
}

#[test]
fn healthchecks_added_not_replaced() {
    let h = stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n  q:\n    image: qdrant/qdrant:v1.9.0\n").harden();
    let pg = h.compose.services["db"].healthcheck.as_ref().unwrap();
    assert_eq!(
        pg.test,
        Some(StringOrList::List(vec![
            "CMD-SHELL".into(),
            "pg_isready -U \"${POSTGRES_USER:-postgres}\" -d \"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\" -h 127.0.0.1".into()
        ]))
    );
    assert_eq!(pg.interval.as_deref(), Some("2s"));
    assert_eq!(pg.timeout.as_deref(), Some("5s"));
    assert_eq!(pg.retries, Some(30));
    assert_eq!(pg.start_period.as_deref(), Some("5s"));
    assert_eq!(
        h.compose.services["r"].healthcheck.as_ref().unwrap().test,
        Some(StringOrList::List(vec![
            "CMD".into(),
            "redis-cli".into(),
            "ping".into()
        ]))
    );
    assert!(h.compose.services["q"].healthcheck.is_some());

    let h = stack("services:\n  db:\n    image: postgres:15\n    healthcheck:\n      test: [CMD, pg_isready]\n      interval: 10s\n").harden();
    let hc = h.compose.services["db"].healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test,
        Some(StringOrList::List(vec!["CMD".into(), "pg_isready".into()]))
    );
    assert_eq!(hc.interval.as_deref(), Some("10s"));
    assert!(!fixes(&h, "health check"));
}

#[test]
fn census_port_published_on_loopback_unless_already() {
    let h = stack("services:\n  db:\n    image: postgres:15\n  r:\n    image: redis:7\n    ports: ['6379:6379']\n  q:\n    image: qdrant/qdrant\n    ports: [{target: 6333, published: 6333}]\n").harden();
    assert_eq!(
        h.compose.services["db"].ports,
        vec![Port::Short("127.0.0.1::5432".into())]
    );
    assert!(fixes(&h, "port 5432 published on 127.0.0.1"));
    assert_eq!(
        h.compose.services["r"].ports,
        vec![Port::Short("6379:6379".into())]
    );
    assert_eq!(h.compose.services["q"].ports.len(), 1);
    assert!(publishes(
        &[Port::Short("127.0.0.1:5000-5500:5000-5500/tcp".into())],
        5432
    ));
    assert!(publishes(&[Port::Short("[::1]:15432:5432".into())], 5432));
    assert!(!publishes(&[Port::Short("5432:5433".into())], 5432));
}

#[test]
fn hardening_opt_out() {
    let text = "services:\n  db:\n    image: postgres:15\n    volumes: [/var/lib/postgresql/data]\n  r:\n    image: redis:7\n";
    let s = stack(&format!("{text}x-nodus:\n  harden: false\n"));
    let h = s.harden();
    // Everything passes through unchanged except the loopback census ports.
    let mut expected = s.compose.clone();
    expected.services["db"]
        .ports
        .push(Port::Short("127.0.0.1::5432".into()));
    expected.services["r"]
        .ports
        .push(Port::Short("127.0.0.1::6379".into()));
    assert_eq!(
        h.compose, expected,
        "passed through unchanged but for census ports"
    );
    assert!(h.findings.iter().all(|f| f.message.contains("census")));
    assert_eq!(h.stateful.len(), 2, "still known as stateful");
    assert_eq!(h.stateful_service("db").unwrap().volume_key, None);

    let s = stack(&format!(
        "{text}x-nodus:\n  services:\n    db:\n      harden: false\n"
    ));
    let h = s.harden();
    assert_eq!(
        h.compose.services["db"].volumes,
        s.compose.services["db"].volumes
    );
    assert_eq!(h.compose.services["db"].stop_signal, None);
    assert_ne!(
        h.compose.services["r"], s.compose.services["r"],
        "only db opted out"
    );
}

#[test]
fn xnodus_overrides_kind_stateful_and_data_dir() {
    let h = stack(
        "services:\n  cache:\n    image: redis:7\n  store:\n    image: minio/minio\n    volumes: ['m:/srv']\n  kv:\n    image: example/kv\n  db:\n    image: postgres:15\nvolumes:\n  m: {}\nx-nodus:\n  services:\n    cache:\n      stateful: false\n    store:\n      stateful: true\n    kv:\n      kind: redis\n      data_dir: /kvdata\n    db:\n      data_dir: /pg/data\n",
    )
    .harden();
    assert!(h.stateful_service("cache").is_none());
    assert_eq!(h.compose.services["cache"].healthcheck, None);
    let store = h.stateful_service("store").unwrap();
    assert_eq!(store.kind, ServiceKind::Other);
    assert_eq!(store.data_dir, "/srv");
    assert_eq!(store.volume_key.as_deref(), Some("m"));
    let kv = h.stateful_service("kv").unwrap();
    assert_eq!(kv.kind, ServiceKind::Redis);
    assert!(mount(&h, "kv", "/kvdata").is_some());
    assert!(mount(&h, "db", "/pg/data").is_some());
}

#[test]
fn stateful_other_without_data_dir_warns() {
    let h = stack("services:\n  x:\n    image: example/x\nx-nodus:\n  services:\n    x:\n      stateful: true\n").harden();
    assert!(warns(&h, "data_dir"));
    assert!(h.stateful.is_empty());
}

#[test]
fn volume_key_does_not_clash() {
    let h = stack("services:\n  db:\n    image: postgres:15\n  other:\n    image: x\n    volumes: ['db_data:/x']\nvolumes:\n  db_data: {}\n").harden();
    assert_eq!(
        h.stateful_service("db").unwrap().volume_key.as_deref(),
        Some("db_data_2")
    );
}

#[test]
fn unknown_keys_pass_through() {
    let s = stack(
        "services:\n  db:\n    image: postgres:15\n    deploy:\n      resources:\n        limits: {memory: 1g}\n    logging:\n      driver: json-file\n    x-team: data\n  web:\n    image: nginx\n    ports: ['8080:80']\nx-anchors:\n  a: 1\nconfigs:\n  c:\n    file: /etc/c\n",
    );
    let h = s.harden();
    let db = &h.compose.services["db"];
    assert_eq!(db.extra["deploy"], s.compose.services["db"].extra["deploy"]);
    assert!(db.extra.contains_key("logging") && db.extra.contains_key("x-team"));
    assert_eq!(
        h.compose.services["web"], s.compose.services["web"],
        "stateless services unchanged"
    );
    assert!(h.compose.extra.contains_key("x-anchors") && h.compose.extra.contains_key("configs"));
    let yaml = render_yaml(&h.compose).unwrap();
    assert!(yaml.contains("x-team: data"), "{yaml}");
    assert!(yaml.contains("memory: \"1g\""), "{yaml}");
}

#[test]
fn render_escapes_dollars_and_quotes_ambiguous_scalars() {
    let s = stack(
        "name: proj\nversion: '3.8'\nservices:\n  db:\n    image: postgres:15\n    environment:\n      PW: 'a$$b'\n      FLAG: 'yes'\n      NUM: '0755'\n      EMPTY: ''\n      MULTI: \"l1\\nl2\"\n      UNSET:\n    ports: ['22:22']\n    command: [postgres, -c, 'max_connections=200']\n",
    );
    let h = s.harden();
    let yaml = render_yaml_for(&s, &h.compose).unwrap();
    assert!(
        yaml.starts_with("# Generated by nodus from stack.yaml (project proj)"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("\nname:") && !yaml.contains("\nversion:"),
        "{yaml}"
    );
    assert!(yaml.contains("PW: \"a$$b\""), "{yaml}");
    assert!(yaml.contains("$${POSTGRES_USER:-postgres}"), "{yaml}");
    assert!(yaml.contains("FLAG: \"yes\""), "{yaml}");
    assert!(yaml.contains("\"22:22\""), "{yaml}");
    assert!(yaml.contains("\"127.0.0.1::5432\""), "{yaml}");
    // round trip: what compose reads (after un-escaping `$$`) is the hardened model
    let back: ComposeFile = serde_yaml::from_str(&yaml.replace("$$", "$")).unwrap();
    let mut expected = h.compose.clone();
    expected.name = None;
    expected.version = None;
    assert_eq!(back, expected);
}
