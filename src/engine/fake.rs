//! An in-memory [`Engine`] for unit tests of lifecycle logic.
