//! The end-to-end wrappers (feature `e2e`): what the `outpost-tests` scenarios and the CLI's tests
//! run real processes and real device databases with.
//! - [`built`]: the release-built binaries, built once per test process;
//! - [`hub`], [`cloud`]: `outpost-hub run` and `outpost-cloud run` processes and their commands;
//! - [`process`]: process groups whose output lines a test waits for, the printed enrollment code;
//! - [`device_db`], [`patients`]: device databases with the built extension loaded, the clinic
//!   table most scenarios sync;
//! - [`mailbox_check`]: what a mailbox file must hold after any fault;
//! - [`proxy`]: a loopback proxy that cuts connections at a byte budget;
//! - [`port`], [`scratch`]: free loopback ports, scratch directories on tmpfs;
//! - [`figures`]: what the benchmarks measure and print;
//! - [`workload`]: the benchmark workload's W1 rows, database and insert; [`workload_pg`] (with
//!   feature `pg`): the same rows inserted by plain PostgreSQL;
//! - [`ingest_log`]: what a cloud's log says about its applies; [`ingest_wait`]: waiting for a
//!   tenant to hold what devices pushed.

pub mod built;
pub mod cloud;
pub mod device_db;
pub mod figures;
pub mod hub;
pub mod ingest_log;
pub mod ingest_wait;
pub mod mailbox_check;
pub mod patients;
pub mod port;
pub mod process;
pub mod proxy;
pub mod scratch;
pub mod workload;
#[cfg(feature = "pg")]
pub mod workload_pg;
