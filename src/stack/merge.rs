//! Override merging of several compose files (later files win), following compose's rules:
//!
//! - mappings merge recursively; scalars and other sequences are replaced;
//! - in a service, `environment` and `labels` merge by key (list or map syntax), `volumes` merge by
//!   container target, `ports`/`expose`/`dns`/`tmpfs`/`extra_hosts`/`dns_search`/`env_file` are
//!   concatenated without duplicates, `depends_on`/`networks` merge by name (list or map syntax),
//!   `command`/`entrypoint`/`healthcheck.test` are replaced.
//!
//! Works on interpolated YAML values, before deserialisation.

use serde_yaml::{Mapping, Value};

use super::model::parse_short_volume;

/// Merges the override document `over` into `base`.
pub fn merge_documents(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let is_services = k.as_str() == Some("services");
                match b.get_mut(&k) {
                    Some(existing) if is_services => merge_services(existing, v),
                    Some(existing) => merge_value(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => {
            if !o.is_null() {
                *b = o;
            }
        }
    }
}

fn merge_services(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (name, svc) in o {
                match b.get_mut(&name) {
                    Some(existing) => merge_service(existing, svc),
                    None => {
                        b.insert(name, svc);
                    }
                }
            }
        }
        (b, o) => {
            if !o.is_null() {
                *b = o;
            }
        }
    }
}

/// Generic rule: mappings recursively, everything else replaced (a null override changes nothing).
pub fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_value(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (b, o) => *b = o,
    }
}

/// Merges one service definition over another.
pub fn merge_service(base: &mut Value, over: Value) {
    let o = match over {
        Value::Mapping(o) if base.is_mapping() => o,
        Value::Null => return,
        other => {
            *base = other;
            return;
        }
    };
    let Value::Mapping(b) = base else { return };
    for (k, v) in o {
        let key = k.as_str().unwrap_or_default().to_string();
        let Some(existing) = b.get_mut(&k) else {
            b.insert(k, v);
            continue;
        };
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "environment" | "labels" => {
                let mut merged = key_value_map(existing);
                for (mk, mv) in key_value_map(&v) {
                    merged.insert(mk, mv);
                }
                *existing = Value::Mapping(merged);
            }
            "depends_on" | "networks" => {
                let mut merged = name_map(existing);
                for (mk, mv) in name_map(&v) {
                    match merged.get_mut(&mk) {
                        Some(e) => merge_value(e, mv),
                        None => {
                            merged.insert(mk, mv);
                        }
                    }
                }
                *existing = Value::Mapping(merged);
            }
            "volumes" => merge_volumes(existing, v),
            "ports" | "expose" | "dns" | "dns_search" | "tmpfs" | "extra_hosts" | "env_file" => {
                let mut items = as_list(existing);
                for item in as_list(&v) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                *existing = Value::Sequence(items);
            }
            _ => merge_value(existing, v),
        }
    }
}

/// A `KEY: value` mapping from either the map or the `KEY=value` list syntax.
fn key_value_map(v: &Value) -> Mapping {
    match v {
        Value::Mapping(m) => m.clone(),
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let s = match item {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                match s.split_once('=') {
                    Some((k, val)) => {
                        m.insert(Value::String(k.to_string()), Value::String(val.to_string()))
                    }
                    None => m.insert(Value::String(s), Value::Null),
                };
            }
            m
        }
        _ => Mapping::new(),
    }
}

/// `[a, b]` or `{a: {...}, b: }` as a mapping by name.
fn name_map(v: &Value) -> Mapping {
    match v {
        Value::Mapping(m) => m.clone(),
        Value::Sequence(items) => items.iter().map(|i| (i.clone(), Value::Null)).collect(),
        _ => Mapping::new(),
    }
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Sequence(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// The container path of a service volume entry, short or long syntax.
fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => parse_short_volume(s).ok().map(|sv| sv.target),
        Value::Mapping(m) => m.get("target").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn merge_volumes(base: &mut Value, over: Value) {
    let mut items = as_list(base);
    for item in as_list(&over) {
        let target = volume_target(&item);
        let pos = target.as_ref().and_then(|t| {
            items
                .iter()
                .position(|e| volume_target(e).as_deref() == Some(t.as_str()))
        });
        match pos {
            Some(i) => items[i] = item,
            None => items.push(item),
        }
    }
    *base = Value::Sequence(items);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    fn merged(a: &str, b: &str) -> Value {
        let mut base = y(a);
        merge_documents(&mut base, y(b));
        base
    }

    #[test]
    fn mappings_merge_recursively_scalars_replace() {
        let m = merged(
            "services:\n  db:\n    image: postgres:15\n    restart: always\nvolumes:\n  a: {}\n",
            "services:\n  db:\n    image: postgres:16\n  web:\n    image: nginx\nvolumes:\n  b: {}\n",
        );
        assert_eq!(m["services"]["db"]["image"], y("postgres:16"));
        assert_eq!(m["services"]["db"]["restart"], y("always"));
        assert_eq!(m["services"]["web"]["image"], y("nginx"));
        assert!(m["volumes"].get("a").is_some() && m["volumes"].get("b").is_some());
    }

    #[test]
    fn environment_and_labels_merge_by_key_across_syntaxes() {
        let m = merged(
            "services:\n  db:\n    environment: [A=1, B=2, C]\n    labels: {x: '1'}\n",
            "services:\n  db:\n    environment: {B: '3', D: '4'}\n    labels: [y=2]\n",
        );
        assert_eq!(
            m["services"]["db"]["environment"],
            y("{A: '1', B: '3', C: null, D: '4'}")
        );
        assert_eq!(m["services"]["db"]["labels"], y("{x: '1', y: '2'}"));
    }

    #[test]
    fn volumes_merge_by_target() {
        let m = merged(
            "services:\n  db:\n    volumes: ['pg:/var/lib/postgresql/data', './init:/docker-entrypoint-initdb.d:ro']\n",
            "services:\n  db:\n    volumes:\n      - type: volume\n        source: other\n        target: /var/lib/postgresql/data\n      - /tmp/x:/x\n",
        );
        let vols = m["services"]["db"]["volumes"].as_sequence().unwrap();
        assert_eq!(vols.len(), 3);
        assert_eq!(vols[0]["source"], y("other"));
        assert_eq!(vols[1], y("./init:/docker-entrypoint-initdb.d:ro"));
        assert_eq!(vols[2], y("/tmp/x:/x"));
    }

    #[test]
    fn lists_concatenate_deduplicated() {
        let m = merged(
            "services:\n  db:\n    ports: ['5432:5432']\n    dns: 8.8.8.8\n    expose: ['1']\n    extra_hosts: ['a:1.1.1.1']\n    tmpfs: /run\n",
            "services:\n  db:\n    ports: ['5432:5432', '6543:5432']\n    dns: [1.1.1.1]\n    expose: ['2']\n    extra_hosts: ['b:2.2.2.2']\n    tmpfs: [/run, /tmp]\n",
        );
        let s = &m["services"]["db"];
        assert_eq!(s["ports"], y("['5432:5432', '6543:5432']"));
        assert_eq!(s["dns"], y("[8.8.8.8, 1.1.1.1]"));
        assert_eq!(s["expose"], y("['1', '2']"));
        assert_eq!(s["extra_hosts"], y("['a:1.1.1.1', 'b:2.2.2.2']"));
        assert_eq!(s["tmpfs"], y("[/run, /tmp]"));
    }

    #[test]
    fn command_entrypoint_and_healthcheck_test_replaced() {
        let m = merged(
            "services:\n  r:\n    command: [redis-server, --save, '60 1']\n    entrypoint: a\n    healthcheck:\n      test: [CMD, a]\n      interval: 5s\n    cap_add: [A]\n",
            "services:\n  r:\n    command: redis-server --appendonly yes\n    entrypoint: [b]\n    healthcheck:\n      test: [CMD, b]\n    cap_add: [B]\n",
        );
        let s = &m["services"]["r"];
        assert_eq!(s["command"], y("redis-server --appendonly yes"));
        assert_eq!(s["entrypoint"], y("[b]"));
        assert_eq!(s["healthcheck"], y("{test: [CMD, b], interval: 5s}"));
        assert_eq!(s["cap_add"], y("[B]"), "other sequences are replaced");
    }

    #[test]
    fn depends_on_merges_list_and_map() {
        let m = merged(
            "services:\n  app:\n    depends_on: [db]\n",
            "services:\n  app:\n    depends_on:\n      db:\n        condition: service_healthy\n      cache:\n        condition: service_started\n",
        );
        assert_eq!(
            m["services"]["app"]["depends_on"],
            y("{db: {condition: service_healthy}, cache: {condition: service_started}}")
        );
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        // services as a list, scalars where mappings are expected, nulls
        let _ = merged("services: [a, b]\n", "services:\n  a: {image: x}\n");
        let _ = merged("services:\n  a: 3\n", "services:\n  a: {image: x}\n");
        let _ = merged("services:\n  a: {image: x}\n", "services:\n  a: 3\n");
        let _ = merged(
            "services:\n  a: {volumes: 3}\n",
            "services:\n  a: {volumes: [3, {x: 1}]}\n",
        );
        let m = merged("services:\n  a: {image: x}\n", "services:\n  a:\n");
        assert_eq!(m["services"]["a"]["image"], y("x"));
        let m = merged("[1]", "{a: 1}");
        assert_eq!(m, y("{a: 1}"));
    }
}
