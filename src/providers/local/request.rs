//! The canonical request as the worker's chat messages and tool specs: tools compacted for a
//! small context, earlier calls and results replayed in the model's own tool format.

use super::protocol::{ChatMessage, ToolSpec};
use crate::canonical::{Block, Request, Role};

/// Longest tool description a local model gets: the first paragraph, at most this long.
/// Claude Code's tool descriptions run to thousands of tokens; a local model has a few
/// thousand in all, and a small one cannot use the detail.
const TOOL_DESCRIPTION_MAX: usize = 300;

/// The first paragraph of `text`, cut at a character boundary to at most `max` bytes.
fn first_paragraph(text: &str, max: usize) -> String {
    let para = text.trim().split("\n\n").next().unwrap_or("").trim();
    if para.len() <= max {
        return para.to_owned();
    }
    let mut end = max;
    while !para.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", para[..end].trim_end())
}

/// A schema with every nested `description` cut to its first paragraph.
fn compact_schema(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("description", serde_json::Value::String(d)) => (
                    k.clone(),
                    serde_json::Value::String(first_paragraph(d, 120)),
                ),
                ("$schema", _) => (k.clone(), serde_json::Value::Null),
                _ => (k.clone(), compact_schema(v)),
            })
            .filter(|(k, _)| k != "$schema")
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(compact_schema).collect(),
        other => other.clone(),
    }
}

/// Whether the model is offered tools (some are given and `tool_choice` is not `none`): then
/// its answer is held to the end and read for tool calls.
pub fn offers_tools(req: &Request) -> bool {
    !req.tools.is_empty() && !matches!(req.tool_choice, Some(crate::canonical::ToolChoice::None))
}

/// The tools for the worker (compacted), and whether one must be called.
pub(super) fn tools_for(req: &Request) -> (Vec<ToolSpec>, Option<String>) {
    use crate::canonical::ToolChoice;
    if !offers_tools(req) {
        return (Vec::new(), None);
    }
    let tools = req
        .tools
        .iter()
        .map(|t| ToolSpec {
            name: t.name.clone(),
            description: first_paragraph(
                t.description.as_deref().unwrap_or(""),
                TOOL_DESCRIPTION_MAX,
            ),
            parameters: compact_schema(&t.schema),
        })
        .collect();
    let force = match &req.tool_choice {
        Some(ToolChoice::Any) => Some("*".to_owned()),
        Some(ToolChoice::Tool(name)) => Some(name.clone()),
        _ => None,
    };
    (tools, force)
}

/// The conversation as text messages, and a final assistant turn as the prefill.
pub(super) fn to_chat(req: &Request) -> (Vec<ChatMessage>, Option<String>) {
    let mut out = Vec::new();
    if !req.system.is_empty() {
        out.push(ChatMessage {
            role: "system".into(),
            content: req.system.join("\n\n"),
        });
    }
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        let mut text = String::new();
        for b in &m.content {
            let piece = match b {
                Block::Text(t) => t.clone(),
                // Calls and results in the Hermes form the tool prompt asks for, so the model
                // sees its own earlier calls the way it is told to make them.
                Block::ToolUse { name, input, .. } => format!(
                    "<tool_call>\n{}\n</tool_call>",
                    serde_json::json!({"name": name, "arguments": input})
                ),
                Block::ToolResult {
                    content, is_error, ..
                } => {
                    format!(
                        "<tool_response>\n{}{}\n</tool_response>",
                        if *is_error { "error: " } else { "" },
                        crate::wire::text_of(content)
                    )
                }
                Block::Image(_) | Block::Document(_) => {
                    "[an attachment this local model cannot see]".into()
                }
                Block::Thinking { .. } | Block::RedactedThinking(_) => continue,
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&piece);
        }
        out.push(ChatMessage {
            role: role.into(),
            content: text,
        });
    }
    let prefill = match out.last() {
        Some(m) if m.role == "assistant" => out.pop().map(|m| m.content),
        _ => None,
    };
    (out, prefill)
}
