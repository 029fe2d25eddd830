//! netctl: the operator's command line for agentd. Human output by default, `--json` for
//! scripts; exit codes say what went wrong (see [`Exit`]).

mod client;
mod drill;
mod duration;
mod table;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use client::{Client, ClientError, Reply, NETCTL_VERSION};
use isthmus_api::{
    paths, ActionsStatus, ErrorKind, EventRecord, FailoverRequest, LinkStatus, ProbeStatus,
    ReloadOutcome, RouteGroupStatus, RoutesStatus, Status, VersionInfo,
};
use isthmus_config::LoadOptions;

#[derive(Debug, Parser)]
#[command(name = "netctl", version, about = "Inspect and steer isthmus agentd")]
struct Args {
    /// agentd's control socket.
    #[arg(long, global = true, env = "ISTHMUS_SOCKET", default_value = isthmus_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up waiting for agentd after this many seconds.
    #[arg(long, global = true, default_value_t = 15)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agent, config, links and route groups at a glance.
    Status,
    /// Every link: tunnel state, peer endpoint, handshake age, traffic and drops.
    Links,
    /// Desired routes against the kernel's, conflicts with routes agentd does not own.
    Routes,
    /// Pin a route group to a link (make-before-break: the routes move in one step). On a
    /// terminal it shows what will change and asks you to type FAILOVER.
    Failover {
        /// The route group.
        group: String,
        /// The link to move it to.
        #[arg(long)]
        to: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation (needed without a terminal, e.g. in scripts).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Release a route group's pin: it returns to automatic link choice.
    Failback {
        /// The route group.
        group: String,
    },
    /// Move every route group off a link for maintenance (it stays the last resort), or with
    /// --gateway hand this gateway's HA role to the other of its pair.
    Drain {
        /// The link.
        #[arg(required_unless_present = "gateway", conflicts_with = "gateway")]
        link: Option<String>,
        /// Drain this whole gateway of its HA pair instead of a link.
        #[arg(long)]
        gateway: bool,
    },
    /// End a drain (of a link, or with --gateway of this gateway).
    Undrain {
        /// The link.
        #[arg(required_unless_present = "gateway", conflicts_with = "gateway")]
        link: Option<String>,
        /// End the drain of this gateway.
        #[arg(long)]
        gateway: bool,
    },
    /// Target checks behind the tunnels ([[probe]]): state, last result, counts.
    Probes,
    /// DNS groups and what failover carried out beyond the kernel (DNS records, cloud route
    /// tables): desired, in sync or failing, last success, time from decision to served.
    #[command(alias = "dns")]
    Actions,
    /// Failovers, health changes and operator actions, oldest first (kept across restarts).
    Events {
        /// Keep printing new events as they happen.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Show at most this many past events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Validate a config file locally, exactly as agentd would (no agentd needed).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Make agentd re-read its config file; a bad file is rejected and the running config stays.
    Reload,
    /// Run a failover drill: agentd switches GROUP to its next healthy link (or DNS answer),
    /// holds it there, fails back and measures it all. netctl follows it and writes the report
    /// (Markdown, JSON, SVG chart). Ctrl-C stops following, not the drill.
    #[command(group(ArgGroup::new("what").required(true).args(["group", "abort", "last"])))]
    Drill {
        /// The route group or DNS group to drill.
        group: Option<String>,
        /// How long to stay on the new path before failing back ("500ms", "5s", "2m").
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration::parse, conflicts_with_all = ["abort", "last"])]
        hold: Duration,
        /// The recovery time objective the switchover is judged against.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_positive, conflicts_with_all = ["abort", "last"])]
        rto_target: Duration,
        /// Why, for both gateways' event logs and the report.
        #[arg(long, conflicts_with_all = ["abort", "last"])]
        reason: Option<String>,
        /// Where to write the report files (created if needed).
        #[arg(
            long,
            value_name = "DIR",
            default_value = ".",
            conflicts_with = "abort"
        )]
        report: PathBuf,
        /// Stop the running drill; agentd fails back.
        #[arg(long)]
        abort: bool,
        /// Show the running drill, or the last one's summary and write its report files.
        #[arg(long)]
        last: bool,
    },
    /// Versions of netctl and of the running agentd.
    Version,
}

/// netctl's exit codes.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Ok = 0,
    /// The request was understood and refused or failed (bad config, rejected reload).
    Failed = 1,
    /// agentd is not running, did not answer, or cannot serve now (busy, stopping).
    Unreachable = 3,
    /// The caller's identity does not allow this.
    PermissionDenied = 4,
    /// Stopped by SIGINT or SIGTERM (128 + SIGINT, as a shell reports it).
    Interrupted = 130,
}

/// Show what `netctl failover GROUP --to LINK` will change and ask the operator to type
/// FAILOVER, as the manual runbook does. Without a terminal there is nobody to ask.
async fn confirm_failover(client: &Client, group: &str, to: &str) -> Result<(), Exit> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "netctl failover: no terminal to confirm on: add --yes to fail over without asking"
        );
        return Err(Exit::Failed);
    }
    let status = match client.get::<Status>(paths::STATUS).await {
        Ok(reply) => reply.value,
        Err(e) => return Err(fail(e, false)),
    };
    let actions = client
        .get::<ActionsStatus>(paths::ACTIONS)
        .await
        .map(|r| r.value)
        .ok();
    print!(
        "{}",
        views::failover_plan(&status, actions.as_ref(), group, to)
    );
    print!("Type FAILOVER to go ahead (anything else cancels): ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "FAILOVER" {
        Ok(())
    } else {
        eprintln!("netctl failover: cancelled; nothing changed");
        Err(Exit::Failed)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let client = Client::new(args.socket.clone(), Duration::from_secs(args.timeout));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netctl: cannot start: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let exit = runtime.block_on(run(&args, &client));
    ExitCode::from(exit as u8)
}

async fn run(args: &Args, client: &Client) -> Exit {
    let json = args.json;
    match &args.command {
        Cmd::CheckConfig { file } => check_config(file, json),
        Cmd::Status => show(
            client.get::<Status>(paths::STATUS).await,
            json,
            views::status,
        ),
        Cmd::Links => show(
            client.get::<Vec<LinkStatus>>(paths::LINKS).await,
            json,
            |l: &Vec<LinkStatus>| views::links(l),
        ),
        Cmd::Routes => show(
            client.get::<RoutesStatus>(paths::ROUTES).await,
            json,
            views::routes,
        ),
        Cmd::Failover {
            group,
            to,
            reason,
            yes,
        } => {
            if !*yes {
                if let Err(exit) = confirm_failover(client, group, to).await {
                    return exit;
                }
            }
            let body = FailoverRequest {
                to: to.clone(),
                reason: reason.clone(),
            };
            let path = format!("{}{group}/failover", paths::GROUPS);
            show(client.post_json(&path, &body).await, json, views::group)
        }
        Cmd::Failback { group } => {
            let path = format!("{}{group}/failback", paths::GROUPS);
            show(client.post(&path).await, json, views::group)
        }
        Cmd::Drain { link, gateway } | Cmd::Undrain { link, gateway } => {
            let on = matches!(args.command, Cmd::Drain { .. });
            if *gateway {
                let path = if on {
                    paths::HA_DRAIN
                } else {
                    paths::HA_UNDRAIN
                };
                return show(
                    client.post(path).await,
                    json,
                    |h: &isthmus_api::HaStatus| views::pair(h),
                );
            }
            let action = if on { "drain" } else { "undrain" };
            let link = link.as_deref().unwrap_or_default();
            let path = format!("{}{link}/{action}", paths::LINK_ACTIONS);
            show(
                client.post(&path).await,
                json,
                |g: &Vec<RouteGroupStatus>| views::groups(g),
            )
        }
        Cmd::Probes => show(
            client.get::<Vec<ProbeStatus>>(paths::PROBES).await,
            json,
            |p: &Vec<ProbeStatus>| views::probes(p),
        ),
        Cmd::Actions => show(
            client.get::<ActionsStatus>(paths::ACTIONS).await,
            json,
            views::actions,
        ),
        Cmd::Events { follow, limit } => events(client, json, *follow, *limit).await,
        Cmd::Drill {
            group,
            hold,
            rto_target,
            reason,
            report,
            abort,
            last,
        } => {
            let again = drill::again(&args.socket);
            match group {
                Some(group) if !abort && !last => {
                    let start = drill::StartArgs {
                        group: group.clone(),
                        hold: *hold,
                        rto_target: *rto_target,
                        reason: reason.clone(),
                        report_dir: report.clone(),
                        again,
                    };
                    drill::start(client, &start, json).await
                }
                _ if *abort => drill::abort(client, json, &again).await,
                _ => drill::last(client, json, report).await,
            }
        }
        Cmd::Reload => show(
            client.post::<ReloadOutcome>(paths::RELOAD).await,
            json,
            views::reload,
        ),
        Cmd::Version => {
            let agentd = client.get::<VersionInfo>(paths::VERSION).await;
            if json {
                let agentd = match &agentd {
                    Ok(r) => serde_json::to_value(&r.value).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                print_json(&serde_json::json!({
                    "netctl": { "version": NETCTL_VERSION, "api_version": isthmus_api::API_VERSION },
                    "agentd": agentd,
                }));
            } else {
                println!(
                    "netctl {NETCTL_VERSION} (control API {})",
                    isthmus_api::API_VERSION
                );
                match &agentd {
                    Ok(r) => println!(
                        "agentd {} (control API {})",
                        r.value.version, r.value.api_version
                    ),
                    Err(e) => println!(
                        "agentd: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ),
                }
            }
            match agentd {
                Ok(reply) => {
                    warn_on_version_skew(&reply);
                    Exit::Ok
                }
                Err(e) => exit_for(&e),
            }
        }
    }
}

async fn events(client: &Client, json: bool, follow: bool, limit: usize) -> Exit {
    let mut since = 0u64;
    let mut first = true;
    loop {
        let path = format!(
            "{}?since={since}&limit={}",
            paths::EVENTS,
            if first { limit } else { 1000 }
        );
        match client.get::<Vec<EventRecord>>(&path).await {
            Ok(reply) => {
                if first {
                    warn_on_version_skew(&reply);
                }
                for e in &reply.value {
                    since = since.max(e.id);
                    if json {
                        // One object per line, so that --follow can be piped.
                        println!("{}", serde_json::to_string(e).unwrap_or_default());
                    } else {
                        println!("{}", views::event(e));
                    }
                }
                if first && !json && reply.value.is_empty() && !follow {
                    println!("no events");
                }
            }
            Err(e) => return fail(e, json),
        }
        if !follow {
            return Exit::Ok;
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Print a successful answer (JSON or rendered), or the error; the exit code says which.
fn show<T: serde::Serialize>(
    result: Result<Reply<T>, ClientError>,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Exit {
    match result {
        Ok(reply) => {
            warn_on_version_skew(&reply);
            if json {
                print_json(&reply.value);
            } else {
                print!("{}", render(&reply.value));
            }
            Exit::Ok
        }
        Err(e) => fail(e, json),
    }
}

fn check_config(file: &std::path::Path, json: bool) -> Exit {
    let result = isthmus_config::load_file(file, &LoadOptions::from_env());
    let (valid, diagnostics, omitted_errors, omitted_warnings) = match &result {
        Ok(loaded) => (true, loaded.warnings.clone(), 0, loaded.omitted_warnings),
        Err(report) => (
            false,
            report.diagnostics.clone(),
            report.omitted_errors,
            report.omitted_warnings,
        ),
    };
    if json {
        print_json(&serde_json::json!({
            "file": file.display().to_string(),
            "valid": valid,
            "diagnostics": diagnostics,
            "omitted_errors": omitted_errors,
            "omitted_warnings": omitted_warnings,
        }));
    } else {
        match &result {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                if let Some(note) = isthmus_config::omitted_note(0, loaded.omitted_warnings) {
                    eprintln!("{note}");
                }
                println!(
                    "{}: ok ({} warnings)",
                    file.display(),
                    loaded.warning_count()
                );
            }
            Err(report) => eprint!("{report}"),
        }
    }
    if valid {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

fn fail(err: ClientError, json: bool) -> Exit {
    if json {
        let body = match &err {
            ClientError::Api(body) => serde_json::to_value(body).unwrap_or_default(),
            other => serde_json::json!({ "kind": "client_error", "message": other.to_string() }),
        };
        print_json(&body);
    }
    match &err {
        ClientError::Api(body) if body.kind == ErrorKind::ConfigInvalid => {
            for d in &body.diagnostics {
                eprintln!("{d}");
            }
            if let Some(note) =
                isthmus_config::omitted_note(body.omitted_errors, body.omitted_warnings)
            {
                eprintln!("{note}");
            }
            eprintln!("netctl: reload rejected: {}", body.message);
        }
        other => eprintln!("netctl: {other}"),
    }
    exit_for(&err)
}

fn exit_for(err: &ClientError) -> Exit {
    match err {
        ClientError::NotRunning { .. } | ClientError::Timeout(_) | ClientError::Protocol { .. } => {
            Exit::Unreachable
        }
        ClientError::CannotConnect { .. } => Exit::PermissionDenied,
        ClientError::Api(body) if body.kind == ErrorKind::PermissionDenied => {
            Exit::PermissionDenied
        }
        ClientError::Api(body)
            if matches!(
                body.kind,
                ErrorKind::TooManyClients | ErrorKind::ShuttingDown
            ) =>
        {
            Exit::Unreachable
        }
        ClientError::Api(_) | ClientError::ApiMismatch { .. } => Exit::Failed,
    }
}

fn warn_on_version_skew<T>(reply: &Reply<T>) {
    if let Some(v) = &reply.agentd_version {
        if v != NETCTL_VERSION {
            eprintln!(
                "netctl: warning: netctl {NETCTL_VERSION} is talking to agentd {v}; \
                 use the netctl that matches agentd for complete output"
            );
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("netctl: cannot print JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
