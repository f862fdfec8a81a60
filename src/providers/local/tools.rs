//! Tool calls in a local model's output, in the formats models use: Hermes/Qwen
//! (`<tool_call>{"name":…,"arguments":…}</tool_call>`, one or more), Llama 3 (the whole answer is
//! `{"name":…,"parameters":…}`, maybe after `<|python_tag|>`, several joined by `;`) and Mistral
//! (`[TOOL_CALLS] [{"name":…,"arguments":…}, …]`). Anything that does not parse is text: a
//! malformed tool call is an answer in words, never a crash and never half a call.

use serde_json::Value;

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: Value,
}

/// What the output says.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A plain answer.
    Text(String),
    /// Tool calls, and any text the model wrote before them.
    Calls {
        /// Text before the first call (may be empty).
        text: String,
        /// The calls, in order.
        calls: Vec<Call>,
    },
}

fn call_of(v: &Value) -> Option<Call> {
    let name = v.get("name")?.as_str()?.to_owned();
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    // Some models send the arguments as a JSON string.
    let arguments = match args {
        Value::String(s) => serde_json::from_str(&s).ok().filter(Value::is_object)?,
        Value::Object(_) => args,
        _ => return None,
    };
    Some(Call { name, arguments })
}

/// Reads tool calls out of a whole answer.
pub fn parse(output: &str) -> Parsed {
    let text = || Parsed::Text(output.to_owned());
    // Hermes / Qwen.
    if let Some(first) = output.find("<tool_call>") {
        let mut calls = Vec::new();
        let mut rest = &output[first..];
        while let Some(start) = rest.find("<tool_call>") {
            let body_start = start + "<tool_call>".len();
            let Some(len) = rest[body_start..].find("</tool_call>") else {
                return text();
            };
            let Some(call) =
                serde_json::from_str::<Value>(rest[body_start..body_start + len].trim())
                    .ok()
                    .as_ref()
                    .and_then(call_of)
            else {
                return text();
            };
            calls.push(call);
            rest = &rest[body_start + len + "</tool_call>".len()..];
        }
        if !rest.trim().is_empty() {
            return text();
        }
        return Parsed::Calls {
            text: output[..first].trim_end().to_owned(),
            calls,
        };
    }
    // Mistral.
    if let Some(at) = output.find("[TOOL_CALLS]") {
        let list = output[at + "[TOOL_CALLS]".len()..].trim();
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(list) else {
            return text();
        };
        let calls: Option<Vec<Call>> = items.iter().map(call_of).collect();
        return match calls {
            Some(calls) if !calls.is_empty() => Parsed::Calls {
                text: output[..at].trim_end().to_owned(),
                calls,
            },
            _ => text(),
        };
    }
    // Llama 3: the whole answer is the call(s).
    let body = output.trim().trim_start_matches("<|python_tag|>").trim();
    if body.starts_with('{') {
        let calls: Option<Vec<Call>> = body
            .split(';')
            .map(|part| {
                serde_json::from_str::<Value>(part.trim())
                    .ok()
                    .as_ref()
                    .and_then(call_of)
            })
            .collect();
        if let Some(calls) = calls.filter(|c| !c.is_empty()) {
            return Parsed::Calls {
                text: String::new(),
                calls,
            };
        }
    }
    text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(p: Parsed) -> Vec<(String, Value)> {
        match p {
            Parsed::Calls { calls, .. } => {
                calls.into_iter().map(|c| (c.name, c.arguments)).collect()
            }
            Parsed::Text(t) => panic!("expected calls, got text {t:?}"),
        }
    }

    #[test]
    fn hermes_and_qwen_calls_parse_with_the_text_before_them() {
        // As Qwen2.5-Coder writes them.
        let out = "I'll read both files.\n<tool_call>\n{\"name\": \"Read\", \"arguments\": {\"file_path\": \"src/main.rs\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"Read\", \"arguments\": {\"file_path\": \"Cargo.toml\"}}\n</tool_call>";
        let p = parse(out);
        let Parsed::Calls { text, .. } = &p else {
            panic!()
        };
        assert_eq!(text, "I'll read both files.");
        assert_eq!(
            calls(p),
            vec![
                ("Read".into(), json!({"file_path": "src/main.rs"})),
                ("Read".into(), json!({"file_path": "Cargo.toml"})),
            ]
        );
    }

    #[test]
    fn llama3_json_calls_parse_with_parameters_and_python_tag() {
        let out =
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            calls(parse(out)),
            vec![("get_weather".into(), json!({"city": "Paris"}))]
        );
        let two =
            "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}";
        assert_eq!(calls(parse(two)).len(), 2);
    }

    #[test]
    fn mistral_calls_parse_and_string_arguments_are_decoded() {
        let out =
            "[TOOL_CALLS] [{\"name\": \"Bash\", \"arguments\": \"{\\\"command\\\": \\\"ls\\\"}\"}]";
        assert_eq!(
            calls(parse(out)),
            vec![("Bash".into(), json!({"command": "ls"}))]
        );
    }

    #[test]
    fn broken_calls_are_text_never_half_a_call() {
        for out in [
            "<tool_call>\n{\"name\": \"Read\", \"arguments\": {\"file_pa", // cut off
            "<tool_call>{\"name\": \"Read\", \"arguments\": {}}</tool_call> and then I", // text after
            "<tool_call>not json</tool_call>",
            "[TOOL_CALLS] [{\"arguments\": {}}]", // no name
            "[TOOL_CALLS] nothing",
            "{\"name\": \"Read\", \"parameters\": 7}", // not an object
            "{ this is prose in braces }",
            "Just an answer.",
        ] {
            assert_eq!(parse(out), Parsed::Text(out.to_owned()), "{out:?}");
        }
    }
}
