//! Build contexts for `build:` services: Docker's `.dockerignore` semantics ([`ignore`]) and the
//! context as the Docker CLI sends it, hashed ([`context::digest`]) and streamed as a tar
//! ([`context::tar_stream`]). Pure: no engine, no async runtime needed to produce the stream.
//!
//! Building ([`Builder`]): which services need a build ([`plan`]), one build per image, the image
//! labelled with the build hash ([`HASH_LABEL`]), progress per step, secrets masked ([`mask`]).

pub mod context;
pub mod ignore;
pub mod mask;
pub mod plan;
mod run;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::EngineError;

pub use plan::{Decision, Job, Policy};
pub use run::Builder;

/// Image label holding the hash of what the image was built from (context as sent after
/// `.dockerignore`, Dockerfile, build args, target, build labels).
pub const HASH_LABEL: &str = "io.nodus.build.hash";

/// How many output lines of a failed step the error keeps.
pub const FAILED_TAIL: usize = 10;

/// `nodus build` / `up` options for building.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub policy: Policy,
    /// `--no-cache` (also `build.no_cache:`).
    pub no_cache: bool,
    /// `--pull` (also `build.pull:`).
    pub pull: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("service {service}: {message}")]
    Invalid { service: String, message: String },
    #[error("service {service}: {source}")]
    Context {
        service: String,
        #[source]
        source: context::ContextError,
    },
    #[error("service {service}: image {image} is not present and {why} forbids building it")]
    MissingNotAllowed {
        service: String,
        image: String,
        why: &'static str,
    },
    #[error("building image {image} for service {} failed at {step}: {message}{}", services.join(", "), tail(last_lines))]
    Failed {
        image: String,
        services: Vec<String>,
        /// "step 3/4 (RUN make)", or "the start of the build" when no step began.
        step: String,
        message: String,
        last_lines: Vec<String>,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nlast output lines:\n  {}", lines.join("\n  "))
    }
}

/// What happened (or would happen, for `--dry-run`) to one image.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub image: String,
    pub services: Vec<String>,
    pub context: String,
    pub dockerfile: String,
    /// Entries in the context as sent (after `.dockerignore`).
    pub files: u64,
    pub bytes: u64,
    /// The build hash (the image label's value when built).
    pub hash: String,
    pub decision: Decision,
    /// Whether a build is (was) needed.
    pub needed: bool,
    /// Built by this command.
    pub built: bool,
    /// The image's ID after the command (None: missing, or a dry run of a missing image).
    pub image_id: Option<String>,
    /// Seconds spent hashing the context.
    pub hash_secs: f64,
    /// Seconds spent building (0 when not built).
    pub build_secs: f64,
}

/// Image name → image ID of every built (or checked) image, for `up`'s recreation decision.
pub fn image_ids(outcomes: &[Outcome]) -> BTreeMap<String, String> {
    outcomes
        .iter()
        .filter_map(|o| o.image_id.clone().map(|id| (o.image.clone(), id)))
        .collect()
}
