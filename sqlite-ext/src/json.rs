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
    Ok(values_key_json(&crate::keys::unpack(key)?))
}

/// A key's values as JSON text, shown as [`key_json`] shows a packed key.
pub(crate) fn values_key_json(vals: &[Value]) -> String {
    match vals {
        [one] => value_json(one).to_string(),
        many => serde_json::Value::Array(many.iter().map(value_json).collect()).to_string(),
    }
}
