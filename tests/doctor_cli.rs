//! `nodus doctor` on the fixtures through the binary: exit codes, one JSON document, SARIF that
//! validates against the SARIF 2.1.0 schema (tests/fixtures/sarif-schema-2.1.0.json). Static
//! checks only (`--no-live`).
//!
//! The schema is the OASIS SARIF 2.1.0 JSON schema as shipped in the serde-sarif crate
//! (src/schema.json), with one fix: `run.language`'s pattern has a stray `]`
//! (`^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$`, a typo in the published schema) that an ECMA-262
//! regex check rejects, so the validator refused to compile the schema. It reads
//! `^[a-zA-Z]{2}$|^[a-zA-Z]{2}-[a-zA-Z]{2}$` here (nodus does not emit `language`).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doctor(file: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nodus"))
        .env("NO_COLOR", "1")
        .env_remove("NODUS_STACK")
        .env_remove("COMPOSE_PROJECT_NAME")
        .arg("-f")
        .arg(root().join("tests/fixtures/doctor").join(file))
        .args(["doctor", "--no-live"])
        .args(extra)
        .output()
        .expect("run nodus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn json_document_and_exit_codes() {
    let (code, out, err) = doctor("pgdata-anonymous.yaml", &["--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let findings = v["findings"].as_array().expect("findings array");
    let f = findings
        .iter()
        .find(|f| f["id"] == "pgdata-anonymous")
        .expect("pgdata-anonymous");
    for key in ["id", "severity", "service", "evidence", "fix"] {
        assert!(f.get(key).is_some(), "{key} missing in {f}");
    }
    assert_eq!(f["severity"], "error");
    assert_eq!(f["service"], "db");

    let (code, out, err) = doctor("clean.yaml", &["--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 0, "{v}");

    // Warnings only: exit 0; text grouped by service.
    let (code, out, err) = doctor("stop-grace-short.yaml", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("db\n"), "{out}");
    assert!(out.contains("warning stop-grace-short"), "{out}");
    assert!(out.contains("stop-grace-short.yaml:"), "{out}");
}

#[test]
fn sarif_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for fixture in [
        "shared-db-schema-sync.yaml",
        "clean.yaml",
        "unsafe-durability.yaml",
    ] {
        let path = dir.path().join(format!("{fixture}.sarif"));
        let (code, out, err) = doctor(fixture, &["--sarif", path.to_str().unwrap()]);
        assert!(code == 0 || code == 1, "{out}\n{err}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("sarif written")).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{fixture}: {errors:#?}\n{doc:#}");
        assert_eq!(doc["version"], "2.1.0");
        let results = doc["runs"][0]["results"].as_array().unwrap();
        if fixture != "clean.yaml" {
            assert!(!results.is_empty());
            let r = &results[0];
            assert!(
                r["locations"][0]["physicalLocation"]["region"]["startLine"]
                    .as_i64()
                    .unwrap()
                    > 0,
                "{r}"
            );
        } else {
            assert!(results.is_empty());
        }
    }
    // A document that breaks the schema is rejected (the validation is real).
    let bad = serde_json::json!({"version": "2.1.0", "runs": [{"results": []}]});
    assert!(!validator.is_valid(&bad));
}
