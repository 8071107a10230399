//! Checks JSON against the response schemas in `../shared/cloudflare/ops`: the keywords those
//! schemas use (type, nullable, enum, required, properties, items, oneOf, anyOf, allOf).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where `shared/cloudflare` is, from this crate's directory.
pub fn reference_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for up in [
        here.join("../../../shared/cloudflare"),
        here.join("../../shared/cloudflare"),
    ] {
        if up.join("index.json").exists() {
            return up;
        }
    }
    panic!("shared/cloudflare not found beside the repository (CI clones it next to main)")
}

/// The response schema of one operation for an HTTP status (`200`, or the `4xx` group).
pub fn response_schema(method: &str, path: &str, status: u16) -> Option<Value> {
    let dir = reference_dir();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).ok()?).ok()?;
    let entry = index
        .as_array()?
        .iter()
        .find(|e| e["method"] == method && e["path"] == path)?;
    let op: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(entry["file"].as_str()?)).ok()?)
            .ok()?;
    let responses = &op["responses"];
    let key = if (200..300).contains(&status) {
        status.to_string()
    } else {
        "4xx".to_string()
    };
    let response = responses
        .get(&key)
        .or_else(|| responses.get(key.to_uppercase()))?;
    response["content"]["application/json"]["schema"]
        .clone()
        .into()
}

/// Checks `value` against `schema`; the error names the JSON path that broke the rule.
pub fn check(value: &Value, schema: &Value) -> Result<(), String> {
    check_at(value, schema, "$")
}

fn type_ok(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check_at(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_at(value, s, path)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|s| check_at(value, s, path).err())
                .collect();
            if errors.len() == options.len() {
                return Err(format!(
                    "{path}: matches none of {key} ({})",
                    errors.join(" | ")
                ));
            }
        }
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str)
        && !type_ok(value, kind)
    {
        return Err(format!("{path}: expected {kind}, got {value}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    return Err(format!("{path}: required field `{key}` is missing"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                if let Some(v) = object.get(key) {
                    check_at(v, sub, &format!("{path}.{key}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            check_at(v, items, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_the_keywords() {
        let schema = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer"}, "b": {"type": "string", "nullable": true, "enum": ["x"]},
            "c": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}});
        check(&json!({"a": 1, "b": null, "c": ["s", 2]}), &schema).unwrap();
        assert!(
            check(&json!({"b": "x"}), &schema)
                .unwrap_err()
                .contains("`a`")
        );
        assert!(
            check(&json!({"a": "1"}), &schema)
                .unwrap_err()
                .contains("$.a")
        );
        assert!(check(&json!({"a": 1, "b": "y"}), &schema).is_err());
        assert!(
            check(&json!({"a": 1, "c": [true]}), &schema)
                .unwrap_err()
                .contains("$.c[0]")
        );
    }
}
