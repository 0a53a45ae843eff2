//! bpc-ovz: a BackupPC transfer proxy that backs up OpenVZ containers from LVM snapshots.
//!
//! `main` parses the command line, sets up logging and signals, runs one command and exits with
//! the code that command chose. Exit codes are listed in [`EXIT_CODES`] (and the README).

mod admin;
mod backup;
mod backuppc;
mod bench_exec;
mod cache;
mod config;
mod exec;
mod lease;
mod locate;
mod log;
mod lvm;
mod openvz;
mod plan;
mod quote;
mod recover;
mod relay;
mod restore;
mod rsync_args;
mod snapshot;
mod ssh;
mod tar_args;
mod upload;

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use tokio::sync::watch;

/// Usage error, config error, or a remote command / path bpc-ovz refuses (nothing was touched).
pub const EXIT_REFUSED: i32 = 1;
/// Aborted by SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGPIPE (rsync's code for "received a signal").
pub const EXIT_SIGNAL: i32 = 20;
/// The VE was not found on any HN, or on more than one.
pub const EXIT_NOT_FOUND: i32 = 70;
/// Refused before any downtime: VE locked, no backup slot, no room for the snapshot, not on LVM,
/// or a value the HN lists for the VE that bpc-ovz will not use (host name, IP, VE paths).
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
locked, no slot, no room, not on LVM, a snapshot.backend that does not fit, an unusable value listed by the HN); 72 an HN step failed (VE restored to its run state); 73 snapshot \
overflowed (torn backup); 74 cleanup incomplete; 255 SSH transport failure. \
Admin commands: see `bpc-ovz refresh|check|sweep --help`.";

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
    /// DumpPreUserCmd: take the dump's snapshot now and hold it, so every share of the dump reads the same moment.
    ///
    /// Locates HOST, stops the VE just long enough to snapshot it, restarts it, mounts the snapshot
    /// and leaves it held on the HN under a lease. Every `bpc-ovz ssh`/`server` transfer of this
    /// BackupPC dump then reads that snapshot (no further downtime). The lease expires on the HN
    /// by itself (lease.ttl) if `dump-end` never comes. Use with $Conf{UserCmdCheckStatus} = 1:
    /// a failure here makes BackupPC abort the dump before any transfer.
    DumpBegin {
        /// The BackupPC host ($host)
        host: String,
    },
    /// DumpPostUserCmd: release the dump's snapshot (unmount, remove, unlock); fails if it overflowed.
    DumpEnd {
        /// The BackupPC host ($host)
        host: String,
    },
    /// Bare-metal recovery: put a VE's HN-side config from a backup's etc/vzdump/ onto an HN.
    ///
    /// Reads VEID.conf (and VEID.start/stop/mount/umount) from DIR — the etc/vzdump directory of a
    /// backup, e.g. extracted with BackupPC_tarCreate — and writes it to /etc/vz/conf/ on HN under
    /// the old VEID or --veid NEW (VE_PRIVATE/VE_ROOT paths holding the old VEID are rewritten),
    /// then creates the empty private area. Refuses if the VEID exists on that HN (vzlist, conf
    /// file, or a non-empty private area). Then restore the backup into the (stopped) VE with
    /// BackupPC and start it.
    RecoverConfig {
        /// The backup's etc/vzdump directory
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The HN to recover onto (a name or host from `hns:`)
        #[arg(long, value_name = "HN")]
        hn: String,
        /// Recover under this VEID instead of the old one
        #[arg(long, value_name = "NEW")]
        veid: Option<String>,
        /// Which VEID's config to take when DIR holds several
        #[arg(long, value_name = "OLD")]
        old_veid: Option<String>,
        /// Check and print, write nothing
        #[arg(long)]
        dry_run: bool,
    },
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
    ///
    /// Locates HOST like a backup does, reads the VE's config, storage, lock state and leftovers on
    /// its HN (nothing is changed, no lock is taken), and prints the very plan the executor would
    /// run: the facts (HN, VEID, state, VE_PRIVATE, LV, VG free space against snapshot.size,
    /// filesystem and mount options, locks), warnings, and every HN step with its exact shell and
    /// its undo, the downtime window marked. RUNID000 and NONCE stand for a real run's random values.
    #[command(after_long_help = PLAN_HELP)]
    Plan {
        /// BackupPC host name of the VE (its hostname, a name resolving to one of its IPs, or a `ves:` alias)
        host: String,
        /// VE paths (shares) to back up, or to restore into with --restore
        #[arg(long = "path", default_value = "/")]
        paths: Vec<String>,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Also print the exact guard script sent to the HN
        #[arg(long)]
        script: bool,
        /// Plan a restore into the VE (BackupPC 4's default rsync restore) instead of a backup
        #[arg(long)]
        restore: bool,
    },
    /// Ask every HN which VEs it holds and write the VE → HN cache; with HOST, say where HOST is.
    ///
    /// All HNs are asked in parallel (at most concurrency.hn_queries at once, each within
    /// --timeout). The cache (`cache:` in the config) is replaced atomically; `ssh`/`server`/`plan`
    /// then ask the cached HN first (still checking with vzlist there) and ask every HN only when
    /// the VE is not there any more. HNs that do not answer are reported on stderr and keep their
    /// last known VEs in the cache. Prints one summary line on stdout.
    #[command(after_long_help = REFRESH_HELP)]
    Refresh {
        /// A BackupPC host to look for: refresh then fails unless it is found on exactly one HN
        host: Option<String>,
        /// Per-HN time limit, e.g. 10s [default: locate_timeout]
        #[arg(long, value_name = "DURATION", value_parser = admin::parse_duration_arg)]
        timeout: Option<std::time::Duration>,
        /// HNs asked at once [default: concurrency.hn_queries]
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
    },
    /// Check that HNs are fit for backups: SSH, host key, auth, rsync, lvm2, vzctl, vzlist, VEs on LVs, VG room, leftovers.
    ///
    /// Read-only: one connection and one probe script per HN (all configured HNs, or those named).
    /// Prints a table and one line per problem with what to do; --json for scripts.
    #[command(after_long_help = CHECK_HELP)]
    Check {
        /// HNs to check (name, host or host:port from the config) [default: all]
        #[arg(value_name = "HN")]
        hns: Vec<String>,
        /// Print the results as JSON
        #[arg(long)]
        json: bool,
        /// Per-HN time limit, e.g. 10s [default: locate_timeout]
        #[arg(long, value_name = "DURATION", value_parser = admin::parse_duration_arg)]
        timeout: Option<std::time::Duration>,
        /// HNs checked at once [default: concurrency.hn_queries]
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
    },
    /// Remove snapshots, mounts and state files that dead bpc-ovz runs left on HNs.
    ///
    /// Only bpc-ovz's own things are candidates: snapshot LVs named bpcovz-VEID-RUNID, mount points
    /// /run/bpc-ovz/mnt/bpcovz-VEID-RUNID and state files /run/bpc-ovz/state.bpcovz-VEID-RUNID.
    /// One is removed only if its owner is gone: sweep takes the VE's lock
    /// /run/bpc-ovz/ve.VEID.lock (held by every running backup of that VE) and holds it while it
    /// removes; a held lock means a backup is running and its things are left alone.
    #[command(after_long_help = SWEEP_HELP)]
    Sweep {
        /// HNs to sweep (name, host or host:port from the config) [default: all]
        #[arg(value_name = "HN")]
        hns: Vec<String>,
        /// Only show what would be removed (takes no lock, changes nothing)
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Per-HN time limit, e.g. 5m [default: 10m]
        #[arg(long, value_name = "DURATION", value_parser = admin::parse_duration_arg)]
        timeout: Option<std::time::Duration>,
        /// HNs swept at once [default: concurrency.hn_queries]
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
    },
    /// Benchmarking only (contrib/bench.sh): run COMMAND on HN through the transfer's SSH relay.
    #[command(hide = true)]
    BenchExec {
        /// Send stdin over `ssh.upload_channels` channels, as a restore does
        #[arg(long)]
        upload: bool,
        /// A configured HN (name, host or host:port)
        hn: String,
        /// The remote command (words joined by spaces, as ssh does)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Generate the man pages or shell completions from this command line definition.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: admin::generate::What,
    },
}

const PLAN_HELP: &str = "Examples:
  bpc-ovz plan ve101.example.com             what a backup of / would do
  bpc-ovz plan ve101.example.com --script    ... and the exact guard script sent to the HN
  bpc-ovz plan 10.0.0.101 --path /etc --json  as JSON (plan, facts, hn_state, remote_commands)
  bpc-ovz plan ve101.example.com --restore   what a restore into the VE would do

Exit codes: 0 the plan was printed (read its WARNINGs); 1 usage or config; 70 VE not found or on
more than one HN; 71 the VE's storage cannot be snapshotted (not on LVM, or a snapshot.backend that does
not fit it) or the HN lists a value for the VE that bpc-ovz refuses; 255 SSH failure.";

const REFRESH_HELP: &str = "Examples:
  bpc-ovz refresh                         from cron, e.g. every 15 minutes
  $Conf{DumpPreUserCmd} = '/usr/bin/bpc-ovz refresh $host';
  $Conf{UserCmdCheckStatus} = 1;          the backup fails early if the VE is nowhere

Exit codes (for $Conf{UserCmdCheckStatus}):
  0    cache written; HOST (if given) found on exactly one HN. HNs that did not answer are
       reported but not fatal
  1    usage or config error, or the cache cannot be written
  70   HOST is on none of the HNs that may hold it (all of them answered), or on more than one
  71   HOST is one VE, but its HN lists a host name or IP for it that bpc-ovz refuses
  255  HOST not found and an HN that may hold it did not answer; or no HN answered at all";

const CHECK_HELP: &str = "Examples:
  bpc-ovz check                  every configured HN, as a table
  bpc-ovz check hn1 hn2 --json   two HNs, for a monitoring script

Exit codes: 0 every check passed (warnings allowed); 75 a check failed on at least one HN;
1 usage or config error.";

const SWEEP_HELP: &str = "Examples:
  bpc-ovz sweep --dry-run        what would be removed, on every HN
  bpc-ovz sweep hn3              remove what dead runs left on hn3

Exit codes: 0 nothing failed (things in use are left alone, that is not a failure); 74 something
could not be removed; 255 an HN could not be reached; 1 usage or config error.";

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
            log::init_with(&cfg.log, true, inv.quiet);
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
        Cmd::DumpBegin { host } => {
            user_cmd(cli.config.as_deref(), |cfg| {
                Box::pin(async move { lease::dump_begin(&cfg, &host).await })
            })
            .await
        }
        Cmd::DumpEnd { host } => {
            user_cmd(cli.config.as_deref(), |cfg| {
                Box::pin(async move { lease::dump_end(&cfg, &host).await })
            })
            .await
        }
        Cmd::RecoverConfig {
            from,
            hn,
            veid,
            old_veid,
            dry_run,
        } => {
            let cfg = match load_config(cli.config.as_deref(), true) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match recover::run(
                &cfg,
                &from,
                &hn,
                old_veid.as_deref(),
                veid.as_deref(),
                dry_run,
            )
            .await
            {
                Ok(()) => 0,
                Err((code, msg)) => {
                    tracing::error!("{msg}");
                    code
                }
            }
        }
        Cmd::Plan {
            host,
            paths,
            json,
            script,
            restore,
        } => {
            let cfg = match load_config(cli.config.as_deref(), true) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match backup::show_plan(&cfg, &host, &paths, json, script, restore).await {
                Ok(()) => 0,
                Err(f) => {
                    tracing::error!("{}", f.msg);
                    f.code
                }
            }
        }
        Cmd::Refresh {
            host,
            timeout,
            jobs,
        } => match admin_config(cli.config.as_deref()) {
            Ok(cfg) => {
                admin::refresh::run(
                    &cfg,
                    admin::refresh::Args {
                        host,
                        jobs,
                        timeout,
                    },
                )
                .await
            }
            Err(code) => code,
        },
        Cmd::Check {
            hns,
            json,
            timeout,
            jobs,
        } => match admin_config(cli.config.as_deref()) {
            Ok(cfg) => {
                admin::check::run(
                    &cfg,
                    admin::check::Args {
                        hns,
                        json,
                        jobs,
                        timeout,
                    },
                )
                .await
            }
            Err(code) => code,
        },
        Cmd::Sweep {
            hns,
            dry_run,
            timeout,
            jobs,
        } => match admin_config(cli.config.as_deref()) {
            Ok(cfg) => {
                admin::sweep::run(
                    &cfg,
                    admin::sweep::Args {
                        hns,
                        dry_run,
                        jobs,
                        timeout,
                    },
                )
                .await
            }
            Err(code) => code,
        },
        Cmd::Generate { what } => admin::generate::run(Cli::command(), what),
        Cmd::BenchExec {
            upload,
            hn,
            command,
        } => bench_exec::run(cli.config.as_deref(), &hn, &command, upload, signals()).await,
    }
}

/// Config for the admin commands: they print for people (stdout/stderr) and log to the
/// configured file or syslog, not to stderr.
fn admin_config(path: Option<&std::path::Path>) -> Result<config::Config, i32> {
    load_config(path, false)
}

/// Load the config (a bad one is one line on stderr and exit 1) and set up logging; `stderr`:
/// whether log lines may also go to fd 2.
fn load_config(path: Option<&std::path::Path>, stderr: bool) -> Result<config::Config, i32> {
    match config::Config::load(path) {
        Ok(c) => {
            log::init(&c.log, stderr);
            Ok(c)
        }
        Err(e) => {
            eprintln!("bpc-ovz: {e}");
            Err(EXIT_REFUSED)
        }
    }
}

type UserFut =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), backup::Fail>> + Send>>;

/// A BackupPC user command (DumpPreUserCmd, ...): its output lands in the XferLOG, its exit code
/// is checked with $Conf{UserCmdCheckStatus} = 1.
async fn user_cmd(
    config: Option<&std::path::Path>,
    f: impl FnOnce(config::Config) -> UserFut,
) -> i32 {
    let cfg = match load_config(config, true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match f(cfg).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{}", e.msg);
            e.code
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
