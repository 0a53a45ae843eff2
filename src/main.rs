//! bpc-ovz: a BackupPC transfer proxy that backs up OpenVZ containers from LVM snapshots.
//!
//! `main` parses the command line, sets up logging and signals, runs one command and exits with
//! the code that command chose. Exit codes are listed in [`EXIT_CODES`] (and the README).

mod backup;
mod backuppc;
mod config;
mod exec;
mod locate;
mod log;
mod lvm;
mod openvz;
mod plan;
mod quote;
mod relay;
mod rsync_args;
mod snapshot;
mod ssh;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

/// Usage error, config error, or a remote command / path bpc-ovz refuses (nothing was touched).
pub const EXIT_REFUSED: i32 = 1;
/// Aborted by SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGPIPE (rsync's code for "received a signal").
pub const EXIT_SIGNAL: i32 = 20;
/// The VE was not found on any HN, or on more than one.
pub const EXIT_NOT_FOUND: i32 = 70;
/// Refused before any downtime: VE locked, no backup slot, no room for the snapshot, not on LVM.
pub const EXIT_PRECONDITION: i32 = 71;
/// An HN step failed (stop, snapshot, mount, ...); the VE was put back in its run state.
pub const EXIT_HN_STEP: i32 = 72;
/// The snapshot overflowed or became invalid during the transfer: the backup is torn.
pub const EXIT_TORN: i32 = 73;
/// The transfer succeeded but cleanup did not finish (a snapshot or mount may be left).
pub const EXIT_CLEANUP: i32 = 74;
/// Transport failure (connect, auth, host key, lost connection), as ssh.
pub const EXIT_TRANSPORT: i32 = 255;

pub const EXIT_CODES: &str = "Exit codes: 0 success; rsync's own code when rsync fails; 1 refused (usage, config, \
command or path); 20 aborted by a signal; 70 VE not found or ambiguous; 71 refused before any downtime (VE \
locked, no slot, no room, not on LVM); 72 an HN step failed (VE restored to its run state); 73 snapshot \
overflowed (torn backup); 74 cleanup incomplete; 255 SSH transport failure.";

#[derive(Parser, Debug)]
#[command(
    name = "bpc-ovz",
    version,
    about = "BackupPC transfer proxy for OpenVZ containers: back up a VE from an LVM snapshot taken with seconds of downtime",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Configuration file [default: $BPC_OVZ_CONFIG or /etc/bpc-ovz/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Stand in for ssh in BackupPC 4's $Conf{RsyncSshArgs}: `bpc-ovz ssh [-l user] [-p port] [-q -x -n -o ...] HOST COMMAND...`.
    ///
    /// HOST is the VE's name (host name, IP, or an alias from `ves:`); COMMAND must be an rsync server
    /// invocation. Paths may come in argv or, with --protect-args, on stdin.
    #[command(disable_help_flag = true)]
    Ssh {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "SSH-ARGS")]
        args: Vec<String>,
    },
    /// BackupPC 3 / BackupPC_ovz form: `bpc-ovz server [restore] $host $sshPath -q -x -l root $host $rsyncPath $argList+`.
    ///
    /// fds 0, 1 and 2 are one socket here: bpc-ovz writes only the protocol to them; diagnostics go to
    /// the configured log file or syslog.
    #[command(disable_help_flag = true)]
    Server {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Show what a backup of HOST would do, read-only: the VE found, its storage, and every remote step.
    Plan {
        host: String,
        /// VE paths (shares) to back up
        #[arg(long = "path", default_value = "/")]
        paths: Vec<String>,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Also print the exact guard script sent to the HN
        #[arg(long)]
        script: bool,
    },
}

/// A random hex string (nonces, run ids).
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&(t ^ (std::process::id() as u128) << 64).to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bpc-ovz: cannot start: {e}");
            std::process::exit(EXIT_REFUSED);
        }
    };
    let code = rt.block_on(run(cli));
    rt.shutdown_background();
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    match cli.cmd {
        Cmd::Ssh { args } => {
            let inv = match backuppc::parse_ssh_argv(&args) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("bpc-ovz ssh: {e}");
                    return EXIT_REFUSED;
                }
            };
            let config = cli.config.or(inv.config_file.as_ref().map(PathBuf::from));
            let cfg = match config::Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("bpc-ovz: {e}");
                    return EXIT_REFUSED;
                }
            };
            log::init(&cfg.log, true);
            let mut cfg = cfg;
            cfg.ssh
                .identity_files
                .extend(inv.identity_files.iter().map(PathBuf::from));
            let req = backup::Request {
                host: inv.host,
                words: inv.words,
                caller: backup::Caller::Ssh,
                restore_keyword: false,
            };
            backup::run(&cfg, req, signals()).await
        }
        Cmd::Server { args } => {
            // Never write to fds 1/2 here: they are the rsync protocol socket.
            let inv = backuppc::parse_server_argv(&args);
            let cfg = match config::Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    log::init(
                        &config::Config::parse("", "-")
                            .map(|c| c.log)
                            .unwrap_or_else(|_| unreachable_log()),
                        false,
                    );
                    tracing::error!("{e}");
                    return EXIT_REFUSED;
                }
            };
            log::init(&cfg.log, false);
            let inv = match inv {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!("{e}");
                    return EXIT_REFUSED;
                }
            };
            let req = backup::Request {
                host: inv.host,
                words: inv.ssh.words,
                caller: backup::Caller::Server,
                restore_keyword: inv.restore,
            };
            backup::run(&cfg, req, signals()).await
        }
        Cmd::Plan {
            host,
            paths,
            json,
            script,
        } => {
            let cfg = match config::Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("bpc-ovz: {e}");
                    return EXIT_REFUSED;
                }
            };
            log::init(&cfg.log, true);
            match backup::show_plan(&cfg, &host, &paths, json, script).await {
                Ok(()) => 0,
                Err(f) => {
                    tracing::error!("{}", f.msg);
                    f.code
                }
            }
        }
    }
}

fn unreachable_log() -> config::LogConfig {
    config::LogConfig {
        file: None,
        syslog: true,
        level: "info".into(),
    }
}

/// SIGINT, SIGTERM, SIGHUP, SIGUSR1 (rsync_bpc on error) and SIGPIPE abort the run: the receiver
/// turns true, the transfer stops and the HN unwinds.
fn signals() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::user_defined1(),
        SignalKind::pipe(),
    ];
    for k in kinds {
        if let Ok(mut s) = signal(k) {
            let tx = tx.clone();
            tokio::spawn(async move {
                if s.recv().await.is_some() {
                    tracing::warn!("received signal {}: aborting", k.as_raw_value());
                    let _ = tx.send(true);
                }
            });
        }
    }
    rx
}
