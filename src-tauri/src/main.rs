//! Understudy's tray app: the gateway in-process (the local model stays in its worker
//! process), its state in the tray icon and menu, desktop notifications, and the dashboard in
//! a window. The tray's icon, tooltip and menu come from `understudy::desktop::tray::view`, a pure
//! function of the status snapshot; they are rebuilt only when that view changes. Linux tray
//! hosts deliver no click events, so everything is in the menu.
//!
//! Closing the window destroys its webview (and WebKit's processes): the app goes on in the
//! tray at a few tens of MB. One instance per user: a second launch opens the first one's
//! window and exits.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod icons;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, RunEvent, WebviewUrl, WebviewWindowBuilder};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use understudy::config::Config;
use understudy::desktop::tray::{self, View};
use understudy::server::AppState;
use understudy::telemetry::status::Snapshot;

const HELP: &str = "understudy-tray: Understudy's tray app (the gateway, a tray icon, notifications, the dashboard)

Usage: understudy-tray [--config FILE] [--listen ADDR] [--show]

  --config FILE   the config file (default: the platform config dir's understudy/config.toml;
                  none there: zero config)
  --listen ADDR   the address to serve on, overriding the config (default 127.0.0.1:8723)
  --show          open the dashboard window at start
";

/// The command line: few enough options to read by hand.
struct Args {
    config: Option<std::path::PathBuf>,
    listen: Option<std::net::SocketAddr>,
    show: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: std::env::var_os("UNDERSTUDY_CONFIG").map(Into::into),
        listen: None,
        show: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--listen" => {
                let v = it.next().ok_or("--listen needs an address")?;
                args.listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?} is not an IP address and port"))?,
                );
            }
            "--show" => args.show = true,
            "-h" | "--help" => return Err(HELP.to_owned()),
            // Arguments a desktop launcher or the autostart entry may add.
            s if s.starts_with("--autostart") => {}
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    Ok(args)
}

/// The gateway's allocator, as in the `understudy` binary: it gives memory back after a burst
/// of large requests (glibc's malloc kept most of it).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the tray's handlers share.
struct Shared {
    gateway: Arc<AppState>,
    url: String,
    tray: Mutex<Option<TrayIcon>>,
    view: Mutex<Option<View>>,
    muted: Arc<AtomicBool>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "understudy=info,understudy_tray=info".into()),
        )
        .with_writer(understudy::telemetry::logline::LogWriter { ansi })
        .with_ansi(ansi)
        .init();
    // GDK's OpenGL is for GTK widgets that draw with GL, and the tray app has none; left on,
    // it loads the GL driver (Mesa's llvmpipe pulls in ~45 MB of LLVM) into a process that
    // sits idle all day. The dashboard's webview composites without it.
    if std::env::var_os("GDK_GL").is_none() {
        std::env::set_var("GDK_GL", "disable");
    }
    // The local model's worker is the `understudy` binary installed beside this one.
    if std::env::var_os("UNDERSTUDY_WORKER_BIN").is_none() {
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.join("understudy")))
            .filter(|p| p.exists())
        {
            std::env::set_var("UNDERSTUDY_WORKER_BIN", sibling);
        }
    }
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            let _ = understudy::desktop::show(&understudy::desktop::notify::Notice {
                title: "Understudy cannot start".into(),
                body: format!("{e}Run `understudy config check` to see every problem."),
            });
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.listen {
        cfg.server.listen = addr;
    }
    understudy::desktop::app_defaults(&mut cfg);
    match run(cfg, args.show) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config, show: bool) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served: Arc<Served> = Default::default();
    let setup_served = served.clone();
    let mut setup = Some((cfg, stop_rx));
    // The single-instance plugin runs first: a second launch hands over to the first (which
    // opens its window) and exits before it binds anything.
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            open_dashboard(app);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--autostart"]),
        ))
        .plugin(tauri_plugin_clipboard_manager::init())
        .setup(move |app| {
            let (cfg, stop_rx) = setup.take().expect("setup runs once");
            let shared = start_gateway(cfg, stop_rx, &setup_served)?;
            let handle = app.handle().clone();
            app.manage(shared.clone());
            let snap = shared.gateway.snapshot();
            let view = tray::view(&snap, tray_state(&handle, &snap));
            let tray = TrayIconBuilder::with_id("understudy")
                .icon(icon_image(view.icon))
                .tooltip(&view.tooltip)
                .menu(&build_menu(&handle, &view)?)
                .show_menu_on_left_click(true)
                .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
                .build(app)?;
            *shared.tray.lock().expect("tray lock") = Some(tray);
            *shared.view.lock().expect("view lock") = Some(view);
            tauri::async_runtime::spawn(watch(handle.clone(), shared.clone()));
            tauri::async_runtime::spawn(understudy::desktop::notifications(
                Arc::downgrade(&shared.gateway),
                shared.muted.clone(),
                Arc::new(|n| {
                    if let Err(e) = understudy::desktop::show(&n) {
                        tracing::warn!(error = %e, "could not show a desktop notification");
                    }
                }),
            ));
            if show {
                open_dashboard(&handle);
            }
            Ok(())
        })
        .build(tauri::generate_context!())?;

    let mut stop_tx = Some(stop_tx);
    app.run(move |_app, event| match event {
        // The last window closed: the app lives on in the tray.
        RunEvent::ExitRequested {
            code: None, api, ..
        } => api.prevent_exit(),
        RunEvent::Exit => {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(());
            }
            understudy::desktop::claude_code_stop();
        }
        _ => {}
    });
    // In-flight streams get the gateway's grace period.
    if let Some(served) = served.lock().expect("served lock").take() {
        let _ = tauri::async_runtime::block_on(async {
            tokio::time::timeout(Duration::from_secs(12), served).await
        });
    }
    Ok(())
}

type Served = Mutex<Option<tauri::async_runtime::JoinHandle<std::io::Result<()>>>>;

/// Binds and starts the gateway on Tauri's tokio runtime.
fn start_gateway(
    cfg: Config,
    stop: tokio::sync::oneshot::Receiver<()>,
    served: &Served,
) -> anyhow::Result<Arc<Shared>> {
    let addr = cfg.server.listen;
    let ollama_listen = cfg.server.ollama_listen;
    let conn = understudy::server::Connections::of(&cfg);
    let (listener, gateway, app) = tauri::async_runtime::block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e} (is another program using the port? use --listen to pick another address)")
        })?;
        let port = listener.local_addr()?.port();
        let (app, gateway) = understudy::server::build(cfg, port).await;
        anyhow::Ok((listener, gateway, app))
    })
    .inspect_err(|e| {
        let _ = understudy::desktop::show(&understudy::desktop::notify::Notice {
            title: "Understudy cannot start".into(),
            body: e.to_string(),
        });
    })?;
    let url = format!("http://{}", listener.local_addr()?);
    understudy::desktop::claude_code_start(&url, false, None);
    println!("understudy listening on {url}");
    tracing::info!(%url, "tray app: gateway listening");
    *served.lock().expect("served lock") = Some(tauri::async_runtime::spawn(
        understudy::server::serve_app(listener, app, ollama_listen, conn, async move {
            let _ = stop.await;
        }),
    ));
    Ok(Arc::new(Shared {
        gateway,
        url,
        tray: Mutex::new(None),
        view: Mutex::new(None),
        muted: Arc::new(AtomicBool::new(false)),
    }))
}

fn tray_state(app: &AppHandle, snap: &Snapshot) -> tray::Local {
    tray::Local {
        paused: snap.paused,
        autostart: app.autolaunch().is_enabled().unwrap_or(false),
        claude_code_connected: snap.claude_code.as_ref().is_some_and(|c| c.connected),
    }
}

fn icon_image(icon: tray::Icon) -> Image<'static> {
    Image::new_owned(icons::rgba(icon), icons::SIZE, icons::SIZE)
}

fn build_menu(app: &AppHandle, view: &View) -> tauri::Result<Menu<tauri::Wry>> {
    let mut items: Vec<Box<dyn IsMenuItem<tauri::Wry>>> = Vec::new();
    for item in &view.shown_menu() {
        match item {
            None => items.push(Box::new(PredefinedMenuItem::separator(app)?)),
            Some(i) => match i.checked {
                Some(checked) => items.push(Box::new(CheckMenuItem::with_id(
                    app,
                    &i.id,
                    &i.label,
                    i.enabled,
                    checked,
                    None::<&str>,
                )?)),
                None => items.push(Box::new(MenuItem::with_id(
                    app,
                    &i.id,
                    &i.label,
                    i.enabled,
                    None::<&str>,
                )?)),
            },
        }
    }
    let refs: Vec<&dyn IsMenuItem<tauri::Wry>> = items.iter().map(|b| b.as_ref()).collect();
    Menu::with_items(app, &refs)
}

/// Rebuilds the tray when the gateway's state changes: on its events, and every 2 s for what
/// changes without one (latencies, the local model's load progress).
async fn watch(app: AppHandle, shared: Arc<Shared>) {
    let mut health = shared.gateway.router.health().subscribe();
    let mut requests = shared.gateway.router.recorder().subscribe();
    let mut ui = shared.gateway.ui_events.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    use tokio::sync::broadcast::error::RecvError::Closed;
    loop {
        let closed = tokio::select! {
            r = health.recv() => matches!(r, Err(Closed)),
            r = requests.recv() => matches!(r, Err(Closed)),
            r = ui.recv() => matches!(r, Err(Closed)),
            _ = tick.tick() => false,
        };
        if closed {
            // The gateway is gone (the app is quitting).
            return;
        }
        refresh(&app, &shared);
    }
}

fn refresh(app: &AppHandle, shared: &Shared) {
    let snap = shared.gateway.snapshot();
    shared.muted.store(snap.paused, Ordering::Relaxed);
    let view = tray::view(&snap, tray_state(app, &snap));
    let mut last = shared.view.lock().expect("view lock");
    if last.as_ref() == Some(&view) {
        return;
    }
    let changed_icon = last.as_ref().map(|v| v.icon) != Some(view.icon);
    let changed_menu = last.as_ref().map(|v| v.shown_menu()) != Some(view.shown_menu());
    let tray = shared.tray.lock().expect("tray lock");
    if let Some(tray) = tray.as_ref() {
        // Menus and icons are GTK objects: changed on the main thread.
        let (tray, app2, v) = (tray.clone(), app.clone(), view.clone());
        let _ = app.run_on_main_thread(move || {
            if changed_icon {
                let _ = tray.set_icon(Some(icon_image(v.icon)));
            }
            let _ = tray.set_tooltip(Some(&v.tooltip));
            if changed_menu {
                match build_menu(&app2, &v) {
                    Ok(menu) => {
                        let _ = tray.set_menu(Some(menu));
                    }
                    Err(e) => tracing::warn!(error = %e, "could not rebuild the tray menu"),
                }
            }
        });
    }
    *last = Some(view);
}

fn open_dashboard(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("dashboard") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
        return;
    }
    let shared = app.state::<Arc<Shared>>();
    // Signed in through a one-time code: the window's session cookie is its proof of being
    // this user (the admin API refuses everyone else).
    let code = shared.gateway.admin.one_time_code();
    let url = match format!("{}/ui/login?code={code}", shared.url).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "bad dashboard URL");
            return;
        }
    };
    if let Err(e) = WebviewWindowBuilder::new(app, "dashboard", WebviewUrl::External(url))
        .title("Understudy")
        .inner_size(1200.0, 860.0)
        .build()
    {
        tracing::warn!(error = %e, "could not open the dashboard window");
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    let router = &shared.gateway.router;
    match id {
        "pause" => router.set_paused(!router.paused()),
        "claude-code" => {
            if let Some(paths) = understudy::desktop::claude_code::Paths::current() {
                let r = if understudy::desktop::claude_code::state(&paths).connected {
                    understudy::desktop::claude_code::disconnect(&paths).map(|_| ())
                } else {
                    let gateway = &shared.gateway;
                    let header = gateway
                        .server
                        .require_token
                        .then(|| gateway.admin.client_header());
                    understudy::desktop::claude_code::connect_with(
                        &paths,
                        &shared.url,
                        Some(std::process::id()),
                        header.as_deref(),
                    )
                };
                if let Err(e) = r {
                    let _ = understudy::desktop::show(&understudy::desktop::notify::Notice {
                        title: "Claude Code".into(),
                        body: e.to_string(),
                    });
                }
            }
        }
        "copy-setup" => {
            let text = format!("export ANTHROPIC_BASE_URL={}\n", shared.url);
            if let Err(e) = app.clipboard().write_text(text) {
                tracing::warn!(error = %e, "could not copy to the clipboard");
            }
        }
        "dashboard" => open_dashboard(app),
        "autostart" => {
            let auto = app.autolaunch();
            let r = if auto.is_enabled().unwrap_or(false) {
                auto.disable()
            } else {
                auto.enable()
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not change start at login");
            }
        }
        "quit" => app.exit(0),
        other => {
            if let Some(mode) = other
                .strip_prefix("mode:")
                .and_then(understudy::routing::Mode::parse)
            {
                router.set_mode(mode);
            }
        }
    }
    refresh(app, &shared);
}
