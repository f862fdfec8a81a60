//! Which of llama.cpp's CPU backends the local worker runs, and the ladder it steps down when
//! one cannot run here.
//!
//! llama.cpp is built with `GGML_BACKEND_DL` and `GGML_CPU_ALL_VARIANTS` (llama-cpp-2's
//! `dynamic-backends` feature): its CPU kernels are one shared library per instruction-set
//! level (`libggml-cpu-haswell.so`, `libggml-cpu-zen4.so`, …) next to the binary, and ggml
//! loads the best one this CPU supports. One binary is then fast on any x86-64 and runs on
//! all of them. But "supports" is read from CPUID, which a hypervisor may report while the
//! instructions still fault (AMX on some virtual machines: SIGILL on the first token), so the
//! gateway names the variant itself ([`Ladder`]): best first, and after a SIGILL (or two
//! crashes before a first token) the next one down, remembered per model and machine
//! ([`Memory`]). The table mirrors ggml's own (`ggml/src/CMakeLists.txt`, the variants, and
//! `ggml-cpu/arch/x86/cpu-feats.cpp`, their scores), so the ladder's top is the variant ggml
//! would choose.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// An instruction-set extension a CPU variant needs, as ggml scores it.
#[derive(Debug, PartialEq, Eq)]
struct Feature {
    /// Its name in words.
    name: &'static str,
    /// The /proc/cpuinfo flags that must all be present.
    flags: &'static [&'static str],
    /// Its weight in ggml's score (the variant with the highest score wins).
    score: u32,
}

impl Feature {
    const fn new(name: &'static str, flags: &'static [&'static str], score: u32) -> Feature {
        Feature { name, flags, score }
    }
}

const SSE42: Feature = Feature::new("SSE4.2", &["sse4_2"], 1 << 2);
const AVX: Feature = Feature::new("AVX", &["avx"], 1 << 4);
const F16C: Feature = Feature::new("F16C", &["f16c"], 1 << 1);
const FMA: Feature = Feature::new("FMA", &["fma"], 1);
const AVX2: Feature = Feature::new("AVX2", &["avx2"], 1 << 5);
const BMI2: Feature = Feature::new("BMI2", &["bmi2"], 1 << 3);
const AVX_VNNI: Feature = Feature::new("AVX-VNNI", &["avx_vnni"], 1 << 6);
const AVX512: Feature = Feature::new(
    "AVX-512",
    &["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    1 << 7,
);
const AVX512_VBMI: Feature = Feature::new("AVX-512 VBMI", &["avx512vbmi"], 1 << 8);
const AVX512_BF16: Feature = Feature::new("AVX-512 BF16", &["avx512_bf16"], 1 << 9);
const AVX512_VNNI: Feature = Feature::new("AVX-512 VNNI", &["avx512_vnni"], 1 << 10);
const AMX: Feature = Feature::new("AMX", &["amx_tile", "amx_int8"], 1 << 11);

/// One CPU backend library, `libggml-cpu-<name>.so`.
#[derive(Debug, PartialEq, Eq)]
pub struct Variant {
    /// Its name in the library's file name.
    pub name: &'static str,
    needs: &'static [&'static Feature],
}

const HASWELL: &[&Feature] = &[&SSE42, &AVX, &F16C, &FMA, &AVX2, &BMI2];

/// ggml's x86 CPU variants (`GGML_CPU_ALL_VARIANTS`), lowest first.
const VARIANTS: &[Variant] = &[
    Variant {
        name: "x64",
        needs: &[],
    },
    Variant {
        name: "sse42",
        needs: &[&SSE42],
    },
    Variant {
        name: "sandybridge",
        needs: &[&SSE42, &AVX],
    },
    Variant {
        name: "ivybridge",
        needs: &[&SSE42, &AVX, &F16C],
    },
    Variant {
        name: "piledriver",
        needs: &[&SSE42, &AVX, &F16C, &FMA],
    },
    Variant {
        name: "haswell",
        needs: HASWELL,
    },
    Variant {
        name: "alderlake",
        needs: &[&SSE42, &AVX, &F16C, &FMA, &AVX2, &BMI2, &AVX_VNNI],
    },
    Variant {
        name: "skylakex",
        needs: &[&SSE42, &AVX, &F16C, &FMA, &AVX2, &BMI2, &AVX512],
    },
    Variant {
        name: "cannonlake",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VBMI,
        ],
    },
    Variant {
        name: "cascadelake",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VNNI,
        ],
    },
    Variant {
        name: "icelake",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VBMI,
            &AVX512_VNNI,
        ],
    },
    Variant {
        name: "cooperlake",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VNNI,
            &AVX512_BF16,
        ],
    },
    Variant {
        name: "zen4",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VBMI,
            &AVX512_VNNI,
            &AVX512_BF16,
        ],
    },
    Variant {
        name: "sapphirerapids",
        needs: &[
            &SSE42,
            &AVX,
            &F16C,
            &FMA,
            &AVX2,
            &BMI2,
            &AVX512,
            &AVX512_VBMI,
            &AVX512_VNNI,
            &AVX512_BF16,
            &AMX,
        ],
    },
];

impl Variant {
    /// The variant called `name`, if ggml has one.
    pub fn named(name: &str) -> Option<&'static Variant> {
        VARIANTS.iter().find(|v| v.name == name)
    }

    /// ggml's score for it: the variant with the highest wins.
    fn score(&self) -> u32 {
        1 + self.needs.iter().map(|f| f.score).sum::<u32>()
    }

    /// Whether a CPU with these /proc/cpuinfo flags has everything it needs.
    fn runs_on(&self, flags: &HashSet<String>) -> bool {
        self.needs
            .iter()
            .all(|f| f.flags.iter().all(|x| flags.contains(*x)))
    }

    /// Its library's file name.
    pub fn file_name(&self) -> String {
        format!("libggml-cpu-{}.so", self.name)
    }

    /// What `better` uses and this one does not, in words ("AMX", "AVX-512 BF16").
    pub fn lacks(&self, better: &Variant) -> Vec<&'static str> {
        better
            .needs
            .iter()
            .filter(|f| !self.needs.contains(f))
            .map(|f| f.name)
            .collect()
    }
}

/// This CPU as the kernel reports it: `model name` and the flags of /proc/cpuinfo.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    /// `model name`.
    pub model: String,
    /// Its flags.
    pub flags: HashSet<String>,
}

impl Cpu {
    /// This machine's (empty where /proc/cpuinfo cannot be read).
    pub fn here() -> Cpu {
        Cpu::parse(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    /// The first processor's entry of a /proc/cpuinfo text.
    pub fn parse(cpuinfo: &str) -> Cpu {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        Cpu {
            model: field("model name").unwrap_or_default(),
            flags: field("flags")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// What identifies this machine for the remembered mode: its model name and the flags
    /// that decide the ladder (a VM moved to another host, or one given other flags, is
    /// another machine).
    pub fn key(&self) -> String {
        use sha2::Digest;
        let mut flags: Vec<&str> = VARIANTS
            .iter()
            .flat_map(|v| v.needs.iter().flat_map(|f| f.flags.iter().copied()))
            .filter(|f| self.flags.contains(*f))
            .collect();
        flags.sort_unstable();
        flags.dedup();
        let digest = sha2::Sha256::digest(flags.join(" ").as_bytes());
        let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{} [{short}]", self.model)
    }
}

/// Where the backend libraries are, and the CPU variants among them this CPU runs, best first.
#[derive(Debug, Clone)]
pub struct Ladder {
    /// The directory holding `libggml-cpu-*.so` (and any GPU backend).
    pub dir: PathBuf,
    /// Best first; the last is the most conservative. Empty where the variants are not
    /// ggml's x86 ones (ggml then picks alone, and there is nothing to step down to).
    pub steps: Vec<&'static Variant>,
}

/// What is wrong with the backend libraries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendsError {
    /// No directory holds a CPU backend.
    #[error(
        "llama.cpp's CPU backend (libggml-cpu-*.so) is in none of {searched}: the local model \
         cannot run. They are built with the binary (cargo build puts them next to it) and the \
         .deb installs them in /usr/lib/understudy; reinstall Understudy or run scripts/run"
    )]
    Missing {
        /// The directories looked in.
        searched: String,
    },
}

/// The CPU backend libraries in `dir`, by file name.
fn cpu_libraries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libggml-cpu") && n.ends_with(".so"))
        .collect()
}

/// The directories that may hold the backends of the worker binary `exe`, in order:
/// `UNDERSTUDY_BACKENDS_DIR`, the binary's own directory (cargo's target dir, `scripts/run`),
/// then `../lib/understudy` beside it (the .deb: /usr/bin → /usr/lib/understudy).
pub fn candidates(exe: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("UNDERSTUDY_BACKENDS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
    if let Some(bin) = exe.parent() {
        dirs.push(bin.to_owned());
        if let Some(prefix) = bin.parent() {
            dirs.push(prefix.join("lib").join("understudy"));
        }
    }
    dirs
}

impl Ladder {
    /// The ladder for the worker binary `exe` on `cpu`.
    pub fn find(exe: &Path, cpu: &Cpu) -> Result<Ladder, BackendsError> {
        Ladder::first_of(&candidates(exe), cpu)
    }

    /// The ladder of the first of `dirs` that holds a CPU backend.
    pub fn first_of(dirs: &[PathBuf], cpu: &Cpu) -> Result<Ladder, BackendsError> {
        let Some(dir) = dirs.iter().find(|d| !cpu_libraries(d).is_empty()) else {
            return Err(BackendsError::Missing {
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        Ok(Ladder::in_dir(dir, cpu))
    }

    /// The ladder of the variants in `dir` that `cpu` runs.
    pub fn in_dir(dir: &Path, cpu: &Cpu) -> Ladder {
        if cpu.flags.is_empty() {
            // No /proc/cpuinfo (or not x86): ggml chooses alone.
            return Ladder {
                dir: dir.to_owned(),
                steps: Vec::new(),
            };
        }
        let present = cpu_libraries(dir);
        let mut steps: Vec<&'static Variant> = VARIANTS
            .iter()
            .filter(|v| present.contains(&v.file_name()) && v.runs_on(&cpu.flags))
            .collect();
        steps.sort_by_key(|v| std::cmp::Reverse(v.score()));
        Ladder {
            dir: dir.to_owned(),
            steps,
        }
    }

    /// The best variant.
    pub fn best(&self) -> Option<&'static Variant> {
        self.steps.first().copied()
    }

    /// The next variant down from `name`; `None` at the bottom (or for a name not on it).
    pub fn below(&self, name: &str) -> Option<&'static Variant> {
        let at = self.steps.iter().position(|v| v.name == name)?;
        self.steps.get(at + 1).copied()
    }

    /// `name` if it is on the ladder.
    pub fn get(&self, name: &str) -> Option<&'static Variant> {
        self.steps.iter().find(|v| v.name == name).copied()
    }
}

/// The mode the worker runs in, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mode {
    /// The CPU variant (`zen4`, `haswell`, …).
    pub variant: String,
    /// The best this CPU could run; equal to `variant` unless stepped down.
    pub best: String,
    /// Why it was stepped down, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What it runs without, compared with the best ("AMX").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<String>,
    /// What that costs, in words ([`Mode::cost`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cost: String,
}

impl Mode {
    /// Running in `variant` of `ladder`, for `why`.
    pub fn of(ladder: &Ladder, variant: &'static Variant, why: Option<String>) -> Mode {
        let best = ladder.best().unwrap_or(variant);
        let mut mode = Mode {
            variant: variant.name.to_owned(),
            best: best.name.to_owned(),
            without: variant.lacks(best).into_iter().map(str::to_owned).collect(),
            why,
            cost: String::new(),
        };
        if mode.stepped_down() {
            mode.cost = mode.cost().to_owned();
        }
        mode
    }

    /// Whether it runs below the best (a compatible mode).
    pub fn stepped_down(&self) -> bool {
        self.variant != self.best
    }

    /// One sentence for the status, the log and the notification.
    pub fn describe(&self) -> String {
        if !self.stepped_down() {
            return format!("{} CPU kernels (the best this CPU runs)", self.variant);
        }
        format!(
            "compatible mode: {} CPU kernels instead of {} (without {}){}; {}",
            self.variant,
            self.best,
            self.without.join(", "),
            self.why
                .as_deref()
                .map(|w| format!(", because {w}"))
                .unwrap_or_default(),
            self.cost()
        )
    }
}

impl Mode {
    /// What running below the best costs, in words, from what it runs without (measured:
    /// BENCHMARKS.md, "CPU variants").
    pub fn cost(&self) -> &'static str {
        let lost = |f: &str| self.without.iter().any(|w| w == f);
        if lost("AVX") {
            "local prompts and answers are 4-11x slower on these kernels"
        } else if lost("AVX2") {
            "local prompts and answers are about half as fast without AVX2"
        } else if lost("AMX") {
            "long prompts are processed more slowly without AMX; answers come at about the same speed"
        } else {
            "local prompts are processed up to a quarter more slowly; answers come at about the same speed"
        }
    }
}

/// The modes that worked, per machine and model, in a JSON file in the data dir, so a start
/// after a crash does not crash first.
#[derive(Debug, Clone)]
pub struct Memory {
    file: Option<PathBuf>,
}

/// The file's content.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Remembered {
    /// `machine key | model file name` → the mode.
    modes: BTreeMap<String, Mode>,
}

impl Memory {
    /// Kept in `file` (none: for this process only).
    pub fn new(file: Option<PathBuf>) -> Memory {
        Memory { file }
    }

    fn key(cpu: &Cpu, model: &Path) -> String {
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{} | {name}", cpu.key())
    }

    fn read(&self) -> Remembered {
        self.file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The mode remembered for `model` on `cpu`.
    pub fn recall(&self, cpu: &Cpu, model: &Path) -> Option<Mode> {
        self.read().modes.remove(&Memory::key(cpu, model))
    }

    /// Remembers `mode` (written atomically: a temporary file renamed over the old one).
    pub fn remember(&self, cpu: &Cpu, model: &Path, mode: &Mode) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut all = self.read();
        all.modes.insert(Memory::key(cpu, model), mode.clone());
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&all).expect("serializes"))?;
        std::fs::rename(&tmp, file)
    }
}

/// The signals whose meaning the engine acts on.
pub(super) const SIGILL: i32 = 4;
pub(super) const SIGABRT: i32 = 6;
pub(super) const SIGBUS: i32 = 7;
pub(super) const SIGFPE: i32 = 8;
pub(super) const SIGKILL: i32 = 9;
pub(super) const SIGSEGV: i32 = 11;

/// The signal that ended a process, if one did.
pub(super) fn signal_of(status: Option<std::process::ExitStatus>) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status?.signal()
}

/// Why a worker process ended, in words a user can act on; `mode` is the one it ran in and
/// `tail` its last stderr lines (an assertion's message is among them).
pub fn exit_words(
    status: Option<std::process::ExitStatus>,
    variant: Option<&str>,
    tail: &[String],
) -> String {
    let Some(status) = status else {
        return "it stopped answering".to_owned();
    };
    let Some(signal) = signal_of(Some(status)) else {
        return format!("it exited with status {}", status.code().unwrap_or(-1));
    };
    match signal {
        SIGILL => format!(
            "it hit an illegal instruction (SIGILL): this CPU (or the virtual machine around it) \
             cannot run instructions the {} CPU kernels use",
            variant.unwrap_or("built-in")
        ),
        SIGKILL => {
            "it was killed (SIGKILL): most likely the system ran out of memory; try a smaller \
              model or context_size"
                .to_owned()
        }
        SIGABRT => {
            let assertion = tail
                .iter()
                .rev()
                .find(|l| l.contains("GGML_ASSERT") || l.contains("error") || l.contains("abort"));
            match assertion {
                Some(a) => format!(
                    "it aborted (SIGABRT) on a llama.cpp assertion: {}",
                    a.trim()
                ),
                None => "it aborted (SIGABRT): a llama.cpp assertion failed".to_owned(),
            }
        }
        SIGBUS => "it hit a bus error (SIGBUS): the model file was changed, truncated or became \
              unreadable while in use; check the file (or the disk it is on)"
            .to_owned(),
        SIGFPE => "it hit an arithmetic fault (SIGFPE) in llama.cpp".to_owned(),
        SIGSEGV => {
            "it crashed (SIGSEGV, a memory fault in llama.cpp); if it repeats with this model, \
               try another quantization or a smaller context_size"
                .to_owned()
        }
        15 => "it was stopped (SIGTERM) by another process".to_owned(),
        24 => "it ran past its CPU time limit (SIGXCPU, see ulimit -t)".to_owned(),
        25 => "it ran past its file size limit (SIGXFSZ, see ulimit -f)".to_owned(),
        n => format!("it was stopped by signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(flags: &str) -> Cpu {
        Cpu::parse(&format!(
            "processor : 0\nmodel name : Test CPU\nflags : {flags}\n"
        ))
    }

    const ZEN4: &str = "fpu sse4_2 avx f16c fma avx2 bmi2 avx512f avx512cd avx512vl avx512dq \
                        avx512bw avx512vbmi avx512_vnni avx512_bf16";
    const SPR: &str = "fpu sse4_2 avx f16c fma avx2 bmi2 avx_vnni avx512f avx512cd avx512vl \
                       avx512dq avx512bw avx512vbmi avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16";

    fn all_variants() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for v in VARIANTS {
            std::fs::write(dir.path().join(v.file_name()), b"").unwrap();
        }
        dir
    }

    #[test]
    fn the_scores_are_ggmls_and_distinct() {
        let score = |n| Variant::named(n).unwrap().score();
        assert_eq!(score("x64"), 1);
        assert_eq!(score("haswell"), 64);
        assert_eq!(score("zen4"), 1984);
        assert_eq!(score("sapphirerapids"), 1984 + 2048);
        let mut all: Vec<u32> = VARIANTS.iter().map(Variant::score).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), VARIANTS.len());
    }

    #[test]
    fn an_amx_host_steps_down_from_amx_first_and_ends_at_the_baseline() {
        let dir = all_variants();
        let ladder = Ladder::in_dir(dir.path(), &cpu(SPR));
        let names: Vec<&str> = ladder.steps.iter().map(|v| v.name).collect();
        assert_eq!(names.first(), Some(&"sapphirerapids"));
        assert_eq!(ladder.below("sapphirerapids").unwrap().name, "zen4");
        assert_eq!(names.last(), Some(&"x64"));
        assert_eq!(names.len(), VARIANTS.len(), "an SPR runs every variant");
        let mode = Mode::of(&ladder, ladder.below("sapphirerapids").unwrap(), None);
        assert_eq!(mode.without, vec!["AMX"]);
        assert!(
            mode.describe().contains("without AMX"),
            "{}",
            mode.describe()
        );
    }

    #[test]
    fn a_zen4_host_never_gets_amx_or_avx_vnni() {
        let dir = all_variants();
        let ladder = Ladder::in_dir(dir.path(), &cpu(ZEN4));
        assert_eq!(ladder.best().unwrap().name, "zen4");
        assert!(ladder.get("sapphirerapids").is_none());
        assert!(ladder.get("alderlake").is_none());
        assert_eq!(ladder.below("x64"), None);
    }

    #[test]
    fn only_variants_present_are_on_the_ladder_and_none_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libggml-cpu-haswell.so"), b"").unwrap();
        std::fs::write(dir.path().join("libggml-cpu-x64.so"), b"").unwrap();
        let ladder = Ladder::in_dir(dir.path(), &cpu(ZEN4));
        let names: Vec<&str> = ladder.steps.iter().map(|v| v.name).collect();
        assert_eq!(names, ["haswell", "x64"]);
        let empty = tempfile::tempdir().unwrap();
        let err = Ladder::first_of(&[empty.path().to_owned()], &cpu(ZEN4)).unwrap_err();
        assert!(err.to_string().contains("libggml-cpu-*.so"), "{err}");
        assert!(
            err.to_string()
                .contains(&empty.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_remembered_mode_is_per_machine_and_model_and_survives_a_new_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data").join("engine-modes.json");
        let model = Path::new("/models/a.gguf");
        let ladder = Ladder::in_dir(all_variants().path(), &cpu(SPR));
        let mode = Mode::of(&ladder, Variant::named("zen4").unwrap(), Some("x".into()));
        Memory::new(Some(file.clone()))
            .remember(&cpu(SPR), model, &mode)
            .unwrap();
        let again = Memory::new(Some(file));
        assert_eq!(again.recall(&cpu(SPR), model), Some(mode));
        assert_eq!(again.recall(&cpu(ZEN4), model), None, "another machine");
        assert_eq!(
            again.recall(&cpu(SPR), Path::new("/models/b.gguf")),
            None,
            "another model"
        );
    }

    #[test]
    fn every_signal_reads_as_what_to_do() {
        use std::os::unix::process::ExitStatusExt;
        let sig = |n: i32| Some(std::process::ExitStatus::from_raw(n));
        let ill = exit_words(sig(4), Some("zen4"), &[]);
        assert!(ill.contains("SIGILL") && ill.contains("zen4") && ill.contains("cannot run"));
        assert!(exit_words(sig(9), None, &[]).contains("memory"));
        let tail = vec!["llama.cpp:12: GGML_ASSERT(n > 0) failed".to_owned()];
        assert!(exit_words(sig(6), None, &tail).contains("GGML_ASSERT(n > 0)"));
        assert!(exit_words(sig(7), None, &[]).contains("model file"));
        assert!(
            exit_words(Some(std::process::ExitStatus::from_raw(3 << 8)), None, &[])
                .contains("status 3")
        );
    }
}
