//! Where diagnostics go: stderr (BackupPC 4 puts the `-e` program's stderr in the XferLOG), a log
//! file, and/or syslog. In the BackupPC 3 `server` form fds 1 and 2 are the protocol socket, so
//! the caller disables stderr there and this module never writes to it.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::LogConfig;

/// A writer that buffers one event and sends it as one syslog datagram when dropped.
#[derive(Clone)]
struct Syslog {
    sock: Arc<Mutex<Option<UnixDatagram>>>,
}

struct SyslogLine {
    sock: Arc<Mutex<Option<UnixDatagram>>>,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        // facility daemon (3), severity info (6): <30>
        let msg = format!("<30>bpc-ovz[{}]: {}", std::process::id(), text);
        if let Ok(g) = self.sock.lock()
            && let Some(s) = g.as_ref()
        {
            let _ = s.send(msg.as_bytes());
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;
    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            sock: self.sock.clone(),
            buf: Vec::new(),
        }
    }
}

fn syslog() -> Syslog {
    let s = UnixDatagram::unbound()
        .ok()
        .filter(|s| s.connect("/dev/log").is_ok());
    Syslog {
        sock: Arc::new(Mutex::new(s)),
    }
}

/// Install the global subscriber. `stderr`: whether fd 2 may carry diagnostics.
pub fn init(cfg: &LogConfig, stderr: bool) {
    init_with(cfg, stderr, false)
}

/// As [`init`], with only warnings and errors on stderr when `quiet` (`bpc-ovz ssh -q`); the log
/// file and syslog keep the configured level.
pub fn init_with(cfg: &LogConfig, stderr: bool, quiet: bool) {
    let level = match cfg.level.as_str() {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let want_syslog = cfg.syslog || (!stderr && cfg.file.is_none());
    let stderr_layer = stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .event_format(Prefixed)
            .with_filter(if quiet {
                level.min(LevelFilter::WARN)
            } else {
                level
            })
    });
    let file_layer = cfg.file.as_ref().and_then(open_log).map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(Mutex::new(f))
            .with_target(false)
            .with_ansi(false)
            .with_filter(level)
    });
    let syslog_layer = want_syslog.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(syslog())
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .with_filter(level)
    });
    let sub = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .with(syslog_layer);
    let _ = tracing::subscriber::set_global_default(sub);
}

fn open_log(p: &PathBuf) -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .ok()
}

/// `bpc-ovz: message` on stderr: short lines that read well in an XferLOG.
struct Prefixed;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        ev: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let lvl = *ev.metadata().level();
        let tag = if lvl == tracing::Level::ERROR {
            "ERROR: "
        } else if lvl == tracing::Level::WARN {
            "WARNING: "
        } else {
            ""
        };
        write!(w, "bpc-ovz: {tag}")?;
        ctx.field_format().format_fields(w.by_ref(), ev)?;
        writeln!(w)
    }
}
