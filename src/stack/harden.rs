//! Hardening rules for stateful services.

use serde::Serialize;

use super::{ComposeFile, Stack, StatefulService};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingLevel {
    /// Something nodus changed in the generated file.
    Fixed,
    /// Something nodus left alone but the user should act on (e.g. a bind mount).
    Warning,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub level: FindingLevel,
    pub service: String,
    pub message: String,
}

/// The generated model.
#[derive(Debug, Clone)]
pub struct Hardened {
    pub compose: ComposeFile,
    pub stateful: Vec<StatefulService>,
    pub findings: Vec<Finding>,
}

pub fn harden(stack: &Stack) -> Hardened {
    let _ = stack;
    todo!("hardening")
}

/// Serialises the generated model as YAML (with a header comment saying it is generated).
pub fn render_yaml(compose: &ComposeFile) -> String {
    let _ = compose;
    todo!("render")
}
