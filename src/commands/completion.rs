//! `nodus completion SHELL` (clap_complete) and `nodus man` (the page build.rs generated).

use std::io::Write as _;

use clap::CommandFactory as _;

use super::Ctx;
use crate::cli::{Cli, CompletionArgs, CompletionShell};

pub fn completion(ctx: &Ctx, a: CompletionArgs) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "completion")?;
    let shell = match a.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
        CompletionShell::Powershell => clap_complete::Shell::PowerShell,
        CompletionShell::Elvish => clap_complete::Shell::Elvish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "nodus", &mut out);
    write_stdout(&out)
}

/// The man page, generated from the CLI definitions at build time.
pub const MAN_PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/nodus.1"));

pub fn man(ctx: &Ctx) -> anyhow::Result<()> {
    super::exec::refuse_json(ctx, "man")?;
    write_stdout(MAN_PAGE.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
