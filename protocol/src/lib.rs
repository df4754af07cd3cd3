//! # outpost-protocol
//!
//! The rules every Outpost peer shares: the data model (site ids, hybrid logical clocks, version
//! vectors, values), the merge rules, the batch wire format, the framing layer and the session
//! messages.
//!
//! **Contract.** This crate is `no_std` + `alloc`. It never does I/O and never reads a clock:
//! wall-clock time is passed in by the caller. Every decoder validates its input completely and
//! returns a typed error; none panics on any input. Merge functions are pure: deterministic,
//! commutative, associative and idempotent (property-tested in each module).
//!
//! Features: `std` (default) implements `std::error::Error` for the error types; `defmt` derives
//! `defmt::Format` on the small public types for microcontroller builds (it type checks on Linux
//! but cannot link into a Linux binary).
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod batch;
pub mod channel;
pub mod control;
pub mod discovery;
pub mod enroll_code;
pub mod frame;
pub mod handshake;
pub mod hlc;
pub mod id_range;
pub mod merge;
pub mod message;
pub mod scope;
pub mod seal;
pub mod session;
pub mod signing;
pub mod site;
pub mod uuid_text;
pub mod value;
pub mod varint;
pub mod vector;

pub use hlc::{Clock, Hlc, Stamp};
pub use merge::Strategy;
pub use site::SiteId;
pub use value::Value;
pub use vector::{ControlVector, SeqRange, StreamId, VersionVector};

/// The protocol version this build speaks (see `docs/wire-format.md`, "Versioning").
pub const PROTOCOL_VERSION: u16 = 2;
