//! The stack loader fuzzed with proptest: arbitrary text, and compose-shaped YAML built from the
//! compose vocabulary with arbitrary scalars, `${...}` interpolations and environments, through
//! `Stack::load`, hardening, planning and rendering, and `.env` parsing. Nothing may panic; every
//! error says where (file:line:column, or file and the path in the document, or the names
//! involved). Cases found are kept in `tests/fixtures/fuzz-corpus/` and run as regression tests
//! (plus proptest's own `proptest-regressions/`). More cases: `PROPTEST_CASES=20000 cargo test
//! --test fuzz_stack`.

use std::path::PathBuf;

use nodus::stack::{Env, ProjectSource, SourceFile, Stack, StackError};
use proptest::prelude::*;

const FILE: &str = "stack.yaml";

/// Loads `text` (and an optional override) the way `nodus` does, then hardens, plans and renders
/// what loaded. Panics (the test failure) only through the checks.
fn exercise(texts: &[String], env: &Env, project: Option<&str>) {
    let sources: Vec<SourceFile> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| SourceFile {
            path: PathBuf::from(if i == 0 {
                FILE.to_string()
            } else {
                format!("override{i}.yaml")
            }),
            text: t.clone(),
        })
        .collect();
    match Stack::load(
        &sources,
        env,
        project.map(|p| (p, ProjectSource::Flag)),
        "fuzzdir",
    ) {
        Ok(stack) => {
            let hardened = nodus::stack::harden::harden(&stack);
            let _ = nodus::stack::harden::render_yaml(&hardened.compose);
            if let Ok(order) = nodus::stack::plan::start_order(&hardened.compose, &[]) {
                let _ = nodus::stack::plan::waves(&hardened.compose, &order);
            }
            let _ = nodus::stack::plan::stop_order(&hardened.compose, &[]);
            for svc in hardened.compose.services.values() {
                let _ = nodus::stack::plan::config_hash(svc);
            }
        }
        Err(e) => assert_located(&e),
    }
}

/// Every error names where: a file with line:column or a document path, or the names involved.
fn assert_located(e: &StackError) {
    let msg = e.to_string();
    match e {
        StackError::Syntax {
            file, line, column, ..
        } => {
            assert!(!file.is_empty() && *line >= 1 && *column >= 1, "{msg}");
            assert!(msg.starts_with(&format!("{file}:{line}:{column}")), "{msg}");
        }
        StackError::Invalid { file, path, .. } | StackError::Interpolation { file, path, .. } => {
            assert!(!file.is_empty() && !path.is_empty(), "no location: {msg}");
        }
        StackError::UnknownService { name, .. } => assert!(msg.contains(name.as_str())),
        StackError::DependencyCycle { cycle } => assert!(!cycle.is_empty(), "{msg}"),
        StackError::MissingDependency { service, .. } => assert!(msg.contains(service.as_str())),
        StackError::ProjectName { .. } => {}
        StackError::UnknownKeys { problems } => {
            assert!(!problems.is_empty(), "{msg}");
            for p in problems {
                assert!(p.contains(": "), "no location: {p}");
            }
        }
    }
}

fn env_of(pairs: Vec<(String, String)>) -> Env {
    pairs.into_iter().collect()
}

/// Scalars that stress YAML and interpolation.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./:-]{0,12}",
        Just("${X}".to_string()),
        Just("${X:-d}".to_string()),
        Just("${X:?must be set}".to_string()),
        Just("${X-}".to_string()),
        Just("$$X".to_string()),
        Just("${".to_string()),
        Just("${X:-${Y}}".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("yes".to_string()),
        Just("0x1F".to_string()),
        Just("1e400".to_string()),
        Just("-1".to_string()),
        Just("\"quoted: value\"".to_string()),
        Just("'it''s'".to_string()),
        Just("*anchor".to_string()),
        Just("!!binary aGk=".to_string()),
        Just("ünïcödé €".to_string()),
        "\\PC{0,8}",
    ]
}

/// Keys of the compose vocabulary nodus reads, plus random ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "image", "build", "command", "entrypoint", "environment", "env_file", "volumes",
            "ports", "depends_on", "healthcheck", "stop_signal", "stop_grace_period", "profiles",
            "container_name", "networks", "restart", "deploy", "labels", "x-nodus", "services",
            "name", "external", "driver", "target", "source", "type", "condition", "test",
            "interval", "retries", "settle", "databases", "stateful", "harden", "snapshots",
            "keep", "on_down", "on_restart", "extensions", "roles", "password_env", "postgres", "db", "web",
            "extends", "secrets", "configs", "tmpfs", "user", "working_dir",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_-]{1,8}",
    ]
}

/// A YAML value shaped like compose (mappings of known keys, lists, scalars).
fn value() -> impl Strategy<Value = serde_yaml::Value> {
    let leaf = scalar().prop_map(|s| {
        serde_yaml::from_str::<serde_yaml::Value>(&s).unwrap_or(serde_yaml::Value::String(s))
    });
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_yaml::Value::Sequence),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                let mut m = serde_yaml::Mapping::new();
                for (k, v) in kv {
                    m.insert(serde_yaml::Value::String(k), v);
                }
                serde_yaml::Value::Mapping(m)
            }),
        ]
    })
}

/// A document with `services` (and maybe `volumes`, `x-nodus`...) at the top.
fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(("[a-z][a-z0-9_-]{0,6}", value()), 0..4),
        prop::collection::vec((key(), value()), 0..3),
    )
        .prop_map(|(services, top)| {
            let mut svc = serde_yaml::Mapping::new();
            for (n, v) in services {
                svc.insert(serde_yaml::Value::String(n), v);
            }
            let mut m = serde_yaml::Mapping::new();
            m.insert("services".into(), serde_yaml::Value::Mapping(svc));
            for (k, v) in top {
                m.insert(serde_yaml::Value::String(k), v);
            }
            serde_yaml::to_string(&serde_yaml::Value::Mapping(m)).unwrap()
        })
}

fn env() -> impl Strategy<Value = Env> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["X", "Y", "COMPOSE_PROFILES", "PGDATA", "Z"])
                .prop_map(str::to_string),
            scalar(),
        ),
        0..4,
    )
    .prop_map(env_of)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", env in env()) {
        exercise(&[text], &env, None);
    }

    #[test]
    fn yaml_punctuation_soup_never_panics(
        text in "([a-z]{1,4}|[:\\-\\[\\]{},&*!|>'\"%@`#?~ ]|\n|  |\\$\\{|\\})*",
        env in env(),
    ) {
        exercise(&[text], &env, None);
    }

    #[test]
    fn compose_shaped_documents_never_panic(
        doc in document(),
        over in prop::option::of(document()),
        env in env(),
        project in prop::option::of("[A-Za-z0-9_. -]{0,10}"),
    ) {
        let mut texts = vec![doc];
        texts.extend(over);
        exercise(&texts, &env, project.as_deref());
    }

    #[test]
    fn dotenv_never_panics_and_errors_name_a_line(text in "\\PC{0,200}", env in env()) {
        if let Err((line, message)) = nodus::project::parse_dotenv(&text, &env) {
            prop_assert!(line >= 1, "line {line}: {message}");
            prop_assert!(line <= text.lines().count().max(1), "line {line} past the end: {message}");
        }
    }
}

/// The corpus: inputs that broke the loader once, or sit on its edges. Each must load or fail
/// with a located error, without panicking.
#[test]
fn corpus_regressions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-corpus");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let env = env_of(vec![("X".into(), "1".into())]);
        let r = std::panic::catch_unwind(|| exercise(&[text], &env, None));
        assert!(r.is_ok(), "{} panicked", path.display());
        n += 1;
    }
    assert!(n >= 10, "corpus too small: {n}");
}
