//! The worker's prompt and grammars: the chat template rendered with minijinja (tools given to
//! a template that takes them, else described in Hermes form), and the GBNF grammars that
//! constrain a forced tool call.

use super::super::protocol::{ChatMessage, ToolSpec};

/// A chat template for models that ship none: ChatML.
pub(super) const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The prompt: the template with the generation prompt, then the prefill as is. Tools go to
/// a template that takes them (as `tools`, the Hugging Face convention); for one that does not,
/// they are described in the system message in Hermes form, which the answer parser reads.
pub(super) fn render(
    env: &minijinja::Environment<'_>,
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    template_takes_tools: bool,
    prefill: Option<&str>,
) -> Result<String, minijinja::Error> {
    let mut messages: Vec<ChatMessage> = messages.to_vec();
    if !tools.is_empty() && !template_takes_tools {
        let block = hermes_tools(tools);
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{block}", m.content),
            _ => messages.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: block,
                },
            ),
        }
    }
    let messages: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| {
            minijinja::Value::from_pairs([
                ("role", minijinja::Value::from(m.role.as_str())),
                ("content", minijinja::Value::from(m.content.as_str())),
            ])
        })
        .collect();
    let tools: Option<Vec<serde_json::Value>> = (template_takes_tools && !tools.is_empty())
        .then(|| tools.iter().map(function_json).collect());
    let mut prompt = env.get_template("chat")?.render(minijinja::context! {
        messages => messages,
        tools => minijinja::Value::from(minijinja::value::Serde(&tools)),
        add_generation_prompt => true,
        bos_token => "",
        eos_token => "",
    })?;
    if let Some(p) = prefill {
        prompt.push_str(p);
    }
    Ok(prompt)
}

/// A tool as chat templates and Hermes prompts describe it.
fn function_json(t: &ToolSpec) -> serde_json::Value {
    serde_json::json!({"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.parameters}})
}

/// The tools, and how to call them, in the Hermes form (`<tool_call>` JSON) that Qwen, Hermes
/// and many other instruct models were trained on.
fn hermes_tools(tools: &[ToolSpec]) -> String {
    let mut out = String::from(
        "# Tools\n\nYou may call one or more of these functions to help with the request. \
         Their signatures are inside <tools></tools>:\n<tools>\n",
    );
    for t in tools {
        out.push_str(&function_json(t).to_string());
        out.push('\n');
    }
    out.push_str(
        "</tools>\n\nTo call one, answer with a JSON object holding its name and arguments \
         inside <tool_call></tool_call> tags, one per call:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    out
}

/// The grammar for a forced call: the arguments follow the tool's own JSON Schema (llama.cpp's
/// schema-to-grammar, properties and required keys included, nothing else), else any JSON
/// object ([`tool_call_grammar`]) when the schema uses what the converter does not handle.
pub(super) fn forced_call_grammar(tools: &[ToolSpec], force: &str) -> String {
    let calls: Vec<serde_json::Value> = tools
        .iter()
        .filter(|t| force == "*" || t.name == force)
        .enumerate()
        .map(|(i, t)| {
            // Each schema moves under `oneOf/i/properties/arguments`: its own `$ref`s (pydantic's
            // `#/$defs/…`) must follow it there, or the converter fails on them and every tool
            // loses its grammar.
            let arguments =
                rebase_refs(&t.parameters, &format!("#/oneOf/{i}/properties/arguments"));
            serde_json::json!({"type": "object", "additionalProperties": false,
                "required": ["name", "arguments"],
                "properties": {"name": {"const": t.name}, "arguments": arguments}})
        })
        .collect();
    if calls.is_empty() {
        return tool_call_grammar(tools, force);
    }
    let schema = serde_json::json!({"oneOf": calls}).to_string();
    match llama_cpp_2::json_schema_to_grammar(&schema) {
        Ok(g) if g.lines().any(|l| l.starts_with("root ::= ")) => {
            let body: String = g
                .lines()
                .map(|l| match l.strip_prefix("root ::= ") {
                    Some(rest) => format!("call ::= {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            format!("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n{body}")
        }
        _ => tool_call_grammar(tools, force),
    }
}

/// The grammar for `tool_choice: auto`, applied lazily from the first `<tool_call>` the model
/// writes (its words before that are free): one or more Hermes calls, each to one of `tools`
/// with arguments valid against that tool's schema; after the last, only the end of the turn.
/// Whitespace around a call is free: the token that completes the trigger is replayed into the
/// grammar with whatever else it holds (`>\n\n`, `> {`).
/// `None` when the schema converter cannot express the tools (the calls are then checked after
/// the fact and re-sampled under [`forced_call_grammar`]).
pub(super) fn lazy_call_grammar(tools: &[ToolSpec]) -> Option<String> {
    let forced = forced_call_grammar(tools, "*");
    let body = forced.strip_prefix("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n")?;
    body.lines().any(|l| l.starts_with("call ::= ")).then(|| {
        format!(
            "root ::= tc (tcws tc)*\ntc ::= \"<tool_call>\" tcws call tcws \"</tool_call>\"\ntcws ::= [ \\t\\n]*\n{body}"
        )
    })
}

/// The trigger that starts [`lazy_call_grammar`].
pub(super) const CALL_TRIGGER: &str = "<tool_call>";

/// Whether this model writes Hermes calls (`<tool_call>`): it is given the Hermes block (its
/// template takes no tools), or its template's own tool format is Hermes (Qwen).
pub(super) fn writes_hermes_calls(template: &str, template_takes_tools: bool) -> bool {
    !template_takes_tools || template.contains("<tool_call>")
}

/// `schema` with its document-local `$ref`s (`#`, `#/…`) made relative to `base` instead.
fn rebase_refs(schema: &serde_json::Value, base: &str) -> serde_json::Value {
    use serde_json::Value;
    match schema {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) if r == "#" => {
                    (k.clone(), Value::String(base.to_owned()))
                }
                ("$ref", Value::String(r)) if r.starts_with("#/") => {
                    (k.clone(), Value::String(format!("{base}{}", &r[1..])))
                }
                _ => (k.clone(), rebase_refs(v, base)),
            })
            .collect(),
        Value::Array(a) => Value::Array(a.iter().map(|v| rebase_refs(v, base)).collect()),
        other => other.clone(),
    }
}

/// A GBNF grammar that admits exactly one Hermes tool call to `force` (`*`: any of `tools`)
/// with a JSON object for arguments.
fn tool_call_grammar(tools: &[ToolSpec], force: &str) -> String {
    let quote = |s: &str| {
        let mut q = String::from("\"\\\"");
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\\\\\""),
                '\\' => q.push_str("\\\\\\\\"),
                c => q.push(c),
            }
        }
        q.push_str("\\\"\"");
        q
    };
    let names: Vec<String> = tools
        .iter()
        .filter(|t| force == "*" || t.name == force)
        .map(|t| quote(&t.name))
        .collect();
    let names = if names.is_empty() {
        quote(force)
    } else {
        names.join(" | ")
    };
    format!(
        r#"root ::= "<tool_call>\n{{\"name\": " name ", \"arguments\": " object "}}\n</tool_call>"
name ::= {names}
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}}" ws
array ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{{4}} ) )* "\"" ws
number ::= "-"? ( [0-9] | [1-9] [0-9]{{0,15}} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{{1,3}} )? ws
ws ::= | " " | "\n" [ \t]{{0,20}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(template: &str) -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.add_template_owned("chat", template.to_owned()).unwrap();
        env
    }

    fn read_tool() -> ToolSpec {
        ToolSpec {
            name: "Read".into(),
            description: "Reads a file.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"file_path": {"type": "string"}}}),
        }
    }

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.into(),
        }
    }

    #[test]
    fn tools_with_local_refs_keep_their_schema_grammar_and_the_lazy_one_allows_whitespace() {
        let pydantic = ToolSpec {
            name: "Plan".into(),
            description: "Plans.".into(),
            parameters: serde_json::json!({"type": "object", "required": ["steps"],
                "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}}},
                "$defs": {"Step": {"type": "object", "required": ["title"],
                    "properties": {"title": {"type": "string"}}}}}),
        };
        let g = lazy_call_grammar(&[read_tool(), pydantic]).expect("the schemas convert");
        assert!(
            g.starts_with("root ::= tc (tcws tc)*\ntc ::= \"<tool_call>\" tcws call tcws"),
            "{g}"
        );
        assert!(
            g.contains("title"),
            "the referenced definition is in the grammar: {g}"
        );
    }

    #[test]
    fn a_template_without_tools_gets_them_in_the_system_message_in_hermes_form() {
        let p = render(&env(CHATML), &[user("hi")], &[read_tool()], false, None).unwrap();
        assert!(
            p.starts_with("<|im_start|>system\n# Tools"),
            "a system message was added: {p}"
        );
        assert!(
            p.contains(r#"{"type":"function","function":{"name":"Read","#),
            "{p}"
        );
        assert!(p.contains("<tool_call>"), "{p}");
        assert!(
            p.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
            "{p}"
        );
        // An existing system message is extended, not duplicated.
        let sys = ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        };
        let p = render(
            &env(CHATML),
            &[sys, user("hi")],
            &[read_tool()],
            false,
            None,
        )
        .unwrap();
        assert!(
            p.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
            "{p}"
        );
        assert_eq!(p.matches("<|im_start|>system").count(), 1, "{p}");
        // No tools, no tool prompt.
        let p = render(&env(CHATML), &[user("hi")], &[], false, None).unwrap();
        assert!(!p.contains("Tools"), "{p}");
    }

    #[test]
    fn a_template_that_takes_tools_renders_them_itself() {
        let t = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }}={{ t.function.parameters | tojson }};{% endfor %}{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}";
        let p = render(&env(t), &[user("hi")], &[read_tool()], true, Some("Sure")).unwrap();
        assert_eq!(
            p,
            r#"TOOLS:Read={"properties": {"file_path": {"type": "string"}}, "type": "object"};[user]hiSure"#
        );
        assert!(!p.contains("# Tools"));
    }

    #[test]
    fn a_forced_call_grammar_follows_the_tools_schema() {
        let g = forced_call_grammar(&[read_tool()], "Read");
        assert!(
            g.starts_with("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n"),
            "{g}"
        );
        assert!(g.contains("call ::= "), "{g}");
        assert!(
            g.contains("file_path"),
            "the argument names come from the schema: {g}"
        );
        assert_eq!(g.matches("root ::=").count(), 1, "{g}");
    }

    #[test]
    fn the_forced_call_grammar_names_the_allowed_tools() {
        let mut other = read_tool();
        other.name = "say \"hi\"".into();
        let g = tool_call_grammar(&[read_tool(), other.clone()], "Read");
        assert!(g.contains(r#"name ::= "\"Read\"""#), "{g}");
        let g = tool_call_grammar(&[read_tool(), other], "*");
        assert!(
            g.contains(r#"name ::= "\"Read\"" | "\"say \\\"hi\\\"\"""#),
            "{g}"
        );
    }
}
