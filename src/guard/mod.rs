//! The persistence guard: provisioning, census, ledger, loss detection and cause inference.

pub mod census;
pub mod diff;
