//! The `kinetail` command: parses the command line, sets up logging and
//! signals, and reports errors in one place with an exit code.

#![deny(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kinetail::config::{DEFAULT_CONFIG_PATH, Settings};
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGPROF, SIGTERM, SIGUSR1, SIGUSR2, SIGVTALRM};
use signal_hook::iterator::Signals;

/// Every line passes through a few short-lived allocations (its data, its
/// key, the request and response entries); mimalloc's thread-local free
/// lists make those far cheaper than glibc's malloc (see ARCHITECTURE.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3 keeps freed memory for a second before giving it back to the
/// system; reading an over-long line in 1 MiB pieces, that held tens of MiB.
/// It is given back at once instead (`purge_delay` 0); the backlog's CPU is
/// the same either way.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn give_freed_memory_back_at_once() {
    /// `mi_option_purge_delay` in the `mi_option_e` of mimalloc v3
    /// (`mimalloc.h`), the version the pinned libmimalloc-sys builds; its
    /// bindings name only older option numbers.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mi_option_set stores one integer option and has no other
    // precondition than a valid option number; it runs once, before the
    // runtime starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

#[derive(Parser)]
#[command(
    name = "kinetail",
    version,
    about = "Tails log files and ships every line to Amazon Kinesis Data Streams or Firehose"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print, per file, the confirmed offset and how far behind it is.
    Status {
        /// The configuration file (for the state directory).
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff).
    Man,
    /// Validate the configuration and print the effective settings.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Move the checkpoint store aside (never deleted), so that the next
    /// start reads every file from its `start_at` position. For a store
    /// that cannot be read, or one written by a newer kinetail.
    ResetState {
        /// The configuration file (for the state directory).
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

/// The exit code when the checkpoint store cannot be used and restarting
/// cannot help (the unit lists it in `RestartPreventExitStatus=`).
const EXIT_STORE: u8 = 3;

/// Standard error for logs, where a failed write (a closed pipe, a full
/// disk) drops the line instead of failing: losing stderr must never stop
/// the daemon, nor make the log library panic in its fallback.
struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Writes a message to standard error, if it can.
fn say(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Writes command output to standard output. A closed pipe (`| head`) ends
/// the output quietly, never with a panic.
fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
    let _ = std::io::stdout().flush();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, and not when NO_COLOR says
    // so (no-color.org): a pipe, a file or `docker logs` gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| QuietStderr);
    // Under systemd, stderr goes to the journal, which stamps every line
    // itself: a second timestamp would only be noise.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).init(),
        (LogFormat::Json, _) => {
            kinetail::redact::set_json_logs();
            builder.json().init()
        }
    }
}

/// Why the configuration file is one others could change, if it is: owned
/// by a user other than root and kinetail's, or writable by its group or
/// everyone. Whoever can write it decides what kinetail reads and where it
/// sends it.
fn others_may_write(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let me = rustix::process::geteuid().as_raw();
    let shown = kinetail::redact::path(path);
    if meta.uid() != 0 && meta.uid() != me {
        Some(format!(
            "configuration file {shown} belongs to user {} (kinetail runs as {me}): that user decides what kinetail reads and where it sends it",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "configuration file {shown} may be written by others (mode {:04o}): whoever can write it decides what kinetail reads and where it sends it; chmod go-w",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    give_freed_memory_back_at_once();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Settings::load(&config) {
            Ok(settings) => {
                if let Some(w) = others_may_write(&config) {
                    say(format_args!("kinetail: warning: {w}"));
                }
                out(&settings.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                say(e);
                ExitCode::from(2)
            }
        },
        Command::Status { config, json } => status(&config, json),
        Command::ResetState { config } => reset_state(&config),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "kinetail", &mut text);
            out(&String::from_utf8_lossy(&text));
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut text) {
                Ok(()) => {
                    out(&String::from_utf8_lossy(&text));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say(format_args!("kinetail: cannot write the manual page: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            init_logging(cli.log_format);
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    say(e);
                    return ExitCode::from(2);
                }
            };
            if let Some(w) = others_may_write(&config) {
                tracing::warn!("{w}");
            }
            run(settings)
        }
    }
}

fn reset_state(config: &std::path::Path) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            say(e);
            return ExitCode::from(2);
        }
    };
    match kinetail::state::store::reset(&settings.state_dir) {
        Ok(moved) if moved.is_empty() => {
            out("no checkpoint store to move aside\n");
            ExitCode::SUCCESS
        }
        Ok(moved) => {
            for (from, to) in moved {
                out(&format!(
                    "moved {} to {}\n",
                    kinetail::redact::path(&from),
                    kinetail::redact::path(&to)
                ));
            }
            out("the next start reads every file from its start_at position\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(format_args!("kinetail: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard one: the API's
/// connections and the tailed files share it, and a low soft limit (1024
/// on most systems) is the first thing a flood of connections exhausts.
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
}

fn status(config: &std::path::Path, json: bool) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            say(e);
            return ExitCode::from(2);
        }
    };
    let mut files = match kinetail::service::status::collect(&settings.state_dir) {
        Ok(f) => f,
        Err(e) => {
            say(format_args!("kinetail: {e}"));
            return if e.needs_operator() {
                ExitCode::from(EXIT_STORE)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    for f in &mut files {
        f.destination = settings
            .flows
            .iter()
            .find(|flow| flow.name == f.flow)
            .map(|flow| flow.destination.to_string());
    }
    if json {
        match serde_json::to_string_pretty(&files) {
            Ok(text) => out(&format!("{text}\n")),
            Err(e) => {
                say(format_args!("kinetail: cannot encode status: {e}"));
                return ExitCode::FAILURE;
            }
        }
    } else {
        let now = kinetail::clock::now_ms();
        out(&kinetail::service::status::render(&files, now));
    }
    ExitCode::SUCCESS
}

/// Signals, on a thread of their own: TERM and INT stop (a second one
/// exits at once), HUP reloads. Signals whose default is to end the process
/// at once, without the final save, and that kinetail has no use for are
/// caught and logged, so that a logrotate `postrotate` that sends USR1 to
/// "the logging daemon" (or a stray timer signal) does not kill it.
fn handle_signals(
    stop_tx: tokio::sync::oneshot::Sender<()>,
    reload_tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> std::io::Result<()> {
    let ignored = [SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF];
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP].iter().chain(&ignored))?;
    std::thread::spawn(move || {
        let mut stop_tx = Some(stop_tx);
        for sig in signals.forever() {
            match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload_tx.send(());
                }
                s if ignored.contains(&s) => {
                    tracing::info!(
                        signal = s,
                        "signal ignored: kinetail stops on TERM or INT and reloads on HUP"
                    );
                }
                _ => match stop_tx.take() {
                    Some(tx) => {
                        tracing::info!(signal = sig, "stop requested");
                        let _ = tx.send(());
                    }
                    None => {
                        // The second signal: leave now. The checkpoint store
                        // on disk only ever holds confirmed offsets.
                        say("kinetail: second stop signal, exiting at once");
                        std::process::exit(130);
                    }
                },
            }
        }
    });
    Ok(())
}

fn run(settings: Settings) -> ExitCode {
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.worker_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say(format_args!(
                "kinetail: cannot start the async runtime: {e}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    if let Err(e) = handle_signals(stop_tx, reload_tx) {
        say(format_args!(
            "kinetail: cannot install signal handlers: {e}"
        ));
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(kinetail::service::daemon::run(
        settings,
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    // Lanes still retrying after the grace period are abandoned here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(kinetail::service::daemon::DaemonError::Store(e)) if e.needs_operator() => {
            say(format_args!("kinetail: {e}"));
            ExitCode::from(EXIT_STORE)
        }
        Err(e) => {
            say(format_args!("kinetail: {e}"));
            ExitCode::FAILURE
        }
    }
}
