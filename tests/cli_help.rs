//! The CLI's help: every argument of every subcommand has a help text, the main commands show
//! examples, completion scripts and the man page are generated, `--version` names the commit.

use clap::{CommandFactory, Parser};
use nodus::cli::Cli;

/// Every argument (options, flags, positionals) lacking a help text, as `path: --arg`.
fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        // clap's own --help / --version carry their help.
        if id == "help" || id == "version" {
            continue;
        }
        let has = arg
            .get_help()
            .is_some_and(|h| !h.to_string().trim().is_empty())
            || arg
                .get_long_help()
                .is_some_and(|h| !h.to_string().trim().is_empty());
        if !has {
            out.push(format!("{path}: {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(format!("{path} {}: (no about)", sub.get_name()));
        }
        missing_help(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_argument_has_a_help_text() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    missing_help(&cmd, "nodus", &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without a help text:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_walker_finds_an_argument_without_help() {
    // The check itself must be able to fail.
    let cmd = clap::Command::new("x")
        .arg(
            clap::Arg::new("documented")
                .long("documented")
                .help("has help"),
        )
        .subcommand(
            clap::Command::new("sub")
                .about("s")
                .arg(clap::Arg::new("bare").long("bare")),
        );
    let mut missing = Vec::new();
    missing_help(&cmd, "x", &mut missing);
    assert_eq!(missing, vec!["x sub: bare".to_string()]);
}

#[test]
fn main_commands_show_examples() {
    let cmd = Cli::command();
    for name in [
        "up",
        "down",
        "ps",
        "logs",
        "exec",
        "run",
        "port",
        "config",
        "psql",
        "completion",
    ] {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"));
        let after = sub
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(after.contains("Example"), "{name} --help has no examples");
        assert!(
            after.contains("nodus "),
            "{name}: examples must show nodus commands"
        );
    }
}

#[test]
fn completion_scripts_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef nodus"),
        ("fish", "complete -c nodus"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion"),
    ] {
        let out = assert_cmd::Command::cargo_bin("nodus")
            .unwrap()
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "completion {shell} failed");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        // The new subcommands are completed too.
        assert!(
            script.contains("redis-cli"),
            "{shell} script lacks redis-cli"
        );
    }
    let bad = assert_cmd::Command::cargo_bin("nodus")
        .unwrap()
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_page_and_version() {
    let man = assert_cmd::Command::cargo_bin("nodus")
        .unwrap()
        .arg("man")
        .output()
        .unwrap();
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH nodus 1"), "{page}");
    assert!(page.contains("snapshot"));

    let v = assert_cmd::Command::cargo_bin("nodus")
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(
        v.starts_with(&format!("nodus {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // Built from a git checkout (as this test is), the commit is shown.
    let in_git = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(commit) = in_git {
        assert!(v.contains("(commit "), "{v}");
        // build.rs reruns when HEAD moves: the commit checked out is the one shown.
        assert!(v.contains(&commit), "{v} (HEAD is {commit})");
    }
}

#[test]
fn logs_dash_f_after_the_subcommand_means_follow() {
    let argv = |a: &[&str]| -> Vec<String> {
        nodus::compose_argv(a.iter().map(|s| s.into()).collect())
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        argv(&["nodus", "-f", "s.yaml", "logs", "-f", "db"]),
        ["nodus", "-f", "s.yaml", "logs", "--follow", "db"]
    );
    assert_eq!(
        argv(&["nodus", "-p", "x", "logs", "-tf"]),
        ["nodus", "-p", "x", "logs", "--follow", "-t"]
    );
    // Only after `logs`.
    assert_eq!(argv(&["nodus", "up", "-f"]), ["nodus", "up", "-f"]);
    assert_eq!(
        argv(&["nodus", "-f", "logs", "status"]),
        ["nodus", "-f", "logs", "status"]
    );
    let cli = Cli::try_parse_from(argv(&[
        "nodus", "-f", "s.yaml", "logs", "-f", "--tail", "5", "db",
    ]));
    assert!(cli.is_ok(), "{cli:?}");
}
