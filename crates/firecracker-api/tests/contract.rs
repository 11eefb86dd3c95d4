//! Contract test: the Rust models and [`Operation`] table against Firecracker's
//! swagger spec.
//!
//! Every expectation is derived from the YAML; the Rust side
//! (`models::registry` and `Operation::ALL`) is what is under test, so the
//! next Firecracker spec shows its drift here. For each definition an example
//! JSON with every property is synthesised from the property types,
//! deserialized into the Rust model and serialized back: it must come back
//! identical. Then required-only examples, missing required properties,
//! wrong-typed values, integer bounds and every enum value are probed.
//!
//! The spec is found in a `reference/`, `shared/reference/` or `docs/`
//! directory above this crate, or at `$FIRECRACKER_API_SPEC`. Run with
//! `-- --nocapture` to see the coverage summary.

#[path = "contract/spec.rs"]
mod spec;

use std::collections::BTreeSet;

use firecracker_api::models::{registry, Operation, Phase};
use serde_json::{json, Value};
use spec::{
    enum_values, example, free_form_example, int_bounds, is_free_form, load_spec, properties,
    required, schema_name, schema_type, wrong_value, Mode, Spec, METHODS, NOT_IN_SPEC,
};

fn describe_diff(sent: &Value, got: &Value) -> String {
    let (Some(sent), Some(got)) = (sent.as_object(), got.as_object()) else {
        return format!("sent {sent}, got back {got}");
    };
    let missing: Vec<_> = sent.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !sent.contains_key(*k)).collect();
    let changed: Vec<_> = sent
        .keys()
        .filter(|k| got.get(*k).is_some_and(|v| v != &sent[*k]))
        .collect();
    format!("lost (missing or misnamed in Rust) {missing:?}, added {extra:?}, changed {changed:?}")
}

#[derive(Default)]
struct Report {
    failures: Vec<String>,
    properties: (usize, usize),
    enum_values: (usize, usize),
    definitions: (usize, usize),
}

impl Report {
    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    fn expect_roundtrip(&mut self, def: &str, what: &str, sent: &Value) {
        match registry::roundtrip_json(def, sent.clone()) {
            None => self.fail(format!("{def}: no Rust model registered")),
            Some(Err(e)) => self.fail(format!("{def}: {what}: rejected {sent}: {e}")),
            Some(Ok(got)) if &got != sent => {
                self.fail(format!("{def}: {what}: {}", describe_diff(sent, &got)));
            }
            Some(Ok(_)) => {}
        }
    }

    fn expect_rejected(&mut self, def: &str, what: &str, sent: &Value) {
        if let Some(Ok(_)) = registry::roundtrip_json(def, sent.clone()) {
            self.fail(format!("{def}: {what}: accepted {sent}"));
        }
    }

    /// The Rust enum `key` has exactly the spec's values.
    fn check_enum_set(&mut self, key: &str, spec_values: &[Value]) {
        self.enum_values.0 += spec_values.len();
        let rust: BTreeSet<String> = match registry::enum_values(key) {
            None => return self.fail(format!("{key}: no Rust enum registered")),
            Some(Err(e)) => return self.fail(format!("{key}: enum does not serialize: {e}")),
            Some(Ok(values)) => values.iter().map(Value::to_string).collect(),
        };
        let spec: BTreeSet<String> = spec_values.iter().map(Value::to_string).collect();
        if rust == spec {
            self.enum_values.1 += spec_values.len();
        } else {
            self.fail(format!("{key}: Rust enum values {rust:?} != spec {spec:?}"));
        }
    }
}

/// A definition under test and its every-property example.
struct Subject<'a> {
    name: &'a str,
    full: Value,
    /// Whether `full` round-trips; if not, only the probes that expect a
    /// rejection run (the others would fail for the same reason).
    full_ok: bool,
    required: BTreeSet<String>,
}

fn check_property(spec: &Spec, r: &mut Report, subject: &Subject, key: &str, prop: &Value) {
    let def = subject.name;
    let with = |value: Value| {
        let mut v = subject.full.clone();
        v[key] = value;
        v
    };
    let mut without = subject.full.clone();
    if let Some(map) = without.as_object_mut() {
        map.remove(key);
    }
    if subject.required.contains(key) {
        r.expect_rejected(def, &format!("required `{key}` missing"), &without);
    } else if subject.full_ok {
        r.expect_roundtrip(def, &format!("optional `{key}` absent"), &without);
    }
    if let Some(wrong) = wrong_value(spec, prop) {
        r.expect_rejected(def, &format!("`{key}` of the wrong type"), &with(wrong));
    }
    if !subject.full_ok {
        r.enum_values.0 += enum_values(prop).map_or(0, |values| values.len());
        return;
    }
    if schema_type(prop) == Some("integer") {
        let (low, high) = int_bounds(prop);
        for n in [low, high] {
            r.expect_roundtrip(def, &format!("`{key}` = {n}"), &with(json!(n)));
        }
    }
    if let Some(values) = enum_values(prop) {
        r.check_enum_set(&format!("{def}.{key}"), &values);
        for value in values {
            r.expect_roundtrip(def, &format!("`{key}` = {value}"), &with(value.clone()));
        }
    }
}

fn check_definition(spec: &Spec, r: &mut Report, name: &str, def: &Value) {
    let failures_before = r.failures.len();
    r.definitions.0 += 1;
    if registry::roundtrip_json(name, Value::Null).is_none() {
        let props = properties(def);
        r.properties.0 += props.len();
        r.enum_values.0 += std::iter::once(def)
            .chain(props.values())
            .filter_map(enum_values)
            .map(|values| values.len())
            .sum::<usize>();
        return r.fail(format!("{name}: no Rust model registered"));
    }
    if let Some(values) = enum_values(def) {
        r.check_enum_set(name, &values);
        for value in &values {
            r.expect_roundtrip(name, "enum value", value);
        }
        r.expect_rejected(name, "value outside the enum", &json!(NOT_IN_SPEC));
    } else if is_free_form(def) {
        r.expect_roundtrip(name, "free-form object", &free_form_example());
    } else {
        let (full, minimal) = match (
            example(spec, def, Mode::AllProperties, 0),
            example(spec, def, Mode::RequiredOnly, 0),
        ) {
            (Ok(full), Ok(minimal)) => (full, minimal),
            (Err(e), _) | (_, Err(e)) => return r.fail(format!("{name}: spec unsupported: {e}")),
        };
        let before_full = r.failures.len();
        r.expect_roundtrip(name, "every property present", &full);
        let full_ok = r.failures.len() == before_full;
        r.expect_roundtrip(name, "only required properties", &minimal);
        let subject = Subject {
            name,
            full,
            full_ok,
            required: required(def),
        };
        for (key, prop) in properties(def) {
            let before = r.failures.len();
            r.properties.0 += 1;
            check_property(spec, r, &subject, &key, &prop);
            if full_ok && r.failures.len() == before {
                r.properties.1 += 1;
            }
        }
    }
    if r.failures.len() == failures_before {
        r.definitions.1 += 1;
    }
}

fn coverage(label: &str, (total, ok): (usize, usize)) -> String {
    format!("{ok}/{total} {label}")
}

#[test]
fn every_definition_matches_its_model() {
    let Some(spec) = load_spec() else { return };
    let mut r = Report::default();
    for (name, def) in &spec.defs {
        check_definition(&spec, &mut r, name, def);
    }
    println!(
        "definitions contract: {}, {}, {}",
        coverage("definitions", r.definitions),
        coverage("properties", r.properties),
        coverage("enum values", r.enum_values)
    );
    assert!(
        r.failures.is_empty(),
        "{} failures:\n{}",
        r.failures.len(),
        r.failures.join("\n")
    );
    assert_eq!(r.definitions.0, spec.defs.len());
}

#[test]
fn registry_has_nothing_outside_the_spec() {
    let Some(spec) = load_spec() else { return };
    for name in registry::DEFINITIONS {
        assert!(
            spec.defs.contains_key(*name),
            "model {name} is not a spec definition"
        );
    }
    for key in registry::ENUMS {
        let schema = match key.split_once('.') {
            None => spec.defs.get(*key),
            Some((def, prop)) => spec
                .defs
                .get(def)
                .and_then(|d| d.get("properties")?.get(prop)),
        };
        assert!(
            schema.and_then(enum_values).is_some(),
            "Rust enum {key} is not a spec enum"
        );
    }
}

/// What the spec says of one operation, or what the Rust table says.
#[derive(Debug, PartialEq)]
struct OperationView {
    operation_id: String,
    request_body: Result<Option<String>, String>,
    request_body_required: bool,
    response_body: Result<Option<String>, String>,
    phase: Phase,
    path_params: Vec<String>,
}

fn rust_view(op: Operation) -> OperationView {
    OperationView {
        operation_id: op.operation_id().to_owned(),
        request_body: Ok(op.request_body().map(str::to_owned)),
        request_body_required: op.request_body_required(),
        response_body: Ok(op.response_body().map(str::to_owned)),
        phase: op.phase(),
        path_params: op.path_param().into_iter().map(str::to_owned).collect(),
    }
}

fn spec_view(spec: &Spec, item: &Value) -> OperationView {
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    let params = item.get("parameters").and_then(Value::as_array);
    let params: Vec<&Value> = params.into_iter().flatten().collect();
    let located = |place: &'static str| {
        params
            .iter()
            .filter(move |p| p.get("in") == Some(&json!(place)))
    };
    let body = located("body").next();
    let mut success: Vec<(&String, &Value)> = item
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(code, _)| code.starts_with('2'))
        .collect();
    success.sort_by_key(|(code, _)| code.as_str());
    let summary = text("summary");
    OperationView {
        operation_id: text("operationId").to_owned(),
        request_body: body
            .and_then(|p| p.get("schema"))
            .map(|s| schema_name(spec, s))
            .transpose(),
        request_body_required: body.and_then(|p| p.get("required")) == Some(&json!(true)),
        response_body: success
            .iter()
            .find_map(|(_, r)| r.get("schema"))
            .map(|s| schema_name(spec, s))
            .transpose(),
        phase: if summary.contains("Pre-boot only") {
            Phase::PreBoot
        } else if summary.contains("Post-boot only") {
            Phase::PostBoot
        } else {
            Phase::Any
        },
        path_params: located("path")
            .filter_map(|p| p.get("name")?.as_str())
            .map(str::to_owned)
            .collect(),
    }
}

/// The concrete paths `op` builds, valid and invalid ids.
fn check_paths(op: Operation, template: &str, params: &[String]) -> Result<(), String> {
    let placeholders: Vec<&str> = template
        .split('{')
        .skip(1)
        .filter_map(|s| Some(s.split_once('}')?.0))
        .collect();
    if placeholders != params {
        return Err(format!(
            "path parameters {params:?} != template placeholders {placeholders:?}"
        ));
    }
    let built = |id: Option<&str>| op.path(id).map_err(|e| e.to_string());
    match params {
        [] => (built(None)? == template)
            .then_some(())
            .ok_or("wrong concrete path".into()),
        [param] => {
            let id = "Id_0-9";
            if built(Some(id))? != template.replace(&format!("{{{param}}}"), id) {
                return Err(format!("wrong concrete path for id {id}"));
            }
            for bad in [
                None,
                Some(""),
                Some("a/b"),
                Some("../x"),
                Some("a b"),
                Some("a?b"),
            ] {
                if let Ok(path) = built(bad) {
                    return Err(format!("id {bad:?} accepted as {path}"));
                }
            }
            Ok(())
        }
        _ => Err(format!(
            "{} path parameters; Operation supports one",
            params.len()
        )),
    }
}

#[test]
fn every_operation_matches_the_spec() {
    let Some(spec) = load_spec() else { return };
    let (mut total, mut ok, mut failures) = (0, 0, Vec::new());
    for (path, item) in &spec.paths {
        let methods = item.as_object().into_iter().flatten();
        for (method, item) in methods.filter(|(m, _)| METHODS.contains(&m.as_str())) {
            total += 1;
            let name = format!("{} {path}", method.to_uppercase());
            let rust = Operation::ALL.iter().copied().find(|op| {
                op.path_template() == path && op.method().as_str().eq_ignore_ascii_case(method)
            });
            let Some(op) = rust else {
                failures.push(format!("{name}: no Operation"));
                continue;
            };
            let (expected, actual) = (spec_view(&spec, item), rust_view(op));
            let paths = check_paths(op, path, &expected.path_params);
            if expected != actual {
                failures.push(format!("{name}: Rust {actual:?}\n  != spec {expected:?}"));
            } else if let Err(e) = paths {
                failures.push(format!("{name}: {e}"));
            } else {
                ok += 1;
            }
        }
    }
    for op in Operation::ALL {
        let method = op.method().as_str().to_ascii_lowercase();
        if spec
            .paths
            .get(op.path_template())
            .and_then(|item| item.get(&method))
            .is_none()
        {
            failures.push(format!(
                "{op:?} ({} {}) is not in the spec",
                op.method(),
                op.path_template()
            ));
        }
    }
    println!(
        "operations contract: {}, {} paths, {} Rust operations",
        coverage("paths+methods", (total, ok)),
        spec.paths.len(),
        Operation::ALL.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(total, Operation::ALL.len());
}
