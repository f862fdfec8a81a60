//! With the local engine, llama.cpp is shared libraries (llama-cpp-2's `dynamic-backends`):
//! `libllama.so.0`, `libggml*.so.0`, and one CPU backend per instruction-set level
//! (`libggml-cpu-haswell.so`, …) that the worker chooses from at start
//! (src/providers/local/cpu.rs). This puts them next to the binary in cargo's target dir, as
//! regular files under the names the binary and ggml look for (llama-cpp-sys-2 places only
//! hard links to the unversioned symlinks there, which dangle, and no backend), and gives
//! the binaries a run path that finds them beside them (`$ORIGIN`: the target dir,
//! `scripts/run`) or in `../lib/understudy` (the .deb: /usr/bin → /usr/lib/understudy).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    let Ok(backends) = std::env::var("DEP_LLAMA_BACKENDS_DIR") else {
        return; // No engine (the tray app, the fuzz targets): nothing to place.
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/understudy-<hash>/out.
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR is deep enough");
    let backends = Path::new(&backends);
    let libs = backends.parent().expect("OUT_DIR/backends").join("lib");
    // The backends (`libggml-cpu-zen4.so`, …), and the core libraries under their sonames
    // (`libllama.so.0`: what the binary's NEEDED entries name).
    let mut shipped = place(backends, profile_dir, |n| n.ends_with(".so"));
    assert!(
        !shipped.is_empty(),
        "llama-cpp-sys-2 built no backend library in {}",
        backends.display()
    );
    // A backend an earlier build with other features left here (libggml-vulkan.so after a
    // `--features vulkan` build) would be loaded, and packaged: it goes.
    for entry in std::fs::read_dir(profile_dir).expect("the target dir") {
        let path = entry.expect("a readable target dir").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let backend = name.starts_with("libggml-") && name.ends_with(".so");
        if backend && !path.is_symlink() && !shipped.iter().any(|s| s == name) {
            let _ = std::fs::remove_file(&path);
        }
    }
    let soname = |n: &str| {
        n.rsplit_once(".so.")
            .is_some_and(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    let sonames = place(&libs, profile_dir, soname);
    assert!(
        !sonames.is_empty(),
        "llama-cpp-sys-2 built no shared library in {}",
        libs.display()
    );
    shipped.extend(sonames);
    // What a package ships beside the binary (scripts/package reads it).
    shipped.sort();
    std::fs::write(
        profile_dir.join("understudy-libs.txt"),
        shipped.join("\n") + "\n",
    )
    .expect("writing the library list");
    // llama-cpp-sys-2 also puts its dangling links in deps/ (and examples/), and on its next
    // run (another feature set, clippy) it sees them as missing (`exists()` follows the
    // link), links again, and fails with "File exists". The sonames there make them resolve.
    for sub in ["deps", "examples"] {
        let dir = profile_dir.join(sub);
        if dir.is_dir() {
            place(&libs, &dir, soname);
        }
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib/understudy");
}

/// Copies the files of `from` whose names pass `wanted` into `to` (following symlinks, so
/// each lands as a regular file); returns their names.
fn place(from: &Path, to: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut placed = Vec::new();
    for entry in std::fs::read_dir(from).expect("llama-cpp-sys-2's output dir") {
        let path = entry.expect("a readable output dir").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !wanted(name) {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let dest = to.join(name);
        // Copied, not hard-linked: a rebuilt library must replace the old one, and a link to
        // a file cmake replaced would keep the old content.
        if std::fs::read(&dest).ok() != std::fs::read(&path).ok() {
            let tmp = to.join(format!(".{name}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::fs::copy(&path, &tmp).expect("copying a llama.cpp library");
            std::fs::rename(&tmp, &dest).expect("placing a llama.cpp library");
        }
        placed.push(name.to_owned());
    }
    placed
}
