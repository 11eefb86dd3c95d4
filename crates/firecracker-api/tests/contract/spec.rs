//! Reading the swagger spec: loading, schema helpers, and example values
//! synthesised from schemas.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

/// File name of the spec.
const SPEC_FILE: &str = "firecracker-v1.16.1-swagger.yaml";
/// Environment variable overriding where the spec is.
const SPEC_ENV: &str = "FIRECRACKER_API_SPEC";
/// The keys of a path item that are operations.
pub const METHODS: &[&str] = &["get", "put", "post", "patch", "delete", "head", "options"];
/// A string that is no value of any enum.
pub const NOT_IN_SPEC: &str = "__not_a_spec_value__";

/// The parts of the spec under test.
pub struct Spec {
    pub paths: Map<String, Value>,
    pub defs: Map<String, Value>,
}

/// Where the spec is, if it can be found.
fn spec_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(SPEC_ENV) {
        return Some(path.into());
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        for sub in ["reference", "shared/reference", "docs"] {
            let candidate = dir.join(sub).join(SPEC_FILE);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// YAML to JSON, with map keys such as `200` turned into strings.
fn yaml_to_json(yaml: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => n
            .as_u64()
            .map(Value::from)
            .or_else(|| n.as_i64().map(Value::from))
            .unwrap_or_else(|| json!(n.as_f64())),
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match yaml_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// The spec, or `None` (the test is then counted as skipped) when it is not found.
pub fn load_spec() -> Option<Spec> {
    let Some(path) = spec_path() else {
        testkit::skip(
            "contract",
            &format!("Firecracker's API spec {SPEC_FILE} not found in reference/ or shared/reference/ above the workspace; set {SPEC_ENV}"),
        );
        return None;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc = yaml_to_json(serde_yaml::from_str(&text).unwrap());
    let mut section = |name: &str| match doc.get_mut(name).map(Value::take) {
        Some(Value::Object(map)) => map,
        _ => panic!("{}: no `{name}` map", path.display()),
    };
    Some(Spec {
        paths: section("paths"),
        defs: section("definitions"),
    })
}

pub fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/definitions/")
}

pub fn properties(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

pub fn required(schema: &Value) -> BTreeSet<String> {
    let list = schema.get("required").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

pub fn enum_values(schema: &Value) -> Option<Vec<Value>> {
    schema.get("enum").and_then(Value::as_array).cloned()
}

pub fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

pub fn is_free_form(schema: &Value) -> bool {
    properties(schema).is_empty()
        && schema
            .get("additionalProperties")
            .is_some_and(|a| a != &json!(false))
}

pub fn free_form_example() -> Value {
    json!({"latest": {"meta-data": {"n": 1, "list": ["a", true, null], "nested": {}}}})
}

/// Smallest and largest integer a property must hold: the spec's
/// minimum/maximum, else 0 and the `format`'s maximum (16 bits if none).
pub fn int_bounds(schema: &Value) -> (u64, u64) {
    let low = schema.get("minimum").and_then(Value::as_u64).unwrap_or(0);
    let high = schema.get("maximum").and_then(Value::as_u64).unwrap_or(
        match schema.get("format").and_then(Value::as_str) {
            Some("int64") => i64::MAX as u64,
            Some("int32") => i32::MAX as u64,
            _ => u64::from(u16::MAX),
        },
    );
    (low, high)
}

/// Which properties an example has.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every property.
    AllProperties,
    /// Only the required ones.
    RequiredOnly,
}

pub fn example(spec: &Spec, schema: &Value, mode: Mode, depth: u32) -> Result<Value, String> {
    if depth > 16 {
        return Err("schema nests too deep".into());
    }
    if let Some(name) = ref_name(schema) {
        let def = spec
            .defs
            .get(name)
            .ok_or(format!("$ref to unknown definition {name}"))?;
        return example(spec, def, mode, depth + 1);
    }
    if let Some(values) = enum_values(schema) {
        return values.first().cloned().ok_or("empty enum".into());
    }
    match schema_type(schema) {
        Some("string") => Ok(json!("example")),
        Some("integer") => Ok(json!(int_bounds(schema).0.max(1))),
        Some("boolean") => Ok(json!(true)),
        Some("array") => {
            let items = schema.get("items").ok_or("array without items")?;
            Ok(json!([example(spec, items, mode, depth + 1)?]))
        }
        Some("object") | None if is_free_form(schema) => Ok(free_form_example()),
        Some("object") | None => {
            let required = required(schema);
            let mut out = Map::new();
            for (key, prop) in properties(schema) {
                if mode == Mode::AllProperties || required.contains(&key) {
                    out.insert(key, example(spec, &prop, mode, depth + 1)?);
                }
            }
            Ok(Value::Object(out))
        }
        Some(other) => Err(format!("unsupported schema type {other}")),
    }
}

/// A value of the wrong JSON type (or outside the enum) for `schema`.
pub fn wrong_value(spec: &Spec, schema: &Value) -> Option<Value> {
    let schema = ref_name(schema)
        .and_then(|n| spec.defs.get(n))
        .unwrap_or(schema);
    if enum_values(schema).is_some() {
        return Some(json!(NOT_IN_SPEC));
    }
    match schema_type(schema) {
        Some("string") => Some(json!(12345)),
        Some("integer") => Some(json!("12")),
        Some("boolean") => Some(json!("true")),
        Some("array") => Some(json!({"not": "an array"})),
        _ if is_free_form(schema) => None,
        _ => Some(json!("not an object")),
    }
}

/// Strips documentation so that an inline schema can be matched to the
/// definition with the same structure.
pub fn strip_docs(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "description" | "example" | "summary"))
                .map(|(k, v)| (k.clone(), strip_docs(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_docs).collect()),
        other => other.clone(),
    }
}

pub fn schema_name(spec: &Spec, schema: &Value) -> Result<String, String> {
    if let Some(name) = ref_name(schema) {
        return Ok(name.to_owned());
    }
    let target = strip_docs(schema);
    let found: Vec<&String> = spec
        .defs
        .iter()
        .filter(|(_, d)| strip_docs(d) == target)
        .map(|(n, _)| n)
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(format!(
            "inline schema {schema} matches {} definitions",
            found.len()
        )),
    }
}
