//! The shape of a GGUF model, read from its header without loading it: what the gateway needs
//! to say how much context a machine can give a model (`models list`, the worker's own plan)
//! before llama.cpp is involved.
//!
//! The format (ggml's `docs/gguf.md`): the magic `GGUF`, a `u32` version (2 or 3; version 1
//! used 32-bit counts and is not read), a `u64` tensor count, a `u64` key count, then the
//! keys, each a length-prefixed UTF-8 name, a `u32` value type and the value. Everything is
//! little-endian. Only the header is read; the tensors are never touched.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// What a model's header says about its size and attention.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Shape {
    /// `general.architecture` (`llama`, `qwen3`, `gemma3`…).
    pub architecture: String,
    /// `general.name`, when the file names itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The context it was trained for (`{arch}.context_length`).
    pub context_train: u32,
    /// Transformer blocks (`{arch}.block_count`).
    pub layers: u32,
    /// Width (`{arch}.embedding_length`).
    pub embedding: u32,
    /// Attention heads (`{arch}.attention.head_count`).
    pub heads: u32,
    /// Key/value heads (`{arch}.attention.head_count_kv`; the largest where it varies by
    /// layer; `heads` when absent).
    pub kv_heads: u32,
    /// One key head's width (`{arch}.attention.key_length`, else `embedding / heads`).
    pub key_length: u32,
    /// One value head's width (`{arch}.attention.value_length`, else `key_length`).
    pub value_length: u32,
    /// Whether it carries a chat template (`tokenizer.chat_template`).
    pub chat_template: bool,
    /// Whether its chat template renders tools.
    pub template_takes_tools: bool,
}

impl Shape {
    /// Reads the header of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Shape, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
        Shape::from_reader(BufReader::with_capacity(1 << 16, file))
    }

    /// Reads a GGUF header from `r`.
    pub fn from_reader(r: impl Read) -> Result<Shape, String> {
        let mut r = Reader(r);
        let mut magic = [0u8; 4];
        r.bytes(&mut magic)?;
        if &magic != b"GGUF" {
            return Err("it does not start with the GGUF magic".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "GGUF version {version} is not read here (2 and 3 are)"
            ));
        }
        let _tensors = r.u64()?;
        let keys = r.u64()?;
        let mut values: HashMap<String, Value> = HashMap::new();
        for _ in 0..keys {
            let key = r.string()?;
            let ty = r.u32()?;
            let wanted = key.starts_with("general.")
                || key == "tokenizer.chat_template"
                || !key.starts_with("tokenizer.");
            let value = r.value(ty, wanted)?;
            if wanted {
                values.insert(key, value);
            }
        }
        let text = |k: &str| match values.get(k) {
            Some(Value::Text(s)) => Some(s.clone()),
            _ => None,
        };
        let architecture = text("general.architecture")
            .ok_or("it has no general.architecture (not a model file?)")?;
        let num = |k: &str| {
            values
                .get(&format!("{architecture}.{k}"))
                .and_then(Value::max)
        };
        let heads = num("attention.head_count").unwrap_or(0);
        let embedding = num("embedding_length").unwrap_or(0);
        let key_length = num("attention.key_length")
            .or_else(|| (heads > 0).then(|| embedding / heads))
            .unwrap_or(0);
        let template = text("tokenizer.chat_template");
        Ok(Shape {
            name: text("general.name"),
            context_train: num("context_length").unwrap_or(0),
            layers: num("block_count").unwrap_or(0),
            embedding,
            heads,
            kv_heads: num("attention.head_count_kv").unwrap_or(heads),
            key_length,
            value_length: num("attention.value_length").unwrap_or(key_length),
            chat_template: template.is_some(),
            template_takes_tools: template.is_some_and(|t| t.contains("tools")),
            architecture,
        })
    }

    /// Elements of key and value cache per token of context, over all layers.
    pub fn kv_elements_per_token(&self) -> u64 {
        u64::from(self.layers)
            * u64::from(self.kv_heads)
            * u64::from(self.key_length + self.value_length)
    }
}

/// A header value, as far as it matters here.
#[derive(Debug, Clone)]
enum Value {
    Num(u64),
    Text(String),
    /// An array of numbers (e.g. a per-layer head count): its largest.
    Nums(Option<u64>),
    Other,
}

impl Value {
    fn max(&self) -> Option<u32> {
        let n = match self {
            Value::Num(n) => *n,
            Value::Nums(n) => (*n)?,
            _ => return None,
        };
        u32::try_from(n).ok()
    }
}

/// Strings longer than this are not believed (a damaged or hostile header).
const MAX_STRING: u64 = 64 << 20;

struct Reader<R>(R);

impl<R: Read> Reader<R> {
    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.0
            .read_exact(buf)
            .map_err(|e| format!("its header ends early ({e})"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let copied = std::io::copy(&mut (&mut self.0).take(n), &mut std::io::sink())
            .map_err(|e| format!("its header cannot be read ({e})"))?;
        if copied == n {
            Ok(())
        } else {
            Err("its header ends early".into())
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(format!("its header has a {len}-byte string (damaged?)"));
        }
        let mut b = vec![0u8; len as usize];
        self.bytes(&mut b)?;
        String::from_utf8(b).map_err(|_| "its header has a string that is not UTF-8".into())
    }

    /// A value of type `ty`; `keep`: read it, else skip it.
    fn value(&mut self, ty: u32, keep: bool) -> Result<Value, String> {
        let width = |ty: u32| match ty {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            8 if keep => Ok(Value::Text(self.string()?)),
            8 => {
                let len = self.u64()?;
                self.skip(len).map(|_| Value::Other)
            }
            9 => {
                let item = self.u32()?;
                // Nested arrays are not in the format's use; each level would be a stack frame
                // (a small hostile file could overflow the stack).
                if item == 9 {
                    return Err("its header nests arrays (damaged?)".into());
                }
                let len = self.u64()?;
                match width(item) {
                    Some(_) if keep && !matches!(item, 6 | 7 | 12) => {
                        let mut max = None;
                        for _ in 0..len {
                            if let Value::Num(n) = self.value(item, true)? {
                                max = max.max(Some(n));
                            }
                        }
                        Ok(Value::Nums(max))
                    }
                    Some(w) => {
                        let total = len.checked_mul(w).ok_or("its header has a huge array")?;
                        self.skip(total).map(|_| Value::Other)
                    }
                    None => {
                        for _ in 0..len {
                            self.value(item, false)?;
                        }
                        Ok(Value::Other)
                    }
                }
            }
            0 | 2 | 4 | 10 => {
                let n = self.unsigned(width(ty).unwrap_or(1))?;
                Ok(Value::Num(n))
            }
            1 | 3 | 5 | 11 => {
                let w = width(ty).unwrap_or(1);
                let n = self.unsigned(w)?;
                // Sign-extend; a negative count means nothing here.
                let shift = 64 - 8 * w;
                let signed = ((n << shift) as i64) >> shift;
                Ok(u64::try_from(signed).map_or(Value::Other, Value::Num))
            }
            6 | 7 | 12 => self.skip(width(ty).unwrap_or(1)).map(|_| Value::Other),
            other => Err(format!("its header has an unknown value type {other}")),
        }
    }

    fn unsigned(&mut self, width: u64) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.bytes(&mut b[..width as usize])?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Test support: a GGUF header with the given keys (no tensors), as a writer would make it.
#[cfg(any(test, feature = "testing"))]
pub mod write {
    /// A header value to write.
    pub enum V<'a> {
        /// `u32`.
        U32(u32),
        /// A string.
        Str(&'a str),
        /// An array of `i32` (a per-layer count).
        I32s(&'a [i32]),
        /// An array of strings (a vocabulary).
        Strs(&'a [&'a str]),
        /// `f32`.
        F32(f32),
    }

    /// The bytes of a GGUF v3 header holding `keys`.
    pub fn header(keys: &[(&str, V<'_>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((keys.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, v) in keys {
            s(&mut b, k);
            match v {
                V::U32(n) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(n.to_le_bytes());
                }
                V::F32(x) => {
                    b.extend(6u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                V::Str(t) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, t);
                }
                V::I32s(ns) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(5u32.to_le_bytes());
                    b.extend((ns.len() as u64).to_le_bytes());
                    for n in *ns {
                        b.extend(n.to_le_bytes());
                    }
                }
                V::Strs(ts) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(8u32.to_le_bytes());
                    b.extend((ts.len() as u64).to_le_bytes());
                    for t in *ts {
                        s(&mut b, t);
                    }
                }
            }
        }
        b
    }

    /// A small llama-shaped header: `layers` blocks, 32 heads of 128, `kv_heads` KV heads,
    /// trained for `context` tokens.
    pub fn llama(name: &str, context: u32, layers: u32, kv_heads: u32) -> Vec<u8> {
        header(&[
            ("general.architecture", V::Str("llama")),
            ("general.name", V::Str(name)),
            ("llama.context_length", V::U32(context)),
            ("llama.block_count", V::U32(layers)),
            ("llama.embedding_length", V::U32(4096)),
            ("llama.attention.head_count", V::U32(32)),
            ("llama.attention.head_count_kv", V::U32(kv_heads)),
            ("llama.rope.freq_base", V::F32(1e6)),
            ("tokenizer.ggml.tokens", V::Strs(&["<s>", "</s>", "a"])),
            (
                "tokenizer.chat_template",
                V::Str(
                    "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}{% endif %}",
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::write::{header, llama, V};
    use super::*;

    #[test]
    fn a_header_gives_the_shape_and_skips_the_vocabulary() {
        let s = Shape::from_reader(&llama("Test 8B", 131072, 32, 8)[..]).unwrap();
        assert_eq!(s.architecture, "llama");
        assert_eq!(s.name.as_deref(), Some("Test 8B"));
        assert_eq!(
            (s.context_train, s.layers, s.heads, s.kv_heads),
            (131072, 32, 32, 8)
        );
        assert_eq!((s.key_length, s.value_length), (128, 128));
        assert!(s.chat_template && s.template_takes_tools);
        // 32 layers × 8 heads × (128 + 128).
        assert_eq!(s.kv_elements_per_token(), 65536);
    }

    #[test]
    fn per_layer_head_counts_and_explicit_head_widths_are_read() {
        let b = header(&[
            ("general.architecture", V::Str("gemma3")),
            ("gemma3.context_length", V::U32(32768)),
            ("gemma3.block_count", V::U32(3)),
            ("gemma3.embedding_length", V::U32(2560)),
            ("gemma3.attention.head_count", V::U32(8)),
            ("gemma3.attention.head_count_kv", V::I32s(&[4, 0, 2])),
            ("gemma3.attention.key_length", V::U32(256)),
        ]);
        let s = Shape::from_reader(&b[..]).unwrap();
        assert_eq!((s.kv_heads, s.key_length, s.value_length), (4, 256, 256));
        assert!(!s.chat_template);
    }

    #[test]
    fn damaged_headers_say_what_is_wrong() {
        assert!(Shape::from_reader(&b"GGML...."[..])
            .unwrap_err()
            .contains("magic"));
        let mut b = llama("x", 4096, 2, 2);
        b.truncate(b.len() - 10);
        assert!(Shape::from_reader(&b[..])
            .unwrap_err()
            .contains("ends early"));
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        huge.extend(1u64.to_le_bytes());
        huge.extend(u64::MAX.to_le_bytes());
        assert!(Shape::from_reader(&huge[..])
            .unwrap_err()
            .contains("damaged"));
        let mut nested = b"GGUF".to_vec();
        nested.extend(3u32.to_le_bytes());
        nested.extend(0u64.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.push(b'k');
        nested.extend(9u32.to_le_bytes());
        for _ in 0..10_000 {
            nested.extend(9u32.to_le_bytes());
            nested.extend(1u64.to_le_bytes());
        }
        nested.extend(9u32.to_le_bytes());
        assert!(Shape::from_reader(&nested[..])
            .unwrap_err()
            .contains("nests"));
        let none = header(&[("general.name", V::Str("x"))]);
        assert!(Shape::from_reader(&none[..])
            .unwrap_err()
            .contains("architecture"));
    }
}
