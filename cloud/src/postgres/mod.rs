//! The tenant in PostgreSQL (docs/design.md section 11, issue 21): what the PostgreSQL tenant
//! stands on, before it serves. [`connect`] reaches the database a URL names; [`rights`] checks
//! the role may do what the cloud needs, naming the `GRANT` that is missing; [`meta`] makes the
//! cloud's own `outpost` schema and binds the database to one tenant's site id; [`app_tables`]
//! makes and extends the app's real tables from batch headers; [`capture`] records back-office
//! writes to them as changes of the cloud's origin, which [`outbox`] reads as batches and
//! [`listen`] wakes on.
//!
//! [`apply`] merges a device's batch into these tables through the store-agnostic apply core
//! (`outpost_apply_core`) over [`store`], the core's store in PostgreSQL.
//!
//! The cloud is the scope authority: [`transfer`] makes the batches that carry a moved row whole
//! into its new scope's stream.
//!
//! [`tenant`] serves it: the cloud's shared ingest and export over these tables.
//!
//! The WatermelonDB REST API serves it too: [`rest_log`] keeps its change log by triggers,
//! [`rest_tables`] reads the REST tables and their real types, [`rest_pull`] and [`rest_push`]
//! are `watermelon.rs`'s pull and push over PostgreSQL, [`rest_writes`] a push's writes sent in
//! batches.
//!
//! Not here yet: the mailbox and sync state in the `outpost` schema, several processes.

pub mod app_tables;
pub mod apply;
pub mod capture;
pub mod capture_upgrade;
pub mod connect;
pub mod listen;
pub mod meta;
pub mod new_origin;
pub mod outbox;
pub mod pg_value;
pub mod rest_log;
pub mod rest_pull;
pub mod rest_push;
pub mod rest_tables;
pub mod rest_writes;
pub mod rights;
pub mod setup;
pub mod store;
pub mod tenant;
pub mod transfer;

pub use app_tables::{AppTableError, TableChange};
pub use connect::{ConnectError, Target};
pub use meta::{Meta, MetaError, Prepared};
pub use rights::RightsError;
pub use setup::{SetupError, Store};
pub use tenant::{PgTenant, PgTenantError};
