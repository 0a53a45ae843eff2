//! The stdio relay of a transfer: local fds <-> one SSH channel (rsync or tar on the HN).
//!
//! Blocking fd I/O runs on dedicated threads (russh notes, pitfall 7): one reads the local stdin in
//! 256 KiB chunks, one writes the remote stdout to the local stdout fd (and one writes the remote
//! stderr to fd 2 when asked). The async side moves data between them and the channel, reading
//! and writing concurrently (pitfall 3), and returns once the channel is closed (pitfall 1).
//! None of the caller's fds is ever closed.
//!
//! With [`Input::channels`] > 1 the stdin goes over several channels ([`crate::upload`]): channel
//! 0 runs the command behind the HN-side reassembler, the others each feed one of its fifos.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::client;
use russh::{ChannelMsg, ChannelWriteHalf, Sig};
use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::ssh::{ChanReader, ExitOutcome, OutcomeTracker, Session, SshError};
use crate::upload::{self, Handshake};

/// Size of one read of the local stdin (pitfall 5: 8 KiB reads cost 20-40% of the throughput).
const READ_CHUNK: usize = 256 * 1024;
/// A read is never offered less room than this (a pipe's default capacity).
const READ_MIN: usize = 64 * 1024;
/// How often the fd threads look at their stop flag while waiting.
const POLL_MS: i32 = 100;
/// Remote stdout messages (each at most one SSH packet, 32 KiB) queued for the writer thread.
const OUT_QUEUE: usize = 64;
/// Stdin chunks queued for the channel.
const IN_QUEUE: usize = 4;
/// ... for an upload over several channels, where a frame is up to 2 MiB of them.
const IN_QUEUE_UPLOAD: usize = 16;
/// How long a frame of an upload waits for more stdin before it is sent.
const COALESCE: Duration = Duration::from_millis(2);

/// Receives the remote stderr, piece by piece, in order.
pub type StderrCallback = Box<dyn FnMut(&[u8]) + Send>;

/// Where the remote stderr goes.
pub enum StderrSink {
    /// Our fd 2 (BackupPC puts it in the XferLOG).
    Fd2,
    Discard,
    /// Called for each piece of stderr, in order (BackupPC 3 mode: goes to the log).
    Callback(StderrCallback),
}

impl std::fmt::Debug for StderrSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StderrSink::Fd2 => "Fd2",
            StderrSink::Discard => "Discard",
            StderrSink::Callback(_) => "Callback",
        })
    }
}

/// What the remote stdin gets, besides the bytes of the local stdin fd.
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// Sent first (BackupPC's `--protect-args` words).
    pub prefix: Vec<u8>,
    /// SSH channels the stdin is spread over: 0 or 1 for one, up to [`upload::MAX_CHANNELS`]
    /// for an upload-heavy transfer (a restore).
    pub channels: u8,
    /// Put before the log line that says how the upload is spread (`hn1: `), as the run's other
    /// XferLOG lines are.
    pub label: String,
}

/// Bytes moved by [`relay`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Local stdin (including the prefix) sent to the remote.
    pub bytes_in: u64,
    /// Remote stdout received.
    pub bytes_out: u64,
    /// Remote stderr received.
    pub bytes_err: u64,
}

/// Runs `command` on a new channel of `session` and relays `input.prefix` + the bytes of
/// `stdin_fd` to its stdin (then EOF; over `input.channels` channels), its stdout to `stdout_fd`
/// and its stderr to `stderr`.
///
/// Returns once the channel is closed and all its output has been written, with the remote
/// outcome. If the remote finishes first, a still open stdin does not keep the relay alive. A
/// broken local stdout (EPIPE) ends the relay with [`ExitOutcome::Lost`] (code 255). `cancel`
/// becoming true closes the channel and returns [`SshError::Cancelled`].
///
/// The fds stay open; `O_NONBLOCK` is cleared on them (rsync hands its `-e` child non-blocking
/// fds); `EAGAIN` is handled anyway.
pub async fn relay(
    session: &Session,
    command: &str,
    input: Input,
    stdin_fd: RawFd,
    stdout_fd: RawFd,
    mut stderr: StderrSink,
    mut cancel: watch::Receiver<bool>,
) -> Result<(ExitOutcome, RelayStats), SshError> {
    if *cancel.borrow() {
        return Err(session.cancelled());
    }
    set_blocking(stdin_fd)
        .map_err(|e| session.local_io(format!("local stdin (fd {stdin_fd})"), e))?;
    set_blocking(stdout_fd)
        .map_err(|e| session.local_io(format!("local stdout (fd {stdout_fd})"), e))?;
    if matches!(stderr, StderrSink::Fd2)
        && let Err(e) = set_blocking(libc::STDERR_FILENO)
    {
        warn!("fd 2 unusable ({e}); discarding the remote stderr");
        stderr = StderrSink::Discard;
    }

    let Input {
        prefix,
        channels,
        label,
    } = input;
    let mut channels = channels.clamp(1, upload::MAX_CHANNELS);
    if channels > 1 {
        // One channel carries 2 MiB per round trip (sshd's window): enough below STRIPE_RTT;
        // more channels there would only cost the HN CPU (a `cat` and a `head` per frame).
        let rtt = session.round_trip().await;
        if rtt.is_some_and(|r| r >= upload::STRIPE_RTT) {
            info!(
                "{label}upload over {channels} SSH channels (round trip {:.1} ms)",
                rtt.unwrap_or_default().as_secs_f64() * 1000.0
            );
        } else {
            debug!("{label}upload over one SSH channel (round trip {rtt:?})");
            channels = 1;
        }
    }
    let (mut rd, wr) = if channels > 1 {
        session.start(&upload::wrap(command, channels)).await?
    } else {
        session.start(command).await?
    };
    // Several channels: channel 0's first stdout line says how to send (upload.rs).
    let (hs_tx, hs_rx) = oneshot::channel::<Handshake>();
    let mut handshake = (channels > 1).then(|| (Vec::new(), hs_tx));
    // The other channels' write halves, once open (closed when the relay ends).
    let extra: OnceCell<Vec<ChannelWriteHalf<client::Msg>>> = OnceCell::new();

    // The fd threads.
    let in_stop = Arc::new(AtomicBool::new(false));
    let out_stop = Arc::new(AtomicBool::new(false));
    // If we leave early (an error, or this future is dropped), the threads stop too.
    let _stop_guard = StopOnDrop(vec![in_stop.clone(), out_stop.clone()]);
    let queue = if channels > 1 {
        IN_QUEUE_UPLOAD
    } else {
        IN_QUEUE
    };
    let (in_tx, mut in_rx) = mpsc::channel::<io::Result<Bytes>>(queue);
    let in_done = spawn_reader(stdin_fd, in_tx, in_stop.clone())
        .map_err(|e| session.local_io("cannot start the stdin thread", e))?;
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
    let out_done = spawn_writer("relay-stdout", stdout_fd, out_rx, out_stop.clone())
        .map_err(|e| session.local_io("cannot start the stdout thread", e))?;
    let mut err_writer = None;
    if matches!(stderr, StderrSink::Fd2) {
        let (tx, rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
        let done = spawn_writer("relay-stderr", libc::STDERR_FILENO, rx, out_stop.clone())
            .map_err(|e| session.local_io("cannot start the stderr thread", e))?;
        err_writer = Some((tx, done));
    }
    let (err_tx, err_done) = match err_writer {
        Some((tx, done)) => (Some(tx), Some(done)),
        None => (None, None),
    };

    // Local stdin -> remote stdin, then EOF.
    let sent = AtomicU64::new(0);
    let (wr_ref, sent_ref, extra_ref) = (&wr, &sent, &extra);
    let mut send_fut = Box::pin(async move {
        if channels > 1 {
            let dir = match hs_rx.await {
                // The channel ended before its first line: nothing to send.
                Err(_) => return Ok(()),
                Ok(Handshake::Plain) => {
                    debug!("no fifos on the HN: the upload goes over one channel");
                    None
                }
                Ok(Handshake::Fifos(dir)) => Some(dir),
            };
            if let Some(dir) = dir {
                let writers = open_writers(session, &dir, channels)
                    .await
                    .map_err(SendError::Open)?;
                let writers = extra_ref.get_or_init(|| async { writers }).await;
                let all: Vec<_> = std::iter::once(wr_ref).chain(writers.iter()).collect();
                return send_frames(&all, prefix, &mut in_rx, sent_ref).await;
            }
        }
        if !prefix.is_empty() {
            let n = prefix.len() as u64;
            wr_ref
                .data_bytes(Bytes::from(prefix))
                .await
                .map_err(SendError::Remote)?;
            sent_ref.fetch_add(n, Ordering::Relaxed);
        }
        while let Some(chunk) = in_rx.recv().await {
            let chunk = chunk.map_err(SendError::Local)?;
            let n = chunk.len() as u64;
            wr_ref.data_bytes(chunk).await.map_err(SendError::Remote)?;
            sent_ref.fetch_add(n, Ordering::Relaxed);
        }
        wr_ref.eof().await.map_err(SendError::Remote)
    });

    let mut stats = RelayStats::default();
    let mut tracker = OutcomeTracker::default();
    // Output received but not yet accepted by its writer thread: while there is some, the channel
    // is not read (back-pressure), but stdin keeps flowing.
    let mut pending: Option<(Target, Bytes)> = None;
    let mut sending = true;

    let end = loop {
        tokio::select! {
            biased;
            () = cancelled(&mut cancel) => break End::Cancelled,
            permit = reserve(pending.as_ref().map(|(t, _)| match t {
                Target::Out => Some(&out_tx),
                Target::Err => err_tx.as_ref(),
            }).unwrap_or(None)), if pending.is_some() => {
                let Some((target, data)) = pending.take() else { continue };
                match permit {
                    Some(p) => p.send(data),
                    None if target == Target::Out => break End::StdoutFailed,
                    None => {
                        warn!("local stderr failed; discarding the rest of the remote stderr");
                        stderr = StderrSink::Discard;
                    }
                }
            }
            msg = rd.recv(), if pending.is_none() => match msg {
                None => break End::Closed,
                Some(ChannelMsg::Data { data }) if handshake.is_some() => {
                    let Some((mut line, tx)) = handshake.take() else { continue };
                    line.extend_from_slice(&data);
                    let Some(nl) = line.iter().position(|&b| b == b'\n') else {
                        if line.len() > 4096 {
                            break End::Handshake("no first line".into());
                        }
                        handshake = Some((line, tx));
                        continue;
                    };
                    match upload::parse_handshake(&line[..nl]) {
                        Ok(h) => {
                            let _ = tx.send(h);
                        }
                        Err(why) => break End::Handshake(why),
                    }
                    let rest = Bytes::copy_from_slice(&line[nl + 1..]);
                    if !rest.is_empty() {
                        stats.bytes_out += rest.len() as u64;
                        pending = Some((Target::Out, rest));
                    }
                }
                Some(ChannelMsg::Data { data }) => {
                    stats.bytes_out += data.len() as u64;
                    pending = Some((Target::Out, data));
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stats.bytes_err += data.len() as u64;
                    match &mut stderr {
                        StderrSink::Fd2 => pending = Some((Target::Err, data)),
                        StderrSink::Discard => {}
                        StderrSink::Callback(f) => f(&data),
                    }
                }
                Some(other) => {
                    tracker.observe(&other);
                }
            },
            r = &mut send_fut, if sending => {
                sending = false;
                match r {
                    Ok(()) => debug!("local stdin at EOF, sent EOF"),
                    // The remote stopped reading (closed or exiting): keep reading its output.
                    Err(SendError::Remote(e)) => debug!("sending stdin: {e}"),
                    Err(SendError::Local(e)) => break End::StdinFailed(e),
                    Err(SendError::Open(e)) => break End::OpenFailed(e),
                }
            }
        }
    };

    // Stop the stdin side whatever happened: the remote is done with it, or we are giving up.
    in_stop.store(true, Ordering::Relaxed);
    drop(send_fut);
    stats.bytes_in = sent.load(Ordering::Relaxed);
    // The other upload channels: the HN side no longer reads them (it ended, or we give up).
    if let Some(writers) = extra.get() {
        for w in writers {
            let _ = w.close().await;
        }
    }

    let result =
        match end {
            End::Closed => {
                // Flush what the writer threads still hold.
                drop(out_tx);
                drop(err_tx);
                let flush = async {
                    let out = thread_result(out_done.await);
                    let err = match err_done {
                        Some(done) => thread_result(done.await),
                        None => Ok(()),
                    };
                    (out, err)
                };
                let flushed = tokio::select! {
                    biased;
                    () = cancelled(&mut cancel) => None,
                    r = flush => Some(r),
                };
                match flushed {
                    None => {
                        out_stop.store(true, Ordering::Relaxed);
                        Err(session.cancelled())
                    }
                    Some((out, err)) => {
                        if let Err(e) = err {
                            warn!("writing the remote stderr to fd 2: {e}");
                        }
                        match out {
                            Ok(()) => Ok((tracker.finish(), stats)),
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                                debug!("local stdout closed (EPIPE)");
                                Ok((ExitOutcome::Lost, stats))
                            }
                            Err(e) => Err(session
                                .local_io(format!("writing local stdout (fd {stdout_fd})"), e)),
                        }
                    }
                }
            }
            End::Cancelled => {
                out_stop.store(true, Ordering::Relaxed);
                let _ = wr.signal(Sig::TERM).await;
                let _ = wr.close().await;
                Err(session.cancelled())
            }
            End::StdoutFailed => {
                let _ = wr.close().await;
                out_stop.store(true, Ordering::Relaxed);
                match thread_result(out_done.await) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        debug!("local stdout closed (EPIPE)");
                        Ok((ExitOutcome::Lost, stats))
                    }
                    Err(e) => {
                        Err(session.local_io(format!("writing local stdout (fd {stdout_fd})"), e))
                    }
                    Ok(()) => Ok((ExitOutcome::Lost, stats)),
                }
            }
            End::StdinFailed(e) => {
                out_stop.store(true, Ordering::Relaxed);
                let _ = wr.close().await;
                Err(session.local_io(format!("reading local stdin (fd {stdin_fd})"), e))
            }
            End::Handshake(why) => {
                out_stop.store(true, Ordering::Relaxed);
                let _ = wr.close().await;
                Err(session.protocol(format!(
                    "the HN side of a {channels}-channel upload did not start: {why}"
                )))
            }
            End::OpenFailed(e) => {
                out_stop.store(true, Ordering::Relaxed);
                let _ = wr.close().await;
                Err(session.protocol(format!(
                    "cannot open the {channels} channels of an upload ({e}); \
                     set ssh.upload_channels: 1, or raise MaxSessions in the HN's sshd_config"
                )))
            }
        };

    // Make sure the stdin thread no longer touches the fd (it looks at its flag every POLL_MS).
    if tokio::time::timeout(Duration::from_secs(2), in_done)
        .await
        .is_err()
    {
        warn!("the local stdin reader did not stop");
    }
    result
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Out,
    Err,
}

enum End {
    /// The channel is closed: the normal end.
    Closed,
    Cancelled,
    StdoutFailed,
    StdinFailed(io::Error),
    /// Channel 0's first line was not the upload handshake.
    Handshake(String),
    /// The other channels of an upload could not be opened.
    OpenFailed(SshError),
}

/// Raises the flags when dropped.
struct StopOnDrop(Vec<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for flag in &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

enum SendError {
    Remote(russh::Error),
    Local(io::Error),
    Open(SshError),
}

/// Opens channels 1..n of an upload into the fifos in `dir`, each drained by its own task.
async fn open_writers(
    session: &Session,
    dir: &str,
    n: u8,
) -> Result<Vec<ChannelWriteHalf<client::Msg>>, SshError> {
    let mut set = JoinSet::new();
    for k in 1..n {
        let (s, cmd) = (session.clone(), upload::writer_command(dir, k));
        set.spawn(async move { (k, s.start(&cmd).await) });
    }
    let mut opened = Vec::new();
    let mut failed = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((k, Ok((rd, wr)))) => {
                tokio::spawn(drain_writer(k, rd));
                opened.push((k, wr));
            }
            Ok((_, Err(e))) => failed = failed.or(Some(e)),
            Err(e) => failed = failed.or(Some(session.protocol(format!("channel task: {e}")))),
        }
    }
    if let Some(e) = failed {
        for (_, w) in &opened {
            let _ = w.close().await;
        }
        return Err(e);
    }
    opened.sort_by_key(|(k, _)| *k);
    Ok(opened.into_iter().map(|(_, w)| w).collect())
}

/// Reads channel `k` of an upload (`cat` into a fifo) to its end; says so if it failed.
async fn drain_writer(k: u8, mut rd: ChanReader) {
    let mut tracker = OutcomeTracker::default();
    let mut err = Vec::new();
    while let Some(msg) = rd.recv().await {
        match msg {
            ChannelMsg::ExtendedData { data, .. } if err.len() < 4096 => {
                err.extend_from_slice(&data)
            }
            ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. } => {}
            other => {
                tracker.observe(&other);
            }
        }
    }
    // `Lost` is the session closing after the transfer: the stream's own end mark tells whether
    // everything arrived (relay() and the HN side check it).
    let outcome = tracker.finish();
    if !err.is_empty() || matches!(outcome, ExitOutcome::Exited(c) if c != 0) {
        warn!(
            "upload channel {k}: {outcome}: {}",
            String::from_utf8_lossy(&err).trim()
        );
    }
}

/// Sends `prefix` + the stdin chunks as frames, frame i on `chans[i % n]`, then the end mark,
/// then EOF on every channel.
async fn send_frames(
    chans: &[&ChannelWriteHalf<client::Msg>],
    prefix: Vec<u8>,
    in_rx: &mut mpsc::Receiver<io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<(), SendError> {
    let mut k = 0;
    let mut first = (!prefix.is_empty()).then(|| Bytes::from(prefix));
    let mut at_eof = false;
    while !at_eof {
        let mut parts = Vec::new();
        let mut len = 0;
        if let Some(p) = first.take() {
            len += p.len();
            parts.push(p);
        }
        if parts.is_empty() {
            match in_rx.recv().await {
                None => break,
                Some(chunk) => {
                    let chunk = chunk.map_err(SendError::Local)?;
                    len += chunk.len();
                    parts.push(chunk);
                }
            }
        }
        // Fill the frame with what follows closely (a pipe gives at most 64 KiB per read, and
        // each frame costs the HN side a `head`); a pause of COALESCE ends it early.
        while len + READ_CHUNK <= upload::FRAME_MAX {
            let next = match in_rx.try_recv() {
                Ok(chunk) => Some(chunk),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout(COALESCE, in_rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            let Some(chunk) = next else {
                at_eof = true;
                break;
            };
            let chunk = chunk.map_err(SendError::Local)?;
            len += chunk.len();
            parts.push(chunk);
        }
        let ch = chans[k];
        ch.data_bytes(upload::header(len))
            .await
            .map_err(SendError::Remote)?;
        for p in parts {
            ch.data_bytes(p).await.map_err(SendError::Remote)?;
        }
        ch.data_bytes(Bytes::from_static(upload::TRAILER))
            .await
            .map_err(SendError::Remote)?;
        sent.fetch_add(len as u64, Ordering::Relaxed);
        k = (k + 1) % chans.len();
    }
    chans[k]
        .data_bytes(Bytes::from_static(upload::END))
        .await
        .map_err(SendError::Remote)?;
    for ch in chans {
        ch.eof().await.map_err(SendError::Remote)?;
    }
    Ok(())
}

async fn reserve(tx: Option<&mpsc::Sender<Bytes>>) -> Option<mpsc::Permit<'_, Bytes>> {
    tx?.reserve().await.ok()
}

/// Resolves when `cancel` is true; never if its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    let set = cancel.wait_for(|v| *v).await.is_ok();
    if !set {
        std::future::pending::<()>().await;
    }
}

fn thread_result(r: Result<io::Result<()>, oneshot::error::RecvError>) -> io::Result<()> {
    r.unwrap_or_else(|_| Err(io::Error::other("I/O thread died")))
}

// ---------------------------------------------------------------------------------------------
// fd threads

/// A `File` over a caller-owned fd; never closes it.
struct FdFile(ManuallyDrop<File>);

impl FdFile {
    fn new(fd: RawFd) -> FdFile {
        // SAFETY: `fd` belongs to the caller, which keeps it open during the relay (the threads
        // stop before `relay` returns, except a writer stuck after a cancel); ManuallyDrop makes
        // sure it is never closed here.
        FdFile(ManuallyDrop::new(unsafe { File::from_raw_fd(fd) }))
    }
}

fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd has no memory-safety requirements.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `events` on `fd`; true if ready (or hung up / in error: the next
/// read or write reports it).
fn poll_fd(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    if r == 0 {
        return Ok(false);
    }
    if p.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(true)
}

/// Reads `fd` until EOF, an error or `stop`, sending 256 KiB chunks to `tx`. Dropping `tx`
/// signals EOF. Completes the returned receiver when the thread no longer uses the fd.
fn spawn_reader(
    fd: RawFd,
    tx: mpsc::Sender<io::Result<Bytes>>,
    stop: Arc<AtomicBool>,
) -> io::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("relay-stdin".into())
        .spawn(move || {
            let mut file = FdFile::new(fd);
            // One zeroed READ_CHUNK serves several reads: each chunk is split off its front (a pipe
            // gives at most 64 KiB per read, so zeroing a fresh READ_CHUNK per read cost 4× the data).
            let mut buf = BytesMut::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match poll_fd(fd, libc::POLLIN, POLL_MS) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if buf.len() < READ_MIN {
                    buf = BytesMut::zeroed(READ_CHUNK);
                }
                match file.0.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Ok(buf.split_to(n).freeze())).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
            drop(tx);
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// Writes everything received on `rx` to `fd`, until `rx` is closed. On an error it drops `rx`
/// (so senders notice) and reports the error on the returned receiver.
fn spawn_writer(
    name: &str,
    fd: RawFd,
    mut rx: mpsc::Receiver<Bytes>,
    stop: Arc<AtomicBool>,
) -> io::Result<oneshot::Receiver<io::Result<()>>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut file = FdFile::new(fd);
            let mut result = Ok(());
            while let Some(data) = rx.blocking_recv() {
                if let Err(e) = write_all(&mut file, fd, &data, &stop) {
                    result = Err(e);
                    break;
                }
            }
            drop(rx);
            let _ = done_tx.send(result);
        })?;
    Ok(done_rx)
}

fn write_all(file: &mut FdFile, fd: RawFd, mut data: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !data.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("relay stopped"));
        }
        match file.0.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll_fd(fd, libc::POLLOUT, POLL_MS)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn nonblocking_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: a valid 2-element array.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(r, 0);
        // SAFETY: just created, owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// The EAGAIN paths: a non-blocking pipe written faster than it is read, and read while empty.
    #[test]
    fn nonblocking_fds_are_handled() {
        let (r, w) = nonblocking_pipe();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let wfd = w.as_raw_fd();
        let writer = std::thread::spawn(move || {
            let mut file = FdFile::new(wfd);
            let res = write_all(&mut file, wfd, &data, &AtomicBool::new(false));
            let _ = done_tx.send(());
            res
        });
        // Slow reader through spawn_reader, on the non-blocking read end.
        let (tx, mut rx) = mpsc::channel(IN_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let done = spawn_reader(r.as_raw_fd(), tx, stop.clone()).expect("spawn_reader");
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let chunk = rx.blocking_recv().expect("chunk").expect("read");
            got.extend_from_slice(&chunk);
            std::thread::sleep(Duration::from_millis(1));
        }
        done_rx.recv().expect("writer done");
        writer.join().expect("join").expect("write_all");
        assert!(got == expected);
        // Empty non-blocking pipe, writer still open: the reader waits, then stops on request.
        stop.store(true, Ordering::Relaxed);
        let t = std::time::Instant::now();
        let _ = done.blocking_recv();
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(w);
        // fds untouched: still open.
        // SAFETY: fcntl on an fd we own.
        assert!(unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFD) } >= 0);
    }
}
