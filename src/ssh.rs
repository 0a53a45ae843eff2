//! SSH transport to the hardware nodes (HN), built on russh.
//!
//! One [`Session`] is one authenticated SSH connection; it is cheap to clone and several channels
//! ([`Session::exec`], [`Session::open`], [`crate::relay::relay`]) may run on it concurrently.
//!
//! Rules that matter (see docs/russh-notes.md):
//! - a channel is read until `wait()` returns `None` (the exit status may arrive before the last
//!   data, pitfall 1);
//! - every channel is read concurrently with writing to it, and every channel we abandon is closed
//!   and its read half dropped, because an unread channel stalls the whole connection (pitfall 3);
//! - data is sent with `data_bytes`, never `Handle::data` (pitfall 5);
//! - no ExitStatus (a signal, a lost connection) maps to exit code 255, as OpenSSH does.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use russh::client::{self, DisconnectReason};
use russh::keys::agent::client::AgentClient;
use russh::keys::known_hosts::{known_host_keys_path, learn_known_hosts_path};
use russh::keys::{
    Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect, Preferred, Sig, cipher};
use tracing::{debug, warn};

/// Largest stdout (and, separately, stderr) that [`Session::exec`] captures.
pub const EXEC_CAPTURE_LIMIT: usize = 64 << 20;

/// Default channel window (pitfall 4: the russh default of 2 MiB is far too small for a WAN).
pub const DEFAULT_WINDOW_SIZE: u32 = 16 << 20;

/// Where to connect: a hardware node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HnAddr {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl fmt::Display for HnAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// What to do with a host key that is in none of the known_hosts files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it.
    Strict,
    /// Append it to the first known_hosts file and go on (OpenSSH's `accept-new`). A key that
    /// differs from a recorded one is refused regardless.
    AcceptNew,
}

#[derive(Clone, Debug)]
pub struct SshOptions {
    /// Private keys to try, in order (ed25519, ECDSA, RSA; OpenSSH, PEM, PKCS#8 or PPK format).
    pub identity_files: Vec<PathBuf>,
    /// Passphrase for the encrypted identity files (the same for all of them).
    pub passphrase: Option<String>,
    /// Also try the keys of an ssh-agent, after the identity files.
    pub use_agent: bool,
    /// The agent's socket; `None` means `$SSH_AUTH_SOCK`.
    pub agent_socket: Option<PathBuf>,
    /// known_hosts files, all checked; an unknown key is learnt into the first one (AcceptNew).
    pub known_hosts: Vec<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// Bounds TCP connect + key exchange + authentication. Zero disables the bound.
    pub connect_timeout: Duration,
    /// Keepalive when the server has been silent this long (3 unanswered => connection lost).
    /// Zero disables keepalives.
    pub keepalive_interval: Duration,
    /// Channel window in bytes (0 => [`DEFAULT_WINDOW_SIZE`]).
    pub window_size: u32,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            identity_files: Vec::new(),
            passphrase: None,
            use_agent: false,
            agent_socket: None,
            known_hosts: Vec::new(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            window_size: DEFAULT_WINDOW_SIZE,
        }
    }
}

/// Every message is one line that names the host (and the file, where one is involved).
#[derive(thiserror::Error, Debug)]
pub enum SshError {
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error(
        "timed out after {}s connecting to {host}:{port} (TCP connect, SSH key exchange and authentication)",
        .after.as_secs_f32()
    )]
    Timeout {
        host: String,
        port: u16,
        after: Duration,
    },
    #[error(
        "host key of {host}:{port} ({fingerprint}) is not in any known_hosts file ({}); add it (ssh-keyscan -p {port} {host}) or use host_key_policy accept-new",
        display_files(.files)
    )]
    UnknownHostKey {
        host: String,
        port: u16,
        fingerprint: String,
        files: Vec<PathBuf>,
    },
    #[error(
        "HOST KEY OF {host}:{port} HAS CHANGED: the server offers {fingerprint}, which does not match {} line {line}; refusing to connect (possible man-in-the-middle attack; if the key was changed on purpose, fix that line)",
        .file.display()
    )]
    ChangedHostKey {
        host: String,
        port: u16,
        file: PathBuf,
        line: usize,
        fingerprint: String,
    },
    #[error("authentication as {user} to {host}:{port} failed; tried: {}", display_tried(.tried))]
    Auth {
        host: String,
        port: u16,
        user: String,
        tried: Vec<String>,
    },
    #[error("key {} {reason}", .file.display())]
    Key { file: PathBuf, reason: String },
    #[error("known_hosts file {}: {reason}", .file.display())]
    KnownHosts { file: PathBuf, reason: String },
    #[error("SSH protocol error with {host}:{port}: {msg}")]
    Protocol {
        host: String,
        port: u16,
        msg: String,
    },
    #[error("connection to {host}:{port} lost: {msg}")]
    Lost {
        host: String,
        port: u16,
        msg: String,
    },
    #[error("remote command on {host}:{port} wrote more than {limit} bytes to {stream}: {command}")]
    OutputTooLarge {
        host: String,
        port: u16,
        command: String,
        stream: &'static str,
        limit: usize,
    },
    #[error("{what} (relay with {host}:{port}): {source}")]
    LocalIo {
        host: String,
        port: u16,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("transfer with {host}:{port} cancelled")]
    Cancelled { host: String, port: u16 },
}

fn display_files(files: &[PathBuf]) -> String {
    if files.is_empty() {
        "none configured".to_string()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn display_tried(tried: &[String]) -> String {
    if tried.is_empty() {
        "nothing (no identity_files configured and ssh-agent not enabled)".to_string()
    } else {
        tried.join("; ")
    }
}

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitOutcome {
    /// ExitStatus received.
    Exited(u32),
    /// ExitSignal received (signal name without "SIG", e.g. "KILL").
    Signalled(String),
    /// The channel closed without either, or the connection was lost.
    Lost,
}

impl ExitOutcome {
    /// The exit code as OpenSSH's client reports it: the status, else 255.
    #[allow(dead_code)] // transport API (spec); the binary maps outcomes itself for now
    pub fn code(&self) -> i32 {
        match self {
            ExitOutcome::Exited(n) => i32::try_from(*n).unwrap_or(255),
            ExitOutcome::Signalled(_) | ExitOutcome::Lost => 255,
        }
    }
}

impl fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitOutcome::Exited(n) => write!(f, "exit status {n}"),
            ExitOutcome::Signalled(s) => write!(f, "killed by signal {s}"),
            ExitOutcome::Lost => write!(f, "no exit status (channel closed or connection lost)"),
        }
    }
}

/// Everything a command run by [`Session::exec`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub outcome: ExitOutcome,
}

/// An event of a channel opened with [`Session::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    /// Always the last event: delivered once the channel is closed, after all data.
    Exit(ExitOutcome),
}

pub(crate) fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Turns channel messages into the outcome; shared by exec, open and relay.
#[derive(Debug, Default)]
pub(crate) struct OutcomeTracker {
    outcome: Option<ExitOutcome>,
}

impl OutcomeTracker {
    /// Records ExitStatus/ExitSignal; returns true if `msg` was one of them.
    pub(crate) fn observe(&mut self, msg: &ChannelMsg) -> bool {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => {
                self.outcome = Some(ExitOutcome::Exited(*exit_status));
                true
            }
            ChannelMsg::ExitSignal {
                signal_name: sig, ..
            } => {
                self.outcome = Some(ExitOutcome::Signalled(signal_name(sig)));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn finish(&self) -> ExitOutcome {
        self.outcome.clone().unwrap_or(ExitOutcome::Lost)
    }
}

/// The read half of a channel, with the messages that arrived before the reply to exec.
pub(crate) struct ChanReader {
    rd: ChannelReadHalf,
    pending: VecDeque<ChannelMsg>,
}

impl ChanReader {
    /// Next message; `None` once the channel is closed (or the connection lost). Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<ChannelMsg> {
        match self.pending.pop_front() {
            Some(m) => Some(m),
            None => self.rd.wait().await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection

/// State shared between the russh handler (running in the session task) and us.
#[derive(Default)]
struct Shared {
    /// Why check_server_key refused the key (connect then fails with `UnknownKey`).
    host_key_error: Option<SshError>,
    /// Why the session ended, if it did.
    disconnect: Option<String>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

struct ClientHandler {
    host: String,
    port: u16,
    known_hosts: Vec<PathBuf>,
    policy: HostKeyPolicy,
    shared: Arc<Mutex<Shared>>,
}

impl ClientHandler {
    fn verify(&self, key: &PublicKey) -> Result<(), SshError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        for file in &self.known_hosts {
            match russh::keys::check_known_hosts_path(&self.host, self.port, key, file) {
                Ok(true) => {
                    debug!(host = %self.host, port = self.port, file = %file.display(), "host key known");
                    return Ok(());
                }
                Ok(false) => {}
                Err(russh::keys::Error::KeyChanged { line }) => {
                    return Err(SshError::ChangedHostKey {
                        host: self.host.clone(),
                        port: self.port,
                        file: file.clone(),
                        line: physical_line(file, line),
                        fingerprint,
                    });
                }
                Err(e) => {
                    return Err(SshError::KnownHosts {
                        file: file.clone(),
                        reason: format!("cannot be checked: {e}"),
                    });
                }
            }
        }
        match (&self.policy, self.known_hosts.first()) {
            (HostKeyPolicy::AcceptNew, Some(file)) => {
                learn_known_hosts_path(&self.host, self.port, key, file).map_err(|e| {
                    SshError::KnownHosts {
                        file: file.clone(),
                        reason: format!(
                            "cannot record the new host key of {}:{}: {e}",
                            self.host, self.port
                        ),
                    }
                })?;
                warn!(
                    "permanently added the host key of {}:{} ({fingerprint}) to {}",
                    self.host,
                    self.port,
                    file.display()
                );
                Ok(())
            }
            _ => Err(SshError::UnknownHostKey {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                files: self.known_hosts.clone(),
            }),
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verify(key),
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::Protocol {
                host: self.host.clone(),
                port: self.port,
                msg: "the server presented a host certificate, which is not supported".into(),
            }),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(e) => {
                lock(&self.shared).host_key_error = Some(e);
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                lock(&self.shared).disconnect = Some(format!(
                    "server disconnected ({:?}): {}",
                    info.reason_code, info.message
                ));
                Ok(())
            }
            DisconnectReason::Error(e) => {
                lock(&self.shared).disconnect = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// russh counts known_hosts lines without the comment lines; give the real line number.
fn physical_line(file: &Path, russh_line: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return russh_line;
    };
    let mut counted = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if l.starts_with('#') {
            continue;
        }
        counted += 1;
        if counted == russh_line {
            return i + 1;
        }
    }
    russh_line
}

/// Host-key algorithms of the keys recorded for host:port, most preferred first, so that the
/// server is asked for a key we can verify (russh does not reorder like OpenSSH does).
fn known_algorithms(addr: &HnAddr, files: &[PathBuf]) -> Result<Vec<Algorithm>, SshError> {
    let mut algs: Vec<Algorithm> = Vec::new();
    let mut push = |a: Algorithm| {
        if !algs.contains(&a) {
            algs.push(a);
        }
    };
    for file in files {
        let keys = known_host_keys_path(&addr.host, addr.port, file).map_err(|e| {
            SshError::KnownHosts {
                file: file.clone(),
                reason: format!("cannot be parsed: {e}"),
            }
        })?;
        for (_, key) in keys {
            let alg = key.algorithm();
            if alg.clone().is_rsa() {
                push(Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                });
                push(Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                });
                push(Algorithm::Rsa { hash: None });
            } else {
                push(alg);
            }
        }
    }
    Ok(algs)
}

fn client_config(opts: &SshOptions, known: Vec<Algorithm>) -> client::Config {
    let defaults = Preferred::default();
    let mut key_algs = known;
    for a in defaults.key.iter() {
        if !key_algs.contains(a) {
            key_algs.push(a.clone());
        }
    }
    let mut ciphers = vec![
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
    ];
    for c in defaults.cipher.iter() {
        if !ciphers.contains(c) {
            ciphers.push(*c);
        }
    }
    client::Config {
        window_size: if opts.window_size == 0 {
            DEFAULT_WINDOW_SIZE
        } else {
            opts.window_size
        },
        nodelay: true,
        keepalive_interval: (!opts.keepalive_interval.is_zero()).then_some(opts.keepalive_interval),
        keepalive_max: 3,
        preferred: Preferred {
            key: Cow::Owned(key_algs),
            cipher: Cow::Owned(ciphers),
            ..defaults
        },
        ..Default::default()
    }
}

struct Inner {
    handle: client::Handle<ClientHandler>,
    host: String,
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

/// An authenticated SSH connection. Clones share the connection.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session({}:{})", self.inner.host, self.inner.port)
    }
}

impl Session {
    /// Connects, checks the host key and authenticates, all within `opts.connect_timeout`.
    pub async fn connect(addr: &HnAddr, opts: &SshOptions) -> Result<Session, SshError> {
        if opts.connect_timeout.is_zero() {
            return Self::connect_inner(addr, opts).await;
        }
        match tokio::time::timeout(opts.connect_timeout, Self::connect_inner(addr, opts)).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                host: addr.host.clone(),
                port: addr.port,
                after: opts.connect_timeout,
            }),
        }
    }

    async fn connect_inner(addr: &HnAddr, opts: &SshOptions) -> Result<Session, SshError> {
        let known = known_algorithms(addr, &opts.known_hosts)?;
        let config = Arc::new(client_config(opts, known));
        let stream = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|source| SshError::Connect {
                host: addr.host.clone(),
                port: addr.port,
                source,
            })?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!("set_nodelay: {e}");
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let handler = ClientHandler {
            host: addr.host.clone(),
            port: addr.port,
            known_hosts: opts.known_hosts.clone(),
            policy: opts.host_key_policy.clone(),
            shared: shared.clone(),
        };
        let mut handle = match client::connect_stream(config, stream, handler).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(hk) = lock(&shared).host_key_error.take() {
                    return Err(hk);
                }
                return Err(map_handshake_error(&addr.host, addr.port, &shared, e));
            }
        };
        debug!("{}:{}: key exchange done", addr.host, addr.port);
        authenticate(&mut handle, addr, opts, &shared).await?;
        debug!("{addr}: authenticated");
        Ok(Session {
            inner: Arc::new(Inner {
                handle,
                host: addr.host.clone(),
                port: addr.port,
                shared,
            }),
        })
    }

    fn lost(&self, what: impl fmt::Display) -> SshError {
        let why = lock(&self.inner.shared).disconnect.clone();
        SshError::Lost {
            host: self.inner.host.clone(),
            port: self.inner.port,
            msg: match why {
                Some(why) => format!("{what} ({why})"),
                None => what.to_string(),
            },
        }
    }

    pub(crate) fn channel_error(&self, what: &str, e: russh::Error) -> SshError {
        match e {
            russh::Error::ChannelOpenFailure(reason) => SshError::Protocol {
                host: self.inner.host.clone(),
                port: self.inner.port,
                msg: format!("{what}: the server refused to open a channel ({reason:?})"),
            },
            russh::Error::SendError
            | russh::Error::RecvError
            | russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::IO(_)
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout => self.lost(format_args!("{what}: {e}")),
            other => SshError::Protocol {
                host: self.inner.host.clone(),
                port: self.inner.port,
                msg: format!("{what}: {other}"),
            },
        }
    }

    /// The network round trip to the server: the faster of two keepalive pings (answered by
    /// sshd itself, no process involved). `None` if a ping failed.
    pub async fn round_trip(&self) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        for _ in 0..2 {
            let t = std::time::Instant::now();
            self.inner.handle.send_ping().await.ok()?;
            let d = t.elapsed();
            best = Some(best.map_or(d, |b| b.min(d)));
        }
        best
    }

    pub(crate) fn protocol(&self, msg: impl Into<String>) -> SshError {
        SshError::Protocol {
            host: self.inner.host.clone(),
            port: self.inner.port,
            msg: msg.into(),
        }
    }

    pub(crate) fn local_io(&self, what: impl Into<String>, source: io::Error) -> SshError {
        SshError::LocalIo {
            host: self.inner.host.clone(),
            port: self.inner.port,
            what: what.into(),
            source,
        }
    }

    pub(crate) fn cancelled(&self) -> SshError {
        SshError::Cancelled {
            host: self.inner.host.clone(),
            port: self.inner.port,
        }
    }

    /// Opens a session channel and starts `command` on it.
    pub(crate) async fn start(
        &self,
        command: &str,
    ) -> Result<(ChanReader, ChannelWriteHalf<client::Msg>), SshError> {
        let ch = self
            .inner
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error("cannot open a channel", e))?;
        let (mut rd, wr) = ch.split();
        wr.exec(true, command)
            .await
            .map_err(|e| self.channel_error("cannot start the remote command", e))?;
        // Wait for the reply to the exec request (want_reply), keeping anything that comes first.
        let mut pending = VecDeque::new();
        loop {
            match rd.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    let _ = wr.close().await;
                    return Err(SshError::Protocol {
                        host: self.inner.host.clone(),
                        port: self.inner.port,
                        msg: format!("the server refused to run: {command}"),
                    });
                }
                Some(other) => pending.push_back(other),
                None => {
                    return Err(self.lost(format_args!("channel closed before running: {command}")));
                }
            }
        }
        Ok((ChanReader { rd, pending }, wr))
    }

    /// Runs `command`, feeds it `stdin` then EOF, and captures everything until the channel closes.
    /// Stdout and stderr are limited to [`EXEC_CAPTURE_LIMIT`] each.
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let (mut rd, wr) = self.start(command).await?;
        let input = Bytes::copy_from_slice(stdin);
        let wr_ref = &wr;
        let feed = async move {
            if !input.is_empty() {
                wr_ref.data_bytes(input).await?;
            }
            wr_ref.eof().await
        };
        tokio::pin!(feed);
        let mut feeding = true;
        let mut out = Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            outcome: ExitOutcome::Lost,
        };
        let mut tracker = OutcomeTracker::default();
        loop {
            tokio::select! {
                r = &mut feed, if feeding => {
                    feeding = false;
                    if let Err(e) = r {
                        // The command may legitimately exit without reading its stdin.
                        debug!("exec {command:?}: sending stdin: {e}");
                    }
                }
                msg = rd.recv() => {
                    let Some(msg) = msg else { break };
                    let (buf, stream, data) = match msg {
                        ChannelMsg::Data { data } => (&mut out.stdout, "stdout", data),
                        ChannelMsg::ExtendedData { data, .. } => (&mut out.stderr, "stderr", data),
                        other => {
                            tracker.observe(&other);
                            continue;
                        }
                    };
                    if buf.len() + data.len() > EXEC_CAPTURE_LIMIT {
                        let _ = wr.close().await;
                        return Err(SshError::OutputTooLarge {
                            host: self.inner.host.clone(),
                            port: self.inner.port,
                            command: command.to_string(),
                            stream,
                            limit: EXEC_CAPTURE_LIMIT,
                        });
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
        out.outcome = tracker.finish();
        Ok(out)
    }

    /// Starts `command` on a new channel for an interactive exchange.
    pub async fn open(&self, command: &str) -> Result<RemoteProc, SshError> {
        let (rd, wr) = self.start(command).await?;
        Ok(RemoteProc {
            session: self.clone(),
            rd,
            wr: Some(wr),
            tracker: OutcomeTracker::default(),
            state: ProcState::Running,
        })
    }

    /// Disconnects (ByApplication). Other clones of this session become unusable.
    pub async fn close(self) {
        if let Err(e) = self
            .inner
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
        {
            debug!("disconnect: {e}");
        }
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            // Let the session task send the message and finish.
            match tokio::time::timeout(Duration::from_secs(2), inner.handle).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => debug!("session ended with: {e}"),
            }
        }
    }
}

fn map_handshake_error(host: &str, port: u16, shared: &Mutex<Shared>, e: russh::Error) -> SshError {
    let why = lock(shared).disconnect.take();
    let msg = match e {
        russh::Error::Version => "not an SSH server (bad identification string)".to_string(),
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::IO(_) => {
            let m = format!("connection closed during the key exchange: {e}");
            match why {
                Some(w) => format!("{m} ({w})"),
                None => m,
            }
        }
        other => format!("key exchange failed: {other}"),
    };
    SshError::Protocol {
        host: host.to_string(),
        port,
        msg,
    }
}

/// Loads an identity file, with an error that says what to do.
fn load_identity(file: &Path, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let key_err = |reason: String| SshError::Key {
        file: file.to_path_buf(),
        reason,
    };
    match russh::keys::load_secret_key(file, passphrase) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(key_err(
            "is encrypted: set ssh.passphrase_file or ssh.passphrase_env".into(),
        )),
        Err(russh::keys::Error::IO(e)) => Err(key_err(format!("cannot be read: {e}"))),
        Err(e) => {
            let encrypted = passphrase.is_some()
                && matches!(
                    russh::keys::load_secret_key(file, None),
                    Err(russh::keys::Error::KeyIsEncrypted)
                );
            if encrypted {
                Err(key_err(format!(
                    "cannot be decrypted: wrong passphrase? ({e})"
                )))
            } else {
                Err(key_err(format!("is not a usable private key: {e}")))
            }
        }
    }
}

fn auth_error(addr: &HnAddr, shared: &Mutex<Shared>, what: &str, e: impl fmt::Display) -> SshError {
    let why = lock(shared).disconnect.clone();
    SshError::Lost {
        host: addr.host.clone(),
        port: addr.port,
        msg: match why {
            Some(w) => format!("during authentication ({what}): {e} ({w})"),
            None => format!("during authentication ({what}): {e}"),
        },
    }
}

async fn authenticate(
    h: &mut client::Handle<ClientHandler>,
    addr: &HnAddr,
    opts: &SshOptions,
    shared: &Mutex<Shared>,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut key_errors: Vec<SshError> = Vec::new();
    let mut rejected: Vec<PublicKey> = Vec::new();
    let mut rsa_hash: Option<Option<HashAlg>> = None;

    for file in &opts.identity_files {
        let key = match load_identity(file, opts.passphrase.as_deref()) {
            Ok(k) => k,
            Err(e) => {
                warn!("{addr}: {e}");
                tried.push(format!("{} (not loaded)", file.display()));
                key_errors.push(e);
                continue;
            }
        };
        let alg = key.algorithm();
        let hash = if alg.clone().is_rsa() {
            rsa_hash_for(h, &mut rsa_hash, addr, shared).await?
        } else {
            None
        };
        let public = key.public_key().clone();
        let res = h
            .authenticate_publickey(&addr.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| auth_error(addr, shared, &file.display().to_string(), e))?;
        if res.success() {
            debug!("{addr}: accepted key {}", file.display());
            return Ok(());
        }
        tried.push(format!("{} ({alg})", file.display()));
        rejected.push(public);
    }

    if opts.use_agent {
        let agent = match &opts.agent_socket {
            Some(sock) => AgentClient::connect_uds(sock).await,
            None => AgentClient::connect_env().await,
        };
        let where_ = match &opts.agent_socket {
            Some(s) => s.display().to_string(),
            None => "$SSH_AUTH_SOCK".to_string(),
        };
        match agent {
            Err(e) => tried.push(format!("ssh-agent at {where_} (unavailable: {e})")),
            Ok(mut agent) => match agent.request_identities().await {
                Err(e) => tried.push(format!("ssh-agent at {where_} (cannot list keys: {e})")),
                Ok(ids) if ids.is_empty() => {
                    tried.push(format!("ssh-agent at {where_} (holds no keys)"))
                }
                Ok(ids) => {
                    for id in ids {
                        let public = id.public_key().into_owned();
                        if rejected.contains(&public) {
                            continue;
                        }
                        let alg = public.algorithm();
                        let desc = format!(
                            "agent key {} {} {}",
                            alg,
                            public.fingerprint(HashAlg::Sha256),
                            public.comment()
                        );
                        let hash = if alg.is_rsa() {
                            rsa_hash_for(h, &mut rsa_hash, addr, shared).await?
                        } else {
                            None
                        };
                        match h
                            .authenticate_publickey_with(
                                &addr.user,
                                public.clone(),
                                hash,
                                &mut agent,
                            )
                            .await
                        {
                            Ok(res) if res.success() => {
                                debug!("{addr}: accepted {desc}");
                                return Ok(());
                            }
                            Ok(_) => tried.push(desc.trim_end().to_string()),
                            Err(e) => {
                                if h.is_closed() {
                                    return Err(auth_error(addr, shared, &desc, e));
                                }
                                tried.push(format!(
                                    "{} (agent failed to sign: {e})",
                                    desc.trim_end()
                                ))
                            }
                        }
                        rejected.push(public);
                    }
                }
            },
        }
    }

    // A key we could not even load is the most likely culprit: say so.
    if let Some(e) = key_errors.into_iter().next() {
        return Err(e);
    }
    Err(SshError::Auth {
        host: addr.host.clone(),
        port: addr.port,
        user: addr.user.clone(),
        tried,
    })
}

async fn rsa_hash_for(
    h: &client::Handle<ClientHandler>,
    cache: &mut Option<Option<HashAlg>>,
    addr: &HnAddr,
    shared: &Mutex<Shared>,
) -> Result<Option<HashAlg>, SshError> {
    if let Some(hash) = cache {
        return Ok(*hash);
    }
    let hash = h
        .best_supported_rsa_hash()
        .await
        .map_err(|e| auth_error(addr, shared, "server-sig-algs", e))?
        .flatten();
    *cache = Some(hash);
    Ok(hash)
}

// ---------------------------------------------------------------------------------------------
// Interactive channel

#[derive(Debug, PartialEq, Eq)]
enum ProcState {
    Running,
    /// The channel is closed; `Exit` was delivered.
    Done,
}

/// A remote command on its own channel (see [`Session::open`]).
///
/// Call [`RemoteProc::next_event`] regularly: an unread channel stalls the whole connection once
/// its buffer (100 messages) is full. Dropping it before the end closes the channel.
pub struct RemoteProc {
    session: Session,
    rd: ChanReader,
    /// Always `Some` until dropped.
    wr: Option<ChannelWriteHalf<client::Msg>>,
    tracker: OutcomeTracker,
    state: ProcState,
}

impl fmt::Debug for RemoteProc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RemoteProc({:?}, {:?})",
            self.session,
            self.wr.as_ref().map(|w| w.id())
        )
    }
}

impl RemoteProc {
    fn writer(&self) -> Result<&ChannelWriteHalf<client::Msg>, SshError> {
        self.wr
            .as_ref()
            .ok_or_else(|| self.session.lost("channel already closed"))
    }

    /// Sends bytes to the remote stdin (waits for window space).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SshError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.writer()?
            .data_bytes(Bytes::copy_from_slice(bytes))
            .await
            .map_err(|e| {
                self.session
                    .channel_error("sending to the remote command", e)
            })
    }

    /// Closes the remote stdin.
    #[allow(dead_code)] // transport API (spec); not used by the binary yet
    pub async fn eof(&mut self) -> Result<(), SshError> {
        self.writer()?
            .eof()
            .await
            .map_err(|e| self.session.channel_error("closing the remote stdin", e))
    }

    /// Next output of the command. `Exit` comes once the channel has closed (so after all output);
    /// then `None`.
    pub async fn next_event(&mut self) -> Option<Event> {
        if self.state == ProcState::Done {
            return None;
        }
        loop {
            match self.rd.recv().await {
                Some(ChannelMsg::Data { data }) => return Some(Event::Stdout(data)),
                Some(ChannelMsg::ExtendedData { data, .. }) => return Some(Event::Stderr(data)),
                Some(other) => {
                    self.tracker.observe(&other);
                }
                None => {
                    self.state = ProcState::Done;
                    return Some(Event::Exit(self.tracker.finish()));
                }
            }
        }
    }
}

impl Drop for RemoteProc {
    fn drop(&mut self) {
        if self.state == ProcState::Done {
            return;
        }
        if let (Some(wr), Ok(rt)) = (self.wr.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = wr.close().await;
            });
        }
    }
}
