//! Understudy's dashboard window: a Tauri webview on the gateway's dashboard, started by the
//! tray app (`understudy-tray`) when it is asked for and gone when its window closes, so that
//! WebKit's libraries and processes are only in memory while someone looks.
//!
//! Its standard input is the tray app's line to it: the first line is the URL to open (the
//! gateway's one-time sign-in link, which must not be in the process list), each later `show`
//! brings the window to the front, and the end of input (the tray app quit or died) closes it.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::io::BufRead;
use std::process::ExitCode;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "understudy_dashboard=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if std::env::args().len() > 1 {
        eprintln!(
            "understudy-dashboard: the dashboard window, opened from the tray app's menu.\n\
             It reads the page to open from its standard input; run `understudy-tray --show`."
        );
        return ExitCode::from(2);
    }
    // As in the tray app: no GL driver for a window that composites without it.
    if std::env::var_os("GDK_GL").is_none() {
        std::env::set_var("GDK_GL", "disable");
    }
    // Stdin's buffer is shared: what follows the first line stays for `follow_the_tray`.
    let mut first = String::new();
    let url = match std::io::stdin()
        .read_line(&mut first)
        .map(|_| first.trim().parse())
    {
        Ok(Ok(url)) => url,
        Ok(Err(e)) => {
            eprintln!("understudy-dashboard: the first line of input is not a URL: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("understudy-dashboard: cannot read the URL from standard input: {e}");
            return ExitCode::from(2);
        }
    };
    let app = tauri::Builder::default()
        .setup(move |app| {
            WebviewWindowBuilder::new(app, "dashboard", WebviewUrl::External(url))
                .title("Understudy")
                .inner_size(1200.0, 860.0)
                .build()?;
            let handle = app.handle().clone();
            std::thread::spawn(move || follow_the_tray(handle));
            Ok(())
        })
        .build(tauri::generate_context!());
    match app {
        // Closing the window ends the app (Tauri's default when the last window closes).
        Ok(app) => {
            app.run(|_, _| {});
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("understudy-dashboard: cannot open the window: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tray app's later lines: `show` brings the window forward; the end of input ends the app.
fn follow_the_tray(app: AppHandle) {
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(l) if l.trim() == "show" => {
                let app2 = app.clone();
                let _ = app.run_on_main_thread(move || {
                    if let Some(w) = app2.get_webview_window("dashboard") {
                        let _ = w.show();
                        let _ = w.unminimize();
                        let _ = w.set_focus();
                    }
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    app.exit(0);
}
