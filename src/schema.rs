//! JSON Schema validation of tool-call arguments: a call whose input does not match the
//! `input_schema` (`parameters`) the client sent is an upstream fault, never something a client
//! executes. The local worker uses it too, to re-sample a call its grammar let through.
//!
//! What is checked is what tool schemas use (JSON Schema 2020-12, with the draft-7 forms
//! clients still send): `type` (one or a list; an integer is a number without a fraction),
//! `enum`, `const`, `properties`, `required`, `additionalProperties`, `patternProperties`,
//! `propertyNames`, `minProperties`/`maxProperties`, `items` (a schema, or draft-7's list),
//! `prefixItems`, `minItems`/`maxItems`, `uniqueItems`, `contains`, `minLength`/`maxLength`
//! (in characters), `pattern`, `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`
//! (numbers, or draft-4's booleans), `multipleOf`, `allOf`/`anyOf`/`oneOf`/`not`,
//! `if`/`then`/`else`, and `$ref` to the same document (`#`, `#/$defs/…`, `#/definitions/…`).
//! `format` is an annotation (as 2020-12 says by default) and unknown keywords are ignored;
//! a `pattern` this crate's regex engine cannot compile (look-around) is not checked.

use serde_json::{Map, Value};
use std::fmt;

/// Why a value does not match: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON Pointer to the value (`/edits/0/path`; empty for the whole).
    pub at: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.why)
        } else {
            write!(f, "at {}: {}", self.at, self.why)
        }
    }
}

/// `$ref`s followed in one path before the schema is taken to loop.
const MAX_DEPTH: usize = 64;

/// Schemas visited in one validation before it gives up and lets the value pass: a client's
/// schema whose combinators branch through `$ref`s could otherwise take exponential time.
const MAX_STEPS: usize = 100_000;

/// Checks `value` against `schema`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), Invalid> {
    let c = Check {
        root: schema,
        steps: std::cell::Cell::new(0),
    };
    c.check(schema, value, &mut String::new(), 0)
}

/// The arguments of a call to one of `tools` (name, schema) checked: the tool must be one of
/// them and its input an object valid against its schema. The error says which.
pub fn check_call<'a>(
    tools: impl IntoIterator<Item = (&'a str, &'a Value)>,
    name: &str,
    input: &Value,
) -> Result<(), String> {
    let mut offered = Vec::new();
    for (n, schema) in tools {
        if n == name {
            return validate(schema, input).map_err(|e| {
                format!("the call to tool `{name}` does not match its input schema: {e}")
            });
        }
        offered.push(n);
    }
    Err(format!(
        "the call names tool `{name}`, which was not offered (offered: {})",
        if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(", ")
        }
    ))
}

struct Check<'a> {
    root: &'a Value,
    /// Schemas visited so far ([`MAX_STEPS`]).
    steps: std::cell::Cell<usize>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, ty: &str) -> bool {
    match ty {
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        other => kind(v) == other,
    }
}

/// A schema's own value (an enum member, a const) for a message: the client wrote it. The
/// call's values are never shown (a command, a file's text, a token may be in them).
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Equal as JSON values are: numbers by value (`1.0` is `1`), the rest structurally.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

impl<'a> Check<'a> {
    fn fail(&self, at: &str, why: impl Into<String>) -> Result<(), Invalid> {
        Err(Invalid {
            at: at.to_owned(),
            why: why.into(),
        })
    }

    /// The schema a local `$ref` points at.
    fn resolve(&self, r: &str) -> Option<&'a Value> {
        let pointer = r.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        // A URI fragment: percent-encoded, then a JSON Pointer (`~0`, `~1` as `pointer` reads).
        let bytes = pointer.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes[i],
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(h), Some(l)) => {
                    decoded.push((h * 16 + l) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    decoded.push(b);
                    i += 1;
                }
            }
        }
        self.root.pointer(&String::from_utf8(decoded).ok()?)
    }

    fn check(
        &self,
        schema: &Value,
        v: &Value,
        at: &mut String,
        depth: usize,
    ) -> Result<(), Invalid> {
        self.steps.set(self.steps.get() + 1);
        if self.steps.get() > MAX_STEPS {
            return Ok(());
        }
        let s = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return self.fail(at, "no value is allowed here"),
            Value::Object(s) => s,
            // Not a schema: nothing to hold the value to.
            _ => return Ok(()),
        };
        if let Some(Value::String(r)) = s.get("$ref") {
            if depth >= MAX_DEPTH {
                return self.fail(at, format!("the schema's $ref {r} loops"));
            }
            // A reference this checker cannot follow (`$id`, `$anchor`, another document)
            // holds the value to nothing rather than refuse a good call.
            if let Some(target) = self.resolve(r) {
                self.check(target, v, at, depth + 1)?;
            }
        }
        self.types(s, v, at)?;
        if let Some(Value::Array(options)) = s.get("enum") {
            if !options.iter().any(|o| same(o, v)) {
                let list: Vec<String> = options.iter().map(shown).collect();
                let why = format!("the {} is not one of {}", kind(v), list.join(", "));
                return self.fail(at, why);
            }
        }
        if let Some(c) = s.get("const") {
            if !same(c, v) {
                return self.fail(at, format!("the {} is not {}", kind(v), shown(c)));
            }
        }
        match v {
            Value::Object(o) => self.object(s, o, at, depth)?,
            Value::Array(a) => self.array(s, a, at, depth)?,
            Value::String(t) => self.string(s, t, at)?,
            Value::Number(_) => self.number(s, v, at)?,
            _ => {}
        }
        self.combinators(s, v, at, depth)
    }

    fn types(&self, s: &Map<String, Value>, v: &Value, at: &str) -> Result<(), Invalid> {
        if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        let ok = match s.get("type") {
            Some(Value::String(t)) => is_type(v, t),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(|t| is_type(v, t)),
            _ => true,
        };
        if ok {
            return Ok(());
        }
        let want = match &s["type"] {
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            t => t.as_str().unwrap_or("?").to_owned(),
        };
        self.fail(at, format!("expected {want}, got {}", kind(v)))
    }

    fn object(
        &self,
        s: &Map<String, Value>,
        o: &Map<String, Value>,
        at: &mut String,
        depth: usize,
    ) -> Result<(), Invalid> {
        if let Some(Value::Array(req)) = s.get("required") {
            for name in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(name) {
                    return self.fail(at, format!("the required property `{name}` is missing"));
                }
            }
        }
        let count = |k: &str| s.get(k).and_then(Value::as_u64);
        if count("minProperties").is_some_and(|n| (o.len() as u64) < n) {
            return self.fail(at, format!("fewer than {} properties", s["minProperties"]));
        }
        if count("maxProperties").is_some_and(|n| (o.len() as u64) > n) {
            return self.fail(at, format!("more than {} properties", s["maxProperties"]));
        }
        let props = s.get("properties").and_then(Value::as_object);
        let patterns: Vec<(regex::Regex, &Value)> = s
            .get("patternProperties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter_map(|(k, sub)| Some((regex::Regex::new(k).ok()?, sub)))
                    .collect()
            })
            .unwrap_or_default();
        for (k, item) in o {
            let len = at.len();
            at.push('/');
            at.push_str(&k.replace('~', "~0").replace('/', "~1"));
            if let Some(names) = s.get("propertyNames") {
                self.check(names, &Value::String(k.clone()), at, depth)?;
            }
            let mut matched = false;
            if let Some(sub) = props.and_then(|p| p.get(k)) {
                matched = true;
                self.check(sub, item, at, depth)?;
            }
            for (re, sub) in &patterns {
                if re.is_match(k) {
                    matched = true;
                    self.check(sub, item, at, depth)?;
                }
            }
            if !matched {
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        at.truncate(len);
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return self.fail(
                            at,
                            format!(
                                "property `{k}` is not allowed (allowed: {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                    Some(extra) => self.check(extra, item, at, depth)?,
                    None => {}
                }
            }
            at.truncate(len);
        }
        Ok(())
    }

    fn array(
        &self,
        s: &Map<String, Value>,
        a: &[Value],
        at: &mut String,
        depth: usize,
    ) -> Result<(), Invalid> {
        let count = |k: &str| s.get(k).and_then(Value::as_u64);
        if let Some(n) = count("minItems").filter(|&n| (a.len() as u64) < n) {
            return self.fail(at, format!("{} items, fewer than {n}", a.len()));
        }
        if let Some(n) = count("maxItems").filter(|&n| (a.len() as u64) > n) {
            return self.fail(at, format!("{} items, more than {n}", a.len()));
        }
        if s.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, x) in a.iter().enumerate() {
                if a[..i].contains(x) {
                    return self.fail(at, format!("item {i} repeats an earlier one"));
                }
            }
        }
        // 2020-12's prefixItems + items, or draft-7's items list + additionalItems.
        let (prefix, rest) = match (s.get("prefixItems"), s.get("items")) {
            (Some(Value::Array(p)), rest) => (p.as_slice(), rest),
            (_, Some(Value::Array(p))) => (p.as_slice(), s.get("additionalItems")),
            (_, rest) => (&[][..], rest),
        };
        for (i, item) in a.iter().enumerate() {
            let sub = prefix
                .get(i)
                .or(if i >= prefix.len() { rest } else { None });
            if let Some(sub) = sub {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                self.check(sub, item, at, depth)?;
                at.truncate(len);
            }
        }
        if let Some(c) = s.get("contains") {
            let found = a
                .iter()
                .any(|x| self.check(c, x, &mut at.clone(), depth).is_ok());
            if !found {
                return self.fail(at, "no item matches `contains`");
            }
        }
        Ok(())
    }

    fn string(&self, s: &Map<String, Value>, t: &str, at: &str) -> Result<(), Invalid> {
        let chars = t.chars().count() as u64;
        if let Some(n) = s
            .get("minLength")
            .and_then(Value::as_u64)
            .filter(|&n| chars < n)
        {
            return self.fail(at, format!("{chars} characters, fewer than {n}"));
        }
        if let Some(n) = s
            .get("maxLength")
            .and_then(Value::as_u64)
            .filter(|&n| chars > n)
        {
            return self.fail(at, format!("{chars} characters, more than {n}"));
        }
        if let Some(Value::String(p)) = s.get("pattern") {
            if let Ok(re) = regex::Regex::new(p) {
                if !re.is_match(t) {
                    return self.fail(at, format!("the string does not match the pattern {p}"));
                }
            }
        }
        Ok(())
    }

    fn number(&self, s: &Map<String, Value>, v: &Value, at: &str) -> Result<(), Invalid> {
        let x = v.as_f64().unwrap_or(0.0);
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        let flag = |k: &str| s.get(k) == Some(&Value::Bool(true));
        if let Some(min) = num("minimum") {
            if x < min || (flag("exclusiveMinimum") && x == min) {
                return self.fail(at, format!("the number is below the minimum {min}"));
            }
        }
        if let Some(max) = num("maximum") {
            if x > max || (flag("exclusiveMaximum") && x == max) {
                return self.fail(at, format!("the number is above the maximum {max}"));
            }
        }
        if num("exclusiveMinimum").is_some_and(|m| x <= m) {
            return self.fail(
                at,
                format!("the number is not above {}", s["exclusiveMinimum"]),
            );
        }
        if num("exclusiveMaximum").is_some_and(|m| x >= m) {
            return self.fail(
                at,
                format!("the number is not below {}", s["exclusiveMaximum"]),
            );
        }
        if let Some(m) = num("multipleOf").filter(|m| *m > 0.0) {
            // Relative: 123456789.12 is a multiple of 0.01 although the quotient is not exact.
            let q = x / m;
            if (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
                return self.fail(at, format!("the number is not a multiple of {m}"));
            }
        }
        Ok(())
    }

    fn combinators(
        &self,
        s: &Map<String, Value>,
        v: &Value,
        at: &mut String,
        depth: usize,
    ) -> Result<(), Invalid> {
        let list = |k: &str| s.get(k).and_then(Value::as_array).map(Vec::as_slice);
        for sub in list("allOf").unwrap_or_default() {
            self.check(sub, v, at, depth)?;
        }
        if let Some(any) = list("anyOf") {
            let mut first = None;
            for sub in any {
                match self.check(sub, v, &mut at.clone(), depth) {
                    Ok(()) => {
                        first = None;
                        break;
                    }
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return self.fail(at, format!("matches none of anyOf (the first says: {e})"));
            }
        }
        if let Some(one) = list("oneOf") {
            let matching = one
                .iter()
                .filter(|sub| self.check(sub, v, &mut at.clone(), depth).is_ok())
                .count();
            if matching != 1 {
                return self.fail(
                    at,
                    format!("matches {matching} of oneOf's schemas, not exactly one"),
                );
            }
        }
        if let Some(not) = s.get("not") {
            if self.check(not, v, &mut at.clone(), depth).is_ok() {
                return self.fail(at, "matches the schema under `not`");
            }
        }
        if let Some(cond) = s.get("if") {
            let branch = if self.check(cond, v, &mut at.clone(), depth).is_ok() {
                s.get("then")
            } else {
                s.get("else")
            };
            if let Some(b) = branch {
                self.check(b, v, at, depth)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A schema shaped like Claude Code's MultiEdit: required fields, an enum, nested objects
    /// in an array, no extra properties.
    fn edit() -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "minLength": 1},
                "mode": {"type": "string", "enum": ["replace", "insert"]},
                "edits": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "properties": {
                        "old_string": {"type": "string"},
                        "new_string": {"type": "string"},
                        "replace_all": {"type": "boolean", "default": false}
                    },
                    "required": ["old_string", "new_string"],
                    "additionalProperties": false
                }},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 600}
            },
            "required": ["file_path", "edits"],
            "additionalProperties": false
        })
    }

    #[test]
    fn a_valid_call_passes() {
        let ok = json!({"file_path": "a.rs", "mode": "replace", "timeout": 30.0,
            "edits": [{"old_string": "a", "new_string": "b", "replace_all": true}]});
        validate(&edit(), &ok).unwrap();
    }

    #[test]
    fn each_violation_says_where_and_what() {
        let cases = [
            (json!({"edits": []}), "", "`file_path` is missing"),
            (
                json!({"file_path": "a", "edits": []}),
                "/edits",
                "0 items, fewer than 1",
            ),
            (
                json!({"file_path": 3, "edits": [{}]}),
                "/file_path",
                "expected string, got integer",
            ),
            (
                json!({"file_path": "a", "mode": "append", "edits": [{"old_string": "", "new_string": ""}]}),
                "/mode",
                "the string is not one of \"replace\", \"insert\"",
            ),
            (
                json!({"file_path": "a", "edits": [{"old_string": "x"}]}),
                "/edits/0",
                "`new_string` is missing",
            ),
            (
                json!({"file_path": "a", "edits": [{"old_string": "x", "new_string": "y", "force": 1}]}),
                "/edits/0",
                "property `force` is not allowed",
            ),
            (
                json!({"file_path": "a", "timeout": 1.5, "edits": [{"old_string": "", "new_string": ""}]}),
                "/timeout",
                "expected integer",
            ),
            (
                json!({"file_path": "a", "timeout": 601, "edits": [{"old_string": "", "new_string": ""}]}),
                "/timeout",
                "above the maximum 600",
            ),
            (
                json!({"file_path": "", "edits": [{"old_string": "", "new_string": ""}]}),
                "/file_path",
                "0 characters, fewer than 1",
            ),
            (json!("a.rs"), "", "expected object, got string"),
        ];
        for (value, at, why) in cases {
            let e = validate(&edit(), &value).unwrap_err();
            assert_eq!(e.at, at, "{value}: {e}");
            assert!(e.why.contains(why), "{value}: {e}");
        }
    }

    #[test]
    fn refs_combinators_and_draft_7_forms() {
        let s = json!({
            "$defs": {"pos": {"type": "integer", "exclusiveMinimum": 0}},
            "type": "object",
            "properties": {
                "n": {"$ref": "#/$defs/pos"},
                "id": {"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "null"}]},
                "pair": {"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": false},
                "tags": {"type": "array", "uniqueItems": true},
                "shape": {"oneOf": [{"const": "circle"}, {"const": "square"}]}
            }
        });
        validate(
            &s,
            &json!({"n": 2, "id": null, "pair": ["a", 1], "tags": [1, 2], "shape": "circle"}),
        )
        .unwrap();
        let bad = [
            (json!({"n": 0}), "/n"),
            (json!({"id": "A1"}), "/id"),
            (json!({"pair": ["a", 1, 2]}), "/pair/2"),
            (json!({"tags": [1, 1]}), "/tags"),
            (json!({"shape": "oval"}), "/shape"),
        ];
        for (v, at) in bad {
            assert_eq!(validate(&s, &v).unwrap_err().at, at, "{v}");
        }
        // A $ref that loops is an error, not a stack overflow.
        let looped = json!({"$ref": "#"});
        assert!(validate(&looped, &json!(1))
            .unwrap_err()
            .why
            .contains("loops"));
    }

    #[test]
    fn good_arguments_are_not_refused_and_values_are_never_quoted() {
        // Numbers by value, large multiples, OpenAPI's nullable, a reference it cannot follow,
        // pointer escapes in a reference.
        let s = json!({"type": "object", "properties": {
            "n": {"enum": [1, 2]}, "c": {"const": 0.5},
            "price": {"type": "number", "multipleOf": 0.01},
            "maybe": {"type": "string", "nullable": true},
            "elsewhere": {"$ref": "https://example.com/schema.json"},
            "slash": {"$ref": "#/$defs/a~1b"},
            "pct": {"$ref": "#/$defs/with%20space"}},
            "$defs": {"a/b": {"type": "integer"}, "with space": {"type": "boolean"}}});
        validate(
            &s,
            &json!({"n": 1.0, "c": 0.5, "price": 123456789.12, "maybe": null,
            "elsewhere": [1], "slash": 3, "pct": true}),
        )
        .unwrap();
        assert_eq!(
            validate(&s, &json!({"slash": "x"})).unwrap_err().at,
            "/slash"
        );
        let secret = "sk-ant-api03-secret-value";
        for bad in [
            json!({"n": secret}),
            json!({"c": secret}),
            json!({"price": secret}),
        ] {
            let e = validate(&s, &bad).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
        }
    }

    #[test]
    fn a_schema_that_branches_without_end_gives_up_quickly() {
        let s = json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]}},
            "$ref": "#/$defs/a"});
        let started = std::time::Instant::now();
        let _ = validate(&s, &json!(1));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_call_to_a_tool_not_offered_is_refused() {
        let s = edit();
        let tools = [("Edit", &s)];
        let e = check_call(tools, "Write", &json!({})).unwrap_err();
        assert!(
            e.contains("`Write`, which was not offered (offered: Edit)"),
            "{e}"
        );
        let e = check_call(tools, "Edit", &json!({})).unwrap_err();
        assert!(e.contains("`Edit` does not match its input schema: the required property `file_path` is missing"), "{e}");
    }
}
