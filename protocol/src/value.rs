//! SQLite values as Outpost carries them.

use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;
use serde::{Deserialize, Serialize};

/// One SQLite value: the five storage classes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float. NaN never occurs (SQLite stores NaN as NULL).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// SQLite's storage-class rank: NULL < numbers < text < blob.
    fn class_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) => 2,
            Value::Blob(_) => 3,
        }
    }
}

/// A total order, used only to make merge picks deterministic (e.g. the value shown for a cell
/// with several `review` siblings). Integers and reals compare by numeric value; an integer and a
/// real that are numerically equal order the integer first, so the order stays total. Reals use
/// IEEE total order.
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Integer(a), Integer(b)) => a.cmp(b),
            (Real(a), Real(b)) => a.total_cmp(b),
            (Integer(a), Real(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Real(a), Integer(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Text(a), Text(b)) => a.cmp(b),
            (Blob(a), Blob(b)) => a.cmp(b),
            _ => self.class_rank().cmp(&other.class_rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equality agrees with [`Ord`]: reals compare by bit pattern class (total order), so `Value` can
/// be a map key and `-0.0 != 0.0`.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn values_order_like_sqlite_storage_classes() {
        let mut v = vec![
            Value::Blob(vec![1]),
            Value::Text("a".to_string()),
            Value::Real(1.5),
            Value::Integer(2),
            Value::Null,
            Value::Integer(1),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                Value::Null,
                Value::Integer(1),
                Value::Real(1.5),
                Value::Integer(2),
                Value::Text("a".to_string()),
                Value::Blob(vec![1]),
            ]
        );
        assert!(Value::Integer(1) < Value::Real(1.0));
    }

    /// Values near where `i64 -> f64` loses precision, signed zeros and the extremes: where a
    /// mixed integer/real order could stop being total.
    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        const BIG: i64 = 1 << 53;
        prop_oneof![
            Just(Value::Null),
            (-3i64..3).prop_map(|d| Value::Integer(BIG + d)),
            (-3i64..3).prop_map(|d| Value::Real((BIG + d) as f64)),
            prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1)].prop_map(Value::Integer),
            prop_oneof![
                Just(0.0f64),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(9.223372036854776e18),
                Just(-9.223372036854776e18),
                Just(0.5),
            ]
            .prop_map(Value::Real),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>()
                .prop_filter("SQLite has no NaN", |x| !x.is_nan())
                .prop_map(Value::Real),
            "[ab]{0,2}".prop_map(Value::Text),
            proptest::collection::vec(0u8..2, 0..2).prop_map(Value::Blob),
        ]
    }

    proptest::proptest! {
        /// The shown value of a `review` cell and every sorted pick rely on this being a total
        /// order: otherwise replicas holding the same siblings could show different values.
        #[test]
        fn value_order_is_total(a in value(), b in value(), c in value()) {
            use proptest::prop_assert;
            prop_assert!(a.cmp(&b) == b.cmp(&a).reverse());
            prop_assert!((a == b) == (a.cmp(&b) == Ordering::Equal));
            if a <= b && b <= c {
                prop_assert!(a <= c, "{:?} <= {:?} <= {:?}", a, b, c);
            }
        }
    }
}
