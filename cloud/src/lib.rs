//! # outpost-cloud
//!
//! The cloud master of one tenant (one organisation): it keeps a mailbox of every batch
//! (`outpost-mailbox`, so it can serve any version vector), applies them through the extension's
//! engine into a SQLite database of the app's real tables that an operator can query, exports its
//! own tables' changes (operator writes, REST pushes) as batches of its own origin, and serves a
//! WatermelonDB-compatible REST API over HTTPS. See `docs/cloud.md` and `docs/rest-api.md`.
//!
//! Modules: [`datadir`] (the `--data` directory), [`engine`] (the statically linked extension),
//! [`schema`] (tables from batch headers), [`tenant`] (ingest and export), [`changelog`] (per-record
//! change times for REST), [`watermelon`] (pull and push), [`http`] and [`https`] (the HTTPS
//! front), [`control`] (API tokens, enrollment kinds, settings), [`service`] (the running cloud),
//! [`status`] (the operator's view).
#![warn(missing_docs)]

pub mod changelog;
pub mod control;
pub mod datadir;
pub mod engine;
mod error_chain;
pub mod http;
pub mod https;
mod private_file;
pub mod schema;
pub mod service;
pub mod sessions;
pub mod status;
pub mod tenant;
pub mod watermelon;
