//! Tests of loading stack files: parsing, interpolation, merging, located errors, paths.

use super::*;
use crate::stack::model::{DependsCondition, Port};
use crate::stack::ServiceKind;

fn src(name: &str, text: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(name),
        text: text.to_string(),
    }
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load1(text: &str) -> Result<Stack, StackError> {
    Stack::load(&[src("stack.yaml", text)], &Env::new(), None, "mydir")
}

const PG: &str = "services:\n  db:\n    image: postgres:15\n";

#[test]
fn minimal_stack_loads() {
    let s = load1(PG).unwrap();
    assert_eq!(s.project, "mydir");
    assert_eq!(s.project_source, ProjectSource::Directory);
    assert_eq!(s.service_names(), vec!["db"]);
    assert!(s.nodus.harden);
    assert!(s.warnings.is_empty());
}

#[test]
fn environment_list_and_map_syntax() {
    let s = load1("services:\n  a:\n    image: x\n    environment: [A=1, B=, C, 'D=x=y']\n  b:\n    image: x\n    environment:\n      A: 1\n      B: true\n      C:\n").unwrap();
    let a = &s.compose.services["a"].environment;
    assert_eq!(a["A"], Some("1".into()));
    assert_eq!(a["B"], Some("".into()));
    assert_eq!(a["C"], None);
    assert_eq!(a["D"], Some("x=y".into()));
    let b = &s.compose.services["b"].environment;
    assert_eq!(b["A"], Some("1".into()));
    assert_eq!(b["B"], Some("true".into()));
    assert_eq!(b["C"], None);
}

#[test]
fn volume_short_syntax() {
    let s = load1(
        "services:\n  db:\n    image: x\n    volumes:\n      - pg:/var/lib/postgresql/data\n      - ./init:/docker-entrypoint-initdb.d:ro\n      - /anon\n      - ~/h:/h\n      - type: tmpfs\n        target: /t\nvolumes:\n  pg:\n",
    )
    .unwrap();
    let v = &s.compose.services["db"].volumes;
    assert_eq!(v[0].kind, VolumeType::Volume);
    assert_eq!(v[0].source.as_deref(), Some("pg"));
    assert_eq!(v[0].target, "/var/lib/postgresql/data");
    assert!(!v[0].read_only);
    assert_eq!(v[1].kind, VolumeType::Bind);
    assert!(v[1].read_only);
    assert_eq!(v[2].kind, VolumeType::Volume);
    assert_eq!(v[2].source, None);
    assert_eq!(v[2].target, "/anon");
    assert_eq!(v[3].kind, VolumeType::Bind);
    assert_eq!(v[4].kind, VolumeType::Tmpfs);
    assert!(s.compose.volumes.contains_key("pg"));
}

#[test]
fn interpolation_applies_to_values_and_reports_unset() {
    let s = Stack::load(
        &[src(
            "s.yaml",
            "services:\n  db:\n    image: ${IMG:-postgres:15}\n    environment:\n      PW: $PW\n      U: ${NOPE}\n      LIT: a$$b\n",
        )],
        &env(&[("PW", "s3cret")]),
        None,
        "d",
    )
    .unwrap();
    let db = &s.compose.services["db"];
    assert_eq!(db.image.as_deref(), Some("postgres:15"));
    assert_eq!(db.environment["PW"], Some("s3cret".into()));
    assert_eq!(db.environment["U"], Some("".into()));
    assert_eq!(db.environment["LIT"], Some("a$b".into()));
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].contains("NOPE"));
}

#[test]
fn interpolation_error_names_file_and_path() {
    let err = Stack::load(
        &[src(
            "s.yaml",
            "services:\n  db:\n    image: x\n    environment:\n      PW: ${PW:?set PW in .env}\n",
        )],
        &Env::new(),
        None,
        "d",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StackError::Interpolation { .. }));
    // file:line:col of the key holding the `${PW:?...}` (issue 8, item 12).
    assert!(
        msg.starts_with("s.yaml:5:7: services.db.environment.PW: "),
        "{msg}"
    );
    assert!(msg.contains("set PW in .env"), "{msg}");
}

#[test]
fn override_files_merge_in_order() {
    let s = Stack::load(
        &[
            src("a.yaml", "services:\n  db:\n    image: postgres:15\n    environment: {A: '1'}\n    ports: ['5432:5432']\n"),
            src("b.yaml", "services:\n  db:\n    image: postgres:16\n    environment: [B=2]\n    ports: ['6543:5432']\n"),
        ],
        &Env::new(),
        None,
        "d",
    )
    .unwrap();
    let db = &s.compose.services["db"];
    assert_eq!(db.image.as_deref(), Some("postgres:16"));
    assert_eq!(db.environment.len(), 2);
    assert_eq!(
        db.ports,
        vec![
            Port::Short("5432:5432".into()),
            Port::Short("6543:5432".into())
        ]
    );
    assert_eq!(s.files.len(), 2);
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let err = load1("services:\n  db:\n    image: x\n   bad: [\n").unwrap_err();
    match &err {
        StackError::Syntax {
            file,
            line,
            column,
            message,
        } => {
            assert_eq!(file, "stack.yaml");
            assert!(*line >= 3, "{err}");
            assert!(*column >= 1);
            assert!(!message.contains(" at line "), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.starts_with("stack.yaml:"), "{shown}");
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let err = load1("services:\n  db:\n    image: x\n    image: y\n").unwrap_err();
    assert!(
        matches!(err, StackError::Syntax { line: 3..=4, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("duplicate entry with key \"image\""),
        "{err}"
    );
}

#[test]
fn unknown_xnodus_key_lists_alternatives_with_position() {
    let err = load1(&format!("{PG}x-nodus:\n  harden: true\n  hardne: false\n")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StackError::UnknownKeys { .. }), "{msg}");
    assert!(msg.starts_with("stack.yaml:6:3: "), "{msg}");
    assert!(msg.contains("hardne"), "{msg}");
    for alt in ["harden", "settle", "services", "snapshots"] {
        assert!(msg.contains(alt), "{msg}");
    }
    let err = load1(&format!(
        "{PG}x-nodus:\n  services:\n    db:\n      databses: []\n"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("databses") && msg.contains("databases") && msg.contains("data_dir"),
        "{msg}"
    );
    assert!(msg.starts_with("stack.yaml:7:"), "{msg}");
}

#[test]
fn every_unknown_xnodus_key_is_reported_with_its_position() {
    let err = load1(&format!(
        "{PG}x-nodus:\n  hardne: true\n  services:\n    db:\n      databses: []\n      roles:\n        - name: r\n          pasword_env: X\n  snapshots:\n    kep: {{last: 1}}\n"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("4 unknown keys in x-nodus:"), "{msg}");
    for want in [
        "stack.yaml:5:3: x-nodus: unknown key `hardne`",
        "stack.yaml:8:7: x-nodus.services.db: unknown key `databses`",
        "stack.yaml:11:11: x-nodus.services.db.roles.0: unknown key `pasword_env`",
        "stack.yaml:13:5: x-nodus.snapshots: unknown key `kep`",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    assert!(msg.contains("password_env"), "{msg}");
}

#[test]
fn a_tab_in_the_indentation_is_named() {
    let err = load1("services:\n  db:\n\timage: x\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StackError::Syntax {
                line: 3,
                column: 1,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("tabs are not allowed for indentation"),
        "{msg}"
    );
    let err = load1("services:\n  db:\n  \t image: x\n").unwrap_err();
    assert!(err.to_string().starts_with("stack.yaml:3:3: tabs"), "{err}");
}

#[test]
fn an_unclosed_quote_is_located_where_it_opens() {
    let err = load1(
        "services:\n  db:\n    image: \"postgres:15\n    environment:\n      A: b\n    ports:\n      - 5432\n",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StackError::Syntax {
                line: 3,
                column: 12,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("never closed"), "{msg}");
}

#[test]
fn unknown_xnodus_key_found_after_interpolation_still_reported() {
    // The raw text cannot be parsed as x-nodus (a ${} in a bool), so no position: still the list.
    let err = load1(&format!(
        "{PG}x-nodus:\n  harden: ${{H:-true}}\n  bogus: 1\n"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bogus") && msg.contains("snapshots"), "{msg}");
}

#[test]
fn interpolated_bools_and_numbers_are_cast() {
    let s = Stack::load(
        &[src(
            "s.yaml",
            "services:\n  db:\n    image: x\n    privileged: ${P:-false}\n    healthcheck:\n      test: [CMD, x]\n      retries: ${R}\n    environment:\n      N: ${R}\nx-nodus:\n  harden: ${H:-false}\n  snapshots:\n    keep:\n      daily: '7'\n",
        )],
        &env(&[("R", "12")]),
        None,
        "d",
    )
    .unwrap();
    let db = &s.compose.services["db"];
    assert_eq!(db.privileged, Some(false));
    assert_eq!(db.healthcheck.as_ref().unwrap().retries, Some(12));
    assert_eq!(
        db.environment["N"],
        Some("12".into()),
        "environment values stay strings"
    );
    assert!(!s.nodus.harden);
    assert_eq!(s.nodus.snapshots.keep.daily, Some(7));
}

#[test]
fn xnodus_is_parsed() {
    let s = load1(&format!(
        "{PG}x-nodus:\n  settle: 2s\n  services:\n    db:\n      kind: postgres\n      databases:\n        - name: app\n          extensions: [pg_trgm]\n  snapshots:\n    keep: {{hourly: 168}}\n"
    ))
    .unwrap();
    assert_eq!(s.nodus.settle.as_deref(), Some("2s"));
    assert_eq!(s.nodus.services["db"].kind, Some(ServiceKind::Postgres));
    assert_eq!(
        s.nodus.services["db"].databases[0].extensions,
        vec!["pg_trgm"]
    );
    assert_eq!(s.nodus.snapshots.keep.hourly, Some(168));
    assert!(s.nodus.snapshots.on_down);
    // kept in the compose passthrough
    assert!(s.compose.extra.contains_key("x-nodus"));
}

#[test]
fn xnodus_for_unknown_service_is_rejected() {
    let err = load1(&format!(
        "{PG}x-nodus:\n  services:\n    dbb:\n      stateful: true\n"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("dbb") && msg.contains("services: db"), "{msg}");
}

#[test]
fn missing_dependency() {
    let err = load1("services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n").unwrap_err();
    assert!(
        matches!(err, StackError::MissingDependency { ref service, ref dependency } if service == "app" && dependency == "db")
    );
    let s = load1("services:\n  app:\n    image: x\n    depends_on:\n      db:\n        condition: service_healthy\n  db:\n    image: y\n").unwrap();
    assert_eq!(
        s.compose.services["app"].depends_on["db"].condition,
        DependsCondition::ServiceHealthy
    );
}

#[test]
fn undeclared_named_volume() {
    let err =
        load1("services:\n  db:\n    image: x\n    volumes: ['pgdata:/var/lib/postgresql/data']\n")
            .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("undefined volume pgdata"), "{msg}");
    assert!(msg.contains("services.db.volumes"), "{msg}");
}

#[test]
fn durations_are_checked() {
    let err =
        load1("services:\n  db:\n    image: x\n    stop_grace_period: 10 seconds\n").unwrap_err();
    assert!(
        err.to_string().contains("services.db.stop_grace_period"),
        "{err}"
    );
    let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      test: [CMD, x]\n      interval: fast\n").unwrap_err();
    assert!(
        err.to_string().contains("services.db.healthcheck.interval"),
        "{err}"
    );
    let err = load1(&format!("{PG}x-nodus:\n  settle: soon\n")).unwrap_err();
    assert!(err.to_string().contains("x-nodus.settle"), "{err}");
}

#[test]
fn project_name_precedence_and_normalisation() {
    let text = "name: My_Stack\nservices:\n  db:\n    image: x\n";
    let s = Stack::load(
        &[src("s.yaml", text)],
        &Env::new(),
        Some(("Flag.Name", ProjectSource::Flag)),
        "dir",
    )
    .unwrap();
    assert_eq!(s.project, "flagname");
    assert_eq!(s.project_source, ProjectSource::Flag);
    let s = Stack::load(&[src("s.yaml", text)], &Env::new(), None, "dir").unwrap();
    assert_eq!(s.project, "my_stack");
    assert_eq!(s.project_source, ProjectSource::NameKey);
    let s = Stack::load(&[src("s.yaml", PG)], &Env::new(), None, "My Dir").unwrap();
    assert_eq!(s.project, "mydir");
    let err = Stack::load(&[src("s.yaml", PG)], &Env::new(), None, "___").unwrap_err();
    assert!(matches!(err, StackError::ProjectName { .. }), "{err}");
    let err = Stack::load(
        &[src("s.yaml", PG)],
        &Env::new(),
        Some(("!!!", ProjectSource::Environment)),
        "d",
    )
    .unwrap_err();
    assert!(err.to_string().contains("COMPOSE_PROJECT_NAME"), "{err}");
    // name: may be interpolated
    let s = Stack::load(
        &[src(
            "s.yaml",
            "name: ${N:-x-1}\nservices:\n  a:\n    image: b\n",
        )],
        &Env::new(),
        None,
        "d",
    )
    .unwrap();
    assert_eq!(s.project, "x-1");
}

#[test]
fn normalisation_rules() {
    assert_eq!(normalize_project_name("Hello World"), "helloworld");
    assert_eq!(normalize_project_name("_-a.b"), "ab");
    assert_eq!(normalize_project_name("nodus-dev"), "nodus-dev");
    assert_eq!(normalize_project_name("ÄÖ"), "");
}

#[test]
fn yaml_anchors_and_merge_keys() {
    let s = load1(
        "x-common: &common\n  restart: always\n  environment:\n    TZ: UTC\nservices:\n  a:\n    <<: *common\n    image: x\n  b:\n    <<: *common\n    image: y\n    restart: 'no'\n",
    )
    .unwrap();
    assert_eq!(s.compose.services["a"].restart.as_deref(), Some("always"));
    assert_eq!(s.compose.services["b"].restart.as_deref(), Some("no"));
    assert_eq!(
        s.compose.services["b"].environment["TZ"],
        Some("UTC".into())
    );
}

#[test]
fn adversarial_inputs_do_not_panic() {
    let cases = [
        "",
        "# only a comment\n",
        "- a\n- b\n",
        "42\n",
        "services: [db, cache]\n",
        "services:\n  db:\n",
        "services:\n  db: postgres\n",
        "services:\n  1: {image: x}\n",
        "services:\n  true: {image: x}\n",
        "services:\n  ? [a, b]\n  : {image: x}\n",
        "services:\n  db: {image: [1, 2]}\n",
        "services:\n  db: {image: x, volumes: 3}\n",
        "services:\n  db: {image: x, volumes: ['a:b:c:d']}\n",
        "services:\n  db: {image: x, environment: 3}\n",
        "services:\n  db: {image: x, ports: [{}]}\n",
        "services:\n  db: {image: x, depends_on: 3}\n",
        "services:\n  db: {image: x}\nvolumes: [a]\n",
        "services:\n  db: {image: x}\nx-nodus: 3\n",
        "services:\n  db: {image: x}\nx-nodus: {services: [db]}\n",
        "services:\n  db: {image: x}\nname: [a]\n",
        "services:\n  db: {image: x, healthcheck: {retries: -1}}\n",
        "a: &a [*a]\n",
        "a: !!binary aGVsbG8=\nservices:\n  db: {image: x}\n",
        "services:\n  db: {image: x, <<: 3}\n",
        "\t\tservices:\n",
        "services:\n  db: {image: \"${\"}\n",
        "services:\n  'bad name!': {image: x}\n",
        "services: {}\n",
        "---\na: 1\n---\nb: 2\n",
    ];
    for text in cases {
        let r = load1(text);
        if let Err(e) = &r {
            assert!(!e.to_string().is_empty());
        }
    }
    // numbers as service names are read as strings
    let s = load1("services:\n  1: {image: x}\n").unwrap();
    assert_eq!(s.service_names(), vec!["1"]);
    assert!(load1("").is_err());
    assert!(load1("- a\n").is_err());
    assert!(load1("services: [db]\n")
        .unwrap_err()
        .to_string()
        .contains("found a list"));
    assert!(load1("services:\n  db:\n")
        .unwrap_err()
        .to_string()
        .contains("services.db"));
}

#[test]
fn service_type_errors_name_the_service() {
    let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      retries: lots\n")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("stack.yaml"), "{msg}");
    assert!(
        msg.contains("retries") || msg.contains("services.db"),
        "{msg}"
    );
}

#[test]
fn typed_field_errors_have_positions() {
    let err = load1("services:\n  db:\n    image: x\n    healthcheck:\n      retries: lots\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stack.yaml:5:16: services.db.healthcheck.retries: invalid type: string \"lots\", expected u32"
    );
    let err = load1("services:\n  db:\n    image: x\nvolumes:\n  a:\n    labels: 5\n").unwrap_err();
    assert!(err.to_string().contains("volumes.a"), "{err}");
}

#[test]
fn numbers_in_ports_and_commands() {
    let s = load1("services:\n  r:\n    image: redis\n    ports: [6379, '127.0.0.1::6380']\n    command: [redis-server, --port, 6379]\n").unwrap();
    let r = &s.compose.services["r"];
    assert_eq!(
        r.ports,
        vec![
            Port::Short("6379".into()),
            Port::Short("127.0.0.1::6380".into())
        ]
    );
    assert_eq!(
        r.command,
        Some(StringOrList::List(vec![
            "redis-server".into(),
            "--port".into(),
            "6379".into()
        ]))
    );
}

#[test]
fn strip_marks_removes_positions() {
    assert_eq!(
        strip_marks("did not find expected key at line 4 column 4, while parsing a block mapping at line 2 column 3"),
        "did not find expected key, while parsing a block mapping"
    );
    assert_eq!(strip_marks("look at line twelve"), "look at line twelve");
}

#[test]
fn paths_are_made_absolute() {
    let mut s = load1(
        "services:\n  app:\n    build: ./app\n    env_file: [.env.app, /abs/e]\n    volumes:\n      - ./data:/data\n      - ../shared:/shared\n      - ~/cache:/cache\n      - /abs:/abs\n      - named:/n\n  b:\n    build:\n      dockerfile: Dockerfile.b\n  c:\n    image: x\n    build: https://github.com/a/b.git\nvolumes:\n  named:\nsecrets:\n  s:\n    file: ./secret.txt\n",
    )
    .unwrap();
    resolve_paths(
        &mut s.compose,
        Path::new("/work/proj"),
        Some(Path::new("/home/u")),
    );
    let app = &s.compose.services["app"];
    assert_eq!(app.build, Some(Value::String("/work/proj/app".into())));
    assert_eq!(
        app.env_file,
        Some(StringOrList::List(vec![
            "/work/proj/.env.app".into(),
            "/abs/e".into()
        ]))
    );
    let srcs: Vec<_> = app
        .volumes
        .iter()
        .map(|v| v.source.clone().unwrap())
        .collect();
    assert_eq!(
        srcs,
        vec![
            "/work/proj/data",
            "/work/shared",
            "/home/u/cache",
            "/abs",
            "named"
        ]
    );
    assert_eq!(
        s.compose.services["b"].build.as_ref().unwrap()["context"],
        Value::String("/work/proj".into())
    );
    assert_eq!(
        s.compose.services["c"].build,
        Some(Value::String("https://github.com/a/b.git".into()))
    );
    assert_eq!(
        s.compose.extra["secrets"]["s"]["file"],
        Value::String("/work/proj/secret.txt".into())
    );
}
