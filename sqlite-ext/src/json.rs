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
        // The common keys written straight, without a JSON tree (an apply lists every row it
        // writes this way: `applied.rs`).
        [Value::Text(t)] => serde_json::to_string(t).unwrap_or_else(|_| json!(t).to_string()),
        [Value::Integer(n)] => n.to_string(),
        [one] => value_json(one).to_string(),
        many => serde_json::Value::Array(many.iter().map(value_json).collect()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct paths write what the JSON tree writes.
    #[test]
    fn keys_written_directly_equal_the_tree_s() {
        for v in [
            Value::Text("p1".into()),
            Value::Text("a \"quoted\"\\ key\n\u{1F600}".into()),
            Value::Integer(-42),
            Value::Real(1.5),
            Value::Blob(vec![0, 255]),
        ] {
            assert_eq!(
                values_key_json(std::slice::from_ref(&v)),
                value_json(&v).to_string()
            );
        }
        assert_eq!(
            values_key_json(&[Value::Text("a".into()), Value::Integer(1)]),
            r#"["a",1]"#
        );
    }
}
