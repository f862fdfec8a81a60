//! Understudy's tray app: the gateway in-process (the local model stays in its worker
//! process), its state in the tray icon and menu, and desktop notifications. The tray's icon,
//! tooltip and menu come from `understudy::desktop::tray::view`, a pure function of the status
//! snapshot; they are rebuilt only when that view changes. Linux tray hosts deliver no click
//! events, so everything is in the menu.
//!
//! The dashboard is a second process, `understudy-dashboard` (Tauri and its WebKit webview),
//! started when it is asked for and gone when its window closes. This process links GTK and the
//! indicator only: WebKitGTK's libraries (and the speech voices Debian links into it) are ~45 MB
//! resident from the moment they are loaded, window or not, and the tray sits in the tray all
//! day. One instance per user ([`instance`]): a second launch opens the first one's dashboard
//! and exits.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod icons;
mod instance;

use std::cell::RefCell;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tray_icon::menu::{CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{TrayIcon, TrayIconBuilder};
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

/// The gateway, as the tray's handlers reach it from any thread.
struct Shared {
    gateway: Arc<AppState>,
    url: String,
    muted: Arc<AtomicBool>,
    /// A refresh is queued on the GTK thread: a burst of events queues one, not thousands.
    refresh_queued: AtomicBool,
}

/// What lives on the GTK thread (tray icons and menus are GTK objects).
struct Ui {
    shared: Arc<Shared>,
    tray: TrayIcon,
    view: View,
    dashboard: Option<Dashboard>,
    clipboard: Option<arboard::Clipboard>,
}

/// The dashboard's process, while its window is open.
struct Dashboard {
    child: std::process::Child,
    started: std::time::Instant,
}

thread_local! {
    static UI: RefCell<Option<Ui>> = const { RefCell::new(None) };
}

/// Runs `f` on the GTK thread, with the tray's state (from a handler, a timer or the runtime),
/// always queued: only GTK's main loop runs it, so a call before it starts waits for it and
/// one after it ended never runs (`MainContext::invoke` would run it on the calling thread
/// whenever nobody iterates the context).
fn on_ui(f: impl FnOnce(&mut Ui) + Send + 'static) {
    gtk::glib::idle_add_once(move || {
        UI.with(|ui| {
            if let Some(ui) = ui.borrow_mut().as_mut() {
                f(ui);
            }
        })
    });
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
        if let Some(sibling) = sibling("understudy") {
            std::env::set_var("UNDERSTUDY_WORKER_BIN", sibling);
        }
    }
    // Before anything is bound: a second launch opens the first one's dashboard and exits.
    let instance = match understudy::config::data_dir().map(|d| instance::claim(&d)) {
        Some(Ok(instance::Claim::First(i))) => Some(i),
        Some(Ok(instance::Claim::Handed)) => return ExitCode::SUCCESS,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            eprintln!("error: {e}");
            notify(
                "Understudy cannot start",
                format!("{e}. Quit the running one (or end its process) and start again."),
            );
            return ExitCode::FAILURE;
        }
        // An unwritable data dir: the app still runs, without the second-launch check.
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot take the single-instance lock; a second launch will not find this one");
            None
        }
        None => None,
    };
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            notify(
                "Understudy cannot start",
                format!("{e}Run `understudy config check` to see every problem."),
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.listen {
        cfg.server.listen = addr;
    }
    understudy::desktop::app_defaults(&mut cfg);
    match run(cfg, args.show, instance) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config, show: bool, mut instance: Option<instance::Instance>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("understudy")
        .build()?;
    gtk::init().map_err(|e| {
        anyhow::anyhow!("cannot open the display ({e}); without a desktop, run the gateway alone: `understudy serve`")
    })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (shared, served) = start_gateway(&rt, cfg, stop_rx)?;
    let snap = shared.gateway.snapshot();
    let view = tray::view(&snap, tray_state(&snap));
    let mut tray = TrayIconBuilder::new().with_id("understudy");
    // The indicator reads the icon from a file: in the user's runtime dir, else the data dir
    // (tray-icon's fallback is a /tmp folder another user may own).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        if let Some(d) = understudy::config::data_dir() {
            tray = tray.with_temp_dir_path(d.join("tray-icon"));
        }
    }
    let tray = tray
        .with_icon(icon_image(view.icon))
        .with_tooltip(&view.tooltip)
        .with_menu(Box::new(build_menu(&view)?))
        .with_menu_on_left_click(true)
        .build()?;
    UI.with(|ui| {
        *ui.borrow_mut() = Some(Ui {
            shared: shared.clone(),
            tray,
            view,
            dashboard: None,
            clipboard: None,
        })
    });
    MenuEvent::set_event_handler(Some(|event: MenuEvent| {
        let id = event.id().0.clone();
        on_ui(move |ui| on_menu(ui, &id));
    }));
    rt.spawn(watch(shared.clone()));
    rt.spawn(understudy::desktop::notifications(
        Arc::downgrade(&shared.gateway),
        shared.muted.clone(),
        Arc::new(|n| {
            if let Err(e) = understudy::desktop::show(&n) {
                tracing::warn!(error = %e, "could not show a desktop notification");
            }
        }),
    ));
    #[cfg(unix)]
    let launches = match instance.as_ref().and_then(|i| i.listener.as_ref()) {
        Some(listener) => Some(rt.spawn(second_launches(listener.try_clone()?))),
        None => None,
    };
    rt.spawn(quit_on_signal());
    if show {
        on_ui(open_dashboard);
    }
    gtk::main();

    // Quitting: a relaunch from now on waits to take over; the dashboard closes with the app;
    // Claude Code's settings are restored; in-flight streams get the gateway's grace period.
    #[cfg(unix)]
    if let Some(task) = launches {
        task.abort();
    }
    if let Some(i) = instance.as_mut() {
        i.stop_listening();
    }
    UI.with(|ui| {
        if let Some(mut ui) = ui.borrow_mut().take() {
            if let Some(d) = ui.dashboard.take() {
                close_dashboard(d);
            }
        }
    });
    understudy::desktop::claude_code_stop();
    let _ = stop_tx.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(12), served).await });
    // Blocking tasks (a keyring lookup waiting on an unlock prompt) do not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(instance);
    Ok(())
}

/// Ends the dashboard as its window's close would: its input ends (it exits), then, after a
/// second, it is killed.
fn close_dashboard(mut d: Dashboard) {
    drop(d.child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        if !matches!(d.child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = d.child.kill();
    let _ = d.child.wait();
}

/// Binds and starts the gateway on the runtime.
fn start_gateway(
    rt: &tokio::runtime::Runtime,
    cfg: Config,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<(Arc<Shared>, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let addr = cfg.server.listen;
    let ollama_listen = cfg.server.ollama_listen;
    let conn = understudy::server::Connections::of(&cfg);
    let (listener, gateway, app) = rt
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr}: {e} (is another program using the port? use --listen to pick another address)")
            })?;
            let port = listener.local_addr()?.port();
            let (app, gateway) = understudy::server::build(cfg, port).await;
            anyhow::Ok((listener, gateway, app))
        })
        .inspect_err(|e| {
            notify("Understudy cannot start", e.to_string());
        })?;
    let url = format!("http://{}", listener.local_addr()?);
    understudy::desktop::claude_code_start(&url, false, None);
    println!("understudy listening on {url}");
    tracing::info!(%url, "tray app: gateway listening");
    let served = rt.spawn(understudy::server::serve_app(
        listener,
        app,
        ollama_listen,
        conn,
        async move {
            let _ = stop.await;
        },
    ));
    let shared = Arc::new(Shared {
        gateway,
        url,
        muted: Arc::new(AtomicBool::new(false)),
        refresh_queued: AtomicBool::new(false),
    });
    Ok((shared, served))
}

/// A second launch said `show` on the instance socket: open the dashboard.
#[cfg(unix)]
async fn second_launches(listener: std::os::unix::net::UnixListener) {
    use tokio::io::AsyncBufReadExt;
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for a second launch");
            return;
        }
    };
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            // Out of descriptors, say: the gateway's own accept loop waits too, and goes on.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a second launch");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut line = String::new();
            let mut conn = tokio::io::BufReader::new(conn);
            let read = conn.read_line(&mut line);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), read).await {
                if line.trim() == "show" {
                    on_ui(open_dashboard);
                }
            }
        });
    }
}

/// SIGTERM, SIGINT and SIGHUP quit as the menu's Quit does (the grace period, Claude Code's
/// settings).
async fn quit_on_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    gtk::glib::idle_add_once(gtk::main_quit);
}

fn autolaunch() -> Option<&'static auto_launch::AutoLaunch> {
    static AUTO: std::sync::OnceLock<Option<auto_launch::AutoLaunch>> = std::sync::OnceLock::new();
    AUTO.get_or_init(make_autolaunch).as_ref()
}

fn make_autolaunch() -> Option<auto_launch::AutoLaunch> {
    // As Tauri's autostart plugin wrote it (the product name, `--autostart`), so an entry made
    // by an earlier version is the same entry.
    let exe = std::env::var("APPIMAGE")
        .ok()
        .or_else(|| Some(std::env::current_exe().ok()?.display().to_string()))?;
    auto_launch::AutoLaunchBuilder::new()
        .set_app_name("Understudy")
        .set_app_path(&exe)
        .set_args(&["--autostart"])
        .build()
        .ok()
}

fn tray_state(snap: &Snapshot) -> tray::Local {
    tray::Local {
        paused: snap.paused,
        autostart: autolaunch().is_some_and(|a| a.is_enabled().unwrap_or(false)),
        claude_code_connected: snap.claude_code.as_ref().is_some_and(|c| c.connected),
    }
}

fn icon_image(icon: tray::Icon) -> tray_icon::Icon {
    tray_icon::Icon::from_rgba(icons::rgba(icon), icons::SIZE, icons::SIZE)
        .expect("the drawn icons are SIZE×SIZE RGBA")
}

fn build_menu(view: &View) -> tray_icon::menu::Result<Menu> {
    let menu = Menu::new();
    for item in &view.shown_menu() {
        let entry: Box<dyn IsMenuItem> = match item {
            None => Box::new(PredefinedMenuItem::separator()),
            Some(i) => match i.checked {
                Some(checked) => Box::new(CheckMenuItem::with_id(
                    &i.id, &i.label, i.enabled, checked, None,
                )),
                None => Box::new(MenuItem::with_id(&i.id, &i.label, i.enabled, None)),
            },
        };
        menu.append(entry.as_ref())?;
    }
    Ok(menu)
}

/// Rebuilds the tray when the gateway's state changes: on its events, and every 2 s for what
/// changes without one (latencies, the local model's load progress).
async fn watch(shared: Arc<Shared>) {
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
        if !shared.refresh_queued.swap(true, Ordering::AcqRel) {
            on_ui(|ui| {
                ui.shared.refresh_queued.store(false, Ordering::Release);
                refresh(ui);
            });
        }
    }
}

fn refresh(ui: &mut Ui) {
    reap_dashboard(ui);
    let snap = ui.shared.gateway.snapshot();
    ui.shared.muted.store(snap.paused, Ordering::Relaxed);
    let view = tray::view(&snap, tray_state(&snap));
    if ui.view == view {
        return;
    }
    if ui.view.icon != view.icon {
        let _ = ui.tray.set_icon(Some(icon_image(view.icon)));
    }
    let _ = ui.tray.set_tooltip(Some(&view.tooltip));
    if ui.view.shown_menu() != view.shown_menu() {
        match build_menu(&view) {
            Ok(menu) => ui.tray.set_menu(Some(Box::new(menu))),
            Err(e) => tracing::warn!(error = %e, "could not rebuild the tray menu"),
        }
    }
    ui.view = view;
}

/// Forgets a dashboard whose window was closed (reaping its process), and says so when it
/// failed as it started (no WebKit, no display): "Open dashboard" must not just do nothing.
fn reap_dashboard(ui: &mut Ui) {
    let Some(d) = ui.dashboard.as_mut() else {
        return;
    };
    let Ok(Some(status)) = d.child.try_wait() else {
        return;
    };
    if !status.success() && d.started.elapsed() < Duration::from_secs(10) {
        tracing::warn!(%status, "the dashboard window ended as it started");
        notify(
            "Understudy",
            format!(
                "The dashboard window could not open ({status}); it is also at {}/ui in a browser.",
                ui.shared.url
            ),
        );
    }
    ui.dashboard = None;
}

/// Opens the dashboard: `understudy-dashboard` (installed beside this binary), told where to
/// go on its standard input (a URL with a one-time sign-in code, kept out of the process list),
/// or, while it runs, told to come to the front.
fn open_dashboard(ui: &mut Ui) {
    use std::io::Write;
    reap_dashboard(ui);
    if let Some(d) = ui.dashboard.as_mut() {
        let told = d
            .child
            .stdin
            .as_mut()
            .is_some_and(|s| s.write_all(b"show\n").and_then(|()| s.flush()).is_ok());
        if told {
            return;
        }
        if let Some(d) = ui.dashboard.take() {
            close_dashboard(d);
        }
    }
    // Signed in through a one-time code: the window's session cookie is its proof of being
    // this user (the admin API refuses everyone else).
    let code = ui.shared.gateway.admin.one_time_code();
    let url = format!("{}/ui/login?code={code}\n", ui.shared.url);
    let bin = dashboard_bin();
    let spawned = std::process::Command::new(&bin)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            let stdin = child.stdin.as_mut().expect("piped");
            match stdin.write_all(url.as_bytes()).and_then(|()| stdin.flush()) {
                Ok(()) => Ok(child),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(e)
                }
            }
        });
    match spawned {
        Ok(child) => {
            ui.dashboard = Some(Dashboard {
                child,
                started: std::time::Instant::now(),
            })
        }
        Err(e) => {
            tracing::warn!(bin = %bin.display(), error = %e, "could not open the dashboard window");
            notify(
                "Understudy",
                format!(
                    "Could not open the dashboard ({}: {e}); it is also at {}/ui in a browser.",
                    bin.display(),
                    ui.shared.url
                ),
            );
        }
    }
}

/// `UNDERSTUDY_DASHBOARD_BIN`, else `understudy-dashboard` beside this binary, else on `PATH`.
fn dashboard_bin() -> std::path::PathBuf {
    if let Some(b) = std::env::var_os("UNDERSTUDY_DASHBOARD_BIN") {
        return b.into();
    }
    sibling("understudy-dashboard").unwrap_or_else(|| "understudy-dashboard".into())
}

/// Tells the user something in a desktop notification (logged when there is no notifier).
fn notify(title: &str, body: String) {
    if let Err(e) = understudy::desktop::show(&understudy::desktop::notify::Notice {
        title: title.into(),
        body,
    }) {
        tracing::warn!(error = %e, "could not show a desktop notification");
    }
}

/// The program `name` installed beside this one, if it is there.
fn sibling(name: &str) -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join(name)))
        .filter(|p| p.exists())
}

fn on_menu(ui: &mut Ui, id: &str) {
    let shared = ui.shared.clone();
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
                    notify("Claude Code", e.to_string());
                }
            }
        }
        "copy-setup" => {
            let text = format!("export ANTHROPIC_BASE_URL={}\n", shared.url);
            // Kept for the app's life: on X11 the clipboard's text is served by its owner.
            if ui.clipboard.is_none() {
                ui.clipboard = arboard::Clipboard::new()
                    .inspect_err(|e| tracing::warn!(error = %e, "no clipboard"))
                    .ok();
            }
            if let Some(Err(e)) = ui.clipboard.as_mut().map(|c| c.set_text(text)) {
                tracing::warn!(error = %e, "could not copy to the clipboard");
            }
        }
        "dashboard" => open_dashboard(ui),
        "autostart" => {
            let r = autolaunch()
                .ok_or_else(|| "cannot find this program's path".to_owned())
                .and_then(|auto| {
                    if auto.is_enabled().unwrap_or(false) {
                        auto.disable()
                    } else {
                        auto.enable()
                    }
                    .map_err(|e| e.to_string())
                });
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not change start at login");
            }
        }
        "quit" => gtk::main_quit(),
        other => {
            if let Some(mode) = other
                .strip_prefix("mode:")
                .and_then(understudy::routing::Mode::parse)
            {
                router.set_mode(mode);
            }
        }
    }
    refresh(ui);
}
