//! The reasons quarantine entries carry. They are part of replica state (DESIGN I1: quarantine
//! converges too), so they are the engine's texts, word for word (`sqlite-ext/src/apply.rs`).

/// A row of a table this store does not track.
pub(crate) fn unknown_table(table: &str) -> String {
    format!("unknown table \"{table}\": it is not tracked here")
}

/// A row of a table declared with another scope rule than here.
pub(crate) fn scope_differs(table: &str, there: &str, here: &str) -> String {
    format!("table \"{table}\" has {there} in the batch but {here} here")
}

/// A key with another number of columns than the table's.
pub(crate) const KEY_SHAPE: &str = "primary key shape differs from this database's";

/// Cells of columns this store lacks.
pub(crate) fn unknown_columns(columns: &[String], table: &str) -> String {
    format!(
        "unknown column(s) {} of \"{table}\": kept until the column exists",
        columns.join(", ")
    )
}

/// A cell whose payload is of another kind than its column's strategy here.
pub(crate) fn strategy_differs(column: &str, table: &str, strategy: &str) -> String {
    format!(
        "column {column} of \"{table}\" merges as {strategy} here but the change is of another kind"
    )
}

/// A row referencing a parent this store lacks.
pub(crate) const PARENT_MISSING: &str =
    "parent row missing: a referenced row does not exist here (yet)";

/// A delete of a row that live rows still reference, in a store that cannot write changes of
/// its own ([`crate::Store::restore`]'s default): the row is kept and the delete set aside.
pub(crate) const DELETE_HAS_CHILDREN: &str =
    "delete of a row that still has child rows: row kept (this store cannot re-send it as its own write)";

/// What a person is told of a row a delete met with live children: kept and re-sent (the
/// engine's event text, `sqlite-ext/src/apply.rs`).
pub(crate) const KEPT_FOR_CHILDREN: &str =
    "delete of a row that still has child rows: row kept and re-sent";

/// What a person is told of a parent restored for a child (the engine's event text,
/// `sqlite-ext/src/apply/restore.rs`).
pub(crate) const RESTORED_FOR_CHILD: &str =
    "a child row was added or changed elsewhere while this row was deleted: row restored";
