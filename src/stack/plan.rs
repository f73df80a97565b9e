//! Dependency ordering and config hashes.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use super::{ComposeFile, StackError};

/// Services to act on in `depends_on` order (dependencies first). `selected` empty = all;
/// otherwise the selected services plus everything they depend on, transitively.
///
/// The order is stable: among services whose dependencies are all placed, the one that comes
/// first in the file goes first.
pub fn start_order(compose: &ComposeFile, selected: &[String]) -> Result<Vec<String>, StackError> {
    let names: Vec<&String> = compose.services.keys().collect();
    for s in selected {
        if !compose.services.contains_key(s) {
            return Err(StackError::UnknownService {
                name: s.clone(),
                available: names.iter().map(|n| n.to_string()).collect(),
            });
        }
    }
    // Every dependency must exist (checked for the whole file, so a typo is reported even when
    // the service is not selected).
    for (name, svc) in &compose.services {
        for dep in svc.depends_on.keys() {
            if !compose.services.contains_key(dep) {
                return Err(StackError::MissingDependency {
                    service: name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }

    // The set to order: everything, or the selection's transitive closure.
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut wanted: BTreeSet<usize> = BTreeSet::new();
    if selected.is_empty() {
        wanted.extend(0..names.len());
    } else {
        let mut stack: Vec<usize> = selected.iter().map(|s| index[s.as_str()]).collect();
        while let Some(i) = stack.pop() {
            if wanted.insert(i) {
                for dep in compose.services[i].depends_on.keys() {
                    stack.push(index[dep.as_str()]);
                }
            }
        }
    }

    // Kahn's algorithm, always taking the earliest ready service in file order.
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    let mut order = Vec::with_capacity(wanted.len());
    while placed.len() < wanted.len() {
        let next = wanted.iter().copied().find(|&i| {
            !placed.contains(&i)
                && compose.services[i]
                    .depends_on
                    .keys()
                    .all(|d| placed.contains(&index[d.as_str()]))
        });
        match next {
            Some(i) => {
                placed.insert(i);
                order.push(names[i].clone());
            }
            None => {
                let remaining: Vec<usize> = wanted
                    .iter()
                    .copied()
                    .filter(|i| !placed.contains(i))
                    .collect();
                return Err(StackError::DependencyCycle {
                    cycle: find_cycle(compose, &index, &remaining),
                });
            }
        }
    }
    Ok(order)
}

/// Splits `order` (from [`start_order`]) into waves that can start together: a service goes in
/// the wave after the last of its dependencies. Within a wave, services keep `order`'s order.
pub fn waves(compose: &ComposeFile, order: &[String]) -> Vec<Vec<String>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    for name in order {
        let d = compose.services[name]
            .depends_on
            .keys()
            .filter_map(|dep| depth.get(dep.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(name.as_str(), d);
        if waves.len() <= d {
            waves.resize_with(d + 1, Vec::new);
        }
        waves[d].push(name.clone());
    }
    waves
}

/// Splits `names` (in stop order, from [`stop_order`]) into waves that can stop together, as
/// compose does: a service stops after every one of its dependents among `names`; services
/// independent of each other stop together. Names not in the stack (orphans) stop in the first
/// wave. Within a wave, services keep `names`' order.
pub fn stop_waves(compose: &ComposeFile, names: &[String]) -> Vec<Vec<String>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    for name in names {
        let d = names
            .iter()
            .filter(|other| {
                compose
                    .services
                    .get(other.as_str())
                    .is_some_and(|o| o.depends_on.contains_key(name))
            })
            .filter_map(|dependent| depth.get(dependent.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(name.as_str(), d);
        if waves.len() <= d {
            waves.resize_with(d + 1, Vec::new);
        }
        waves[d].push(name.clone());
    }
    waves
}

/// A cycle among `remaining` (every one of which has an unplaced dependency), as
/// `[a, b, c, a]`.
fn find_cycle(
    compose: &ComposeFile,
    index: &HashMap<&str, usize>,
    remaining: &[usize],
) -> Vec<String> {
    let rem: BTreeSet<usize> = remaining.iter().copied().collect();
    let name = |i: usize| {
        compose
            .services
            .get_index(i)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    };
    // Walk from the first remaining service along unplaced dependencies until a node repeats.
    let mut path: Vec<usize> = Vec::new();
    let mut cur = remaining[0];
    loop {
        if let Some(pos) = path.iter().position(|&p| p == cur) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|&i| name(i)).collect();
            cycle.push(name(cur));
            return cycle;
        }
        path.push(cur);
        let next = compose.services[cur]
            .depends_on
            .keys()
            .map(|d| index[d.as_str()])
            .find(|d| rem.contains(d));
        match next {
            Some(n) => cur = n,
            // Cannot happen (every remaining node has a remaining dependency); report what we have.
            None => return path.iter().map(|&i| name(i)).collect(),
        }
    }
}

/// The services `up`/`start` act on when none are named: those without `profiles:`, and those
/// with a profile in `active` (`COMPOSE_PROFILES`, comma-separated; `*` enables all).
pub fn default_services(compose: &ComposeFile, active: &[String]) -> Vec<String> {
    compose
        .services
        .iter()
        .filter(|(_, s)| {
            s.profiles.is_empty() || active.iter().any(|a| a == "*" || s.profiles.contains(a))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Parses `COMPOSE_PROFILES`.
pub fn parse_profiles(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The order to stop services in: reverse dependency order (dependents first). `selected` empty
/// = all; otherwise only the selected services (their dependencies keep running).
pub fn stop_order(compose: &ComposeFile, selected: &[String]) -> Result<Vec<String>, StackError> {
    let mut all = start_order(compose, &[])?;
    all.reverse();
    if selected.is_empty() {
        return Ok(all);
    }
    for s in selected {
        if !compose.services.contains_key(s) {
            return Err(StackError::UnknownService {
                name: s.clone(),
                available: compose.services.keys().cloned().collect(),
            });
        }
    }
    Ok(all.into_iter().filter(|s| selected.contains(s)).collect())
}

/// A stable hash of a service's generated definition (the `com.docker.compose.config-hash` label):
/// SHA-256 (hex) of its JSON serialisation with every object's keys sorted, so the order of keys
/// in the file (environment, labels...) does not matter while list order (command) does.
pub fn config_hash(service: &super::Service) -> String {
    let value = serde_json::to_value(service).unwrap_or(serde_json::Value::Null);
    let canonical = canonical_json(&value);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(yaml: &str) -> ComposeFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    const STACK: &str = r#"
services:
  web:
    image: web
    depends_on: [api, cache]
  api:
    image: api
    depends_on:
      db: { condition: service_healthy }
  cache:
    image: redis
  db:
    image: postgres
  tools:
    image: tools
"#;

    #[test]
    fn dependencies_first_ties_in_file_order() {
        let c = compose(STACK);
        assert_eq!(
            start_order(&c, &[]).unwrap(),
            ["cache", "db", "api", "web", "tools"]
        );
        // The exact ordering rule: earliest ready service in file order.
        let c2 = compose(
            "services:\n  b: {image: x, depends_on: [a]}\n  a: {image: x}\n  c: {image: x}\n",
        );
        assert_eq!(start_order(&c2, &[]).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn waves_start_after_their_last_dependency() {
        let c = compose(STACK);
        let order = start_order(&c, &[]).unwrap();
        assert_eq!(
            waves(&c, &order),
            vec![vec!["cache", "db", "tools"], vec!["api"], vec!["web"]]
        );
        // A dependency deep in the chain decides: d needs a (wave 0) and c (wave 2).
        let c2 = compose(
            "services:\n  a: {image: x}\n  b: {image: x, depends_on: [a]}\n  c: {image: x, depends_on: [b]}\n  d: {image: x, depends_on: [a, c]}\n",
        );
        let order = start_order(&c2, &[]).unwrap();
        assert_eq!(
            waves(&c2, &order),
            vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]
        );
        // A selection: only what start_order picked.
        let order = start_order(&c, &["api".into()]).unwrap();
        assert_eq!(waves(&c, &order), vec![vec!["db"], vec!["api"]]);
        assert!(waves(&c, &[]).is_empty());
    }

    #[test]
    fn stop_waves_keep_dependents_before_their_dependencies() {
        let c = compose(STACK);
        let order = stop_order(&c, &[]).unwrap();
        let w = stop_waves(&c, &order);
        assert_eq!(
            w,
            vec![vec!["tools", "web"], vec!["api", "cache"], vec!["db"]]
        );
        // Every dependent is in an earlier wave than each of its dependencies.
        let wave_of = |n: &str| w.iter().position(|x| x.iter().any(|y| y == n)).unwrap();
        for (name, svc) in &c.services {
            for dep in svc.depends_on.keys() {
                assert!(wave_of(name) < wave_of(dep), "{name} before {dep}: {w:?}");
            }
        }
        // Orphans (not in the stack) stop in the first wave; a selection keeps its order.
        let w = stop_waves(&c, &["old".into(), "api".into(), "db".into()]);
        assert_eq!(w, vec![vec!["old", "api"], vec!["db"]]);
        assert!(stop_waves(&c, &[]).is_empty());
    }

    #[test]
    fn selection_includes_transitive_dependencies_only() {
        let c = compose(STACK);
        assert_eq!(start_order(&c, &["api".into()]).unwrap(), ["db", "api"]);
        assert_eq!(
            start_order(&c, &["web".into()]).unwrap(),
            ["cache", "db", "api", "web"]
        );
        assert_eq!(
            start_order(&c, &["tools".into(), "db".into()]).unwrap(),
            ["db", "tools"]
        );
    }

    #[test]
    fn unknown_service_lists_available() {
        let c = compose(STACK);
        match start_order(&c, &["nope".into()]).unwrap_err() {
            StackError::UnknownService { name, available } => {
                assert_eq!(name, "nope");
                assert_eq!(available, ["web", "api", "cache", "db", "tools"]);
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn missing_dependency() {
        let c = compose("services:\n  a: {image: x, depends_on: [ghost]}\n");
        match start_order(&c, &[]).unwrap_err() {
            StackError::MissingDependency {
                service,
                dependency,
            } => {
                assert_eq!((service.as_str(), dependency.as_str()), ("a", "ghost"))
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn cycle_is_named() {
        let c = compose(
            "services:\n  x: {image: x}\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n  d: {image: x, depends_on: [a]}\n",
        );
        let err = start_order(&c, &[]).unwrap_err();
        match &err {
            StackError::DependencyCycle { cycle } => assert_eq!(cycle, &["a", "b", "c", "a"]),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(
            err.to_string(),
            "dependency cycle between services: a -> b -> c -> a"
        );
        // A self-dependency is a cycle too.
        let c = compose("services:\n  a: {image: x, depends_on: [a]}\n");
        assert!(
            matches!(start_order(&c, &[]).unwrap_err(), StackError::DependencyCycle { cycle } if cycle == ["a", "a"])
        );
    }

    #[test]
    fn profiles() {
        let c = compose(
            "services:\n  a: {image: x}\n  dbg: {image: x, profiles: [debug]}\n  t: {image: x, profiles: [tools, debug]}\n",
        );
        assert_eq!(default_services(&c, &[]), ["a"]);
        assert_eq!(
            default_services(&c, &parse_profiles(Some("tools"))),
            ["a", "t"]
        );
        assert_eq!(
            default_services(&c, &parse_profiles(Some(" debug , x"))),
            ["a", "dbg", "t"]
        );
        assert_eq!(
            default_services(&c, &parse_profiles(Some("*"))),
            ["a", "dbg", "t"]
        );
        assert!(parse_profiles(None).is_empty());
    }

    #[test]
    fn stop_order_is_reverse() {
        let c = compose(STACK);
        assert_eq!(
            stop_order(&c, &[]).unwrap(),
            ["tools", "web", "api", "db", "cache"]
        );
        assert_eq!(
            stop_order(&c, &["db".into(), "web".into()]).unwrap(),
            ["web", "db"]
        );
        assert!(stop_order(&c, &["nope".into()]).is_err());
    }

    #[test]
    fn config_hash_is_stable_and_sensitive() {
        let a = compose("services:\n  s:\n    image: x\n    environment: {A: '1', B: '2'}\n    command: [a, b]\n");
        let b = compose("services:\n  s:\n    command: [a, b]\n    environment: {B: '2', A: '1'}\n    image: x\n");
        let c = compose("services:\n  s:\n    image: x\n    environment: {A: '1', B: '3'}\n    command: [a, b]\n");
        let d = compose("services:\n  s:\n    image: x\n    environment: {A: '1', B: '2'}\n    command: [b, a]\n");
        let h = |c: &ComposeFile| config_hash(&c.services["s"]);
        assert_eq!(h(&a), h(&b));
        assert_eq!(h(&a).len(), 64);
        assert!(h(&a).chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h(&a), h(&c));
        assert_ne!(h(&a), h(&d));
        // Deterministic across calls.
        assert_eq!(h(&a), h(&a.clone()));
    }
}
