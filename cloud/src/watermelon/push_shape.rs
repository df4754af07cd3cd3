//! The first pass over a push body: is it JSON, is it an object, and are its changes wrapped
//! under `changes` (`{"changes": {...}, "lastPulledAt": ...}`)? Read with `IgnoredAny`, so it
//! allocates nothing whatever the body holds; `push_body.rs` then reads the changes.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What the first pass found.
pub enum Shape {
    /// Not an object: refused as a whole.
    NotAnObject,
    /// The object is the changes.
    Flat,
    /// The changes are the object under `changes`, its `occurrence`-th (1-based) such key.
    Wrapped {
        /// Which occurrence of the key.
        occurrence: usize,
    },
}

/// First pass: is it an object, and does it wrap its changes under `changes`?
pub struct ShapeSeed {
    /// Whether a `changes` key may wrap (no REST table is named `changes`).
    pub unwrap: bool,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let (mut seen, mut target) = (0, None);
        while let Some(is_changes) = map.next_key_seed(KeyIs("changes"))? {
            if is_changes && self.unwrap {
                seen += 1;
                // The last occurrence decides, as a JSON map would keep it.
                target = map.next_value_seed(IsObject)?.then_some(seen);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match target {
            Some(occurrence) => Shape::Wrapped { occurrence },
            None => Shape::Flat,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::NotAnObject)
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::NotAnObject)
    }
}

/// A map key compared with a name, without allocating it.
pub struct KeyIs(pub &'static str);

impl<'de> DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

/// Whether a value is an object (skipping it whole either way).
struct IsObject;

impl<'de> DeserializeSeed<'de> for IsObject {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsObject {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}
