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
  ensure_apt pkg-config
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
