//! JSON Schema reduced to the OpenAPI subset Gemini's `functionDeclarations.parameters` accepts.
//!
//! Gemini rejects a declaration carrying keywords it does not know (`additionalProperties`,
//! `$schema`, `$ref`…), while OpenAI clients generate exactly those (Pydantic, zod). This keeps
//! what Gemini understands and rewrites what has an equivalent: a `["T", "null"]` type becomes
//! `nullable`, `const` a one-value string `enum`, `oneOf` `anyOf`, and `$ref` is inlined from
//! `$defs`. Gemini takes `enum` on strings only and a handful of `format`s; others are dropped.
//!
//! Inlining is bounded twice over, because the schema comes from the client: a reference already
//! being expanded on the current path becomes a plain object (recursive models end), and the
//! whole output is capped at [`MAX_NODES`] schemas (a schema whose references fan out cannot
//! make the gateway spin).

use serde_json::{json, Map, Value};

/// Keywords Gemini's `Schema` object has, kept as they are (after their children are reduced).
const KEPT: [&str; 15] = [
    "title",
    "description",
    "nullable",
    "maxItems",
    "minItems",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "propertyOrdering",
    "minimum",
    "maximum",
    "default",
];

/// The `format`s Gemini accepts, by type.
const FORMATS: [(&str, &str); 6] = [
    ("string", "date-time"),
    ("string", "enum"),
    ("integer", "int32"),
    ("integer", "int64"),
    ("number", "float"),
    ("number", "double"),
];

/// The most schemas one reduction writes.
pub const MAX_NODES: usize = 2000;

/// The reduced form of `schema`, which also holds the `$defs` its references point into.
pub fn reduce(schema: &Value) -> Value {
    let mut walk = Walk {
        root: schema,
        path: Vec::new(),
        budget: MAX_NODES,
    };
    walk.reduce(schema)
}

struct Walk<'a> {
    root: &'a Value,
    /// The references being expanded above the current schema.
    path: Vec<&'a str>,
    budget: usize,
}

impl<'a> Walk<'a> {
    fn reduce(&mut self, schema: &'a Value) -> Value {
        let Some(obj) = schema.as_object() else {
            return Value::Object(Map::new());
        };
        if self.budget == 0 {
            return json!({"type": "object"});
        }
        self.budget -= 1;
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            let target = resolve(self.root, r);
            let mut merged = match target {
                Some(t) if !self.path.contains(&r) => {
                    self.path.push(r);
                    let m = self.reduce(t);
                    self.path.pop();
                    m
                }
                _ => json!({"type": "object"}),
            };
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
                "enum" if v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                    out.insert("enum".to_owned(), v.clone());
                }
                "format" => {
                    out.insert("format".to_owned(), v.clone());
                }
                "properties" => {
                    let mut props = Map::new();
                    for (name, s) in v.as_object().into_iter().flatten() {
                        props.insert(name.clone(), self.reduce(s));
                    }
                    out.insert(k.clone(), Value::Object(props));
                }
                "items" => {
                    out.insert(k.clone(), self.reduce(v));
                }
                "anyOf" | "oneOf" => {
                    let all = v.as_array().map(Vec::as_slice).unwrap_or_default();
                    let mut options = Vec::new();
                    for s in all {
                        if s.get("type").and_then(Value::as_str) != Some("null") {
                            options.push(self.reduce(s));
                        }
                    }
                    if options.len() < all.len() {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    match options.len() {
                        0 => {}
                        1 => merge(&mut out, options.pop()),
                        _ => {
                            out.insert("anyOf".to_owned(), Value::Array(options));
                        }
                    }
                }
                "allOf" => {
                    for s in v.as_array().into_iter().flatten() {
                        let r = self.reduce(s);
                        merge(&mut out, Some(r));
                    }
                }
                _ if KEPT.contains(&k.as_str()) => {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
                _ => {}
            }
        }
        tidy(&mut out);
        Value::Object(out)
    }
}

/// What Gemini insists on once the keywords are in: enums are strings, formats fit their type,
/// `required` names existing properties.
fn tidy(out: &mut Map<String, Value>) {
    let kind = out.get("type").and_then(Value::as_str).map(str::to_owned);
    if out.contains_key("enum") {
        match kind.as_deref() {
            None => {
                out.insert("type".to_owned(), json!("string"));
            }
            Some("string") => {}
            Some(_) => {
                out.remove("enum");
            }
        }
    }
    let kind = out.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let format_ok = out
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| FORMATS.contains(&(kind.as_str(), f)));
    if !format_ok {
        out.remove("format");
    }
    for k in ["minimum", "maximum"] {
        if out.get(k).is_some_and(|v| !v.is_number()) {
            out.remove(k);
        }
    }
    if let Some(Value::Array(req)) = out.get("required") {
        let props = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = req
            .iter()
            .filter(|r| r.as_str().is_some_and(|r| props.is_some_and(|p| p.contains_key(r))))
            .cloned()
            .collect();
        out.insert("required".to_owned(), Value::Array(kept));
    }
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
                    "mode": {"enum": ["fast"], "type": "string"},
                    "tags": {"type": "array", "items": {"nullable": true, "type": "string"}}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn formats_and_enums_fit_what_gemini_takes() {
        let s = json!({"type": "object", "properties": {
            "site": {"type": "string", "format": "uri"},
            "at": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int64", "enum": [1, 2]},
            "level": {"enum": ["a", "b"]}
        }});
        let r = reduce(&s);
        assert_eq!(r["properties"]["site"], json!({"type": "string"}));
        assert_eq!(r["properties"]["at"]["format"], "date-time");
        assert_eq!(r["properties"]["n"], json!({"type": "integer", "format": "int64"}));
        assert_eq!(r["properties"]["level"], json!({"enum": ["a", "b"], "type": "string"}));
    }

    #[test]
    fn fanned_out_refs_stay_bounded() {
        // Each level refers to the next one 30 times: inlined naively, 30^8 schemas.
        let mut defs = serde_json::Map::new();
        for level in 0..8 {
            let props: serde_json::Map<String, Value> = (0..30)
                .map(|i| (format!("p{i}"), json!({"$ref": format!("#/$defs/L{}", level + 1)})))
                .collect();
            defs.insert(format!("L{level}"), json!({"type": "object", "properties": props}));
        }
        defs.insert("L8".to_owned(), json!({"type": "string"}));
        let s = json!({"$defs": defs, "$ref": "#/$defs/L0"});
        let r = reduce(&s);
        assert!(r.to_string().matches("\"type\"").count() <= MAX_NODES);
    }

    #[test]
    fn recursive_refs_end() {
        let s = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"});
        let r = reduce(&s);
        assert_eq!(r["type"], "object");
    }
}
