//! Build script: the version string with the git commit (`nodus --version`) and the man page
//! (clap_mangen, written to OUT_DIR/nodus.1; `nodus man` prints it).
//!
//! `src/cli.rs` is compiled here as a module of its own: it must only use clap and std.

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-env-changed=NODUS_GIT_COMMIT");

    // The commit: NODUS_GIT_COMMIT (for builds from a tarball), else git, else nothing.
    let version = env!("CARGO_PKG_VERSION");
    let commit = std::env::var("NODUS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let c = git(&manifest, &["rev-parse", "--short=12", "HEAD"])?;
            // Rebuild when HEAD moves (worktrees keep HEAD and refs in different places).
            for p in [
                git(
                    &manifest,
                    &["rev-parse", "--path-format=absolute", "--git-path", "HEAD"],
                ),
                git(&manifest, &["symbolic-ref", "-q", "HEAD"]).and_then(|r| {
                    git(
                        &manifest,
                        &["rev-parse", "--path-format=absolute", "--git-path", &r],
                    )
                }),
            ]
            .into_iter()
            .flatten()
            {
                println!("cargo:rerun-if-changed={p}");
            }
            Some(c)
        });
    let long = match &commit {
        Some(c) => format!("{version} (commit {c})"),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=NODUS_LONG_VERSION={long}");

    // The man page, from the same clap definitions the binary uses.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cmd =
        <cli::Cli as clap::CommandFactory>::command().version(&*Box::leak(long.into_boxed_str()));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .expect("rendering the man page");
    std::fs::write(out_dir.join("nodus.1"), page).expect("writing the man page");
}
