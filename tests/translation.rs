//! Recorded upstream transcripts (tests/fixtures/upstream, written from protocol.md) through
//! the translating pipeline into every client format, compared with golden outputs
//! (tests/fixtures/golden; regenerate with `UPDATE_GOLDEN=1 cargo test --features testing
//! --test tests translation` and review the diff). The output must not depend on how TCP cut
//! the bytes: every transcript is also fed split at every byte boundary and in random pieces.

use crate::support::{check_anthropic_stream, check_openai_stream, AnthropicEnd, OpenAiEnd};
use std::path::{Path, PathBuf};
use understudy::config::ProviderKind;
use understudy::relay::pipeline::Format;
use understudy::testing::transcript::run_transcript;
use understudy::wire::ollama::Endpoint;

const FORMATS: &[(&str, Format, bool)] = &[
    ("anthropic.sse", Format::Anthropic, true),
    ("anthropic.json", Format::Anthropic, false),
    (
        "openai.sse",
        Format::OpenAiChat {
            include_usage: true,
        },
        true,
    ),
    (
        "openai.json",
        Format::OpenAiChat {
            include_usage: true,
        },
        false,
    ),
    ("ollama.ndjson", Format::Ollama(Endpoint::Chat), true),
];

fn fixtures() -> Vec<(ProviderKind, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream");
    let mut out = Vec::new();
    for (dir, kind) in [
        ("anthropic", ProviderKind::Anthropic),
        ("openai", ProviderKind::OpenAi),
        ("gemini", ProviderKind::Gemini),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (kind, f)));
    }
    assert!(out.len() >= 18, "fixtures missing");
    out
}

fn golden_path(kind: ProviderKind, fixture: &Path, format: &str) -> PathBuf {
    let stem = fixture.file_stem().unwrap().to_str().unwrap();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(kind.as_str())
        .join(format!("{stem}.{format}"))
}

/// A whole transcript is complete unless its name says how it breaks.
fn is_broken(fixture: &Path) -> bool {
    let n = fixture.file_stem().unwrap().to_str().unwrap();
    ["truncated", "no_done", "without_finish", "error"]
        .iter()
        .any(|b| n.contains(b))
}

#[test]
fn transcripts_translate_into_the_golden_outputs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (kind, fixture) in fixtures() {
        let input = std::fs::read(&fixture).unwrap();
        for (name, format, stream) in FORMATS {
            let got = run_transcript(kind, *format, *stream, &[&input]);
            let path = golden_path(kind, &fixture, name);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read(&path).unwrap_or_else(|_| {
                panic!(
                    "no golden file {} (run with UPDATE_GOLDEN=1)",
                    path.display()
                )
            });
            if got != want {
                mismatches.push(format!(
                    "{}:\n--- want\n{}\n--- got\n{}",
                    path.display(),
                    String::from_utf8_lossy(&want),
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn every_translated_stream_is_well_formed_and_broken_ones_say_so() {
    for (kind, fixture) in fixtures() {
        let input = std::fs::read(&fixture).unwrap();
        let broken = is_broken(&fixture);
        let a = run_transcript(kind, Format::Anthropic, true, &[&input]);
        let (_, end) = check_anthropic_stream(&a);
        assert_eq!(
            matches!(end, AnthropicEnd::Error(_)),
            broken,
            "{}: {end:?}",
            fixture.display()
        );
        let o = run_transcript(
            kind,
            Format::OpenAiChat {
                include_usage: true,
            },
            true,
            &[&input],
        );
        let (_, end) = check_openai_stream(&o);
        assert_eq!(
            matches!(end, OpenAiEnd::Error(_)),
            broken,
            "{}: {end:?}",
            fixture.display()
        );
        let lines = run_transcript(kind, Format::Ollama(Endpoint::Chat), true, &[&input]);
        let last: serde_json::Value = serde_json::from_slice(
            lines
                .split(|&b| b == b'\n')
                .rfind(|l| !l.is_empty())
                .unwrap(),
        )
        .unwrap();
        if broken {
            assert!(last.get("error").is_some(), "{}: {last}", fixture.display());
        } else {
            assert_eq!(last["done"], true, "{}: {last}", fixture.display());
        }
        for (_, format, _) in FORMATS.iter().filter(|f| !f.2) {
            let body = run_transcript(kind, *format, false, &[&input]);
            let parsed = serde_json::from_slice::<serde_json::Value>(&body);
            // A broken transcript never becomes a whole JSON answer.
            assert_eq!(
                parsed.is_err(),
                broken,
                "{}: {}",
                fixture.display(),
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[test]
fn tool_names_shortened_for_openai_and_gemini_come_back_whole() {
    for kind in [ProviderKind::OpenAi, ProviderKind::Gemini] {
        let dir = kind.as_str();
        let input = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/upstream/{dir}/tools_parallel.sse")),
        )
        .unwrap();
        let out =
            String::from_utf8(run_transcript(kind, Format::Anthropic, false, &[&input])).unwrap();
        assert!(
            out.contains(understudy::testing::transcript::LONG_TOOL_NAME),
            "{dir}: {out}"
        );
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
fn cuts(seed: u64, len: usize, pieces: usize) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<usize> = (0..pieces)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % len as u64) as usize
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn output_does_not_depend_on_how_the_bytes_were_cut() {
    for (kind, fixture) in fixtures() {
        let input = std::fs::read(&fixture).unwrap();
        for (name, format, stream) in FORMATS {
            let whole = run_transcript(kind, *format, *stream, &[&input]);
            for i in 1..input.len() {
                let got = run_transcript(kind, *format, *stream, &[&input[..i], &input[i..]]);
                assert!(
                    got == whole,
                    "{} as {name}, split at byte {i}:\n{}",
                    fixture.display(),
                    String::from_utf8_lossy(&got)
                );
            }
            for seed in 0..40u64 {
                let c = cuts(seed, input.len(), 1 + (seed as usize % 30));
                let mut pieces = Vec::new();
                let mut last = 0;
                for &p in &c {
                    pieces.push(&input[last..p]);
                    last = p;
                }
                pieces.push(&input[last..]);
                let got = run_transcript(kind, *format, *stream, &pieces);
                assert!(
                    got == whole,
                    "{} as {name}, cut at {c:?}",
                    fixture.display()
                );
            }
        }
    }
}
