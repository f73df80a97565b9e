//! `nodus init`: writes the embedded templates, refuses to overwrite without --force; every CI
//! job it writes is valid YAML and each `nodus ...` it runs names a subcommand and flags that
//! exist in the CLI.

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

fn nodus(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodus"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("NODUS_STACK")
        .args(args)
        .output()
        .unwrap()
}

/// Every `nodus ...` command line in a shell script text.
fn nodus_lines(script: &str) -> Vec<Vec<String>> {
    script
        .lines()
        .flat_map(|l| l.split("&&"))
        .map(str::trim)
        .filter(|l| l.starts_with("nodus "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The shell commands of a workflow: GitHub `run:` steps, GitLab `script`/`before_script` lists.
fn shell_commands(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or_default();
                match (key, v) {
                    ("run", serde_yaml::Value::String(s)) => out.push(s.clone()),
                    (
                        "script" | "before_script" | "after_script",
                        serde_yaml::Value::Sequence(xs),
                    ) => out.extend(xs.iter().filter_map(|x| x.as_str().map(str::to_string))),
                    _ => shell_commands(v, out),
                }
            }
        }
        serde_yaml::Value::Sequence(xs) => xs.iter().for_each(|x| shell_commands(x, out)),
        _ => {}
    }
}

/// Parses `words` (starting with `nodus`) with the real CLI definition.
fn assert_parses(words: &[String]) {
    let r = nodus::cli::Cli::command().try_get_matches_from(words);
    assert!(
        r.is_ok(),
        "{words:?} is not a valid nodus command: {:?}",
        r.err()
    );
}

#[test]
fn ci_templates_are_valid_yaml_and_run_existing_commands() {
    for ci in nodus::templates::Ci::ALL {
        let v: serde_yaml::Value = serde_yaml::from_str(ci.contents())
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", ci.path()));
        let mut cmds = Vec::new();
        shell_commands(&v, &mut cmds);
        let lines: Vec<Vec<String>> = cmds.iter().flat_map(|c| nodus_lines(c)).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.get(1).map(String::as_str) == Some("test-persistence")),
            "{} does not run nodus test-persistence",
            ci.path()
        );
        for l in &lines {
            assert_parses(l);
        }
        let text = ci.contents();
        assert!(text.contains("--junit"), "{}", ci.path());
    }
    // GitHub: checkout, install, run, upload the report
    let gh: serde_yaml::Value =
        serde_yaml::from_str(nodus::templates::Ci::Github.contents()).unwrap();
    let steps = gh["jobs"]["persistence"]["steps"].as_sequence().unwrap();
    assert!(steps[0]["uses"]
        .as_str()
        .unwrap()
        .starts_with("actions/checkout"));
    assert!(steps.iter().any(|s| s["uses"]
        .as_str()
        .is_some_and(|u| u.starts_with("actions/upload-artifact"))));
    // GitLab: the report under artifacts:reports:junit
    let gl: serde_yaml::Value =
        serde_yaml::from_str(nodus::templates::Ci::Gitlab.contents()).unwrap();
    assert_eq!(
        gl["nodus-persistence"]["artifacts"]["reports"]["junit"].as_str(),
        Some("nodus-persistence.xml")
    );
}

#[test]
fn the_checker_rejects_commands_that_do_not_exist() {
    let bad: Vec<String> = ["nodus", "test-persistance", "--junit", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(nodus::cli::Cli::command()
        .try_get_matches_from(&bad)
        .is_err());
    let bad_flag: Vec<String> = ["nodus", "test-persistence", "--junit-file", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(nodus::cli::Cli::command()
        .try_get_matches_from(&bad_flag)
        .is_err());
}

#[test]
fn init_writes_every_template_and_ci_job_and_the_stack_loads() {
    for (template, stack) in [
        ("dev", nodus::templates::Stack::Dev),
        ("nodus-adk", nodus::templates::Stack::NodusAdk),
        ("zentoria", nodus::templates::Stack::Zentoria),
        ("orquix", nodus::templates::Stack::Orquix),
    ] {
        for ci in ["github", "gitlab"] {
            let tmp = tempfile::tempdir().unwrap();
            let o = nodus(tmp.path(), &["init", "--template", template, "--ci", ci]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let written = std::fs::read_to_string(tmp.path().join("nodus.yaml")).unwrap();
            assert_eq!(written, stack.contents());
            let job = match ci {
                "github" => ".github/workflows/nodus-persistence.yml",
                _ => ".gitlab-ci.yml",
            };
            assert!(tmp.path().join(job).is_file(), "{job} missing");
            // the written stack is found and renders (no Docker needed)
            let r = nodus(tmp.path(), &["render", "-o", "-"]);
            assert!(
                r.status.success(),
                "{template}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
        }
    }
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("nodus.yaml"), "mine").unwrap();
    let o = nodus(tmp.path(), &["init", "--ci", "github"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("nodus.yaml")).unwrap(),
        "mine"
    );
    assert!(!tmp.path().join(".github").exists(), "nothing written");
    let o = nodus(tmp.path(), &["init", "--force"]);
    assert!(o.status.success());
    assert_ne!(
        std::fs::read_to_string(tmp.path().join("nodus.yaml")).unwrap(),
        "mine"
    );
}

#[test]
fn templates_are_the_seed_stacks_one_copy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        !root.join("stacks").exists(),
        "stacks/ and templates/stacks/ would be two copies"
    );
    for s in nodus::templates::Stack::ALL {
        let file = root.join(format!("templates/stacks/{}.yaml", s.name()));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), s.contents());
    }
}
