//! Against a local postgres (`NODUS_TEST_PG=port:password:socketdir`, superuser `postgres`) and a
//! local redis (`NODUS_TEST_REDIS=1`, redis-cli on PATH talking to the default port): the census
//! and provisioning SQL, over TCP and over the exec (psql) path. Docker-based tests of the whole
//! guard live in tests/guard_*.rs.

use super::census::*;
use super::testutil::*;
use crate::lifecycle::RunningService;
use crate::stack::{ServiceKind, StatefulService};

fn pg_env() -> Option<(u16, String, String)> {
    let v = std::env::var("NODUS_TEST_PG").ok()?;
    let mut it = v.splitn(3, ':');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.to_string(),
        it.next()?.to_string(),
    ))
}

fn svc(kind: ServiceKind, c: crate::engine::ContainerInfo) -> RunningService {
    RunningService {
        service: "db".into(),
        container: c,
        stateful: Some(StatefulService {
            service: "db".into(),
            kind,
            data_dir: "/var/lib/postgresql/data".into(),
            volume_key: Some("db_data".into()),
            volume_name: Some("p_db_data".into()),
        }),
    }
}

use crate::guard::testutil::psql;

#[tokio::test]
#[ignore = "needs NODUS_TEST_PG=port:password:socketdir (a local postgres)"]
async fn pg_census_and_provisioning_tcp_and_exec() {
    let (port, pw, sockdir) = pg_env().expect("NODUS_TEST_PG");
    let engine = LocalExecEngine {
        env: vec![
            ("PGHOST".into(), sockdir),
            ("PGPORT".into(), port.to_string()),
        ],
    };
    let pwenv = format!("POSTGRES_PASSWORD={pw}");
    for db in ["nt_a", "nt b", "nt_prov"] {
        psql(
            port,
            &pw,
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{db}\""),
        );
    }
    psql(port, &pw, "postgres", "DROP ROLE IF EXISTS nt_owner");
    psql(port, &pw, "postgres", "CREATE DATABASE nt_a");
    psql(port, &pw, "postgres", "CREATE DATABASE \"nt b\"");
    psql(
        port,
        &pw,
        "nt_a",
        "CREATE SCHEMA \"Odd\"\"Schema\"; CREATE TABLE \"Odd\"\"Schema\".\"T 1\"(x int); INSERT INTO \"Odd\"\"Schema\".\"T 1\" SELECT generate_series(1,5); \
         CREATE UNLOGGED TABLE public.cache(x int); INSERT INTO public.cache VALUES (1),(2); \
         CREATE TABLE public.ev(d int) PARTITION BY RANGE (d); CREATE TABLE public.ev_1 PARTITION OF public.ev FOR VALUES FROM (0) TO (10); \
         CREATE TABLE public.ev_2 PARTITION OF public.ev FOR VALUES FROM (10) TO (20); INSERT INTO public.ev SELECT generate_series(0,19); \
         CREATE TEMP TABLE tmp(x int)",
    );
    psql(
        port,
        &pw,
        "nt b",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1)",
    );

    // TCP
    let tcp = svc(ServiceKind::Postgres, container(&[&pwenv], &[(5432, port)]));
    let c = take_service(&engine, &tcp, &CensusOptions::default())
        .await
        .unwrap();
    let ServiceCensus::Postgres(p) = &c else {
        panic!("{c:?}")
    };
    assert!(p.system_identifier.len() > 10, "{}", p.system_identifier);
    let a = &p.databases["nt_a"].tables;
    assert_eq!(a["Odd\"Schema.T 1"].rows, 5);
    assert_eq!(a["public.cache"].persistence, Persistence::Unlogged);
    assert_eq!(a["public.cache"].rows, 2);
    assert_eq!(a["public.ev"].rows, 20);
    assert!(p.databases["nt_a"].partitioned.contains("public.ev"));
    assert_eq!(a["public.ev_1"].rows, 10);
    assert!(!a.keys().any(|k| k.contains("tmp")));
    assert_eq!(p.databases["nt b"].tables["public.t"].rows, 1);
    assert!(!p.databases.contains_key("template0") && !p.databases.contains_key("template1"));

    // exec (psql in the "container"): same answer
    let ex = svc(ServiceKind::Postgres, container(&[&pwenv], &[]));
    let c2 = take_service(&engine, &ex, &CensusOptions::default())
        .await
        .unwrap();
    // (only this test's databases: other tests may use the same server concurrently)
    let (ServiceCensus::Postgres(p1), ServiceCensus::Postgres(p2)) = (&c, &c2) else {
        panic!("exec census is not postgres")
    };
    assert_eq!(p1.system_identifier, p2.system_identifier);
    for db in ["nt_a", "nt b"] {
        assert!(
            p1.databases[db] == p2.databases[db],
            "{db} differs over exec"
        );
    }

    // fast
    let f = take_service(
        &engine,
        &tcp,
        &CensusOptions {
            fast: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ServiceCensus::Postgres(fp) = f else {
        panic!()
    };
    assert!(fp.databases["nt_a"].tables["public.ev_1"].estimated);

    // a dropped table is reported missing
    psql(port, &pw, "nt b", "DROP TABLE t");
    let after = take_service(&engine, &tcp, &CensusOptions::default())
        .await
        .unwrap();
    let d = super::diff::compare(&c, &after);
    assert_eq!(d.missing_tables["nt b"], vec!["public.t"]);

    // POSTGRES_DB pointing at a database that is gone: falls back to postgres
    let gone = svc(
        ServiceKind::Postgres,
        container(&[&pwenv, "POSTGRES_DB=nope_gone"], &[(5432, port)]),
    );
    assert!(matches!(
        take_service(&engine, &gone, &CensusOptions::default())
            .await
            .unwrap(),
        ServiceCensus::Postgres(_)
    ));

    // provisioning, over both paths, twice (idempotent)
    let spec: crate::stack::xnodus::ServiceOptions = serde_yaml::from_str(
        "databases:\n  - name: nt_prov\n    owner: nt_owner\n    extensions: [pg_trgm, uuid-ossp]\nroles:\n  - name: nt_owner\n    password_env: NT_OWNER_PW\n",
    )
    .unwrap();
    let mut env = crate::stack::Env::new();
    env.insert("NT_OWNER_PW".into(), "o'wner\\pw".into());
    let created =
        super::provision::provision(&engine, &ex, &spec, &env, std::time::Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(
        created,
        vec![
            "created role nt_owner",
            "created database nt_prov (owner nt_owner)",
            "created extension pg_trgm in nt_prov",
            "created extension uuid-ossp in nt_prov"
        ]
    );
    let again = super::provision::provision(
        &engine,
        &tcp,
        &spec,
        &env,
        std::time::Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // the role can log in with the password it was given
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "nt_owner",
            "-d",
            "nt_prov",
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", "o'wner\\pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "needs NODUS_TEST_REDIS=1 (a local redis-server on the default port)"]
async fn redis_census_via_exec() {
    let engine = LocalExecEngine { env: vec![] };
    let flush = std::process::Command::new("redis-cli")
        .args(["-n", "7", "FLUSHDB"])
        .output()
        .unwrap();
    assert!(flush.status.success());
    for k in ["a", "b", "c"] {
        std::process::Command::new("redis-cli")
            .args(["-n", "7", "SET", k, "1"])
            .output()
            .unwrap();
    }
    std::process::Command::new("redis-cli")
        .args(["-n", "7", "SET", "t", "1", "EX", "100"])
        .output()
        .unwrap();
    let r = svc(ServiceKind::Redis, container(&[], &[]));
    let c = take_service(&engine, &r, &CensusOptions::default())
        .await
        .unwrap();
    let ServiceCensus::Redis(rc) = c else {
        panic!("{c:?}")
    };
    assert_eq!(rc.keys[&7], 4);
    assert_eq!(rc.expires[&7], 1);
}

mod local_bench {
    #[tokio::test]
    #[ignore = "timing against NODUS_TEST_PG (see the tests above)"]
    async fn census_timing() {
        let v = std::env::var("NODUS_TEST_PG").unwrap();
        let mut it = v.splitn(3, ':');
        let port: u16 = it.next().unwrap().parse().unwrap();
        let pw = it.next().unwrap().to_string();
        let engine = crate::guard::testutil::LocalExecEngine { env: vec![] };
        let c = crate::guard::testutil::container(
            &[&format!("POSTGRES_PASSWORD={pw}")],
            &[(5432, port)],
        );
        let svc = crate::lifecycle::RunningService {
            service: "db".into(),
            container: c,
            stateful: Some(crate::stack::StatefulService {
                service: "db".into(),
                kind: crate::stack::ServiceKind::Postgres,
                data_dir: "/d".into(),
                volume_key: None,
                volume_name: None,
            }),
        };
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let c = crate::guard::census::take_service(&engine, &svc, &Default::default())
                .await
                .unwrap();
            let mut cen = crate::guard::census::Census::default();
            cen.services.insert("db".into(), c);
            eprintln!("{:?} {}", t.elapsed(), cen.totals().summary());
        }
    }
}
