//! # outpost-hub
//!
//! The clinic hub: a durable mailbox of batches on the LAN. It never interprets app data: it
//! stores what enrolled devices push (through `outpost-mailbox`), serves each device what its
//! version vector lacks (never its own batches), and keeps who may connect in an allowlist. What
//! it shares with the cloud (identity, allowlist, enrollment codes, the relay and its std
//! listener) is the `outpost-relay` crate; this one is the firmware around it.
//!
//! Modules: [`datadir`] (the `--data` directory), [`hub`] (the running hub's shared state),
//! [`status`] (the `status` command, the status page, the run state), [`uplink`] (the hub as a
//! client of the cloud), [`net`] (the hub's own network stack), [`interfaces`] (addresses for
//! enrollment codes).
#![warn(missing_docs)]

pub mod datadir;
pub mod hub;
pub mod interfaces;
pub mod net;
pub mod status;
pub mod uplink;
