//! # outpost-cloud
//!
//! The cloud master of one tenant (one organisation): it keeps a mailbox of every batch
//! (`outpost-mailbox`, so it can serve any version vector), applies them through the extension's
//! engine (linked statically, `outpost-embed`) into a SQLite database of the app's real tables
//! that an operator can query, exports its own tables' changes (operator writes, REST pushes) as
//! batches of its own origin, and serves a WatermelonDB-compatible REST API over HTTPS. See `docs/cloud.md` and `docs/rest-api.md`.
//!
//! Public modules (what the `outpost-cloud` binary and the tests use): [`datadir`] (the `--data`
//! directory), [`https`] (the HTTPS front and its certificate), [`control`] (API tokens,
//! enrollment kinds, settings), [`postgres`] (the tenant in PostgreSQL: connecting, rights, the
//! `outpost` schema, the app's tables, capture of back-office writes; not serving yet), [`service`] (the running cloud), [`sessions`] (the session protocol listener), [`revocation`] (revoking a device known from hubs), [`tables`] (the tenant's table directions), [`status`] (the operator's view).
//!
//! Inside the crate: `schema` (tables from batch headers), `scope_rules` (the tenant's scope
//! rules, learned from batch headers), `tenant` (ingest and export),
//! `changelog` (per-record change times for REST), `watermelon` (pull and push), `http` (the
//! REST server over hyper: admission, deadlines, body limits, routes; network text in its log
//! lines is escaped by `outpost_relay::logging`, like every log line), `error_chain` (an error and its causes on one line); files are
//! created through `outpost_relay::private_file`. Their error types appear in the public API and are
//! re-exported here.
//!
//! Every layer has its own error enum, whose text names the file, table or record involved and
//! whose `source()` is the cause (the text does not repeat it).
#![warn(missing_docs)]

mod changelog;
pub mod control;
pub mod datadir;
mod error_chain;
mod high_water;
mod http;
pub mod https;
pub mod new_origin;
pub mod offline_code;
pub mod postgres;
pub mod revocation;
pub mod rotation;
mod schema;
mod scope_rules;
pub mod service;
pub mod sessions;
pub mod status;
pub mod tables;
mod tenant;
mod watermelon;

pub use changelog::ChangelogError;
pub use outpost_relay::private_file::FileError;
pub use schema::SchemaError;
pub use tenant::{ApplyFailure, Ingested, RefusedBatch, TenantError};
pub use watermelon::{
    Access, InvalidPush, PushError, Pushed, Refusal, RestError, MAX_PUSH_RECORDS,
};
