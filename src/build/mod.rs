//! Build contexts for `build:` services: Docker's `.dockerignore` semantics ([`ignore`]) and the
//! context as the Docker CLI sends it, hashed ([`context::digest`]) and streamed as a tar
//! ([`context::tar_stream`]). Pure: no engine, no async runtime needed to produce the stream.

pub mod context;
pub mod ignore;
