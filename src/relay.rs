//! The stdio relay of a transfer: local fds <-> one SSH channel (rsync or tar on the HN).
//!
//! Blocking fd I/O runs on dedicated threads (russh notes, pitfall 7): one reads the local stdin in
//! 256 KiB chunks, one writes the remote stdout to the local stdout fd (and one writes the remote
//! stderr to fd 2 when asked). The async side moves data between them and the channel, reading
//! and writing concurrently (pitfall 3), and returns once the channel is closed (pitfall 1).
//! None of the caller's fds is ever closed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::{ChannelMsg, Sig};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::ssh::{ExitOutcome, OutcomeTracker, Session, SshError};

/// Size of one read of the local stdin (pitfall 5: 8 KiB reads cost 20-40% of the throughput).
const READ_CHUNK: usize = 256 * 1024;
/// How often the fd threads look at their stop flag while waiting.
const POLL_MS: i32 = 100;
/// Remote stdout messages (each at most one SSH packet, 32 KiB) queued for the writer thread.
const OUT_QUEUE: usize = 64;
/// Stdin chunks queued for the channel.
const IN_QUEUE: usize = 4;

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

/// Runs `command` on a new channel of `session` and relays `prefix` + the bytes of `stdin_fd` to
/// its stdin (then EOF), its stdout to `stdout_fd` and its stderr to `stderr`.
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
    prefix: Vec<u8>,
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

    let (mut rd, wr) = session.start(command).await?;

    // The fd threads.
    let in_stop = Arc::new(AtomicBool::new(false));
    let out_stop = Arc::new(AtomicBool::new(false));
    // If we leave early (an error, or this future is dropped), the threads stop too.
    let _stop_guard = StopOnDrop(vec![in_stop.clone(), out_stop.clone()]);
    let (in_tx, mut in_rx) = mpsc::channel::<io::Result<Bytes>>(IN_QUEUE);
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
    let (wr_ref, sent_ref) = (&wr, &sent);
    let mut send_fut = Box::pin(async move {
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
                }
            }
        }
    };

    // Stop the stdin side whatever happened: the remote is done with it, or we are giving up.
    in_stop.store(true, Ordering::Relaxed);
    drop(send_fut);
    stats.bytes_in = sent.load(Ordering::Relaxed);

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
                let mut buf = BytesMut::zeroed(READ_CHUNK);
                match file.0.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
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
