//! The core's decisions one by one, on a store held in memory (a third store of the trait, as
//! small as one can be: maps of rows and states), where the differential test against the engine
//! (`cloud/tests/cloud_postgres_apply.rs`) would need many random seeds to meet them.

use outpost_apply_core::{
    apply_batch, ApplyError, Column, Parent, Quarantined, RowState, Stats, Store, Table, Written,
};
use outpost_protocol::batch::{
    Batch, BatchHeader, CellChange, CellPayload, ColumnSchema, Compression, ForeignKey, RowChange,
    TableChanges, TableSchema,
};
use outpost_protocol::merge::{CounterCell, ReviewCell};
use outpost_protocol::{Hlc, SeqRange, SiteId, Strategy, StreamId, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;

type Key = Vec<Value>;

/// A store in memory: app rows by table and key (value columns by index), merge state beside.
#[derive(Default)]
struct Memory {
    tables: Vec<Table>,
    rows: BTreeMap<(i64, String), (Key, BTreeMap<usize, Value>)>,
    states: BTreeMap<(i64, String), RowState>,
    counters: BTreeMap<(i64, String, usize), CounterCell>,
    reviews: BTreeMap<(i64, String, usize), ReviewCell>,
    conflicts: BTreeMap<(i64, String, usize), usize>,
    quarantine: Vec<(String, Key, String)>,
    vector: BTreeMap<StreamId, u64>,
    clock: u64,
    /// Values the app table refuses (a CHECK), with the reason it gives.
    refuse: Option<(Value, String)>,
}

fn k(key: &[Value]) -> String {
    format!("{key:?}")
}

impl Memory {
    fn value(&self, t: i64, key: &[Value], col: usize) -> Option<Value> {
        self.rows
            .get(&(t, k(key)))
            .map(|(_, r)| r.get(&col).cloned().unwrap_or(Value::Null))
    }
}

impl Store for Memory {
    type Error = Infallible;
    fn site(&self) -> SiteId {
        SiteId([0xee; 16])
    }
    fn tables(&mut self) -> Result<Vec<Table>, Infallible> {
        Ok(self.tables.clone())
    }
    fn covered(&mut self, s: &StreamId) -> Result<u64, Infallible> {
        Ok(self.vector.get(s).copied().unwrap_or(0))
    }
    fn advance(&mut self, s: &StreamId, hi: u64) -> Result<(), Infallible> {
        let v = self.vector.entry(s.clone()).or_default();
        *v = (*v).max(hi);
        Ok(())
    }
    fn row(&mut self, t: &Table, key: &[Value]) -> Result<Option<RowState>, Infallible> {
        Ok(self.states.get(&(t.id, k(key))).cloned())
    }
    fn put_row(&mut self, t: &Table, key: &[Value], st: &RowState) -> Result<(), Infallible> {
        self.states.insert((t.id, k(key)), st.clone());
        Ok(())
    }
    fn counter(&mut self, t: &Table, key: &[Value], c: usize) -> Result<CounterCell, Infallible> {
        Ok(self
            .counters
            .get(&(t.id, k(key), c))
            .cloned()
            .unwrap_or_default())
    }
    fn put_counter(
        &mut self,
        t: &Table,
        key: &[Value],
        c: usize,
        v: &CounterCell,
    ) -> Result<(), Infallible> {
        self.counters.insert((t.id, k(key), c), v.clone());
        Ok(())
    }
    fn review(&mut self, t: &Table, key: &[Value], c: usize) -> Result<ReviewCell, Infallible> {
        Ok(self
            .reviews
            .get(&(t.id, k(key), c))
            .cloned()
            .unwrap_or_default())
    }
    fn put_review(
        &mut self,
        t: &Table,
        key: &[Value],
        c: usize,
        v: &ReviewCell,
    ) -> Result<(), Infallible> {
        self.reviews.insert((t.id, k(key), c), v.clone());
        if v.siblings().len() > 1 {
            self.conflicts.insert((t.id, k(key), c), v.siblings().len());
        } else {
            self.conflicts.remove(&(t.id, k(key), c));
        }
        Ok(())
    }
    fn write_row(
        &mut self,
        t: &Table,
        key: &[Value],
        _fresh: bool,
        writes: &[(usize, &Value)],
    ) -> Result<Written, Infallible> {
        if let Some((bad, why)) = &self.refuse {
            if writes.iter().any(|(_, v)| *v == bad) {
                return Ok(Written::Refused(why.clone()));
            }
        }
        let (_, row) = self
            .rows
            .entry((t.id, k(key)))
            .or_insert_with(|| (key.to_vec(), BTreeMap::new()));
        for (c, v) in writes {
            row.insert(*c, (*v).clone());
        }
        Ok(Written::Done)
    }
    fn delete_row(&mut self, t: &Table, key: &[Value]) -> Result<(), Infallible> {
        self.rows.remove(&(t.id, k(key)));
        Ok(())
    }
    fn row_exists(
        &mut self,
        t: &Table,
        columns: &[String],
        values: &[Value],
    ) -> Result<bool, Infallible> {
        Ok(self.rows.iter().any(|((id, _), (key, row))| {
            *id == t.id
                && columns.iter().zip(values).all(|(c, v)| {
                    match t.key.iter().position(|x| x == c) {
                        Some(i) => key.get(i) == Some(v),
                        None => t.column_index(c).and_then(|i| row.get(&i)) == Some(v),
                    }
                })
        }))
    }
    fn quarantine(&mut self, q: Quarantined<'_>) -> Result<(), Infallible> {
        let e = (
            q.table.name.clone(),
            q.row.key.clone(),
            q.reason.to_string(),
        );
        if !self.quarantine.contains(&e) {
            self.quarantine.push(e);
        }
        Ok(())
    }
    fn observe_clock(&mut self, hlc: Hlc) -> Result<(), Infallible> {
        self.clock = self.clock.max(hlc.as_u64());
        Ok(())
    }
}

const PATIENTS: i64 = 1;
const VISITS: i64 = 2;

/// patients(id; name lww, n counter, notes review), visits(id; patient_id → patients).
fn store() -> Memory {
    let col = |name: &str, strategy| Column {
        name: name.into(),
        strategy,
    };
    Memory {
        tables: vec![
            Table {
                id: PATIENTS,
                name: "patients".into(),
                key: vec!["id".into()],
                columns: vec![
                    col("name", Strategy::Lww),
                    col("n", Strategy::Counter),
                    col("notes", Strategy::Review),
                ],
                scope: None,
                parents: vec![],
            },
            Table {
                id: VISITS,
                name: "visits".into(),
                key: vec!["id".into()],
                columns: vec![col("patient_id", Strategy::Lww)],
                scope: None,
                parents: vec![Parent {
                    table: "patients".into(),
                    columns: vec!["patient_id".into()],
                    parent_columns: vec![],
                }],
            },
        ],
        ..Memory::default()
    }
}

fn schema(name: &str, cols: &[(&str, Strategy)]) -> TableSchema {
    let mut columns = vec![ColumnSchema {
        name: "id".into(),
        decl_type: "TEXT".into(),
        strategy: Strategy::Lww,
        not_null: true,
    }];
    columns.extend(cols.iter().map(|(n, s)| ColumnSchema {
        name: (*n).into(),
        decl_type: "".into(),
        strategy: *s,
        not_null: false,
    }));
    TableSchema {
        name: name.into(),
        columns,
        primary_key: vec![0],
        foreign_keys: vec![],
        scope: None,
    }
}

fn patients() -> TableSchema {
    schema(
        "patients",
        &[
            ("name", Strategy::Lww),
            ("n", Strategy::Counter),
            ("notes", Strategy::Review),
        ],
    )
}

fn visits() -> TableSchema {
    let mut t = schema("visits", &[("patient_id", Strategy::Lww)]);
    t.foreign_keys.push(ForeignKey {
        columns: vec![1],
        parent: "patients".into(),
        parent_columns: vec![],
    });
    t
}

fn site(n: u8) -> SiteId {
    SiteId([n; 16])
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn cell(column: u16, hlc: u64, payload: CellPayload) -> CellChange {
    CellChange {
        column,
        hlc: Hlc::from_u64(hlc),
        payload,
    }
}

fn row(id: &str, existence: u64, cells: Vec<CellChange>) -> RowChange {
    RowChange {
        key: vec![text(id)],
        existence,
        cells,
    }
}

/// A batch of `origin`'s seqs `lo..=hi` with `groups` (table, rows).
fn batch(origin: u8, lo: u64, hi: u64, groups: Vec<(TableSchema, Vec<RowChange>)>) -> Batch {
    let tables: Vec<TableSchema> = groups.iter().map(|(t, _)| t.clone()).collect();
    let header = BatchHeader::crafted(
        site(origin),
        SeqRange::new(lo, hi).unwrap(),
        Hlc::from_u64(1),
        tables,
        Compression::None,
        0,
    );
    Batch {
        header,
        tables: groups
            .into_iter()
            .enumerate()
            .map(|(i, (_, rows))| TableChanges {
                table: i as u16,
                credit: None,
                rows,
            })
            .collect(),
    }
}

fn apply(m: &mut Memory, b: &Batch) -> Stats {
    apply_batch(m, b).unwrap()
}

#[test]
fn a_replayed_batch_changes_nothing_and_one_past_a_gap_is_refused() {
    let mut m = store();
    let b = batch(
        1,
        1,
        1,
        vec![(
            patients(),
            vec![row(
                "p1",
                1,
                vec![cell(0, 10, CellPayload::Value(text("Asha")))],
            )],
        )],
    );
    assert_eq!(apply(&mut m, &b).applied, 2);
    let again = apply(&mut m, &b);
    assert_eq!((again.applied, again.unchanged), (0, 1));
    let gap = batch(1, 3, 3, vec![]);
    assert!(matches!(apply_batch(&mut m, &gap), Err(ApplyError::Gap(_))));
    let own = batch(0xee, 1, 1, vec![]);
    assert!(matches!(
        apply_batch(&mut m, &own),
        Err(ApplyError::OwnOrigin(_))
    ));
    assert_eq!(m.clock, 10, "the largest clock received is observed");
}

#[test]
fn the_later_write_wins_whichever_arrives_first() {
    for first_newer in [false, true] {
        let mut m = store();
        let older = batch(
            1,
            1,
            1,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(0, 10, CellPayload::Value(text("old")))],
                )],
            )],
        );
        let newer = batch(
            2,
            1,
            1,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(0, 20, CellPayload::Value(text("new")))],
                )],
            )],
        );
        let order = if first_newer {
            [&newer, &older]
        } else {
            [&older, &newer]
        };
        for b in order {
            apply(&mut m, b);
        }
        assert_eq!(m.value(PATIENTS, &[text("p1")], 0), Some(text("new")));
    }
}

#[test]
fn an_update_never_revives_a_deleted_row_and_a_reinsert_starts_a_new_epoch() {
    let mut m = store();
    let key = [text("p1")];
    apply(
        &mut m,
        &batch(
            1,
            1,
            1,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(0, 10, CellPayload::Value(text("a")))],
                )],
            )],
        ),
    );
    apply(
        &mut m,
        &batch(2, 1, 1, vec![(patients(), vec![row("p1", 2, vec![])])]),
    );
    assert_eq!(m.value(PATIENTS, &key, 0), None, "deleted");
    // An update made before the delete, arriving after it.
    apply(
        &mut m,
        &batch(
            1,
            2,
            2,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(0, 30, CellPayload::Value(text("late")))],
                )],
            )],
        ),
    );
    assert_eq!(
        m.value(PATIENTS, &key, 0),
        None,
        "an update does not revive"
    );
    // A re-insert: a new epoch, without the old epoch's cells.
    apply(
        &mut m,
        &batch(
            3,
            1,
            1,
            vec![(
                patients(),
                vec![row("p1", 3, vec![cell(1, 40, CellPayload::Counter(5))])],
            )],
        ),
    );
    assert_eq!(m.value(PATIENTS, &key, 0), Some(Value::Null));
    assert_eq!(m.value(PATIENTS, &key, 1), Some(Value::Integer(5)));
    assert_eq!(m.states[&(PATIENTS, k(&key))].exist, 3);
}

#[test]
fn concurrent_counter_contributions_add_and_replays_count_once() {
    let mut m = store();
    let key = [text("p1")];
    let from = |s: u8, seq: u64, hlc: u64, total: i64| {
        batch(
            s,
            seq,
            seq,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(1, hlc, CellPayload::Counter(total))],
                )],
            )],
        )
    };
    apply(&mut m, &from(1, 1, 10, 1));
    apply(&mut m, &from(2, 1, 11, 1));
    assert_eq!(m.value(PATIENTS, &key, 1), Some(Value::Integer(2)));
    apply(&mut m, &from(1, 2, 20, 3)); // site 1's whole contribution is now 3
    apply(&mut m, &from(1, 2, 20, 3));
    assert_eq!(m.value(PATIENTS, &key, 1), Some(Value::Integer(4)));
}

#[test]
fn concurrent_review_writes_are_a_conflict_until_one_supersedes_them() {
    let mut m = store();
    let key = [text("p1")];
    let write = |s: u8, hlc: u64, v: &str, context: Vec<(SiteId, Hlc)>| {
        batch(
            s,
            1,
            1,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(
                        2,
                        hlc,
                        CellPayload::Review {
                            value: text(v),
                            context,
                        },
                    )],
                )],
            )],
        )
    };
    assert_eq!(apply(&mut m, &write(1, 10, "a", vec![])).conflicts, 0);
    assert_eq!(apply(&mut m, &write(2, 11, "b", vec![])).conflicts, 1);
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(
        m.value(PATIENTS, &key, 2),
        Some(text("b")),
        "the greatest sibling is shown"
    );
    let resolution = write(
        3,
        12,
        "a+b",
        vec![(site(1), Hlc::from_u64(10)), (site(2), Hlc::from_u64(11))],
    );
    apply(&mut m, &resolution);
    assert!(m.conflicts.is_empty());
    assert_eq!(m.value(PATIENTS, &key, 2), Some(text("a+b")));
}

#[test]
fn a_reinsert_drops_the_review_siblings_of_the_epoch_before() {
    let mut m = store();
    let write = |s: u8, seq: u64, hlc: u64, v: &str| {
        batch(
            s,
            seq,
            seq,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    1,
                    vec![cell(
                        2,
                        hlc,
                        CellPayload::Review {
                            value: text(v),
                            context: vec![],
                        },
                    )],
                )],
            )],
        )
    };
    apply(&mut m, &write(1, 1, 10, "a"));
    apply(&mut m, &write(2, 1, 11, "b"));
    assert_eq!(m.conflicts.len(), 1);
    apply(
        &mut m,
        &batch(
            3,
            1,
            1,
            vec![(
                patients(),
                vec![row(
                    "p1",
                    3,
                    vec![cell(0, 30, CellPayload::Value(text("again")))],
                )],
            )],
        ),
    );
    assert!(m.conflicts.is_empty(), "the conflict died with its epoch");
}

#[test]
fn a_child_without_its_parent_is_quarantined_and_a_delete_meeting_children_keeps_the_row() {
    let mut m = store();
    let child =
        |id: &str, parent: &str| row(id, 1, vec![cell(0, 10, CellPayload::Value(text(parent)))]);
    let s = apply(
        &mut m,
        &batch(1, 1, 1, vec![(visits(), vec![child("v1", "p9")])]),
    );
    assert_eq!(s.quarantined, 1);
    assert_eq!(
        m.quarantine[0].2,
        "parent row missing: a referenced row does not exist here (yet)"
    );
    assert_eq!(m.value(VISITS, &[text("v1")], 0), None);
    // Parent and child in one batch, the child's group first: parents are applied first.
    let p = row("p1", 1, vec![cell(0, 10, CellPayload::Value(text("Asha")))]);
    let s = apply(
        &mut m,
        &batch(
            2,
            1,
            1,
            vec![(visits(), vec![child("v2", "p1")]), (patients(), vec![p])],
        ),
    );
    assert_eq!(s.quarantined, 0);
    assert_eq!(m.value(VISITS, &[text("v2")], 0), Some(text("p1")));
    // Deleting the parent while v2 references it: kept, the delete set aside.
    let s = apply(
        &mut m,
        &batch(3, 1, 1, vec![(patients(), vec![row("p1", 2, vec![])])]),
    );
    assert_eq!(s.quarantined, 1);
    assert!(m.value(PATIENTS, &[text("p1")], 0).is_some());
    assert_eq!(m.states[&(PATIENTS, k(&[text("p1")]))].exist, 1);
}

#[test]
fn what_cannot_apply_is_quarantined_with_the_engines_reason() {
    let mut m = store();
    m.refuse = Some((text("bad"), "CHECK constraint failed: name".into()));
    let mut extra = patients();
    extra.columns.push(ColumnSchema {
        name: "phone".into(),
        decl_type: "TEXT".into(),
        strategy: Strategy::Lww,
        not_null: false,
    });
    let mut two_keys = patients();
    two_keys.primary_key = vec![0, 1];
    let mut other_kind = patients();
    other_kind.columns[2].strategy = Strategy::Lww;
    let b = |i: u8, t: TableSchema, r: RowChange| batch(i, 1, 1, vec![(t, vec![r])]);
    apply(&mut m, &b(1, schema("drafts", &[]), row("d1", 1, vec![])));
    apply(
        &mut m,
        &b(
            2,
            extra,
            row(
                "p1",
                1,
                vec![
                    cell(0, 5, CellPayload::Value(text("a"))),
                    cell(3, 5, CellPayload::Value(text("555"))),
                ],
            ),
        ),
    );
    apply(
        &mut m,
        &b(
            3,
            two_keys,
            RowChange {
                key: vec![text("p2"), text("x")],
                existence: 1,
                cells: vec![],
            },
        ),
    );
    apply(
        &mut m,
        &b(
            4,
            other_kind,
            row(
                "p3",
                1,
                vec![cell(1, 5, CellPayload::Value(Value::Integer(1)))],
            ),
        ),
    );
    apply(
        &mut m,
        &b(
            5,
            patients(),
            row("p4", 1, vec![cell(0, 5, CellPayload::Value(text("bad")))]),
        ),
    );
    let reasons: Vec<&str> = m.quarantine.iter().map(|(_, _, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "unknown table \"drafts\": it is not tracked here",
            "unknown column(s) phone of \"patients\": kept until the column exists",
            "primary key shape differs from this database's",
            "column n of \"patients\" merges as counter here but the change is of another kind",
            "CHECK constraint failed: name",
        ]
    );
    // The known cells of a row with unknown ones still apply.
    assert_eq!(m.value(PATIENTS, &[text("p1")], 0), Some(text("a")));
    assert_eq!(m.value(PATIENTS, &[text("p4")], 0), None);
}
