//! The starter files `nodus init` writes: the stack templates and CI jobs of the top-level
//! `templates/` folder, embedded at build time (`templates/stacks/` are also the seed stacks the
//! repository runs: one copy).

/// A stack template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Dev,
    NodusAdk,
    Zentoria,
    Orquix,
}

/// A CI job template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ci {
    Github,
    Gitlab,
}

impl Stack {
    pub const ALL: [Stack; 4] = [Stack::Dev, Stack::NodusAdk, Stack::Zentoria, Stack::Orquix];

    pub fn name(self) -> &'static str {
        match self {
            Stack::Dev => "dev",
            Stack::NodusAdk => "nodus-adk",
            Stack::Zentoria => "zentoria",
            Stack::Orquix => "orquix",
        }
    }

    pub fn contents(self) -> &'static str {
        match self {
            Stack::Dev => include_str!("../templates/stacks/dev.yaml"),
            Stack::NodusAdk => include_str!("../templates/stacks/nodus-adk.yaml"),
            Stack::Zentoria => include_str!("../templates/stacks/zentoria.yaml"),
            Stack::Orquix => include_str!("../templates/stacks/orquix.yaml"),
        }
    }
}

impl Ci {
    pub const ALL: [Ci; 2] = [Ci::Github, Ci::Gitlab];

    /// Where the job goes, relative to the project directory.
    pub fn path(self) -> &'static str {
        match self {
            Ci::Github => ".github/workflows/nodus-persistence.yml",
            Ci::Gitlab => ".gitlab-ci.yml",
        }
    }

    pub fn contents(self) -> &'static str {
        match self {
            Ci::Github => include_str!("../templates/ci/github.yml"),
            Ci::Gitlab => include_str!("../templates/ci/gitlab.yml"),
        }
    }
}

/// A file to write.
#[derive(Debug, Clone)]
pub struct File {
    /// Relative to the project directory.
    pub path: &'static str,
    pub contents: &'static str,
}

/// The stack file under the name `nodus` looks for first (`nodus.yaml`), plus the CI job.
pub fn files(stack: Stack, ci: Option<Ci>) -> Vec<File> {
    let mut out = vec![File {
        path: "nodus.yaml",
        contents: stack.contents(),
    }];
    if let Some(ci) = ci {
        out.push(File {
            path: ci.path(),
            contents: ci.contents(),
        });
    }
    out
}
