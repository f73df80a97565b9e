//! Static checks over the fixtures in tests/fixtures/doctor (one per id, plus a clean one) and
//! over every stack in templates/stacks/.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::checks::{floating_reason, run, unsafe_settings, StaticInput};
use super::{ids, Finding, Severity};
use crate::engine::ImageInfo;
use crate::stack::{Env, SourceFile, Stack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_text(path: &str, text: &str, images: &BTreeMap<String, ImageInfo>) -> Vec<Finding> {
    let sources = vec![SourceFile {
        path: path.into(),
        text: text.to_string(),
    }];
    let stack = Stack::load(&sources, &Env::new(), None, "fixture").expect("fixture loads");
    run(&StaticInput {
        stack: &stack,
        sources: &sources,
        images,
        configs: &BTreeMap::new(),
    })
}

fn check_file(path: &PathBuf) -> Vec<Finding> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    check_text(&path.display().to_string(), &text, &BTreeMap::new())
}

const STATIC_IDS: &[&str] = &[
    ids::PGDATA_ANONYMOUS,
    ids::PGDATA_CONTAINER_LAYER,
    ids::PGDATA_PARENT_MOUNT,
    ids::PG18_LAYOUT,
    ids::FLOATING_DB_TAG,
    ids::TMPFS_DATA,
    ids::UNSAFE_DURABILITY,
    ids::STOP_GRACE_SHORT,
    ids::STOP_SIGNAL,
    ids::BIND_MOUNT_DATA,
    ids::SHARED_DB_SCHEMA_SYNC,
];

#[test]
fn every_static_id_has_a_fixture_that_reports_it() {
    for id in STATIC_IDS {
        let path = root().join(format!("tests/fixtures/doctor/{id}.yaml"));
        let found = check_file(&path);
        assert!(
            found.iter().any(|f| f.id == *id),
            "{id}: not reported for {}: {found:#?}",
            path.display()
        );
        // Every finding from the file points into it.
        for f in found.iter().filter(|f| f.id == *id) {
            let loc = f
                .location
                .as_ref()
                .unwrap_or_else(|| panic!("{id}: no file:line: {f:?}"));
            assert!(
                loc.file.ends_with(&format!("{id}.yaml")) && loc.line > 1,
                "{f:?}"
            );
            assert!(f.evidence.starts_with(&loc.to_string()), "{f:?}");
            assert!(!f.fix.is_empty());
        }
    }
}

#[test]
fn clean_fixture_has_no_findings() {
    let found = check_file(&root().join("tests/fixtures/doctor/clean.yaml"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn shipped_stacks_have_no_errors() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("templates/stacks")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            n += 1;
            let errors: Vec<Finding> = check_file(&p)
                .into_iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", p.display());
        }
    }
    assert!(n >= 4);
}

#[test]
fn pgdata_checks_use_the_image_config_when_known() {
    // An image that keeps PGDATA elsewhere and declares no VOLUME: data in the container layer.
    let text = "services:\n  db:\n    image: acme/pg:15\n    environment:\n      POSTGRES_PASSWORD: x\n    stop_signal: SIGINT\n    stop_grace_period: 60s\n    volumes:\n      - pg:/var/lib/postgresql/data\nvolumes:\n  pg:\nx-nodus:\n  services:\n    db:\n      kind: postgres\n";
    let mut images = BTreeMap::new();
    images.insert(
        "acme/pg:15".to_string(),
        ImageInfo {
            env: vec!["PGDATA=/opt/pgdata".into()],
            ..Default::default()
        },
    );
    let found = check_text("s.yaml", text, &images);
    assert!(
        found.iter().any(|f| f.id == ids::PGDATA_CONTAINER_LAYER),
        "{found:#?}"
    );
    // Same file, image declares VOLUME /opt/pgdata: anonymous.
    images.get_mut("acme/pg:15").unwrap().volumes = vec!["/opt/pgdata".into()];
    let found = check_text("s.yaml", text, &images);
    assert!(
        found.iter().any(|f| f.id == ids::PGDATA_ANONYMOUS),
        "{found:#?}"
    );
    // Without image facts the official default applies: the mount is right.
    let found = check_text("s.yaml", text, &BTreeMap::new());
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn pgdata_below_the_mount_and_pgdata_in_a_subdir_are_fine() {
    let text = "services:\n  db:\n    image: postgres:16\n    environment:\n      PGDATA: /var/lib/postgresql/data/pgdata\n    stop_signal: SIGINT\n    stop_grace_period: 60s\n    volumes:\n      - pg:/var/lib/postgresql/data\nvolumes:\n  pg:\n";
    assert!(check_text("s.yaml", text, &BTreeMap::new()).is_empty());
}

#[test]
fn tags_with_and_without_a_major() {
    for floating in [
        "postgres",
        "postgres:latest",
        "postgres:alpine",
        "redis:bookworm",
        "postgres:alpine3.19",
        "localhost:5000/postgres",
    ] {
        assert!(floating_reason(floating).is_some(), "{floating}");
    }
    for pinned in [
        "postgres:15",
        "postgres:15-alpine",
        "postgres:16.4",
        "qdrant/qdrant:v1.12.5",
        "pgvector/pgvector:pg16",
        "timescale/timescaledb:latest-pg16",
        "postgres@sha256:abc",
        "localhost:5000/postgres:16",
    ] {
        assert!(floating_reason(pinned).is_none(), "{pinned}");
    }
}

#[test]
fn durability_settings() {
    let got: Vec<String> = unsafe_settings("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes = false -c wal_sync_method=fsync")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        got,
        vec![
            "fsync=off",
            "full_page_writes=false",
            "synchronous_commit=off"
        ]
    );
    assert!(unsafe_settings("fsync = on\nsynchronous_commit=local").is_empty());
    assert_eq!(unsafe_settings("fsync off").len(), 1);
}

#[test]
fn shared_schema_sync_variants() {
    let base = "services:\n  db:\n    image: postgres:16\n    stop_signal: SIGINT\n    stop_grace_period: 60s\n    volumes: [pg:/var/lib/postgresql/data]\n  app:\n    image: acme/app:1\n    environment:\n      DATABASE_URL: postgres://u:p@db/shop\n";
    let vol = "volumes:\n  pg:\n";
    let cases = [
        "  prisma:\n    image: node:20\n    command: npx prisma db push --accept-data-loss\n    environment:\n      DATABASE_URL: postgresql://u:p@db:5432/shop?schema=public\n",
        "  java:\n    image: acme/java:1\n    environment:\n      SPRING_JPA_HIBERNATE_DDL_AUTO: create-drop\n      SPRING_DATASOURCE_URL: jdbc:postgresql://db:5432/shop\n",
        "  dj:\n    image: acme/dj:1\n    command: sh -c 'python manage.py flush --no-input && gunicorn'\n    environment:\n      DB_URL: postgres://u:p@db/shop\n",
        "  llm:\n    image: ghcr.io/berriai/litellm:main-stable\n    command: [\"--use_prisma_db_push\"]\n    environment:\n      DATABASE_URL: postgres://u:p@db/shop\n      DISABLE_SCHEMA_UPDATE: \"true\"\n",
    ];
    for c in cases {
        let text = format!("{base}{c}{vol}");
        let found = check_text("s.yaml", &text, &BTreeMap::new());
        let f = found
            .iter()
            .find(|f| f.id == ids::SHARED_DB_SCHEMA_SYNC)
            .unwrap_or_else(|| panic!("not found for\n{c}\n{found:#?}"));
        assert!(
            f.evidence.contains("app") && f.evidence.contains("shop"),
            "{f:?}"
        );
    }
    // Another database or schema, or LiteLLM with DISABLE_SCHEMA_UPDATE: fine.
    for c in [
        "  prisma:\n    image: node:20\n    command: npx prisma db push --accept-data-loss\n    environment:\n      DATABASE_URL: postgresql://u:p@db:5432/prisma_db\n",
        "  prisma:\n    image: node:20\n    command: npx prisma db push --accept-data-loss\n    environment:\n      DATABASE_URL: postgresql://u:p@db:5432/shop?schema=other\n",
        "  llm:\n    image: ghcr.io/berriai/litellm:main-stable\n    environment:\n      DATABASE_URL: postgres://u:p@db/shop\n      DISABLE_SCHEMA_UPDATE: \"true\"\n",
    ] {
        let text = format!("{base}{c}{vol}");
        let found = check_text("s.yaml", &text, &BTreeMap::new());
        assert!(!found.iter().any(|f| f.id == ids::SHARED_DB_SCHEMA_SYNC), "{c}\n{found:#?}");
    }
}

#[test]
fn findings_in_override_files_point_at_the_override() {
    let a = SourceFile {
        path: "compose.yaml".into(),
        text: "services:\n  db:\n    image: postgres:16\n    volumes: [pg:/var/lib/postgresql/data]\n    stop_signal: SIGINT\n    stop_grace_period: 60s\nvolumes:\n  pg:\n".into(),
    };
    let b = SourceFile {
        path: "compose.override.yaml".into(),
        text: "services:\n  db:\n    stop_grace_period: 3s\n".into(),
    };
    let sources = vec![a, b];
    let stack = Stack::load(&sources, &Env::new(), None, "x").unwrap();
    let found = run(&StaticInput {
        stack: &stack,
        sources: &sources,
        images: &BTreeMap::new(),
        configs: &BTreeMap::new(),
    });
    let f = found
        .iter()
        .find(|f| f.id == ids::STOP_GRACE_SHORT)
        .expect("grace");
    assert_eq!(
        f.location.as_ref().unwrap().to_string(),
        "compose.override.yaml:3"
    );
}

#[test]
fn mounted_config_file_is_read_for_durability() {
    let text = "services:\n  db:\n    image: postgres:16\n    stop_signal: SIGINT\n    stop_grace_period: 60s\n    volumes:\n      - pg:/var/lib/postgresql/data\n      - /etc/pg/my.conf:/etc/postgresql/postgresql.conf\nvolumes:\n  pg:\n";
    let sources = vec![SourceFile {
        path: "s.yaml".into(),
        text: text.into(),
    }];
    let stack = Stack::load(&sources, &Env::new(), None, "x").unwrap();
    let mut configs = BTreeMap::new();
    configs.insert(
        "/etc/pg/my.conf".to_string(),
        "# tuning\nfsync = off   # fast\n".to_string(),
    );
    let found = run(&StaticInput {
        stack: &stack,
        sources: &sources,
        images: &BTreeMap::new(),
        configs: &configs,
    });
    let f = found
        .iter()
        .find(|f| f.id == ids::UNSAFE_DURABILITY)
        .expect("found");
    assert_eq!(
        f.location.as_ref().unwrap().to_string(),
        "/etc/pg/my.conf:2"
    );
}
