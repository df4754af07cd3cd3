//! # outpost-hub
//!
//! The clinic hub: a durable mailbox of batches on the LAN. It never interprets app data: it
//! stores what enrolled devices push (through `outpost-mailbox`), serves each device what its
//! version vector lacks (never its own batches), and keeps who may connect in an allowlist.
//!
//! Modules: [`datadir`] (the `--data` directory), [`identity`] (the static P-256 key and site id),
//! [`allowlist`] (devices, one-time tokens, handshake counters), [`enroll`] (the `outpost:` code),
//! [`logging`] (structured stderr lines), [`interfaces`] (addresses for enrollment codes).
#![warn(missing_docs)]

pub mod allowlist;
pub mod datadir;
pub mod enroll;
pub mod gate;
pub mod identity;
pub mod interfaces;
pub mod logging;
pub mod net;
pub mod relay;
pub mod server;
pub mod status;
pub mod uplink;
