//! `outpost_resolve`: a person's choice for a `review` cell with siblings.
//!
//! The chosen value is written to the app row as a new local write whose context covers every
//! sibling this database holds, so it supersedes exactly the siblings the person saw (a sibling
//! arriving later stays a conflict). It is recorded even when the value equals the one shown.

use crate::error::Error;
use crate::functions::{Arg, Call};
use crate::schema::{self, quote};
use crate::triggers::OP_UPDATE;
use outpost_protocol::Value;

/// `outpost_resolve(id, value)`.
pub(crate) fn sql_resolve(call: &Call, args: &[Arg]) -> Result<Value, Error> {
    let Arg::Integer(id) = args[0] else {
        return Err(call.arg_error("the first argument is a conflict id from outpost_conflicts"));
    };
    if !call.conn.autocommit() {
        return Err(Error::InTransaction("outpost_resolve"));
    }
    schema::ensure(call.conn)?;
    let conn = call.conn;
    conn.exec("SAVEPOINT outpost_resolve")?;
    let r = (|| {
        crate::fold::fold(call)?;
        let mut s =
            conn.prepare("SELECT tbl_id, key, col FROM _outpost_conflict_rows WHERE id = ?1")?;
        s.bind_i64(1, id)?;
        if !s.step()? {
            return Err(call.arg_error(format!("no conflict with id {id} (see outpost_conflicts)")));
        }
        let (tbl, key, col) = (s.i64(0), s.blob(1), s.i64(2) as usize);
        drop(s);
        let t = schema::load_tracked(conn)?
            .into_iter()
            .find(|t| t.id == tbl)
            .ok_or_else(|| Error::Internal("conflict of an untracked table".into()))?;
        let key_vals = crate::keys::unpack(&key)?;
        let w: Vec<String> = t
            .def
            .pk
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", quote(c), i + 2))
            .collect();
        {
            let _quiet = call.session.suppress();
            let mut u = conn.prepare(&format!(
                "UPDATE {} SET {} = ?1 WHERE {}",
                quote(&t.def.name),
                quote(&t.def.columns[col].name),
                w.join(" AND ")
            ))?;
            u.bind_arg(1, args[1])?;
            for (i, v) in key_vals.iter().enumerate() {
                u.bind(i + 2, v)?;
            }
            u.run()?;
        }
        let hlc = call.session.clock.tick(conn)?;
        let mut l = conn.prepare("INSERT INTO _outpost_log(tbl, key, op, hlc, mask, vals) VALUES (?1, ?2, ?3, ?4, ?5, NULL)")?;
        l.bind_i64(1, tbl)?;
        l.bind_blob(2, &key)?;
        l.bind_i64(3, OP_UPDATE)?;
        l.bind_i64(4, hlc as i64)?;
        l.bind_i64(5, 1i64 << col)?;
        l.run()?;
        drop(l);
        crate::fold::fold(call)?;
        Ok(Value::Integer(1))
    })();
    schema::finish_savepoint(conn, "outpost_resolve", r)
}
