//! The persistence guard: provisioning, census, ledger, loss detection and cause inference.
