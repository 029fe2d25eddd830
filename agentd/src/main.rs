//! agentd: arguments, logging, config load, runtime and exit codes. Nothing else lives here;
//! the daemon itself is [`daemon::run`], in the library (`lib.rs`).

use isthmus_agentd::{daemon, logging};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use isthmus_config::LoadOptions;

/// Exit code for a bad config at start-up (sysexits EX_USAGE). systemd's
/// `RestartPreventExitStatus=64` keeps a broken config from restart-looping.
const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code for a set-up failure that is not the config's fault (socket in use, no runtime).
const EXIT_SETUP_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "agentd", version, about = "isthmus gateway agent")]
struct Args {
    /// Config file to run with.
    #[arg(
        long,
        short = 'c',
        default_value = "/etc/isthmus/agentd.toml",
        env = "ISTHMUS_CONFIG"
    )]
    config: PathBuf,
    /// Validate FILE (syntax, meaning, key files) and exit: 0 if valid, 64 if not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Files and sockets agentd creates are private unless it widens them on purpose
    // (the control socket is chmod-ed to its configured mode after bind).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let opts = LoadOptions::from_env();

    if let Some(path) = args.check_config {
        return match isthmus_config::load_file(&path, &opts) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                if let Some(note) = isthmus_config::omitted_note(0, loaded.omitted_warnings) {
                    eprintln!("{note}");
                }
                println!(
                    "{}: ok ({} warnings)",
                    path.display(),
                    loaded.warning_count()
                );
                ExitCode::SUCCESS
            }
            Err(report) => {
                eprint!("{report}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }

    let running = match daemon::reload::load(&args.config, &opts) {
        Ok(running) => running,
        Err(report) => {
            // Logging is not set up yet (its level comes from the config): plain stderr.
            eprint!("{report}");
            eprintln!("agentd: not starting: fix {} first", args.config.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let log = logging::init(running.config.agent.log_level);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    match runtime.block_on(daemon::run(running, opts, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "agentd stopped");
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}
