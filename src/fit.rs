//! How much context this machine can give a model, and in what KV cache type: the one
//! computation behind the worker's context, `understudy models list` and the status pages.
//!
//! The rule (ARCHITECTURE.md, "Context sized for the work"):
//! - **What we aim for**: what the model was trained for, but never less than
//!   [`CLAUDE_CODE_CONTEXT`] (Claude Code's first request is ~7k tokens of tools and system
//!   prompt, a working session 20–60k; Ollama's Claude Code guide asks for 64k) and never more
//!   than [`MAX_AUTO_CONTEXT`]. A context the user set is aimed for as set.
//! - **What fits**: the KV cache must fit in the memory that is free now (RAM, bounded by the
//!   cgroup's limit) less the weights and a margin. An f16 cache where it fits; q8_0 (34 bytes
//!   per 32 values: about half) where that makes the difference; else the largest context a
//!   q8_0 cache fits, in steps of 1024, never below [`MIN_CONTEXT`].
//!
//! The weights count in full against RAM even when they are memory-mapped: their pages must
//! be resident to be fast, and `MemAvailable` counts them as reclaimable.

use crate::gguf::Shape;

/// The context Claude Code needs to work for a while before it compacts.
pub const CLAUDE_CODE_CONTEXT: u32 = 32 * 1024;
/// The most an automatic context reaches (a user may set more).
pub const MAX_AUTO_CONTEXT: u32 = 128 * 1024;
/// The least the engine runs with, whatever memory says.
pub const MIN_CONTEXT: u32 = 4096;

/// The KV cache's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    /// 16-bit floats (llama.cpp's default).
    F16,
    /// 8-bit blocks: 32 values in 34 bytes.
    Q8_0,
}

impl KvType {
    /// Bytes for `elements` values.
    pub fn bytes(self, elements: u64) -> u64 {
        match self {
            KvType::F16 => elements * 2,
            KvType::Q8_0 => elements.div_ceil(32) * 34,
        }
    }

    /// Its name as llama.cpp's `--cache-type-k` takes it.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }
}

/// Memory the machine has free now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Free {
    /// Bytes that can be had without swapping.
    pub available: u64,
    /// Bytes in all (the cgroup's limit where one is set).
    pub total: u64,
}

impl Free {
    /// This machine's, from `/proc/meminfo` (`MemAvailable`, `MemTotal`), bounded by the
    /// cgroup v2 limit this process runs under (`memory.max` less `memory.current`). `None`
    /// where neither can be read (not Linux).
    pub fn here() -> Option<Free> {
        let mut free = Free {
            available: meminfo("MemAvailable:")?,
            total: meminfo("MemTotal:")?,
        };
        if let Some((max, current)) = cgroup_limit() {
            free.total = free.total.min(max);
            free.available = free.available.min(max.saturating_sub(current));
        }
        Some(free)
    }

    /// The margin left to everything else: a tenth of the total, at least 1 GiB.
    pub fn margin(&self) -> u64 {
        (self.total / 10).max(1 << 30)
    }
}

/// A `/proc/meminfo` line's value in bytes (`MemTotal:`, `MemAvailable:`).
pub fn meminfo(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// The tightest cgroup v2 memory limit over this process's cgroup and its ancestors, and that
/// cgroup's use less its inactive file pages (page cache the kernel takes back first: a model
/// file read once is not memory the next load competes with).
fn cgroup_limit() -> Option<(u64, u64)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let mut tightest: Option<(u64, u64)> = None;
    loop {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let max = read("memory.max").and_then(|m| m.trim().parse::<u64>().ok());
        let current = read("memory.current").and_then(|c| c.trim().parse::<u64>().ok());
        if let (Some(max), Some(current)) = (max, current) {
            let inactive = read("memory.stat")
                .and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("inactive_file "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            let used = current.saturating_sub(inactive);
            if tightest.is_none_or(|(m, u)| max.saturating_sub(used) < m.saturating_sub(u)) {
                tightest = Some((max, used));
            }
        }
        if !dir.pop()
            || !dir.starts_with("/sys/fs/cgroup")
            || dir == std::path::Path::new("/sys/fs/cgroup")
        {
            return tightest;
        }
    }
}

/// The context a model gets, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Context in tokens.
    pub n_ctx: u32,
    /// The KV cache's type.
    pub kv_type: KvType,
    /// The KV cache's size at `n_ctx`.
    pub kv_bytes: u64,
    /// The reason, in words ("trained for 8192; raised to 32768 for Claude Code; f16 KV cache
    /// 720 MiB of 18.4 GiB free").
    pub why: String,
}

/// The plan for a model of `shape` whose weights take `weights` bytes of RAM (0 where they
/// are on a GPU), with `requested` tokens of context if the user set it, on a machine with
/// `free` memory (`None`: unknown, so no limit is applied).
pub fn plan(shape: &Shape, weights: u64, requested: Option<u32>, free: Option<Free>) -> Plan {
    let per_token = shape.kv_elements_per_token();
    let trained = shape.context_train;
    let (target, aim) = match requested {
        Some(n) => (n.max(256), format!("{n} set in the config")),
        None if trained == 0 => (
            CLAUDE_CODE_CONTEXT,
            "the model states no trained context".to_owned(),
        ),
        None if trained < CLAUDE_CODE_CONTEXT => (
            CLAUDE_CODE_CONTEXT,
            format!("trained for {trained}; raised to {CLAUDE_CODE_CONTEXT} for Claude Code (answers past {trained} may be weaker)"),
        ),
        None if trained > MAX_AUTO_CONTEXT => (
            MAX_AUTO_CONTEXT,
            format!("trained for {trained}; capped at {MAX_AUTO_CONTEXT}"),
        ),
        None => (trained, format!("trained for {trained}")),
    };
    let at = |kv: KvType, n: u32| kv.bytes(per_token * u64::from(n));
    let Some(free) = free else {
        // Nothing to size by: Claude Code's context (or the one set), not the model's longest.
        let n = if requested.is_some() {
            target
        } else {
            target.min(CLAUDE_CODE_CONTEXT)
        };
        return Plan {
            n_ctx: n,
            kv_type: KvType::F16,
            kv_bytes: at(KvType::F16, n),
            why: format!("{aim}; free memory unknown, so {n}"),
        };
    };
    let budget = free
        .available
        .saturating_sub(weights)
        .saturating_sub(free.margin());
    let of = format!(
        "{} free less {} of weights and a {} margin",
        size(free.available),
        size(weights),
        size(free.margin())
    );
    let (n_ctx, kv_type, why) = if at(KvType::F16, target) <= budget {
        (
            target,
            KvType::F16,
            format!("{aim}; f16 KV cache fits ({of})"),
        )
    } else if at(KvType::Q8_0, target) <= budget {
        (
            target,
            KvType::Q8_0,
            format!(
                "{aim}; q8_0 KV cache: f16 would need {} ({of})",
                size(at(KvType::F16, target))
            ),
        )
    } else if requested.is_some() {
        (
            target,
            KvType::Q8_0,
            format!(
                "{aim}; q8_0 KV cache of {} does not fit ({of}): expect swapping or a failed load",
                size(at(KvType::Q8_0, target))
            ),
        )
    } else {
        let fits = budget / KvType::Q8_0.bytes(per_token.max(1)).max(1);
        let n = u32::try_from(fits).unwrap_or(u32::MAX) / 1024 * 1024;
        let n = n.clamp(MIN_CONTEXT, target);
        (
            n,
            KvType::Q8_0,
            format!("{aim}; memory allows {n} with a q8_0 KV cache ({of})"),
        )
    };
    Plan {
        n_ctx,
        kv_type,
        kv_bytes: at(kv_type, n_ctx),
        why,
    }
}

/// Bytes for people: `720 MiB`, `18.4 GiB`.
pub fn size(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn shape(trained: u32, layers: u32, kv_heads: u32, head: u32) -> Shape {
        Shape {
            architecture: "llama".into(),
            context_train: trained,
            layers,
            kv_heads,
            key_length: head,
            value_length: head,
            ..Shape::default()
        }
    }

    fn free(available: u64, total: u64) -> Option<Free> {
        Some(Free { available, total })
    }

    #[test]
    fn a_small_model_gets_claude_codes_context_even_past_its_training() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64, trained for 8192.
        let p = plan(
            &shape(8192, 30, 3, 64),
            100 << 20,
            None,
            free(20 * GIB, 24 * GIB),
        );
        assert_eq!((p.n_ctx, p.kv_type), (32768, KvType::F16));
        assert_eq!(p.kv_bytes, 30 * 3 * 128 * 2 * 32768);
        assert!(
            p.why.contains("trained for 8192; raised to 32768"),
            "{}",
            p.why
        );
    }

    #[test]
    fn q8_0_is_chosen_where_it_makes_the_difference_and_context_shrinks_last() {
        // A 7B with 28 layers, 4 KV heads of 128, trained for 32768: f16 needs 1.75 GiB at
        // 32k, q8_0 0.93 GiB.
        let s = shape(32768, 28, 4, 128);
        let weights = 4_700_000_000;
        let roomy = plan(&s, weights, None, free(16 * GIB, 32 * GIB));
        assert_eq!((roomy.n_ctx, roomy.kv_type), (32768, KvType::F16));
        // 8 GiB free of 16: 8 − 4.4 − 1.6 (margin) ≈ 2.0 GiB: f16 fits.
        // 7 GiB: ≈ 1.0 GiB: q8_0 only.
        let tight = plan(&s, weights, None, free(7 * GIB, 16 * GIB));
        assert_eq!((tight.n_ctx, tight.kv_type), (32768, KvType::Q8_0));
        assert!(
            tight.why.contains("f16 would need 1.8 GiB"),
            "{}",
            tight.why
        );
        // 6.5 GiB: ≈ 0.5 GiB: a shorter q8_0 context, in steps of 1024.
        let short = plan(&s, weights, None, free(6 * GIB + GIB / 2, 16 * GIB));
        assert_eq!(short.kv_type, KvType::Q8_0);
        assert!(
            short.n_ctx < 32768 && short.n_ctx >= MIN_CONTEXT,
            "{short:?}"
        );
        assert_eq!(short.n_ctx % 1024, 0);
        assert!(short.kv_bytes <= 6 * GIB + GIB / 2 - weights - 16 * GIB / 10);
        // Nothing free: the floor.
        let none = plan(&s, weights, None, free(GIB, 16 * GIB));
        assert_eq!(none.n_ctx, MIN_CONTEXT);
    }

    #[test]
    fn long_trained_models_are_capped_and_a_set_context_is_kept() {
        let s = shape(262144, 48, 4, 128);
        let p = plan(&s, 0, None, free(200 * GIB, 256 * GIB));
        assert_eq!(p.n_ctx, MAX_AUTO_CONTEXT);
        assert!(p.why.contains("capped"));
        let set = plan(&s, 0, Some(200_000), free(2 * GIB, 16 * GIB));
        assert_eq!((set.n_ctx, set.kv_type), (200_000, KvType::Q8_0));
        assert!(set.why.contains("does not fit"), "{}", set.why);
        let unknown = plan(&s, 0, None, None);
        assert_eq!(
            (unknown.n_ctx, unknown.kv_type),
            (CLAUDE_CODE_CONTEXT, KvType::F16)
        );
    }

    #[test]
    fn this_machine_reports_free_memory() {
        let f = Free::here().expect("Linux has /proc/meminfo");
        assert!(f.available > 0 && f.available <= f.total);
        assert!(f.margin() >= GIB);
    }
}
