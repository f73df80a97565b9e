//! Tests of the census: parsing what redis and qdrant report, totals, JSON round trips.

use super::*;

#[test]
fn redis_keyspace_parses() {
    let text = "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb5:keys=10,expires=0,avg_ttl=0,subexpiry=0\r\n";
    let c = parse_redis_keyspace(text).unwrap();
    assert_eq!(c.keys, BTreeMap::from([(0, 3), (5, 10)]));
    assert_eq!(c.expires, BTreeMap::from([(0, 1)]));
    // empty keyspace
    assert_eq!(
        parse_redis_keyspace("# Keyspace\r\n").unwrap(),
        RedisCensus::default()
    );
}

#[test]
fn redis_errors_are_not_silently_empty() {
    assert!(parse_redis_keyspace("NOAUTH Authentication required.\n").is_err());
    assert!(parse_redis_keyspace("db0:expires=0\n").is_err());
}

#[test]
fn qdrant_answers_parse() {
    let list: serde_json::Value = serde_json::from_str(
        r#"{"result":{"collections":[{"name":"docs"},{"name":"a b"}]},"status":"ok","time":0.1}"#,
    )
    .unwrap();
    assert_eq!(
        parse_qdrant_collections(&list).unwrap(),
        vec!["docs", "a b"]
    );
    let info: serde_json::Value = serde_json::from_str(
        r#"{"result":{"status":"green","points_count":1200,"vectors_count":null}}"#,
    )
    .unwrap();
    assert_eq!(parse_qdrant_points(&info).unwrap(), 1200);
    let old: serde_json::Value = serde_json::from_str(r#"{"result":{"vectors_count":7}}"#).unwrap();
    assert_eq!(parse_qdrant_points(&old).unwrap(), 7);
    assert!(parse_qdrant_collections(&serde_json::json!({"status": {"error": "x"}})).is_err());
    assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
}

#[test]
fn totals_skip_partition_parents() {
    let mut db = DbCensus::default();
    let t = |rows| TableCensus {
        persistence: Persistence::Permanent,
        rows,
        estimated: false,
    };
    db.tables.insert("public.events".into(), t(30));
    db.tables.insert("public.events_2024".into(), t(10));
    db.tables.insert("public.events_2025".into(), t(20));
    db.partitioned.insert("public.events".into());
    let mut c = Census::default();
    c.services.insert(
        "db".into(),
        ServiceCensus::Postgres(PgCensus {
            system_identifier: "1".into(),
            databases: BTreeMap::from([("app".to_string(), db)]),
        }),
    );
    c.services.insert(
        "cache".into(),
        ServiceCensus::Redis(RedisCensus {
            keys: BTreeMap::from([(0, 4)]),
            expires: BTreeMap::new(),
        }),
    );
    c.services.insert(
        "vec".into(),
        ServiceCensus::Unavailable {
            reason: "not running".into(),
        },
    );
    let tot = c.totals();
    assert_eq!(
        (tot.databases, tot.tables, tot.rows, tot.redis_keys),
        (1, 3, 30, 4)
    );
    assert_eq!(tot.unavailable, vec!["vec"]);
    assert_eq!(tot.summary(), "1 database, 3 tables, 30 rows; 4 redis keys");
}

#[test]
fn redis_census_json_round_trips() {
    let c = ServiceCensus::Redis(RedisCensus {
        keys: [(0, 3), (12, 1)].into(),
        expires: [(0, 1)].into(),
    });
    let s = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<ServiceCensus>(&s).unwrap(), c);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(serde_json::from_value::<ServiceCensus>(v).unwrap(), c);
}

#[test]
fn census_json_round_trips() {
    let c = ServiceCensus::Postgres(PgCensus {
        system_identifier: "7301".into(),
        databases: BTreeMap::from([("app".to_string(), DbCensus::default())]),
    });
    let s = serde_json::to_string(&c).unwrap();
    assert!(s.contains("\"kind\":\"postgres\""), "{s}");
    assert_eq!(serde_json::from_str::<ServiceCensus>(&s).unwrap(), c);
}
