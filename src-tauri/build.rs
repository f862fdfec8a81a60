//! Tauri's build step: the app context (config, icons) for `generate_context!`.

fn main() {
    tauri_build::build()
}
