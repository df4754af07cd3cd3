//! The write-time scope checks (docs/design.md section 10, "Scopes"): `outpost_check_scope`,
//! called by the triggers of a table with a scope column (`triggers.rs`): as the WHEN of its
//! capturing AFTER INSERT trigger, and by a BEFORE UPDATE OF the scope column.
//!
//! - An INSERT's scope cell must hold a scope name (1-64 of `[A-Za-z0-9_.-]`: NULL, `''`, `*`
//!   refused, naming the column) in this device's grant. A device with no grant known (never
//!   enrolled, or enrolled with a peer that wrote none) or granted `*` takes any scope name.
//! - An UPDATE that changes the scope cell is a referral: any scope name passes (the row then
//!   leaves the device), only a value that is no scope name is refused.
//! - Writes a peer's changes make are never refused: the function answers 0 (do not capture)
//!   while the connection applies them, and apply usually switches the triggers off altogether.
//!
//! RAISE takes a constant message, so the triggers call this function, whose error carries the
//! table, column and scope. Standing in for `outpost_capturing()` in the INSERT trigger's WHEN,
//! it costs a scoped insert one function call and no extra trigger.
//!
//! **The grant, once per connection.** Loading it means rebuilding the key directory (verifying
//! signed entries; `sync/control.rs` caches that by digest of the stored rows, which still reads
//! them all), far more than one written row may cost. So the connection keeps the grant
//! ([`GrantCache`] in `Session::grant`) and reads it again only when the database may have
//! changed under it: the file's data version (`SQLITE_FCNTL_DATA_VERSION`, no statement) tells
//! that nothing at all was committed since; when it moved, `PRAGMA data_version` tells whether
//! another connection committed (this connection's own commits do not move it). This
//! connection writes the directory only in `outpost_enroll` and `outpost_sync`, which empty
//! `Session::grant` (its owner is this module, but a cache emptied by anyone is only a miss, and
//! `sync/` sits below this module). Inside a transaction a row therefore costs one set lookup;
//! an autocommit INSERT adds one `PRAGMA data_version`.

use crate::error::{Error, ScopeWriteError};
use crate::functions::{Arg, Call};
use crate::wire_scope::WireScopes;
use outpost_protocol::scope::{self, Scopes};
use outpost_protocol::Value;

/// The grant as last read, and when.
struct GrantCache {
    /// `SQLITE_FCNTL_DATA_VERSION` when last confirmed (`None`: not answered).
    file_version: Option<u32>,
    /// `PRAGMA data_version` when last confirmed.
    data_version: i64,
    /// The scopes granted; `None`: no grant known, every scope name passes.
    scopes: Option<Scopes>,
    /// The grant's version (0: no grant known).
    version: u64,
    /// How the grant's scope ids (digests in a sealed tenant) read names.
    wire: WireScopes,
    /// The last answers, by name: in a sealed tenant each answer costs an HMAC, and a device
    /// writes into a handful of scopes.
    answers: std::cell::RefCell<Vec<(String, bool)>>,
}

/// How many answers [`GrantCache`] keeps.
const ANSWERS_KEPT: usize = 32;

impl GrantCache {
    fn grants(&self, scope: &str) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        if !self.wire.sealed() {
            return scopes.contains(scope);
        }
        if let Some((_, held)) = self.answers.borrow().iter().find(|(n, _)| n == scope) {
            return *held;
        }
        let held = self.wire.holds(scopes, scope);
        let mut answers = self.answers.borrow_mut();
        if answers.len() == ANSWERS_KEPT {
            answers.remove(0);
        }
        answers.push((scope.to_string(), held));
        held
    }
}

/// The grant as the key directory states it now: its scopes and version.
fn read_grant(call: &Call) -> Result<(Option<Scopes>, u64), Error> {
    if !crate::sync::control::enrolled(call.conn)? {
        return Ok((None, 0));
    }
    let site = crate::sites::site_id(call.conn)?;
    Ok(crate::sync::control::load(call)?
        .grant_of(&site)
        .map_or((None, 0), |g| (Some(g.scopes.clone()), g.version)))
}

/// `ask` of the grant as kept, or as read again when the database may have changed.
fn with_grant<T>(call: &Call, ask: impl Fn(&GrantCache) -> T) -> Result<T, Error> {
    let conn = call.conn;
    let file_version = conn.file_data_version();
    let kept = call.session.grant.with(|c: Option<&mut GrantCache>| {
        let c = c?;
        (file_version.is_some() && c.file_version == file_version).then(|| ask(c))
    });
    if let Some(answer) = kept {
        return Ok(answer);
    }
    let data_version = conn
        .query_i64("PRAGMA data_version", &[])?
        .unwrap_or_default();
    let kept = call.session.grant.with(|c: Option<&mut GrantCache>| {
        let c = c?;
        (c.data_version == data_version).then(|| {
            // Only this connection committed since: the grant it kept still holds.
            c.file_version = file_version;
            ask(c)
        })
    });
    if let Some(answer) = kept {
        return Ok(answer);
    }
    let (scopes, version) = read_grant(call)?;
    let cache = GrantCache {
        file_version,
        data_version,
        scopes,
        version,
        wire: WireScopes::load(conn)?,
        answers: Default::default(),
    };
    let answer = ask(&cache);
    call.session.grant.put(cache);
    Ok(answer)
}

/// Whether this device's grant holds `scope` (every scope while no grant is known). The apply
/// asks it too, for rows that leave (`apply/exits.rs`).
pub(crate) fn granted(call: &Call, scope: &str) -> Result<bool, Error> {
    with_grant(call, |c| c.grants(scope))
}

/// The version of this device's grant (0 while no grant is known): the version the seqs
/// assigned now are written under (`streams.rs`).
pub(crate) fn grant_version(call: &Call) -> Result<u64, Error> {
    with_grant(call, |c| c.version)
}

/// How a refused value reads in the message.
fn shown(value: &Arg) -> String {
    match value {
        Arg::Null => "NULL".into(),
        Arg::Text(t) => format!("'{}'", t.chars().take(80).collect::<String>()),
        Arg::Integer(n) => format!("the integer {n}"),
        Arg::Real(_) => "a real number".into(),
        Arg::Blob(_) => "a blob".into(),
    }
}

/// `outpost_check_scope(table, column, value, inserting)`: 0 while this connection applies a
/// peer's changes, 1 when the app's write may go on, else the error that aborts it (module
/// documentation).
pub(crate) fn sql_check_scope(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    if !call.session.capturing() {
        return Ok(Value::Integer(0));
    }
    let (Arg::Text(table), Arg::Text(column)) = (&args[0], &args[1]) else {
        return Err(call.arg_error("takes the table and column names as text"));
    };
    let inserting = matches!(args[3], Arg::Integer(n) if n != 0);
    let name = match args[2] {
        Arg::Text(t) if scope::check_name(t).is_ok() => t,
        ref other => {
            return Err(Error::ScopeWrite(Box::new(ScopeWriteError::NotAName {
                table: table.to_string(),
                column: column.to_string(),
                found: shown(other),
            })))
        }
    };
    if inserting && !granted(call, name)? {
        return Err(Error::ScopeWrite(Box::new(ScopeWriteError::NotGranted {
            scope: name.to_string(),
        })));
    }
    Ok(Value::Integer(1))
}
