//! # outpost: the Outpost SQLite extension
//!
//! Loaded into an app's SQLite (`.load liboutpost`, entry point `sqlite3_outpost_init`) or linked
//! statically and registered with `sqlite3_auto_extension`, it tracks the app's tables and
//! exchanges their changes as protocol batches (`outpost-protocol`). The SQL surface is listed in
//! `FUNCTIONS` and documented in `docs/sql-api.md`.
//!
//! ## How a write travels
//! 1. **Capture** (`triggers.rs`): AFTER triggers append one row per written row (per changed
//!    column for an UPDATE) to `_outpost_log` (seq = INTEGER PRIMARY KEY, key, op, clock,
//!    changed-column mask, counter deltas or a deleted row's values), in the app's own
//!    transaction. Nothing else runs on the write path: appending at the end of one B-tree is
//!    the cheapest bookkeeping SQLite offers; random-key inserts into a second B-tree are what
//!    doubles write cost (measured in `docs/performance.md`). The clock comes from a
//!    per-connection cached HLC (`clock.rs`), read by the column-update triggers through `outpost_clock`
//!    virtual table (`clock_table.rs`) so that SQLite needs no statement journal for them, and
//!    loading the extension keeps statement journals in memory (`statement_journal.rs`). A table
//!    declared with a scope column (`scope_rule.rs`) has its scope cell checked in the same
//!    triggers (`scope_check.rs`: a scope name, inside the device's grant for an insert).
//! 2. **Fold** (`fold.rs`), before every export and apply: the log becomes per-row state in
//!    `_outpost_rows` (causal length + run-length packed per-column versions, `state.rs`),
//!    counter/review state in `_outpost_cells`, tombstones for deleted rows; the log is emptied
//!    but for its newest row, which keeps seqs increasing. Keys are stored packed (a UUID text key
//!    is 17 bytes), never by rowid, so `VACUUM` renumbering rowids cannot misattribute anything.
//!    Fold also notices `ALTER TABLE ... ADD COLUMN` and records the new column's values.
//! 3. **Export** (`export.rs`): own, still-current writes above a seq, only changed columns,
//!    cut to a byte budget at a seq boundary.
//! 4. **Apply** (`apply.rs`): merge per protocol rules, parents first, one transaction;
//!    `quarantine.rs` keeps what cannot apply; `cells.rs` and `conflicts.rs` handle review cells;
//!    `batch_quarantine.rs` records batches refused whole (`apply/direction.rs`: what only the
//!    cloud writes, from another origin).
//!
//! ## Boundaries
//! `ffi.rs` is the only code that calls SQLite's C API; `functions.rs` the only code that crosses
//! back into C (every call inside `catch_unwind`, every error converted to a SQLite code and
//! message there). Merge rules come from `outpost_protocol::merge` unchanged.
//!
//! Files depend downward, never in a cycle: `error.rs` and `arg.rs` (nothing of the crate) →
//! `ffi.rs` → `clock.rs` → `session.rs` (the per-connection state) → `functions.rs` and
//! `clock_table.rs` (registration) → the engine modules (`schema.rs`, `keys.rs`, `json.rs`,
//! `state.rs`, `cells.rs`, `quarantine.rs`, `triggers.rs`, `fold.rs`, `apply.rs`, `export.rs`,
//! ...) → `sync/` → `status.rs` (which records what a sync did) and `scope_check.rs` (which reads
//! the device's grant from the key directory) → this file's table. The one
//! exception is the apply itself: `apply.rs` and its parts in `apply/` (`unique.rs`,
//! `restore.rs`, `retry.rs`: more methods of one `Applier`) use each other.
//!
//! ## Decisions (for ARCHITECTURE.md)
//! - **Append-only capture, fold later.** The write path appends one log row per written row
//!   and nothing else; per-row merge state is built by `fold` before export/apply. Keeping state
//!   current inside the triggers would put a second random-key B-tree write on every app write
//!   (measured 1.9-2.2x in docs/workload.md); the log append is at the end of its B-tree.
//! - **Keys, not rowids.** Bookkeeping is keyed by the packed primary key, so `VACUUM`
//!   renumbering rowids cannot misattribute a change, at the cost of 17 bytes per UUID key.
//! - **Own clocks per connection, corrected at fold.** `outpost_tick` is a cached HLC per
//!   connection; fold raises a local write's clock above the version it replaces, so per-cell
//!   order holds even when two connections' caches disagree.
//! - **Export = own, still-current writes.** A cell overwritten by a peer is never re-sent by
//!   this database (the peer's write travels with its own origin), so batches only ever carry
//!   the origin's writes at the row's epoch, as the batch format requires.
//! - **Parents come back as local writes** (`apply/restore.rs`), and **a UNIQUE loser is
//!   evicted, not deleted** (`apply/unique.rs`): both keep every replica's rows, quarantine and
//!   conflicts identical whatever the delivery order (checked by a seeded random test).
//! - **No SQLite linked in.** The crate calls only the SQLite that loaded it, through the
//!   routines table (`ffi.rs`), so the static (`sqlite3_auto_extension`) path links cleanly next
//!   to any app SQLite. sqlite-loadable was dropped for that reason: its `sqlite3ext-sys`
//!   compiles a SQLite 3.39 into the rlib, whose symbols collide with the app's.
//!
//! ## Known limits
//! Tables with more than 62 non-key columns are refused; each tracked column has its own
//! update trigger (a table of 60 columns: 63 triggers, parsed with the schema when a
//! connection opens). Every connection writing to a tracked table must have the extension
//! loaded (the triggers call its functions). After the first export the database holds
//! per-row state in place of the folded log (about 1.37x plain at W1 size, see
//! docs/performance.md). A column dropped with `ALTER TABLE DROP COLUMN` is not handled.
//! `INSERT OR REPLACE` over a row with the same key is captured as an insert that sets every
//! column (a counter to the written value); a row that REPLACE deletes for colliding on
//! another UNIQUE column is captured by a BEFORE trigger per such constraint (`triggers.rs`),
//! except for indexes on expressions, and for a UNIQUE index created after tracking only from
//! the next export or apply on (fold notices the schema change). A row held aside by a UNIQUE
//! collision comes back at the next apply or quarantine retry after a local write frees its
//! value, not at the write itself. Collisions on a UNIQUE index on an expression are decided by
//! arrival order (`apply/unique.rs` cannot query what it compares), so replicas can differ.
//! Quarantine converges as a set of `(table, key, reason)`: a change sent by several origins may be
//! held as one entry per origin.

#![allow(clippy::missing_safety_doc)]

mod acked;
mod applied;
mod apply;
mod arg;
mod batch_quarantine;
mod cells;
mod clock;
mod clock_ahead;
mod clock_table;
mod conflicts;
mod drain;
mod error;
mod export;
mod ffi;
mod fold;
mod functions;
mod id_blocks;
mod ids;
mod json;
mod keys;
mod pending;
mod pending_table;
mod quarantine;
mod regain;
mod restamp;
mod row_scope;
mod row_status;
mod schema;
mod scope_check;
mod scope_keys;
mod scope_rule;
mod session;
mod sites;
mod skew;
mod state;
mod statement_journal;
mod status;
mod streams;
mod strict;
mod strict_refusal;
mod sync;
mod track;
mod transfer;
mod triggers;
mod vtab_module;
mod wire_scope;

pub use error::{ApplyError, Error, KeyFileProblem, ScopeWriteError, StrictWriteError, SyncError};
use error::{LoadError, SQLITE_ERROR};
use functions::{Arg, Call, FunctionDef};
use outpost_protocol::Value;
use std::ffi::{c_char, c_int, CStr};

fn version(_call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    Ok(Value::Text(env!("CARGO_PKG_VERSION").to_string()))
}

const fn def(
    name: &'static CStr,
    min_args: usize,
    max_args: usize,
    body: functions::ArgsBody,
) -> FunctionDef {
    FunctionDef {
        name: functions::name_text(name),
        c_name: name,
        min_args,
        max_args,
        deterministic: false,
        innocuous: false,
        body: functions::Body::Args(body),
    }
}

/// [`for_triggers`], for a body that reads its arguments' types and bytes only.
const fn for_triggers_views(
    name: &'static CStr,
    max_args: usize,
    body: functions::ViewsBody,
) -> FunctionDef {
    FunctionDef {
        body: functions::Body::Views(body),
        ..for_triggers(name, max_args, false, version)
    }
}

/// A function the triggers call: innocuous (see `FunctionDef::innocuous`). Each only reads or
/// advances this connection's own state (the capture flag, the clock), packs its arguments, or
/// checks a value against this device's own grant.
const fn for_triggers(
    name: &'static CStr,
    max_args: usize,
    deterministic: bool,
    body: functions::ArgsBody,
) -> FunctionDef {
    FunctionDef {
        name: functions::name_text(name),
        c_name: name,
        min_args: 0,
        max_args,
        deterministic,
        innocuous: true,
        body: functions::Body::Args(body),
    }
}

/// Every SQL function, in the order `docs/sql-api.md` documents them.
static FUNCTIONS: &[FunctionDef] = &[
    // identity
    def(c"outpost_version", 0, 0, version),
    def(c"outpost_site_id", 0, 0, sites::sql_site_id),
    // tracking
    def(c"outpost_track", 1, 2, track::sql_track),
    def(c"outpost_untrack", 1, 1, track::sql_untrack),
    // export
    def(c"outpost_db_version", 0, 1, export::sql_db_version),
    def(c"outpost_changes", 1, 3, export::sql_changes),
    def(c"outpost_batch_json", 1, 1, export::sql_batch_json),
    // apply
    def(c"outpost_apply", 1, 1, apply::sql_apply),
    def(c"outpost_apply_many", 1, 100, apply::sql_apply_many),
    def(c"outpost_vector", 0, 0, apply::sql_vector),
    def(c"outpost_list_applied", 1, 1, applied::sql_list_applied),
    // people
    def(c"outpost_resolve", 2, 2, conflicts::sql_resolve),
    def(c"outpost_retry_quarantine", 0, 0, apply::sql_retry),
    // sync with a hub or the cloud
    def(c"outpost_enroll", 1, 1, sync::sql_enroll),
    def(c"outpost_enroll_code", 1, 1, sync::sql_enroll_code),
    def(c"outpost_sync", 0, 2, status::sql_sync),
    def(c"outpost_status", 0, 0, status::sql_status),
    def(c"outpost_sync_progress", 0, 0, sync::sql_sync_progress),
    // ids a device can mint offline
    def(c"outpost_uuid", 0, 0, ids::sql_uuid),
    def(c"outpost_reserve_ids", 2, 2, id_blocks::sql_reserve_ids),
    def(c"outpost_next_id", 1, 1, id_blocks::sql_next_id),
    // per-record sync state (and the `outpost_pending` table, `pending_table.rs`)
    FunctionDef {
        innocuous: true,
        ..def(c"outpost_row_status", 2, 127, row_status::sql_row_status)
    },
    // called by the triggers
    for_triggers(c"outpost_tick", 0, false, triggers::sql_tick),
    for_triggers(c"outpost_capturing", 0, false, triggers::sql_capturing),
    for_triggers(c"outpost_pack", 127, true, triggers::sql_pack),
    FunctionDef {
        min_args: 4,
        ..for_triggers(
            c"outpost_check_scope",
            4,
            false,
            scope_check::sql_check_scope,
        )
    },
    FunctionDef {
        min_args: 2,
        ..for_triggers(c"outpost_check_drain", 2, false, drain::sql_check_drain)
    },
    FunctionDef {
        min_args: 4,
        ..for_triggers_views(c"outpost_strict_check", 127, strict::sql_strict_check)
    },
    FunctionDef {
        min_args: 4,
        ..for_triggers(
            c"outpost_strict_refuse",
            4,
            false,
            strict::sql_strict_refuse,
        )
    },
];

/// The names of every registered SQL function.
pub fn function_names() -> Vec<&'static str> {
    FUNCTIONS.iter().map(|f| f.name).collect()
}

/// The entry point SQLite looks for (`.load liboutpost`), also usable with
/// `sqlite3_auto_extension`. A failure's reason goes back through `pz_err_msg`, so the shell and
/// the language bindings show it after "error during initialization: ".
///
/// # Safety
/// Called by SQLite with a valid connection, its `char **` error out-parameter and its API
/// routines table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_outpost_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *const std::ffi::c_void,
) -> c_int {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: SQLite passes its routines table (or null, refused inside).
        unsafe { ffi::install(p_api) }?;
        let session = functions::register_all(db, FUNCTIONS)?;
        pending_table::register(db, session.clone())?;
        strict_refusal::register(db, session)?;
        // Not fatal: the extension works with journals on disk, only slower on big transactions.
        if let Err(e) = statement_journal::keep_in_memory(ffi::Conn(db)) {
            log::warn!("outpost: could not keep statement journals in memory: {e}");
        }
        Ok::<(), LoadError>(())
    });
    let e = match r {
        Ok(Ok(())) => return ffi::SQLITE_OK,
        Ok(Err(e)) => e,
        Err(_) => LoadError::Panicked,
    };
    let msg = e.to_string();
    log::error!("{msg}");
    // SAFETY: both are what SQLite passed to this call (null is checked inside).
    unsafe { ffi::report_load_error(p_api, pz_err_msg, &msg) };
    SQLITE_ERROR
}
