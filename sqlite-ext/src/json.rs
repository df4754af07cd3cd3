//! How Outpost shows stored values and keys to people as JSON: in `outpost_conflicts`, in
//! `outpost_quarantine`, in the events of evicted and restored rows, and in
//! `outpost_batch_json`. One shape everywhere, so a key printed by one can be matched against
//! another.

use crate::error::Error;
use outpost_protocol::Value;
use serde_json::json;

/// A value as JSON: numbers and text as themselves, blobs as `{"blob": "<hex>"}`.
pub(crate) fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => json!(n),
        Value::Real(f) => json!(f),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!({ "blob": hex::encode(b) }),
    }
}

/// A packed key as JSON text (a one-column key is shown bare: `"p1"`, else an array).
pub(crate) fn key_json(key: &[u8]) -> Result<String, Error> {
    let vals = crate::keys::unpack(key)?;
    Ok(match vals.as_slice() {
        [one] => value_json(one).to_string(),
        many => serde_json::Value::Array(many.iter().map(value_json).collect()).to_string(),
    })
}
