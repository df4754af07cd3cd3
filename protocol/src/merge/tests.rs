//! Tests for the merge rules.
//!
//! Each strategy is checked two ways:
//! - **Simulations**: 2 to 4 sites each hold a replica, write with their own [`Clock`] (wall
//!   readings jump around, as field clocks do) and exchange what they have seen. Every write made
//!   is then delivered to three fresh replicas, each in its own random order with random
//!   duplicates; the replicas must end identical, and equal to what an oracle computed from the
//!   history says they should hold.
//! - **Algebra**: replica states built from random parts of a simulated history merge
//!   commutatively, associatively and idempotently.
use super::Strategy as MergeStrategy;
use super::*;
use crate::hlc::Clock;
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;
use proptest::strategy::Strategy;

/// 2024-01-01T00:00:00Z.
const NOW: u64 = 1_704_067_200_000;

fn site(n: usize) -> SiteId {
    SiteId([n as u8 + 1; 16])
}

fn stamp(millis: u64, n: usize) -> Stamp {
    Stamp {
        hlc: Hlc::new(millis, 0),
        site: site(n),
    }
}

/// A wall reading: near `NOW` with jitter, sometimes an hour behind or a day ahead.
fn wall() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (NOW - 2_000)..(NOW + 2_000),
        1 => (NOW - 3_600_000)..(NOW - 3_500_000),
        1 => (NOW + 86_400_000)..(NOW + 86_500_000),
    ]
}

/// Every message at least once, some more than once, shuffled.
fn schedule(n: usize) -> BoxedStrategy<Vec<usize>> {
    if n == 0 {
        return Just(Vec::new()).boxed();
    }
    proptest::collection::vec(0..n, 0..=n)
        .prop_flat_map(move |extra| Just((0..n).chain(extra).collect::<Vec<_>>()).prop_shuffle())
        .boxed()
}

/// Some of the messages (possibly repeated), in any order: a replica that has seen part of the
/// history.
fn partial(n: usize) -> BoxedStrategy<Vec<usize>> {
    if n == 0 {
        return Just(Vec::new()).boxed();
    }
    proptest::collection::vec(0..n, 0..=2 * n).boxed()
}

/// Ops for a simulation with 2 to 4 sites, and three delivery schedules of its messages (`full`:
/// every message; otherwise a random part). `count` runs the simulation to learn how many
/// messages it makes.
fn with_schedules<O: Clone + core::fmt::Debug + 'static>(
    op: fn(usize) -> BoxedStrategy<O>,
    count: fn(usize, &[O]) -> usize,
    full: bool,
) -> impl Strategy<Value = (usize, Vec<O>, Vec<Vec<usize>>)> {
    (2usize..=4)
        .prop_flat_map(move |sites| (Just(sites), proptest::collection::vec(op(sites), 1..40)))
        .prop_flat_map(move |(sites, ops)| {
            let n = count(sites, &ops);
            let one = if full { schedule(n) } else { partial(n) };
            (Just(sites), Just(ops), proptest::collection::vec(one, 3))
        })
}

// ---------------------------------------------------------------------------------------------
// Rows: existence + last-writer-wins cells.

const COLUMNS: usize = 3;

/// What a row change carries: the writer's existence and the cells it wrote.
#[derive(Clone, Debug)]
struct RowMsg {
    existence: Existence,
    cells: Vec<(usize, CellVersion, Value)>,
    /// True for updates (they must never decide whether the row exists).
    is_update: bool,
}

/// One replica of one row.
#[derive(Clone, Debug, PartialEq, Default)]
struct Row {
    existence: Existence,
    cells: [Option<(CellVersion, Value)>; COLUMNS],
}

impl Row {
    fn apply(&mut self, msg: &RowMsg) {
        self.existence = self.existence.merge(msg.existence);
        for (col, version, value) in &msg.cells {
            if lww_wins(self.cells[*col].as_ref().map(|c| &c.0), version) {
                self.cells[*col] = Some((*version, value.clone()));
            }
        }
    }

    /// What the app table shows: `None` when the row does not exist; else each column's value,
    /// if written in the row's current epoch.
    fn visible(&self) -> Option<Vec<Option<Value>>> {
        self.existence.is_alive().then(|| {
            self.cells
                .iter()
                .map(|c| {
                    c.as_ref()
                        .filter(|(v, _)| v.is_visible(self.existence))
                        .map(|(_, x)| x.clone())
                })
                .collect()
        })
    }
}

#[derive(Clone, Debug)]
enum RowOp {
    Insert {
        site: usize,
        wall: u64,
        value: i64,
    },
    Delete {
        site: usize,
        wall: u64,
    },
    Update {
        site: usize,
        wall: u64,
        col: usize,
        value: i64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn row_op(sites: usize) -> BoxedStrategy<RowOp> {
    prop_oneof![
        1 => (0..sites, wall(), 0..100i64).prop_map(|(site, wall, value)| RowOp::Insert { site, wall, value }),
        1 => (0..sites, wall()).prop_map(|(site, wall)| RowOp::Delete { site, wall }),
        3 => (0..sites, wall(), 0..COLUMNS, 0..100i64)
            .prop_map(|(site, wall, col, value)| RowOp::Update { site, wall, col, value }),
        2 => (0..sites, 0..sites).prop_map(|(from, to)| RowOp::Sync { from, to }),
    ]
    .boxed()
}

struct RowSite {
    row: Row,
    clock: Clock,
    seen: BTreeSet<usize>,
}

/// Runs the ops. With `whole_row`, an update stamps every column with one version (`row_lww`).
/// Returns the messages made, in the order they were made.
fn simulate_rows(sites: usize, ops: &[RowOp], whole_row: bool) -> Vec<RowMsg> {
    let mut msgs: Vec<RowMsg> = Vec::new();
    let mut state: Vec<RowSite> = (0..sites)
        .map(|_| RowSite {
            row: Row::default(),
            clock: Clock::default(),
            seen: BTreeSet::new(),
        })
        .collect();
    fn emit(msgs: &mut Vec<RowMsg>, s: &mut RowSite, msg: RowMsg) {
        s.row.apply(&msg);
        s.seen.insert(msgs.len());
        msgs.push(msg);
    }
    for op in ops {
        match *op {
            RowOp::Insert {
                site: n,
                wall,
                value,
            } => {
                let s = &mut state[n];
                if s.row.existence.is_alive() {
                    continue;
                }
                let existence = s.row.existence.inserted();
                let version = CellVersion {
                    epoch: existence.0,
                    stamp: Stamp {
                        hlc: s.clock.tick(wall),
                        site: site(n),
                    },
                };
                let cells = (0..COLUMNS)
                    .map(|col| (col, version, Value::Integer(value + col as i64)))
                    .collect();
                emit(
                    &mut msgs,
                    s,
                    RowMsg {
                        existence,
                        cells,
                        is_update: false,
                    },
                );
            }
            RowOp::Delete { site: n, wall } => {
                let s = &mut state[n];
                if !s.row.existence.is_alive() {
                    continue;
                }
                s.clock.tick(wall);
                let existence = s.row.existence.deleted();
                emit(
                    &mut msgs,
                    s,
                    RowMsg {
                        existence,
                        cells: Vec::new(),
                        is_update: false,
                    },
                );
            }
            RowOp::Update {
                site: n,
                wall,
                col,
                value,
            } => {
                let s = &mut state[n];
                if !s.row.existence.is_alive() {
                    continue;
                }
                let version = CellVersion {
                    epoch: s.row.existence.0,
                    stamp: Stamp {
                        hlc: s.clock.tick(wall),
                        site: site(n),
                    },
                };
                let cols: Vec<usize> = if whole_row {
                    (0..COLUMNS).collect()
                } else {
                    vec![col]
                };
                let cells = cols
                    .into_iter()
                    .map(|c| (c, version, Value::Integer(1000 + value)))
                    .collect();
                let existence = s.row.existence;
                emit(
                    &mut msgs,
                    s,
                    RowMsg {
                        existence,
                        cells,
                        is_update: true,
                    },
                );
            }
            RowOp::Sync { from, to } => {
                let seen: Vec<usize> = state[from].seen.iter().copied().collect();
                let s = &mut state[to];
                for id in seen {
                    if s.seen.insert(id) {
                        s.row.apply(&msgs[id]);
                        for (_, v, _) in &msgs[id].cells {
                            s.clock.observe(v.stamp.hlc);
                        }
                    }
                }
            }
        }
    }
    msgs
}

fn replay_rows(msgs: &[RowMsg], order: &[usize]) -> Row {
    let mut row = Row::default();
    for &i in order {
        row.apply(&msgs[i]);
    }
    row
}

fn check_row_convergence(
    sites: usize,
    ops: &[RowOp],
    schedules: &[Vec<usize>],
    whole_row: bool,
) -> Result<(), TestCaseError> {
    let msgs = simulate_rows(sites, ops, whole_row);
    let in_order = replay_rows(&msgs, &(0..msgs.len()).collect::<Vec<_>>());
    for order in schedules {
        let replica = replay_rows(&msgs, order);
        prop_assert_eq!(&replica, &in_order, "delivery order {:?}", order);
        prop_assert_eq!(replica.visible(), in_order.visible());
    }

    // Oracle: existence is the largest causal length any insert or delete reached; updates
    // never decide it. Each column holds its greatest version.
    let decided = msgs
        .iter()
        .filter(|m| !m.is_update)
        .map(|m| m.existence)
        .max()
        .unwrap_or_default();
    prop_assert_eq!(in_order.existence, decided);
    for col in 0..COLUMNS {
        let best = msgs
            .iter()
            .flat_map(|m| m.cells.iter())
            .filter(|(c, _, _)| *c == col)
            .max_by_key(|(_, v, _)| *v);
        let best = best.map(|(_, v, x)| (*v, x.clone()));
        prop_assert_eq!(&in_order.cells[col], &best);
    }
    // A live row shows only what was written since it was last (re)created.
    if let Some(values) = in_order.visible() {
        for (col, value) in values.iter().enumerate() {
            let current = msgs
                .iter()
                .flat_map(|m| m.cells.iter())
                .filter(|(c, v, _)| *c == col && v.epoch == decided.0)
                .max_by_key(|(_, v, _)| *v)
                .map(|(_, _, x)| x);
            prop_assert_eq!(value.as_ref(), current);
        }
    }
    if whole_row {
        // The whole row follows one writer.
        let versions: BTreeSet<CellVersion> =
            in_order.cells.iter().flatten().map(|(v, _)| *v).collect();
        prop_assert!(versions.len() <= 1, "row mixes writers: {:?}", versions);
    }
    Ok(())
}

fn count_rows_lww(sites: usize, ops: &[RowOp]) -> usize {
    simulate_rows(sites, ops, false).len()
}

fn count_rows_row_lww(sites: usize, ops: &[RowOp]) -> usize {
    simulate_rows(sites, ops, true).len()
}

/// A cell state merged by [`lww_wins`].
fn lww_merge(
    a: &Option<(CellVersion, Value)>,
    b: &Option<(CellVersion, Value)>,
) -> Option<(CellVersion, Value)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if lww_wins(Some(&x.0), &y.0) { y } else { x }.clone()),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    }
}

/// A cell state: a version and the value it wrote (equal versions are the same write, so they
/// carry the same value).
fn lww_cell() -> impl Strategy<Value = Option<(CellVersion, Value)>> {
    proptest::option::of(
        (0u64..3, 0u64..4, 0u16..3, 0usize..3).prop_map(|(e, ms, c, n)| {
            let version = CellVersion {
                epoch: 2 * e + 1,
                stamp: Stamp {
                    hlc: Hlc::new(NOW + ms, c),
                    site: site(n),
                },
            };
            let value = Value::Integer((e * 1000 + ms * 100 + c as u64 * 10 + n as u64) as i64);
            (version, value)
        }),
    )
}

proptest! {
    #[test]
    fn lww_replicas_converge_whatever_the_delivery_order(
        (sites, ops, schedules) in with_schedules(row_op, count_rows_lww, true),
    ) {
        check_row_convergence(sites, &ops, &schedules, false)?;
    }

    #[test]
    fn row_lww_replicas_converge_and_follow_one_writer(
        (sites, ops, schedules) in with_schedules(row_op, count_rows_row_lww, true),
    ) {
        check_row_convergence(sites, &ops, &schedules, true)?;
    }

    #[test]
    fn lww_merge_is_commutative_associative_idempotent(
        a in lww_cell(), b in lww_cell(), c in lww_cell(),
    ) {
        prop_assert_eq!(lww_merge(&a, &b), lww_merge(&b, &a));
        prop_assert_eq!(lww_merge(&lww_merge(&a, &b), &c), lww_merge(&a, &lww_merge(&b, &c)));
        prop_assert_eq!(lww_merge(&a, &a), a.clone());
        // A replay of the current write changes nothing.
        if let Some((v, _)) = &a {
            prop_assert!(!lww_wins(Some(v), v));
        }
    }

    #[test]
    fn existence_merge_is_the_larger_causal_length(
        a in 0u64..1_000, b in 0u64..1_000, c in 0u64..1_000,
    ) {
        let (a, b, c) = (Existence(a), Existence(b), Existence(c));
        prop_assert_eq!(a.merge(b), core::cmp::max(a, b));
        prop_assert_eq!(a.merge(b), b.merge(a));
        prop_assert_eq!(a.merge(b).merge(c), a.merge(b.merge(c)));
        prop_assert_eq!(a.merge(a), a);
    }
}

fn v(epoch: u64, millis: u64, n: usize) -> CellVersion {
    CellVersion {
        epoch,
        stamp: stamp(millis, n),
    }
}

#[test]
fn two_devices_editing_different_fields_both_keep_their_edit() {
    let a = RowMsg {
        existence: Existence(1),
        cells: vec![(0, v(1, NOW, 0), Value::Integer(10))],
        is_update: true,
    };
    let b = RowMsg {
        existence: Existence(1),
        cells: vec![(1, v(1, NOW - 5, 1), Value::Integer(20))],
        is_update: true,
    };
    for msgs in [[&a, &b], [&b, &a]] {
        let mut row = Row {
            existence: Existence(1),
            ..Row::default()
        };
        for m in msgs {
            row.apply(m);
        }
        assert_eq!(
            row.visible(),
            Some(vec![
                Some(Value::Integer(10)),
                Some(Value::Integer(20)),
                None
            ])
        );
    }
}

#[test]
fn equal_clocks_are_broken_by_site_id() {
    let low = v(1, NOW, 0);
    let high = v(1, NOW, 1);
    assert!(lww_wins(Some(&low), &high));
    assert!(!lww_wins(Some(&high), &low));
    assert!(lww_wins(None, &low));
}

#[test]
fn an_update_concurrent_with_a_delete_never_revives_the_row() {
    let insert = RowMsg {
        existence: Existence(1),
        cells: vec![(0, v(1, NOW, 0), Value::Integer(1))],
        is_update: false,
    };
    let delete = RowMsg {
        existence: Existence(2),
        cells: Vec::new(),
        is_update: false,
    };
    // The update's clock is a day ahead of the delete's: clocks do not decide existence.
    let update = RowMsg {
        existence: Existence(1),
        cells: vec![(0, v(1, NOW + 86_400_000, 1), Value::Integer(2))],
        is_update: true,
    };
    for order in [
        [&insert, &delete, &update],
        [&insert, &update, &delete],
        [&update, &delete, &insert],
    ] {
        let mut row = Row::default();
        for m in order {
            row.apply(m);
        }
        assert_eq!(row.existence, Existence(2));
        assert_eq!(row.visible(), None);
    }
}

#[test]
fn cells_written_before_a_delete_do_not_reappear_after_a_reinsert() {
    let insert = RowMsg {
        existence: Existence(1),
        cells: (0..COLUMNS)
            .map(|c| (c, v(1, NOW, 0), Value::Integer(1)))
            .collect(),
        is_update: false,
    };
    // Written before the delete by a device whose clock is a day ahead.
    let stale = RowMsg {
        existence: Existence(1),
        cells: vec![(1, v(1, NOW + 86_400_000, 1), Value::Text("old".into()))],
        is_update: true,
    };
    let delete = RowMsg {
        existence: Existence(2),
        cells: Vec::new(),
        is_update: false,
    };
    let reinsert = RowMsg {
        existence: Existence(3),
        cells: (0..COLUMNS)
            .map(|c| (c, v(3, NOW + 10, 0), Value::Text("new".into())))
            .collect(),
        is_update: false,
    };
    let want = Some(vec![Some(Value::Text("new".into())); COLUMNS]);
    for order in [
        [&insert, &stale, &delete, &reinsert],
        [&insert, &delete, &reinsert, &stale],
        [&stale, &reinsert, &delete, &insert],
    ] {
        let mut row = Row::default();
        for m in order {
            row.apply(m);
        }
        assert_eq!(row.existence, Existence(3));
        assert_eq!(row.visible(), want);
    }

    // A re-created row whose insert did not write a column does not show the old value either.
    let mut row = Row::default();
    row.apply(&insert);
    row.apply(&stale);
    row.apply(&delete);
    row.apply(&RowMsg {
        existence: Existence(3),
        cells: vec![(0, v(3, NOW + 10, 0), Value::Text("new".into()))],
        is_update: false,
    });
    assert_eq!(
        row.visible(),
        Some(vec![Some(Value::Text("new".into())), None, None])
    );
}

#[test]
fn existence_counts_inserts_and_deletes() {
    let unseen = Existence::default();
    assert!(!unseen.is_alive());
    let alive = unseen.inserted();
    assert_eq!(alive, Existence(1));
    assert_eq!(alive.inserted(), alive);
    let dead = alive.deleted();
    assert_eq!(dead, Existence(2));
    assert_eq!(dead.deleted(), dead);
    assert_eq!(dead.inserted(), Existence(3));
    // A delete and a concurrent delete-and-reinsert: the re-insert, which saw more, wins.
    assert!(dead.merge(Existence(3)).is_alive());
}

// ---------------------------------------------------------------------------------------------
// Counters.

/// A counter change: the writer's existence and, unless it only re-created the row, its new
/// contribution.
#[derive(Clone, Debug)]
struct CounterMsg {
    existence: Existence,
    contribution: Option<Contribution>,
    /// The delta the op added (for the oracle).
    delta: i64,
}

#[derive(Clone, Debug, PartialEq, Default)]
struct CounterRow {
    existence: Existence,
    cell: CounterCell,
}

impl CounterRow {
    fn apply(&mut self, msg: &CounterMsg) {
        self.existence = self.existence.merge(msg.existence);
        if let Some(c) = msg.contribution {
            self.cell.merge(c);
        }
    }

    fn value(&self) -> i64 {
        self.cell.value(self.existence.0)
    }
}

#[derive(Clone, Debug)]
enum CounterOp {
    Add {
        site: usize,
        wall: u64,
        delta: i64,
    },
    /// Delete and insert again: the row starts a new life.
    Recreate {
        site: usize,
        wall: u64,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn counter_op(sites: usize) -> BoxedStrategy<CounterOp> {
    prop_oneof![
        6 => (0..sites, wall(), prop_oneof![Just(1i64), Just(-1i64), -50i64..50])
            .prop_map(|(site, wall, delta)| CounterOp::Add { site, wall, delta }),
        1 => (0..sites, wall()).prop_map(|(site, wall)| CounterOp::Recreate { site, wall }),
        3 => (0..sites, 0..sites).prop_map(|(from, to)| CounterOp::Sync { from, to }),
    ]
    .boxed()
}

fn simulate_counter(sites: usize, ops: &[CounterOp]) -> Vec<CounterMsg> {
    let mut msgs: Vec<CounterMsg> = Vec::new();
    let mut rows: Vec<(CounterRow, Clock, BTreeSet<usize>)> = (0..sites)
        .map(|_| {
            let row = CounterRow {
                existence: Existence(1),
                ..CounterRow::default()
            };
            (row, Clock::default(), BTreeSet::new())
        })
        .collect();
    for op in ops {
        match *op {
            CounterOp::Add {
                site: n,
                wall,
                delta,
            } => {
                let (row, clock, seen) = &mut rows[n];
                let hlc = clock.tick(wall);
                let before = row.value();
                let c = row.cell.add_local(site(n), row.existence.0, hlc, delta);
                assert_eq!(
                    row.value(),
                    before.wrapping_add(delta),
                    "a local delta shows at once"
                );
                seen.insert(msgs.len());
                msgs.push(CounterMsg {
                    existence: row.existence,
                    contribution: Some(c),
                    delta,
                });
            }
            CounterOp::Recreate { site: n, wall } => {
                let (row, clock, seen) = &mut rows[n];
                clock.tick(wall);
                row.existence = row.existence.deleted().inserted();
                assert_eq!(row.value(), 0, "a re-created row starts at 0");
                seen.insert(msgs.len());
                msgs.push(CounterMsg {
                    existence: row.existence,
                    contribution: None,
                    delta: 0,
                });
            }
            CounterOp::Sync { from, to } => {
                let ids: Vec<usize> = rows[from].2.iter().copied().collect();
                let (row, clock, seen) = &mut rows[to];
                for id in ids {
                    if seen.insert(id) {
                        row.apply(&msgs[id]);
                        if let Some(c) = msgs[id].contribution {
                            clock.observe(c.hlc);
                        }
                    }
                }
            }
        }
    }
    msgs
}

fn count_counter(sites: usize, ops: &[CounterOp]) -> usize {
    simulate_counter(sites, ops).len()
}

fn replay_counter(msgs: &[CounterMsg], order: &[usize]) -> CounterRow {
    let mut row = CounterRow {
        existence: Existence(1),
        ..CounterRow::default()
    };
    for &i in order {
        row.apply(&msgs[i]);
    }
    row
}

fn counter_cell(msgs: &[CounterMsg], order: &[usize]) -> CounterCell {
    replay_counter(msgs, order).cell
}

proptest! {
    #[test]
    fn counters_count_every_delta_once_whatever_the_delivery_order(
        (sites, ops, schedules) in with_schedules(counter_op, count_counter, true),
    ) {
        let msgs = simulate_counter(sites, &ops);
        let epoch = msgs.iter().map(|m| m.existence).max().unwrap_or(Existence(1));
        // Oracle: the sum of the deltas made in the row's current life.
        let want = msgs
            .iter()
            .filter(|m| m.existence == epoch)
            .fold(0i64, |s, m| s.wrapping_add(m.delta));
        let first = replay_counter(&msgs, &schedules[0]);
        prop_assert_eq!(first.existence, epoch);
        prop_assert_eq!(first.value(), want);
        for order in &schedules[1..] {
            prop_assert_eq!(&replay_counter(&msgs, order), &first);
        }
    }

    #[test]
    fn counter_merge_is_commutative_associative_idempotent(
        (sites, ops, parts) in with_schedules(counter_op, count_counter, false),
    ) {
        let msgs = simulate_counter(sites, &ops);
        let [a, b, c] = [0, 1, 2].map(|i| counter_cell(&msgs, &parts[i]));
        let join = |x: &CounterCell, y: &CounterCell| {
            let mut out = x.clone();
            out.merge_cell(y);
            out
        };
        prop_assert_eq!(join(&a, &b), join(&b, &a));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        prop_assert_eq!(join(&a, &a), a.clone());
        let mut again = join(&a, &b);
        prop_assert!(!again.merge_cell(&b), "merging what is held again reports no change");
        // Contributions stay sorted by site, one per site.
        prop_assert!(again.contributions().windows(2).all(|w| w[0].site < w[1].site));
    }
}

#[test]
fn concurrent_increments_on_two_tablets_add_once() {
    let mut a = CounterCell::new();
    let mut b = CounterCell::new();
    let ca = a.add_local(site(0), 1, Hlc::new(NOW, 0), 1);
    let cb = b.add_local(site(1), 1, Hlc::new(NOW, 0), 1);
    // Each contribution replayed any number of times, in either order.
    for order in [
        vec![ca, cb],
        vec![cb, ca],
        vec![ca, ca, cb, ca],
        vec![cb, cb, cb, ca, cb],
    ] {
        let mut hub = CounterCell::new();
        for c in order {
            hub.merge(c);
        }
        assert_eq!(hub.value(1), 2);
    }
    a.merge(cb);
    b.merge(ca);
    assert_eq!(a, b);
    assert_eq!(a.value(1), 2);
}

#[test]
fn an_older_contribution_arriving_late_changes_nothing() {
    let mut tablet = CounterCell::new();
    let first = tablet.add_local(site(0), 1, Hlc::new(NOW, 0), 1);
    let second = tablet.add_local(site(0), 1, Hlc::new(NOW, 1), 1);
    assert_eq!(second.total, 2);
    let mut hub = CounterCell::new();
    assert!(hub.merge(second));
    assert!(!hub.merge(first));
    assert!(!hub.merge(second));
    assert_eq!(hub.value(1), 2);
}

#[test]
fn negative_deltas_subtract() {
    let mut a = CounterCell::new();
    let mut b = CounterCell::new();
    a.add_local(site(0), 1, Hlc::new(NOW, 0), 5);
    b.add_local(site(1), 1, Hlc::new(NOW, 0), -3);
    a.add_local(site(0), 1, Hlc::new(NOW, 1), -1);
    a.merge_cell(&b);
    b.merge_cell(&a);
    assert_eq!(a.value(1), 1);
    assert_eq!(b.value(1), 1);
    assert_eq!(a, b);
}

#[test]
fn a_recreated_row_counts_from_zero() {
    let mut a = CounterCell::new();
    let mut b = CounterCell::new();
    a.add_local(site(0), 1, Hlc::new(NOW, 0), 5);
    b.add_local(site(1), 1, Hlc::new(NOW, 0), 7);
    a.merge_cell(&b);
    assert_eq!(a.value(1), 12);

    // Deleted and inserted again: epoch 3.
    assert_eq!(a.value(3), 0);
    let fresh = a.add_local(site(0), 3, Hlc::new(NOW, 5), 2);
    assert_eq!(
        fresh.total, 2,
        "the new life does not inherit the old total"
    );
    assert_eq!(a.value(3), 2);

    // A late +1 from the old life (the other tablet had not seen the delete) does not count.
    let late = b.add_local(site(1), 1, Hlc::new(NOW + 9, 0), 1);
    a.merge(late);
    assert_eq!(a.value(3), 2);
    // Once that tablet learns of the new life, its deltas count from 0 there.
    b.merge_cell(&a);
    b.add_local(site(1), 3, Hlc::new(NOW + 10, 0), 1);
    a.merge_cell(&b);
    assert_eq!(a.value(3), 3);
    assert_eq!(b.value(3), 3);
}

// ---------------------------------------------------------------------------------------------
// Review cells.

#[derive(Clone, Debug)]
enum ReviewOp {
    Write {
        site: usize,
        wall: u64,
        value: i64,
    },
    /// Delete and insert again: later writes of this site belong to a new epoch.
    Recreate {
        site: usize,
    },
    /// `to` receives what `from` has received: all of it, or (`skip` > 1) only part, so that
    /// sites also hold writes whose causal past they have not received.
    Sync {
        from: usize,
        to: usize,
        skip: usize,
    },
}

fn review_op(sites: usize) -> BoxedStrategy<ReviewOp> {
    prop_oneof![
        4 => (0..sites, wall(), 0..5i64).prop_map(|(site, wall, value)| ReviewOp::Write { site, wall, value }),
        1 => (0..sites).prop_map(|site| ReviewOp::Recreate { site }),
        4 => (0..sites, 0..sites, prop_oneof![3 => Just(0usize), 1 => 2usize..4])
            .prop_map(|(from, to, skip)| ReviewOp::Sync { from, to, skip }),
    ]
    .boxed()
}

/// The writes a simulation made, with the ids of the writes each writer had received when it
/// wrote (its causal past).
#[derive(Debug)]
struct ReviewHistory {
    writes: Vec<ReviewWrite>,
    past: Vec<BTreeSet<usize>>,
    /// Each site's cell after the simulation.
    cells: Vec<ReviewCell>,
}

struct ReviewSite {
    cell: ReviewCell,
    clock: Clock,
    epoch: u64,
    seen: BTreeSet<usize>,
}

/// Sites write with the context of their own cell and exchange what they have received (in the
/// order it was made, but possibly with holes). `Sync` also carries the row's existence.
fn simulate_review(sites: usize, ops: &[ReviewOp]) -> ReviewHistory {
    let mut h = ReviewHistory {
        writes: Vec::new(),
        past: Vec::new(),
        cells: Vec::new(),
    };
    let mut state: Vec<ReviewSite> = (0..sites)
        .map(|_| ReviewSite {
            cell: ReviewCell::new(),
            clock: Clock::default(),
            epoch: 1,
            seen: BTreeSet::new(),
        })
        .collect();
    for op in ops {
        match *op {
            ReviewOp::Write {
                site: n,
                wall,
                value,
            } => {
                let s = &mut state[n];
                let w = ReviewWrite {
                    version: CellVersion {
                        epoch: s.epoch,
                        stamp: Stamp {
                            hlc: s.clock.tick(wall),
                            site: site(n),
                        },
                    },
                    value: Value::Integer(value),
                    context: s.cell.context(),
                };
                assert!(s.cell.merge(w.clone()), "a local write always lands");
                assert_eq!(
                    s.cell.siblings(),
                    core::slice::from_ref(&w),
                    "a local write supersedes what its writer saw"
                );
                // Its causal past: what it received, and what those writes' writers had seen.
                let mut past = s.seen.clone();
                for &id in &s.seen {
                    past.extend(h.past[id].iter().copied());
                }
                h.past.push(past);
                s.seen.insert(h.writes.len());
                h.writes.push(w);
            }
            ReviewOp::Recreate { site: n } => state[n].epoch += 2,
            ReviewOp::Sync { from, to, skip } => {
                let ids: Vec<usize> = state[from]
                    .seen
                    .iter()
                    .copied()
                    .filter(|id| skip == 0 || id % skip != 0)
                    .collect();
                let epoch = state[from].epoch;
                let s = &mut state[to];
                s.epoch = s.epoch.max(epoch);
                for id in ids {
                    if s.seen.insert(id) {
                        s.cell.merge(h.writes[id].clone());
                        s.clock.observe(h.writes[id].version.stamp.hlc);
                    }
                }
            }
        }
    }
    h.cells = state.into_iter().map(|s| s.cell).collect();
    h
}

fn count_review(sites: usize, ops: &[ReviewOp]) -> usize {
    simulate_review(sites, ops).writes.len()
}

fn review_cell(writes: &[ReviewWrite], order: &[usize]) -> ReviewCell {
    let mut cell = ReviewCell::new();
    for &i in order {
        cell.merge(writes[i].clone());
    }
    cell
}

/// The siblings a replica that saw every write must hold, from causality alone: the writes of the
/// latest epoch that no other write of that epoch had seen.
fn oracle_siblings(h: &ReviewHistory) -> Vec<ReviewWrite> {
    let superseded = |i: usize| {
        let w = &h.writes[i];
        h.writes.iter().enumerate().any(|(j, x)| {
            x.version.epoch > w.version.epoch
                || (x.version.epoch == w.version.epoch && h.past[j].contains(&i))
        })
    };
    let mut out: Vec<ReviewWrite> = (0..h.writes.len())
        .filter(|&i| !superseded(i))
        .map(|i| h.writes[i].clone())
        .collect();
    out.sort_by_key(|w| w.version);
    out
}

proptest! {
    #[test]
    fn review_replicas_hold_the_same_siblings_whatever_the_delivery_order(
        (sites, ops, schedules) in with_schedules(review_op, count_review, true),
    ) {
        let h = simulate_review(sites, &ops);
        let want = oracle_siblings(&h);
        let shown = want.last().map(|w| &w.value);
        for order in &schedules {
            let cell = review_cell(&h.writes, order);
            prop_assert_eq!(cell.siblings(), &want[..], "delivery order {:?}", order);
            prop_assert_eq!(cell.shown(), shown);
        }
        // The sites themselves, once they have exchanged everything, agree too.
        let mut everywhere = h.cells.clone();
        for cell in &mut everywhere {
            for other in &h.cells {
                cell.merge_cell(other);
            }
            prop_assert_eq!(cell.siblings(), &want[..]);
        }
    }

    #[test]
    fn review_merge_is_commutative_associative_idempotent(
        (sites, ops, parts) in with_schedules(review_op, count_review, false),
    ) {
        let h = simulate_review(sites, &ops);
        let [a, b, c] = [0, 1, 2].map(|i| review_cell(&h.writes, &parts[i]));
        let join = |x: &ReviewCell, y: &ReviewCell| {
            let mut out = x.clone();
            out.merge_cell(y);
            out
        };
        prop_assert_eq!(join(&a, &b), join(&b, &a));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        prop_assert_eq!(join(&a, &a), a.clone());
        let mut again = join(&a, &b);
        prop_assert!(!again.merge_cell(&b), "merging what is held again reports no change");
        prop_assert!(again.siblings().windows(2).all(|w| w[0].version < w[1].version));
    }
}

/// A site holding a review cell, for the scenario tests.
struct Tablet {
    n: usize,
    cell: ReviewCell,
    clock: Clock,
}

impl Tablet {
    fn new(n: usize) -> Tablet {
        Tablet {
            n,
            cell: ReviewCell::new(),
            clock: Clock::default(),
        }
    }

    fn write(&mut self, wall: u64, value: &str) -> ReviewWrite {
        let w = ReviewWrite {
            version: CellVersion {
                epoch: 1,
                stamp: Stamp {
                    hlc: self.clock.tick(wall),
                    site: site(self.n),
                },
            },
            value: Value::Text(value.into()),
            context: self.cell.context(),
        };
        self.cell.merge(w.clone());
        w
    }

    fn receive(&mut self, writes: &[&ReviewWrite]) {
        for w in writes {
            self.clock.observe(w.version.stamp.hlc);
            self.cell.merge((*w).clone());
        }
    }

    fn values(&self) -> Vec<&Value> {
        self.cell.siblings().iter().map(|s| &s.value).collect()
    }
}

#[test]
fn concurrent_review_writes_are_kept_as_siblings_on_every_replica() {
    let (mut a, mut b, mut c) = (Tablet::new(0), Tablet::new(1), Tablet::new(2));
    let wa = a.write(NOW, "allergy: penicillin");
    let wb = b.write(NOW + 3, "allergy: none");
    a.receive(&[&wb]);
    b.receive(&[&wa]);
    c.receive(&[&wb, &wa, &wb]);
    assert_eq!(a.cell, b.cell);
    assert_eq!(a.cell, c.cell);
    assert_eq!(a.cell.siblings().len(), 2);
    // The shown value is the same pick everywhere: the newest version.
    assert_eq!(a.cell.shown(), Some(&Value::Text("allergy: none".into())));
    assert_eq!(c.cell.shown(), a.cell.shown());
}

#[test]
fn a_resolution_supersedes_the_siblings_it_saw_on_every_replica() {
    let (mut a, mut b, mut c) = (Tablet::new(0), Tablet::new(1), Tablet::new(2));
    let wa = a.write(NOW, "penicillin");
    let wb = b.write(NOW, "none");
    c.receive(&[&wa, &wb]);
    assert_eq!(c.cell.siblings().len(), 2);

    // A nurse on tablet C resolves the conflict: one write whose context is the cell's.
    let resolution = c.write(NOW + 60_000, "penicillin (confirmed)");
    assert_eq!(resolution.context, {
        let mut seen = ReviewCell::new();
        seen.merge(wa.clone());
        seen.merge(wb.clone());
        seen.context()
    });
    assert_eq!(c.values(), [&Value::Text("penicillin (confirmed)".into())]);

    // It propagates: A and B hold the resolution alone, in whatever order they hear of it.
    a.receive(&[&resolution, &wb]);
    b.receive(&[&wa, &resolution]);
    let mut late = Tablet::new(3);
    late.receive(&[&resolution, &wb, &wa, &resolution]);
    for t in [&a, &b, &late] {
        assert_eq!(t.cell, c.cell);
        assert_eq!(t.cell.siblings().len(), 1);
    }
}

#[test]
fn a_write_concurrent_with_a_resolution_remains_a_sibling() {
    let (mut a, mut b, mut c) = (Tablet::new(0), Tablet::new(1), Tablet::new(2));
    let wa = a.write(NOW, "penicillin");
    let wb = b.write(NOW, "none");
    c.receive(&[&wa, &wb]);
    a.receive(&[&wb]);

    let resolution = c.write(NOW + 60_000, "penicillin (confirmed)");
    // Meanwhile A, which has not seen the resolution, edits again.
    let edit = a.write(NOW + 30_000, "penicillin, amoxicillin");
    // And D wrote before the resolution, but C never saw it.
    let mut d = Tablet::new(3);
    let wd = d.write(NOW + 1, "sulfa");

    let all = [&wa, &wb, &resolution, &edit, &wd];
    let mut replicas: Vec<ReviewCell> = Vec::new();
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
        let mut t = Tablet::new(9);
        for i in order {
            t.receive(&[all[i]]);
        }
        replicas.push(t.cell);
    }
    let values: Vec<&Value> = replicas[0].siblings().iter().map(|s| &s.value).collect();
    assert_eq!(
        values,
        [
            &Value::Text("sulfa".into()),
            &Value::Text("penicillin, amoxicillin".into()),
            &Value::Text("penicillin (confirmed)".into()),
        ]
    );
    assert!(replicas.iter().all(|r| r == &replicas[0]));
    assert_eq!(
        replicas[0].shown(),
        Some(&Value::Text("penicillin (confirmed)".into()))
    );
}

#[test]
fn a_review_write_in_a_new_epoch_supersedes_the_old_life() {
    let mut a = Tablet::new(0);
    let old = a.write(NOW + 86_400_000, "old life");
    let mut b = Tablet::new(1);
    let mut new = b.write(NOW, "new life");
    new.version.epoch = 3;
    let mut cell = ReviewCell::new();
    assert!(cell.merge(new.clone()));
    assert!(
        !cell.merge(old.clone()),
        "an older epoch's write never comes back"
    );
    let mut other = ReviewCell::new();
    other.merge(old);
    other.merge(new.clone());
    assert_eq!(cell, other);
    assert_eq!(cell.siblings(), [new]);
}

#[test]
fn strategy_names_round_trip() {
    for s in [
        MergeStrategy::Lww,
        MergeStrategy::RowLww,
        MergeStrategy::Counter,
        MergeStrategy::Review,
    ] {
        assert_eq!(MergeStrategy::from_name(s.name()), Some(s));
        assert_eq!(alloc::string::ToString::to_string(&s), s.name());
    }
    assert_eq!(MergeStrategy::from_name("LWW"), None);
    assert_eq!(MergeStrategy::default(), MergeStrategy::Lww);
}

#[test]
fn a_row_at_the_largest_causal_length_never_wraps_to_unseen() {
    // Only a corrupt or hostile peer sends this; a local delete must not panic or wrap to 0.
    let max = Existence(u64::MAX);
    assert!(max.is_alive());
    assert_eq!(max.deleted(), max);
    assert_eq!(max.inserted(), max);
    assert_eq!(Existence(u64::MAX - 1).inserted(), max);
}
