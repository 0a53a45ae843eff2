//! `bpc-ovz bench-exec --config FILE HN COMMAND...`: a hidden subcommand for benchmarking only
//! (`contrib/bench.sh`).
//!
//! `bpc-ovz ssh` runs nothing but rsync/tar servers on VEs it has located, so raw relay
//! throughput cannot be measured through it. This connects to one configured HN with the same
//! transport ([`Session::connect`] with the options a transfer uses) and runs COMMAND through the
//! same stdio relay a transfer uses ([`relay`]: fds 0/1, remote stderr to fd 2), then exits with
//! the remote exit code (255 without one, as ssh). Nothing else happens on the HN: no locate, no
//! guard, no snapshot. `--upload` spreads stdin over `ssh.upload_channels` channels, as a
//! restore's transfer does.
//!
//! It gives no power beyond the configured SSH key itself (anyone who can read the config and
//! key can run `ssh` with them); it is hidden from `--help` and the man pages only because it is
//! not part of the product.

use std::path::Path;

use tokio::sync::watch;

use crate::relay::{Input, StderrSink, relay};
use crate::ssh::{Session, SshError};
use crate::{EXIT_REFUSED, EXIT_SIGNAL, EXIT_TRANSPORT, config, locate};

/// Runs the subcommand; returns the exit code.
pub async fn run(
    config_file: Option<&Path>,
    hn_name: &str,
    command: &[String],
    upload: bool,
    cancel: watch::Receiver<bool>,
) -> i32 {
    let cfg = match config::Config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bpc-ovz: {e}");
            return EXIT_REFUSED;
        }
    };
    crate::log::init(&cfg.log, true);
    let command = command.join(" ");
    if command.trim().is_empty() {
        eprintln!("bpc-ovz bench-exec: no COMMAND given");
        return EXIT_REFUSED;
    }
    let Some(hn) = cfg.hns.iter().find(|h| {
        h.name == hn_name || h.host == hn_name || format!("{}:{}", h.host, h.port) == hn_name
    }) else {
        eprintln!(
            "bpc-ovz bench-exec: {hn_name} is not one of the configured hns ({})",
            cfg.source
        );
        return EXIT_REFUSED;
    };
    let opts = match locate::ssh_options(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bpc-ovz: {}: {e}", cfg.source);
            return EXIT_REFUSED;
        }
    };
    let session = match Session::connect(&locate::addr(hn), &opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{}: {e}", hn.name);
            return EXIT_TRANSPORT;
        }
    };
    let result = relay(
        &session,
        &command,
        Input {
            prefix: Vec::new(),
            channels: if upload { cfg.ssh.upload_channels } else { 1 },
            label: String::new(),
        },
        0,
        1,
        StderrSink::Fd2,
        cancel,
    )
    .await;
    let code = match result {
        Ok((outcome, stats)) => {
            tracing::debug!(
                "{}: {command}: {outcome}; {} bytes in, {} out, {} on stderr",
                hn.name,
                stats.bytes_in,
                stats.bytes_out,
                stats.bytes_err
            );
            outcome.code()
        }
        Err(e @ SshError::Cancelled { .. }) => {
            tracing::warn!("{}: {e}", hn.name);
            EXIT_SIGNAL
        }
        Err(e) => {
            tracing::error!("{}: {e}", hn.name);
            EXIT_TRANSPORT
        }
    };
    session.close().await;
    code
}
