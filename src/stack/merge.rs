//! Override merging of several compose files (later files win), following compose's rules.
