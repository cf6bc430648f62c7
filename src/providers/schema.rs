//! JSON Schema reduced to the OpenAPI subset Gemini's `functionDeclarations.parameters` accepts.
//!
//! Gemini rejects a declaration carrying keywords it does not know (`additionalProperties`,
//! `$schema`, `$ref`…), while OpenAI clients generate exactly those (Pydantic, zod). This keeps
//! what Gemini understands and rewrites what has an equivalent: a `["T", "null"]` type becomes
//! `nullable`, `const` a one-value `enum`, `oneOf` `anyOf`, and `$ref` is inlined from `$defs`.

use serde_json::{Map, Value};

/// Keywords Gemini's `Schema` object has, kept as they are (after their children are reduced).
const KEPT: [&str; 18] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "items",
    "propertyOrdering",
];
const NUMERIC: [&str; 2] = ["minimum", "maximum"];

/// `$ref` chains deeper than this are cut (a recursive model would otherwise never end).
const MAX_DEPTH: usize = 16;

/// The reduced form of `schema`; `root` holds the `$defs` its references point into.
pub fn reduce(schema: &Value) -> Value {
    reduce_in(schema, schema, 0)
}

fn reduce_in(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return Value::Object(Map::new());
    };
    if depth > MAX_DEPTH {
        return serde_json::json!({"type": "object"});
    }
    if let Some(target) = obj.get("$ref").and_then(Value::as_str).and_then(|r| resolve(root, r)) {
        let mut merged = reduce_in(target, root, depth + 1);
        if let (Some(d), Some(m)) = (obj.get("description"), merged.as_object_mut()) {
            m.insert("description".to_owned(), d.clone());
        }
        return merged;
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "type" => set_type(&mut out, v),
            "const" if v.is_string() => {
                out.insert("enum".to_owned(), Value::Array(vec![v.clone()]));
            }
            "enum" => {
                let all_strings = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if all_strings {
                    out.insert("enum".to_owned(), v.clone());
                }
            }
            "properties" => {
                let props = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(name, s)| (name.clone(), reduce_in(s, root, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), reduce_in(v, root, depth + 1));
            }
            "anyOf" | "oneOf" => {
                let options: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                    .map(|s| reduce_in(s, root, depth + 1))
                    .collect();
                if options.len() < v.as_array().map_or(0, Vec::len) {
                    out.insert("nullable".to_owned(), Value::Bool(true));
                }
                match options.len() {
                    0 => {}
                    1 => merge(&mut out, options.into_iter().next()),
                    _ => {
                        out.insert("anyOf".to_owned(), Value::Array(options));
                    }
                }
            }
            "allOf" => {
                for s in v.as_array().into_iter().flatten() {
                    merge(&mut out, Some(reduce_in(s, root, depth + 1)));
                }
            }
            _ if KEPT.contains(&k.as_str()) => {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
            _ if NUMERIC.contains(&k.as_str()) && v.is_number() => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    // `required` may only name properties that exist.
    if let Some(Value::Array(req)) = out.get("required") {
        let props = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = req
            .iter()
            .filter(|r| r.as_str().is_some_and(|r| props.is_some_and(|p| p.contains_key(r))))
            .cloned()
            .collect();
        out.insert("required".to_owned(), Value::Array(kept));
    }
    Value::Object(out)
}

/// A JSON type, or a list of them, as Gemini's single `type` plus `nullable`.
fn set_type(out: &mut Map<String, Value>, v: &Value) {
    match v {
        Value::String(_) => {
            out.insert("type".to_owned(), v.clone());
        }
        Value::Array(types) => {
            let real: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
            if real.len() < types.len() {
                out.insert("nullable".to_owned(), Value::Bool(true));
            }
            if let Some(first) = real.first() {
                out.insert("type".to_owned(), (*first).clone());
            }
        }
        _ => {}
    }
}

/// Folds a reduced schema's keywords into `out` (first writer wins).
fn merge(out: &mut Map<String, Value>, other: Option<Value>) {
    if let Some(Value::Object(o)) = other {
        for (k, v) in o {
            out.entry(k).or_insert(v);
        }
    }
}

/// The schema a local `$ref` (`#/$defs/X`, `#/definitions/X`) points at.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix('#')?;
    path.split('/')
        .filter(|p| !p.is_empty())
        .try_fold(root, |node, part| node.get(part.replace("~1", "/").replace("~0", "~")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pydantic_schema_reduces_to_gemini_subset() {
        let s = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "additionalProperties": false,
            "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}},
            "properties": {
                "city": {"type": "string", "examples": ["Paris"]},
                "unit": {"$ref": "#/$defs/Unit", "description": "temperature unit"},
                "days": {"type": ["integer", "null"], "minimum": 1, "exclusiveMaximum": 15},
                "mode": {"const": "fast"},
                "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}}
            },
            "required": ["city", "ghost"]
        });
        let r = reduce(&s);
        assert_eq!(
            r,
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"], "description": "temperature unit"},
                    "days": {"type": "integer", "nullable": true, "minimum": 1},
                    "mode": {"enum": ["fast"]},
                    "tags": {"type": "array", "items": {"nullable": true, "type": "string"}}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn recursive_refs_end() {
        let s = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"});
        let r = reduce(&s);
        assert_eq!(r["type"], "object");
    }
}
