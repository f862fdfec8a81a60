//! The `understudy` command: `serve` runs the gateway, `config check` validates a config file,
//! `mock` (with the `testing` feature) runs the scripted mock cloud. `anyhow` is for the CLI and the worker process only: the library returns typed errors.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use understudy::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "understudy",
    version,
    about = "A localhost gateway that fails over between model providers and never passes off a truncated answer as a whole one."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ClaudeCodeCommand {
    /// Set env.ANTHROPIC_BASE_URL (every other setting kept; the file backed up first).
    Connect {
        /// The gateway's URL (default: the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Put the setting back as it was.
    Disconnect,
    /// Say where Claude Code's settings point.
    Status,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (default address 127.0.0.1:8723).
    Serve {
        /// Config file (default: the platform config dir's understudy/config.toml; none: zero config).
        #[arg(long, env = "UNDERSTUDY_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (e.g. 127.0.0.1:0 for any free port).
        #[arg(long, env = "UNDERSTUDY_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// Send desktop notifications (failover, recovery, offline, the local model).
        #[arg(long)]
        notify: bool,
        /// Point Claude Code's user settings at this gateway while it runs (restored when it
        /// stops, or at the next start after a crash).
        #[arg(long)]
        connect_claude_code: bool,
    },
    /// Point Claude Code's user settings (~/.claude/settings.json) at Understudy, or back.
    ClaudeCode {
        #[command(subcommand)]
        command: ClaudeCodeCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show a running gateway's state: routing mode, network, each backend's breaker, the local
    /// model.
    Status {
        /// The gateway's URL (default: the configured listen address).
        #[arg(long)]
        url: Option<String>,
        /// Print the JSON snapshot (`GET /api/status`) instead.
        #[arg(long)]
        json: bool,
    },
    /// Open the dashboard in a browser, signed in (a one-time link made with the admin token;
    /// the link is printed where no browser can be started).
    Dashboard {
        /// The gateway's URL (default: the configured listen address).
        #[arg(long)]
        url: Option<String>,
        /// Only print the link.
        #[arg(long)]
        print: bool,
    },
    /// Manage local models: list, pull (from Hugging Face, resumable, checksummed), rm, use.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// The local llama.cpp worker (started by the gateway; speaks JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker {
        /// The GGUF model file.
        #[arg(long)]
        model: PathBuf,
        /// Context size in tokens (default: what the model was trained for, at least 32k,
        /// what free memory holds).
        #[arg(long)]
        context: Option<u32>,
        /// CPU threads (default: the physical cores).
        #[arg(long)]
        threads: Option<u32>,
        /// Layers on the GPU (default: as many as fit).
        #[arg(long)]
        gpu_layers: Option<u32>,
        /// The directory of llama.cpp's backend libraries (default: beside the binary).
        #[arg(long)]
        backends: Option<PathBuf>,
        /// The CPU backend to run (`zen4`, `haswell`, …; default: the best this CPU runs).
        #[arg(long)]
        cpu_variant: Option<String>,
    },
    /// Run the scripted mock cloud (Anthropic- and OpenAI-shaped) for tests and benchmarks.
    #[cfg(feature = "testing")]
    Mock {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Fixed latency before each unscripted reply, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Answer length in tokens (`w0 w1 …`); 0 answers "Hello from the mock cloud.".
        #[arg(long, default_value_t = 0)]
        tokens: usize,
        /// Stream pacing in content tokens a second (0: all at once).
        #[arg(long, default_value_t = 0.0)]
        tokens_per_sec: f64,
        /// Share of chat requests (0 to 1, spread evenly) answered with `--fail-status`.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// The status failed requests get.
        #[arg(long, default_value_t = 529)]
        fail_status: u16,
        /// Share of streams (0 to 1, spread evenly) cut after half the answer with a clean end.
        #[arg(long, default_value_t = 0.0)]
        truncate_rate: f64,
        /// Do not keep requests for `GET /_mock/requests` (long benchmark runs).
        #[arg(long)]
        no_record: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and report every problem with its TOML path.
    Check {
        /// Config file (default: the platform config dir's understudy/config.toml).
        #[arg(long, env = "UNDERSTUDY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the default config file's path.
    Path,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// The installed models (the default marked) and the catalog of recommended ones.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a model: a catalog name, a Hugging Face URL, or OWNER/REPO[@REVISION]/FILE.gguf.
    /// An interrupted pull resumes when run again.
    Pull {
        /// What to pull (or `--recommended`).
        #[arg(required_unless_present = "recommended")]
        model: Option<String>,
        /// The catalog model that fits this machine best (`models list` marks it).
        #[arg(long, conflicts_with = "model")]
        recommended: bool,
        /// Make it the default model once it is here.
        #[arg(long = "use")]
        make_default: bool,
    },
    /// Delete an installed model (by file or catalog name).
    Rm {
        /// Which.
        model: String,
    },
    /// Make an installed model the local engine's default (for providers that name no file,
    /// and zero config). Takes effect when the gateway restarts.
    Use {
        /// Which.
        model: String,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("understudy=info,warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(understudy::telemetry::logline::LogWriter { ansi })
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// jemalloc returns freed memory to the system within seconds (its background thread);
/// glibc's malloc held on to most of a burst of large requests (its mmap threshold grows
/// with the blocks freed).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The worker owns llama.cpp on its own thread and needs no async runtime.
    if let Command::Worker {
        model,
        context,
        threads,
        gpu_layers,
        backends,
        cpu_variant,
    } = &cli.command
    {
        #[cfg(feature = "engine")]
        {
            let settings = understudy::providers::local::worker::Settings {
                model: model.clone(),
                n_ctx: *context,
                threads: threads.unwrap_or_else(understudy::config::physical_cores),
                gpu_layers: *gpu_layers,
                backends: backends.clone(),
                cpu_variant: cpu_variant.clone(),
            };
            return match understudy::providers::local::worker::run(&settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("understudy worker: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        #[cfg(not(feature = "engine"))]
        {
            let _ = (model, context, threads, gpu_layers, backends, cpu_variant);
            eprintln!(
                "understudy worker: this build has no local engine (built without the `engine` \
                 feature); build with the default features to answer from a local model"
            );
            return ExitCode::FAILURE;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worker { .. } => unreachable!("handled before the runtime starts"),
        Command::Serve {
            config,
            listen,
            log_json,
            notify,
            connect_claude_code,
        } => {
            init_logging(log_json);
            let mut cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    eprintln!("Run `understudy config check` to see every problem; the README documents the format.");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if let Some(addr) = listen {
                cfg.server.listen = addr;
            }
            understudy::desktop::app_defaults(&mut cfg);
            serve(cfg, notify, connect_claude_code).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ClaudeCode { command } => Ok(claude_code(command)),
        Command::Config { command } => match command {
            ConfigCommand::Path => {
                match config::default_path() {
                    Some(p) => println!("{}", p.display()),
                    None => println!("(no home directory: pass --config FILE)"),
                }
                Ok(ExitCode::SUCCESS)
            }
            ConfigCommand::Check { config } => Ok(check(config).await),
        },
        Command::Models { command } => Ok(models(command).await),
        Command::Status { url, json } => Ok(status(url, json).await),
        Command::Dashboard { url, print } => Ok(dashboard(url, print).await),
        #[cfg(feature = "testing")]
        Command::Mock {
            listen,
            delay_ms,
            tokens,
            tokens_per_sec,
            fail_rate,
            fail_status,
            truncate_rate,
            no_record,
        } => {
            init_logging(false);
            for (flag, rate) in [
                ("--fail-rate", fail_rate),
                ("--truncate-rate", truncate_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    anyhow::bail!("{flag} is a share between 0 and 1, got {rate}");
                }
            }
            let mock = understudy::testing::MockCloud::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            mock.set_profile(understudy::testing::Profile {
                delay: std::time::Duration::from_millis(delay_ms),
                tokens,
                tokens_per_sec,
                fail_rate,
                fail_status,
                truncate_rate,
                record: !no_record,
                ..Default::default()
            });
            println!("mock cloud listening on {}", mock.url());
            tokio::select! {
                _ = mock.serve_forever() => {}
                _ = understudy::server::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(cfg: Config, notify: bool, connect_claude_code: bool) -> anyhow::Result<()> {
    let addr = cfg.server.listen;
    tracing::info!(source = %cfg.source, "configuration loaded");
    for p in &cfg.providers {
        let key = p
            .key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| "none".into());
        tracing::info!(provider = %p.name, kind = p.kind.as_str(), base_url = %p.base_url, key_source = %key, passthrough_auth = p.passthrough_auth, "provider");
    }
    for w in cfg.key_warnings().await {
        tracing::warn!(at = %w.path, "{}", w.message);
    }
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: anyone who can reach this address can spend the configured keys");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another Understudy running? use --listen to pick another address)"))?;
    let local = listener.local_addr()?;
    // A stable line on stdout for scripts and tests; logs go to stderr.
    // Claude Code's settings are settled before anyone is told the gateway is up.
    let header = client_header(&cfg);
    understudy::desktop::claude_code_start(
        &format!("http://{local}"),
        connect_claude_code,
        header.as_deref(),
    );
    if let Some(j) = cfg.journal.file(None) {
        tracing::info!(journal = %j.display(), "request journal");
    }
    let ollama_listen = cfg.server.ollama_listen;
    let conn = understudy::server::Connections::of(&cfg);
    let (app, state) = understudy::server::build(cfg, local.port()).await;
    // Signals are caught from here on: a SIGTERM right after the line below is a clean stop.
    let shutdown = understudy::server::shutdown_signal();
    println!("understudy listening on http://{local}");
    tracing::info!(%local, "listening");
    if notify {
        tokio::spawn(understudy::desktop::notifications(
            std::sync::Arc::downgrade(&state),
            Default::default(),
            std::sync::Arc::new(|n| {
                if let Err(e) = understudy::desktop::show(&n) {
                    tracing::warn!(error = %e, "could not show a desktop notification");
                }
            }),
        ));
    }
    let result = understudy::server::serve_app(listener, app, ollama_listen, conn, shutdown).await;
    understudy::desktop::claude_code_stop();
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// With `server.require_token`, the client token's header line for Claude Code's settings.
fn client_header(cfg: &Config) -> Option<String> {
    if !cfg.server.require_token {
        return None;
    }
    let file = cfg
        .server
        .admin_token_file
        .clone()
        .or_else(config::default_admin_token_path)?;
    match understudy::server::auth::client_header_for(&file) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!(
                "warning: cannot read or make the client token beside {}: {e}",
                file.display()
            );
            None
        }
    }
}

fn claude_code(command: ClaudeCodeCommand) -> ExitCode {
    let Some(paths) = understudy::desktop::claude_code::Paths::current() else {
        eprintln!("error: no home directory, so no Claude Code settings");
        return ExitCode::FAILURE;
    };
    let result = match command {
        ClaudeCodeCommand::Connect { url } => {
            let url = url.unwrap_or_else(|| {
                let listen = Config::load(None)
                    .map(|c| c.server.listen)
                    .unwrap_or_else(|_| config::DEFAULT_LISTEN.parse().expect("valid"));
                format!("http://{listen}")
            });
            let header = Config::load(None).ok().and_then(|c| client_header(&c));
            understudy::desktop::claude_code::connect_with(&paths, &url, None, header.as_deref()).map(|()| {
                println!(
                    "Claude Code now uses {url} (in {}); undo with `understudy claude-code disconnect`",
                    paths.settings.display()
                )
            })
        }
        ClaudeCodeCommand::Disconnect => {
            understudy::desktop::claude_code::disconnect(&paths).map(|changed| {
                if changed {
                    println!("restored {}", paths.settings.display());
                } else {
                    println!("Claude Code was not connected by Understudy; nothing changed");
                }
            })
        }
        ClaudeCodeCommand::Status => {
            let s = understudy::desktop::claude_code::state(&paths);
            println!(
                "{}: {}",
                s.settings,
                match (&s.url, s.connected) {
                    (Some(u), true) => format!("connected to Understudy at {u}"),
                    (Some(u), false) =>
                        format!("ANTHROPIC_BASE_URL is {u} (not set by Understudy)"),
                    (None, _) => "not connected (Claude Code calls Anthropic directly)".into(),
                }
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check(path: Option<PathBuf>) -> ExitCode {
    match Config::load(path.as_deref()) {
        Ok(cfg) => {
            let warnings = cfg.key_warnings().await;
            println!(
                "{}: OK ({} providers, {} routes)",
                cfg.source,
                cfg.providers.len(),
                cfg.routes.len()
            );
            for p in &cfg.providers {
                let at = match &p.local {
                    Some(l) => {
                        let missing = if l.model.exists() {
                            ""
                        } else {
                            " (missing: run scripts/run)"
                        };
                        format!("model {}{missing}", l.model.display())
                    }
                    None => p.base_url.to_string(),
                };
                println!("  provider {} ({}) at {at}", p.name, p.kind.as_str());
            }
            for r in &cfg.routes {
                let chain: Vec<String> = r.backends.iter().map(|b| b.to_string()).collect();
                println!("  route {} -> {}", r.pattern, chain.join(", "));
            }
            for w in &warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn models(command: ModelsCommand) -> ExitCode {
    use understudy::models;
    let Some(dir) = config::models_dir() else {
        eprintln!("error: no home directory to keep models in; set UNDERSTUDY_MODELS_DIR");
        return ExitCode::FAILURE;
    };
    let result = match command {
        ModelsCommand::List { json } => {
            let installed = models::installed(&dir);
            let found = understudy::discover::scan(&understudy::discover::Roots::here());
            let free = understudy::fit::Free::here();
            let chosen = config::chosen_elsewhere(&dir);
            if json {
                let with_context = |path: &std::path::Path, size: u64| {
                    let plan = context_of(path, size, free);
                    serde_json::json!({"context": plan.as_ref().map(|p| p.n_ctx),
                        "kv_type": plan.as_ref().map(|p| p.kv_type),
                        "context_why": plan.map(|p| p.why)})
                };
                let installed: Vec<_> = installed
                    .iter()
                    .map(|m| {
                        merge(
                            serde_json::json!(m),
                            with_context(&dir.join(&m.file), m.size),
                        )
                    })
                    .collect();
                let found: Vec<_> = found
                    .iter()
                    .map(|f| {
                        let default = chosen.as_deref() == Some(f.path.as_path());
                        merge(
                            serde_json::json!(f),
                            merge(
                                with_context(&f.path, f.size),
                                serde_json::json!({"default": default}),
                            ),
                        )
                    })
                    .collect();
                let v = serde_json::json!({
                    "dir": dir,
                    "installed": installed,
                    "found": found,
                    "catalog": models::catalog().iter().map(|e| {
                        let plan = e.shape().map(|sh| understudy::fit::plan(&sh, e.size.unwrap_or(0), None, free));
                        merge(serde_json::json!(e), serde_json::json!({
                            "context": plan.as_ref().map(|p| p.n_ctx),
                            "kv_type": plan.as_ref().map(|p| p.kv_type),
                            "recommended": models::recommended(models::total_memory_gb()).is_some_and(|b| b.name == e.name),
                        }))
                    }).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                print_models(&dir, &installed, &found, chosen.as_deref(), free);
            }
            Ok(())
        }
        ModelsCommand::Pull {
            model,
            recommended,
            make_default,
        } => {
            let spec = match (model, recommended) {
                (Some(m), _) => Ok(m),
                (None, _) => models::recommended(models::total_memory_gb())
                    .map(|e| {
                        eprintln!("the best fit for this machine: {} ({})", e.name, e.description);
                        e.name.clone()
                    })
                    .ok_or_else(|| {
                        models::ModelError::Unknown(
                            "no catalog model that calls tools fits this machine's memory; `understudy models list` shows what each needs".into(),
                        )
                    }),
            };
            match spec {
                Ok(spec) => pull(&dir, &spec, make_default).await,
                Err(e) => Err(e),
            }
        }
        ModelsCommand::Rm { model } => models::remove(&dir, &model).map(|m| {
            println!("deleted {}", dir.join(&m.file).display());
            if m.default {
                println!(
                    "it was the default; the default is {} again",
                    config::DEFAULT_MODEL_FILE
                );
            }
        }),
        ModelsCommand::Use { model } => models::choose(&dir, &model).map(|m| {
            println!(
                "the local engine now uses {} by default (restart the gateway to load it)",
                m.name
                    .filter(|n| n.contains(':'))
                    .map_or(m.file.clone(), |n| format!("{n} ({}, in place)", m.file))
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The context this machine can give the model at `path` ([`understudy::fit::plan`] on its
/// header), if it has a readable one.
fn context_of(
    path: &std::path::Path,
    size: u64,
    free: Option<understudy::fit::Free>,
) -> Option<understudy::fit::Plan> {
    let shape = understudy::gguf::Shape::read(path).ok()?;
    Some(understudy::fit::plan(&shape, size, None, free))
}

/// `a`'s fields with `b`'s added.
fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn print_models(
    dir: &std::path::Path,
    installed: &[understudy::models::Local],
    found: &[understudy::discover::Found],
    chosen: Option<&std::path::Path>,
    free: Option<understudy::fit::Free>,
) {
    let mb = |b: u64| b.div_ceil(1_000_000);
    let context = |path: &std::path::Path, size: u64| {
        context_of(path, size, free).map_or_else(
            || "context ?".to_owned(),
            |p| format!("context {:>6} {}", p.n_ctx, p.kv_type.name()),
        )
    };
    println!("Installed in {}:", dir.display());
    if installed.is_empty() {
        println!("  (none: `understudy models pull NAME` fetches one from the catalog below)");
    }
    for m in installed {
        println!(
            "  {} {:<44} {:>6} MB  {}  {}",
            if m.default { "*" } else { " " },
            m.file,
            mb(m.size),
            context(&dir.join(&m.file), m.size),
            m.name.as_deref().unwrap_or("")
        );
    }
    if !found.is_empty() {
        println!("\nFound on this machine (`understudy models use NAME` uses one in place):");
        for f in found {
            println!(
                "  {} {:<60} {:>6} MB  {}",
                if chosen == Some(f.path.as_path()) {
                    "*"
                } else {
                    " "
                },
                f.name,
                mb(f.size),
                context(&f.path, f.size)
            );
        }
    }
    let ram = understudy::models::total_memory_gb();
    println!(
        "\nCatalog{}:",
        ram.map(|g| format!(" (this machine has {g} GB of memory)"))
            .unwrap_or_default()
    );
    let best = understudy::models::recommended(ram);
    for e in understudy::models::catalog() {
        let have = installed.iter().any(|m| m.file == e.file);
        let fits = ram.is_none_or(|g| u64::from(e.ram_gb) <= g);
        let context = e.shape().map_or_else(
            || "context known once pulled".to_owned(),
            |s| {
                let p = understudy::fit::plan(&s, e.size.unwrap_or(0), None, free);
                format!("context {:>6} {}", p.n_ctx, p.kv_type.name())
            },
        );
        println!(
            "  {} {:<28} {:>6} MB  needs {:>2} GB  {:<25}{}{}{}  {}",
            if best.is_some_and(|b| b.name == e.name) {
                ">"
            } else {
                " "
            },
            e.name,
            e.size_mb,
            e.ram_gb,
            context,
            if e.tools { "  tools" } else { "       " },
            if have { "  installed" } else { "" },
            if fits {
                ""
            } else {
                "  (too big for this machine)"
            },
            e.description
        );
    }
    if let Some(b) = best {
        println!(
            "\n> the best fit for this machine: `understudy models pull --recommended` fetches {}",
            b.name
        );
    }
}

async fn pull(
    dir: &std::path::Path,
    spec: &str,
    make_default: bool,
) -> Result<(), understudy::models::ModelError> {
    use understudy::models;
    let src = models::resolve(spec)?;
    eprintln!("pulling {} from {}", src.file, src.url);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    let mut on_progress = |p: models::Progress| {
        if let Some(t) = p.total {
            bar.set_length(t);
        }
        bar.set_position(p.done);
    };
    let result = models::pull(&src, dir, &mut on_progress).await;
    bar.finish_and_clear();
    let path = result?;
    println!("{}", path.display());
    if make_default {
        models::choose(dir, &src.file)?;
        eprintln!("{} is now the default local model", src.file);
    }
    Ok(())
}

/// The gateway's URL: as given, else the configured listen address.
fn gateway_url(url: Option<String>) -> String {
    let url = url.unwrap_or_else(|| {
        let listen = Config::load(None)
            .map(|c| c.server.listen)
            .unwrap_or_else(|_| ([127, 0, 0, 1], 8723).into());
        format!("http://{listen}")
    });
    url.trim_end_matches('/').to_owned()
}

/// Calls an admin endpoint of the gateway at `url` with the admin token (read from its file),
/// and returns its JSON; the error says what to do.
async fn admin_call(
    url: &str,
    method: reqwest::Method,
    path: &str,
) -> Result<serde_json::Value, String> {
    let token = match config::default_admin_token_path() {
        None => Err(
            "no home directory, so no admin token file (set UNDERSTUDY_ADMIN_TOKEN_FILE)"
                .to_owned(),
        ),
        Some(file) => understudy::server::auth::read_token(&file).map_err(|e| {
            format!(
                "cannot read the admin token {} ({e}): run this as the user who runs Understudy",
                file.display()
            )
        }),
    };
    let mut req = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .timeout(std::time::Duration::from_secs(5));
    if let Ok(t) = &token {
        req = req.header(understudy::server::auth::TOKEN_HEADER, t);
    }
    let resp = req.send().await.map_err(|e| {
        format!("Understudy is not answering at {url} ({e}); start it with scripts/run or `understudy serve`")
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(match token {
            Err(why) => format!("the admin API at {url} needs its token: {why}"),
            Ok(_) => format!("the admin API at {url} refused the token in the admin token file: is it another user's gateway, or one started with another UNDERSTUDY_ADMIN_TOKEN_FILE?"),
        });
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("the answer broke off: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{url}{path} answered HTTP {status} with no JSON ({e})"))?;
    if !status.is_success() {
        let msg = v["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("{url}{path} answered HTTP {status}: {msg}"));
    }
    Ok(v)
}

/// `understudy dashboard`: a one-time signed-in link, opened in the desktop's browser.
async fn dashboard(url: Option<String>, print: bool) -> ExitCode {
    let url = gateway_url(url);
    let link = match admin_call(&url, reqwest::Method::POST, "/api/session").await {
        Ok(v) => format!("{url}{}", v["url"].as_str().unwrap_or("/ui/")),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    // The browser is handed a private file that redirects, not the link: a command line is
    // readable by every user of the machine (/proc/PID/cmdline), and the code is a login.
    let page = config::default_admin_token_path().map(|f| f.with_file_name("dashboard-login.html"));
    if let (false, true, Some(page)) = (print, desktop, page) {
        let html = format!(
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={link}\"><title>Understudy</title><a href=\"{link}\">Open the dashboard</a>\n"
        );
        // Written as Claude Code's settings are: a temp file made 0600, renamed over.
        if let Err(e) = understudy::desktop::claude_code::write_atomically(&page, html.as_bytes()) {
            eprintln!(
                "cannot write {} ({e}); open this link within a minute:\n{link}",
                page.display()
            );
            return ExitCode::FAILURE;
        }
        let opened = std::process::Command::new("xdg-open")
            .arg(&page)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if opened {
            println!("opened the dashboard (the link works once, within a minute)");
            return ExitCode::SUCCESS;
        }
    }
    println!("{link}");
    eprintln!("(open it within a minute; it works once and signs that browser in)");
    ExitCode::SUCCESS
}

async fn status(url: Option<String>, json: bool) -> ExitCode {
    let url = gateway_url(url);
    let v = match admin_call(&url, reqwest::Method::GET, "/api/status").await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
        return ExitCode::SUCCESS;
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    println!(
        "Understudy {} at {url}: mode {}, network {}",
        s(&v["version"]),
        s(&v["mode"]),
        if v["offline"] == true { "DOWN" } else { "up" }
    );
    let t = &v["totals"];
    println!(
        "  {} requests, {} failed over, {} continued, {} failed; tokens {} in / {} out; ~${:.4}",
        t["requests"].as_u64().unwrap_or(0),
        t["failovers"].as_u64().unwrap_or(0),
        t["continued"].as_u64().unwrap_or(0),
        t["failed"].as_u64().unwrap_or(0),
        t["input_tokens"].as_u64().unwrap_or(0),
        t["output_tokens"].as_u64().unwrap_or(0),
        t["spend_usd"].as_f64().unwrap_or(0.0),
    );
    for p in v["providers"].as_array().into_iter().flatten() {
        let mut line = format!("  {:<16} {:<10} ", s(&p["name"]), s(&p["kind"]));
        if let Some(l) = p.get("local") {
            line.push_str(&local_line(l));
        } else {
            let backends: Vec<String> = p["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let st = &b["stats"];
                    let ms = |k: &str| st[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
                    format!(
                        "{} {} (ttft p50/p95 {}/{} ms, {} requests, {:.0} % errors, {} truncated)",
                        s(&b["backend"]),
                        s(&b["breaker"]),
                        ms("ttft_p50_ms"),
                        ms("ttft_p95_ms"),
                        st["requests"].as_u64().unwrap_or(0),
                        st["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                        st["truncations"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            // What is known of it first (never "healthy" unchecked), then its backends.
            match serde_json::from_value::<understudy::telemetry::status::ProviderStatus>(p.clone())
            {
                Ok(p) => line.push_str(&p.state_words()),
                Err(_) => line.push_str(&s(&p["health"])),
            }
            if let Some(c) = p["check"].as_object() {
                line.push_str(&format!(" · checked: {}", s(&c["detail"])));
            }
            if !backends.is_empty() {
                line.push_str(" · ");
                line.push_str(&backends.join(", "));
            }
            // What its status page declares.
            for i in p["status_page"]["incidents"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if i["relevant"] == true {
                    line.push_str(&format!(
                        "\n{:<30}status page: {} ({}, {})",
                        "",
                        s(&i["name"]),
                        s(&i["impact"]),
                        s(&i["status"])
                    ));
                }
            }
            // Its quota, a line per credential: `plan: 5-hour 82 %, resets in 1 h 12 m · …`.
            let at = v["at_ms"]
                .as_u64()
                .unwrap_or_else(understudy::quota::now_ms);
            for q in p["quota"].as_array().into_iter().flatten() {
                if let Ok(q) = serde_json::from_value::<understudy::quota::Quota>(q.clone()) {
                    line.push_str(&format!("\n{:<30}{}", "", q.line(at)));
                }
            }
        }
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// The local engine in one line: state, where it runs, memory, last speed.
fn local_line(l: &serde_json::Value) -> String {
    let state = l["state"].as_str().unwrap_or("?");
    let mut out = match state {
        "loading" => format!(
            "loading {:.0} %",
            l["progress"].as_f64().unwrap_or(0.0) * 100.0
        ),
        "ready" => format!(
            "ready on {} ({}/{} layers on the GPU), {} MB",
            l["device"].as_str().unwrap_or("?"),
            l["gpu_layers"],
            l["n_layers"],
            l["rss_bytes"].as_u64().unwrap_or(0) / 1_000_000
        ),
        "not_loaded" => "not loaded (loads on first use)".to_owned(),
        other => format!(
            "{other}: {}",
            l["error"].as_str().unwrap_or("no reason given")
        ),
    };
    if let Some(tps) = l["last"]["tokens_per_second"].as_f64() {
        out.push_str(&format!(", last answer {tps:.0} tokens/s"));
    }
    out.push_str(&format!(", answers: {}", l["answers"]));
    if let Some(n_ctx) = l["n_ctx"].as_u64() {
        out.push_str(&format!(
            "\n{:<28}context {n_ctx} tokens, {} KV cache {} in {} conversation slots ({})",
            "",
            l["kv_type"].as_str().unwrap_or("f16"),
            understudy::fit::size(l["kv_bytes"].as_u64().unwrap_or(0)),
            l["slots"].as_u64().unwrap_or(1),
            l["context_why"].as_str().unwrap_or("set")
        ));
    }
    if let Ok(mode) =
        serde_json::from_value::<understudy::providers::local::cpu::Mode>(l["cpu"].clone())
    {
        out.push_str(&format!("\n{:<28}{}", "", mode.describe()));
    }
    out
}
