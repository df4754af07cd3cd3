//! A push body read straight into the push's own plan, with no generic JSON tree in between.
//!
//! A `serde_json::Value` costs far more than its text (a 32 MiB push peaked at 2.4 GiB, issue
//! 17): every record a map, every key and value its own allocation. Here the body is deserialized
//! with visitors that know the tables: each record is checked as it is read (known table, object,
//! string `id`, known columns, scalar values) and appended to its list as compact bytes: column
//! names become their index in the table, integers zig-zag varints, reals 8 bytes, text its
//! length and bytes. The plan therefore takes about as many bytes as the body's values (a body
//! is at least 4 bytes per column, `"a":1`, which encodes in 3), never more than
//! [`super::MAX_PUSH_RECORDS`] records.
//!
//! Two passes over the body, both without a tree: the first (`push_shape.rs`) checks that it is
//! JSON and finds out
//! whether the changes are wrapped (`{"changes": {...}, ...}`, as the old generic reading did:
//! unwrapped when the top-level `changes` key, its last occurrence, holds an object and no REST
//! table is named `changes`); the second builds the plan. The first error found, in the body's
//! order, is the answer. As with a JSON map, a key given twice counts once, the last one.

use super::plan::{List, Plan, Scalar, TablePlan};
use super::push_shape::{KeyIs, Shape, ShapeSeed};
use super::InvalidPush;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;

/// The REST tables and their columns (other than `id`, which every REST table has).
pub type Tables = BTreeMap<String, Vec<String>>;

/// Why a body could not be read into a plan.
#[derive(Debug)]
pub enum BodyError {
    /// Not JSON (the parser's error).
    NotJson(serde_json::Error),
    /// JSON, but not a push the tables accept.
    Invalid(InvalidPush),
}

/// Reads `body` into a plan for `tables`, refusing more than `max_records` records.
pub fn read(body: &[u8], tables: &Tables, max_records: usize) -> Result<Plan, BodyError> {
    let unwrap = !tables.contains_key("changes");
    let mut de = serde_json::Deserializer::from_slice(body);
    let shape = ShapeSeed { unwrap }
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(BodyError::NotJson)?;
    let wrapped = match shape {
        Shape::NotAnObject => return Err(BodyError::Invalid(InvalidPush::NotAnObject)),
        Shape::Flat => None,
        Shape::Wrapped { occurrence } => Some(occurrence),
    };
    let ctx = Ctx {
        tables,
        max_records,
        records: Cell::new(0),
        failed: RefCell::new(None),
        given: RefCell::new(Vec::new()),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    match (TopSeed { ctx: &ctx, wrapped }).deserialize(&mut de) {
        Ok(plan) => Ok(plan),
        Err(e) => Err(match ctx.failed.into_inner() {
            Some(why) => BodyError::Invalid(why),
            None => BodyError::NotJson(e),
        }),
    }
}

/// What the second pass shares: the tables, the record budget, the first error, and one record's
/// values being gathered (reused from record to record).
struct Ctx<'t> {
    tables: &'t Tables,
    max_records: usize,
    records: Cell<usize>,
    failed: RefCell<Option<InvalidPush>>,
    given: RefCell<Vec<Given>>,
}

/// One column of the record being read.
#[derive(Debug)]
enum Given {
    Unset,
    Value(Owned),
    NotAScalar,
}

#[derive(Debug)]
enum Owned {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl Owned {
    fn as_scalar(&self) -> Scalar<'_> {
        match self {
            Owned::Null => Scalar::Null,
            Owned::Integer(i) => Scalar::Integer(*i),
            Owned::Real(r) => Scalar::Real(*r),
            Owned::Text(s) => Scalar::Text(s),
        }
    }
}

impl Ctx<'_> {
    /// Records why the body is refused; the returned error stops the parser.
    fn fail<E: de::Error>(&self, why: InvalidPush) -> E {
        *self.failed.borrow_mut() = Some(why);
        E::custom("invalid push")
    }

    fn count_record<E: de::Error>(&self) -> Result<(), E> {
        let n = self.records.get() + 1;
        if n > self.max_records {
            return Err(self.fail(InvalidPush::TooManyRecords {
                limit: self.max_records,
            }));
        }
        self.records.set(n);
        Ok(())
    }
}

/// Visitor methods for every JSON value but the expected one(s), each failing with `$why`.
macro_rules! refuse_others {
    ($value:ty, |$s:ident| $why:expr; $($kind:ident),*) => {
        $(refuse_others!(@one $kind, $value, $s, $why);)*
    };
    (@one unit, $value:ty, $s:ident, $why:expr) => {
        fn visit_unit<E: de::Error>($s) -> Result<$value, E> { Err($s.ctx.fail($why)) }
    };
    (@one bool, $value:ty, $s:ident, $why:expr) => {
        fn visit_bool<E: de::Error>($s, _: bool) -> Result<$value, E> { Err($s.ctx.fail($why)) }
    };
    (@one num, $value:ty, $s:ident, $why:expr) => {
        fn visit_i64<E: de::Error>($s, _: i64) -> Result<$value, E> { Err($s.ctx.fail($why)) }
        fn visit_u64<E: de::Error>($s, _: u64) -> Result<$value, E> { Err($s.ctx.fail($why)) }
        fn visit_f64<E: de::Error>($s, _: f64) -> Result<$value, E> { Err($s.ctx.fail($why)) }
    };
    (@one str, $value:ty, $s:ident, $why:expr) => {
        fn visit_str<E: de::Error>($s, _: &str) -> Result<$value, E> { Err($s.ctx.fail($why)) }
    };
    (@one seq, $value:ty, $s:ident, $why:expr) => {
        fn visit_seq<A: SeqAccess<'de>>($s, _: A) -> Result<$value, A::Error> {
            Err($s.ctx.fail($why))
        }
    };
    (@one map, $value:ty, $s:ident, $why:expr) => {
        fn visit_map<A: MapAccess<'de>>($s, _: A) -> Result<$value, A::Error> {
            Err($s.ctx.fail($why))
        }
    };
}

/// Second pass, the top level (known to be an object by the first pass).
struct TopSeed<'c, 't> {
    ctx: &'c Ctx<'t>,
    /// Which occurrence of `changes` holds the tables, when wrapped.
    wrapped: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = Plan;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Plan, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = Plan;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of tables")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plan, A::Error> {
        let Some(target) = self.wrapped else {
            return read_tables(self.ctx, map);
        };
        let (mut seen, mut plan) = (0, Plan::default());
        while let Some(is_changes) = map.next_key_seed(KeyIs("changes"))? {
            if is_changes {
                seen += 1;
                if seen == target {
                    plan = map.next_value_seed(TablesSeed { ctx: self.ctx })?;
                    continue;
                }
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(plan)
    }
}

/// The `changes` object inside a wrapped body.
struct TablesSeed<'c, 't> {
    ctx: &'c Ctx<'t>,
}

impl<'de> DeserializeSeed<'de> for TablesSeed<'_, '_> {
    type Value = Plan;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Plan, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TablesSeed<'_, '_> {
    type Value = Plan;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of tables")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Plan, A::Error> {
        read_tables(self.ctx, map)
    }
}

fn read_tables<'de, A: MapAccess<'de>>(ctx: &Ctx<'_>, mut map: A) -> Result<Plan, A::Error> {
    let mut plan = Plan::default();
    while let Some(table) = map.next_key::<String>()? {
        let Some(columns) = ctx.tables.get(&table) else {
            return Err(ctx.fail(InvalidPush::UnknownTable { table }));
        };
        if let Some(i) = plan.tables.iter().position(|t| t.table == table) {
            // A table named twice: the last one counts.
            let old = plan.tables.remove(i);
            let n = old.created.count + old.updated.count + old.deleted.count;
            ctx.records.set(ctx.records.get() - n);
        }
        let mut t = TablePlan {
            table,
            columns: columns.clone(),
            created: List::default(),
            updated: List::default(),
            deleted: List::default(),
        };
        map.next_value_seed(TableSeed { ctx, plan: &mut t })?;
        plan.tables.push(t);
    }
    Ok(plan)
}

/// A table's `{created, updated, deleted}`.
struct TableSeed<'c, 't, 'p> {
    ctx: &'c Ctx<'t>,
    plan: &'p mut TablePlan,
}

impl<'de> DeserializeSeed<'de> for TableSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{created, updated, deleted}")
    }

    refuse_others!((), |self| InvalidPush::NotATable { table: self.plan.table.clone() };
        unit, bool, num, str, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(key) = map.next_key::<String>()? {
            let list: &'static str = match key.as_str() {
                "created" => "created",
                "updated" => "updated",
                "deleted" => "deleted",
                _ => {
                    return Err(ctx.fail(InvalidPush::UnknownKey {
                        table: self.plan.table.clone(),
                        key,
                    }))
                }
            };
            let plan = &mut *self.plan;
            let out = match list {
                "created" => &mut plan.created,
                "updated" => &mut plan.updated,
                _ => &mut plan.deleted,
            };
            // A list named twice: the last one counts.
            ctx.records.set(ctx.records.get() - out.count);
            out.clear();
            map.next_value_seed(ListSeed {
                ctx,
                table: &plan.table,
                columns: &plan.columns,
                list,
                out,
            })?;
        }
        Ok(())
    }
}

/// `created`, `updated` (records) or `deleted` (ids): an array, or null for none.
struct ListSeed<'c, 't, 'p> {
    ctx: &'c Ctx<'t>,
    table: &'p str,
    columns: &'p [String],
    list: &'static str,
    out: &'p mut List,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    refuse_others!((), |self| InvalidPush::NotAnArray { table: self.table.to_string(), list: self.list };
        bool, num, str, map);

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        if self.list == "deleted" {
            while let Some(()) = seq.next_element_seed(IdSeed {
                ctx,
                table: self.table,
                out: self.out,
            })? {}
            return Ok(());
        }
        while let Some(()) = seq.next_element_seed(RecordSeed {
            ctx,
            table: self.table,
            columns: self.columns,
            list: self.list,
            out: self.out,
        })? {}
        Ok(())
    }
}

/// One id of `deleted`: a non-empty string.
struct IdSeed<'c, 't, 'p> {
    ctx: &'c Ctx<'t>,
    table: &'p str,
    out: &'p mut List,
}

impl<'de> DeserializeSeed<'de> for IdSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id")
    }

    refuse_others!((), |self| InvalidPush::DeletedNotIds { table: self.table.to_string() };
        unit, bool, num, seq, map);

    fn visit_str<E: de::Error>(self, id: &str) -> Result<(), E> {
        if id.is_empty() {
            return Err(self.ctx.fail(InvalidPush::DeletedNotIds {
                table: self.table.to_string(),
            }));
        }
        self.ctx.count_record()?;
        self.out.push_id(id);
        Ok(())
    }
}

/// One created or updated record: an object with a string `id` and known columns.
struct RecordSeed<'c, 't, 'p> {
    ctx: &'c Ctx<'t>,
    table: &'p str,
    columns: &'p [String],
    list: &'static str,
    out: &'p mut List,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    refuse_others!((), |self| InvalidPush::RecordNotAnObject { table: self.table.to_string(), list: self.list };
        unit, bool, num, str, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let mut given = ctx.given.borrow_mut();
        given.clear();
        given.resize_with(self.columns.len(), || Given::Unset);
        let mut id: Option<String> = None;
        let mut unknown: Option<String> = None;
        let mut changed: Option<String> = None;
        while let Some(key) = map.next_key_seed(ColumnKey {
            columns: self.columns,
        })? {
            match key {
                Key::Id => id = map.next_value_seed(IdValue)?,
                // WatermelonDB's list of the columns changed since the last sync (comma-separated);
                // only an updated record's counts, and anything but a string is ignored.
                Key::Changed => changed = map.next_value_seed(IdValue)?,
                Key::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Column(i) => given[i] = map.next_value_seed(ScalarSeed)?,
                Key::Unknown(column) => {
                    unknown.get_or_insert(column);
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(id) = id else {
            return Err(ctx.fail(InvalidPush::NoId {
                table: self.table.to_string(),
                list: self.list,
            }));
        };
        if let Some(column) = unknown {
            return Err(ctx.fail(InvalidPush::UnknownColumn {
                table: self.table.to_string(),
                id,
                column,
            }));
        }
        if let Some(i) = given.iter().position(|c| matches!(c, Given::NotAScalar)) {
            return Err(ctx.fail(InvalidPush::NotAScalar {
                table: self.table.to_string(),
                id,
                column: self.columns[i].clone(),
            }));
        }
        ctx.count_record()?;
        let values = given.iter().enumerate().filter_map(|(i, g)| match g {
            Given::Value(v) => Some((i, v.as_scalar())),
            Given::Unset | Given::NotAScalar => None,
        });
        // An updated record writes into an existing row only the columns it says it changed,
        // so a stale copy of another column (a scope cell moved by a referral meanwhile) does
        // not undo a newer write (docs/design.md section 10, "REST").
        let changed: Option<Vec<usize>> = changed.filter(|_| self.list == "updated").map(|c| {
            c.split(',')
                .filter_map(|name| self.columns.iter().position(|col| col == name.trim()))
                .collect()
        });
        self.out.push_record(&id, values, changed.as_deref());
        Ok(())
    }
}

/// A record's key, resolved against the table's columns without allocating a known one.
enum Key {
    Id,
    /// `_status`: WatermelonDB's client-side column.
    Ignored,
    /// `_changed`: the columns WatermelonDB's client changed since its last sync.
    Changed,
    Column(usize),
    Unknown(String),
}

struct ColumnKey<'p> {
    columns: &'p [String],
}

impl<'de> DeserializeSeed<'de> for ColumnKey<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ColumnKey<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "id" => Key::Id,
            "_status" => Key::Ignored,
            "_changed" => Key::Changed,
            _ => match self.columns.iter().position(|c| c == s) {
                Some(i) => Key::Column(i),
                None => Key::Unknown(s.to_string()),
            },
        })
    }
}

/// A record's `id`: `Some` for a non-empty string, `None` for anything else.
struct IdValue;

impl<'de> DeserializeSeed<'de> for IdValue {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdValue {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id")
    }

    fn visit_str<E>(self, s: &str) -> Result<Option<String>, E> {
        Ok((!s.is_empty()).then(|| s.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<String>, E> {
        Ok(None)
    }
}

/// A column's value: a JSON scalar (booleans become 1 / 0, integers beyond i64 reals), or
/// [`Given::NotAScalar`] for an array or object (skipped whole).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Given;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Given, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Given;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_unit<E>(self) -> Result<Given, E> {
        Ok(Given::Value(Owned::Null))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Given, E> {
        Ok(Given::Value(Owned::Integer(b as i64)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Given, E> {
        Ok(Given::Value(Owned::Integer(n)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Given, E> {
        Ok(Given::Value(match i64::try_from(n) {
            Ok(i) => Owned::Integer(i),
            Err(_) => Owned::Real(n as f64),
        }))
    }
    fn visit_f64<E>(self, r: f64) -> Result<Given, E> {
        Ok(Given::Value(Owned::Real(r)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Given, E> {
        Ok(Given::Value(Owned::Text(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Given, E> {
        Ok(Given::Value(Owned::Text(s)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Given, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Given::NotAScalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Given, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Given::NotAScalar)
    }
}
