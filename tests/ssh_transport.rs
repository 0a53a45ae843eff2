//! src/ssh.rs and src/relay.rs against a real OpenSSH sshd started on 127.0.0.1 (needs root,
//! /usr/sbin/sshd, ssh-keygen, ssh-agent and ssh-add).
//!
//! The crate is a binary, so the two modules are compiled into this test directly.

#[allow(dead_code)]
#[path = "../src/ssh.rs"]
mod ssh;

#[allow(dead_code)]
#[path = "../src/relay.rs"]
mod relay;

#[allow(dead_code)]
#[path = "../src/upload.rs"]
mod upload;

#[allow(dead_code)]
#[path = "../src/quote.rs"]
mod quote;

#[allow(dead_code)]
#[path = "../examples/delay_proxy.rs"]
mod delay_proxy;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::{Input, RelayStats, StderrSink, relay};
use ssh::{Event, ExitOutcome, HnAddr, HostKeyPolicy, Session, SshError, SshOptions};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------------
// Fixture

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen`; returns the private key path (the public one is `<path>.pub`).
fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str, pem: bool) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&path);
    match kind {
        "rsa" => {
            cmd.args(["-b", "2048"]);
        }
        "ecdsa" => {
            cmd.args(["-b", "256"]);
        }
        _ => {}
    }
    if pem {
        cmd.args(["-m", "PEM"]);
    }
    run(&mut cmd);
    path
}

fn pub_of(key: &Path) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    fs::read_to_string(PathBuf::from(p)).expect("read .pub")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// An sshd on 127.0.0.1, killed (by PID) on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    host_keys: Vec<PathBuf>,
}

impl Sshd {
    /// `host_key_types` e.g. ["ed25519"]; `authorized` private key paths whose .pub are accepted.
    fn start(host_key_types: &[&str], client_keys: impl FnOnce(&Path) -> Vec<PathBuf>) -> Sshd {
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let host_keys: Vec<PathBuf> = host_key_types
            .iter()
            .map(|t| keygen(dir.path(), &format!("host_{t}"), t, "", false))
            .collect();
        let authorized = client_keys(dir.path());
        let auth: String = authorized.iter().map(|k| pub_of(k)).collect();
        fs::write(dir.path().join("authorized_keys"), auth).expect("authorized_keys");

        for _attempt in 0..5 {
            let port = free_port();
            let d = dir.path().display();
            let mut conf = format!(
                "Port {port}\nListenAddress 127.0.0.1\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nMaxAuthTries 20\n\
                 MaxSessions 30\nMaxStartups 50\nLogLevel VERBOSE\n"
            );
            for k in &host_keys {
                conf.push_str(&format!("HostKey {}\n", k.display()));
            }
            let conf_path = dir.path().join("sshd_config");
            fs::write(&conf_path, conf).expect("sshd_config");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&conf_path)
                .arg("-E")
                .arg(dir.path().join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sshd");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        child,
                        port,
                        dir,
                        host_keys,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start: {log}");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn addr(&self) -> HnAddr {
        HnAddr {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
        }
    }

    /// A known_hosts file with the host keys of the given types.
    fn known_hosts(&self, name: &str, types: &[&str]) -> PathBuf {
        let mut text = String::from("# test known_hosts\n");
        for k in &self.host_keys {
            let p = pub_of(k);
            if types.iter().any(|t| p.contains(&format!("host_{t}"))) {
                text.push_str(&format!("[127.0.0.1]:{} {}", self.port, p));
            }
        }
        let path = self.path(name);
        fs::write(&path, text).expect("known_hosts");
        path
    }

    fn opts(&self, known_hosts: Vec<PathBuf>, ids: Vec<PathBuf>) -> SshOptions {
        SshOptions {
            identity_files: ids,
            known_hosts,
            connect_timeout: Duration::from_secs(15),
            ..SshOptions::default()
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Kill by PID (Child::kill is kill(pid, SIGKILL)).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe with both ends close-on-exec (sshd and ssh-keygen run concurrently in other tests).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just created these two fds and nobody else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an owned fd.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Writes `data` to a pipe's write end from a thread, then closes it.
fn feed(w: OwnedFd, data: Vec<u8>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = fs::File::from(w);
        let _ = f.write_all(&data);
    })
}

/// Reads a pipe's read end to EOF from a thread.
fn drain(r: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = fs::File::from(r);
        let mut v = Vec::new();
        f.read_to_end(&mut v).expect("read pipe");
        v
    })
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn no_cancel() -> watch::Receiver<bool> {
    // The sender is dropped at once: the relay treats that as "never cancelled".
    watch::channel(false).1
}

/// The usual setup: one ed25519 host key, one ed25519 client key, a matching known_hosts.
async fn basic() -> (Sshd, Session) {
    let mut id = PathBuf::new();
    let sshd = Sshd::start(&["ed25519"], |d| {
        id = keygen(d, "id_ed25519", "ed25519", "", false);
        vec![id.clone()]
    });
    let kh = sshd.known_hosts("known_hosts", &["ed25519"]);
    let t = Instant::now();
    let s = Session::connect(&sshd.addr(), &sshd.opts(vec![kh], vec![id]))
        .await
        .expect("connect");
    eprintln!("connect+auth: {:?}", t.elapsed());
    (sshd, s)
}

// ---------------------------------------------------------------------------------------------
// exec and open

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_codes_and_channels() {
    let (_sshd, s) = basic().await;

    for (cmd, want) in [
        ("true", ExitOutcome::Exited(0)),
        ("exit 7", ExitOutcome::Exited(7)),
        ("exit 255", ExitOutcome::Exited(255)),
        ("no_such_command_bpc_ovz", ExitOutcome::Exited(127)),
        ("kill -9 $$", ExitOutcome::Signalled("KILL".into())),
    ] {
        let out = s.exec(cmd, b"").await.expect(cmd);
        assert_eq!(out.outcome, want, "{cmd}");
        let code = match &want {
            ExitOutcome::Exited(n) => *n as i32,
            _ => 255,
        };
        assert_eq!(out.outcome.code(), code, "{cmd}");
    }

    // stdin, stdout, stderr
    let out = s
        .exec("cat; echo err >&2; exit 3", b"hello\n")
        .await
        .expect("cat");
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.outcome, ExitOutcome::Exited(3));

    // Data after the exit status is not lost (pitfall 1): a big output.
    let out = s
        .exec("head -c 20000000 /dev/zero", b"")
        .await
        .expect("20 MB");
    assert_eq!(out.stdout.len(), 20_000_000);
    assert_eq!(out.outcome, ExitOutcome::Exited(0));

    // Concurrent channels on clones of one session.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.exec(&format!("sleep 0.2; echo {i}"), b"").await
        }));
    }
    let t = Instant::now();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.expect("join").expect("exec");
        assert_eq!(out.stdout, format!("{i}\n").as_bytes());
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "not concurrent: {:?}",
        t.elapsed()
    );

    // The 64 MiB cap; the session survives it.
    let err = s
        .exec("head -c 70000000 /dev/zero", b"")
        .await
        .expect_err("cap");
    assert!(
        matches!(
            err,
            SshError::OutputTooLarge {
                stream: "stdout",
                ..
            }
        ),
        "{err}"
    );
    let out = s.exec("echo ok", b"").await.expect("after cap");
    assert_eq!(out.stdout, b"ok\n");

    // Interactive channel.
    let mut p = s.open("cat").await.expect("open cat");
    p.send(b"line 1\n").await.expect("send");
    match p.next_event().await {
        Some(Event::Stdout(b)) => assert_eq!(&b[..], b"line 1\n"),
        other => panic!("got {other:?}"),
    }
    p.eof().await.expect("eof");
    assert_eq!(
        p.next_event().await,
        Some(Event::Exit(ExitOutcome::Exited(0)))
    );
    assert_eq!(p.next_event().await, None);

    let mut p = s.open("echo oops >&2; exit 5").await.expect("open");
    let mut stderr = Vec::new();
    let outcome = loop {
        match p.next_event().await {
            Some(Event::Stderr(b)) => stderr.extend_from_slice(&b),
            Some(Event::Stdout(b)) => panic!("stdout {b:?}"),
            Some(Event::Exit(o)) => break o,
            None => panic!("None before Exit"),
        }
    };
    assert_eq!(stderr, b"oops\n");
    assert_eq!(outcome, ExitOutcome::Exited(5));
    assert_eq!(p.next_event().await, None);

    // Dropping an unfinished RemoteProc does not wedge the connection.
    let p = s.open("yes").await.expect("open yes");
    drop(p);
    let out = s.exec("echo still", b"").await.expect("after drop");
    assert_eq!(out.stdout, b"still\n");

    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// relay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_transfers() {
    let (_sshd, s) = basic().await;

    // 50 MB through cat, byte-exact, with a prefix; fds start non-blocking as rsync leaves them.
    {
        let data = pseudo_random(50_000_000);
        let prefix = b"rsync\0--server\0.\0/\0\0".to_vec();
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        set_nonblocking(&in_r);
        set_nonblocking(&out_w);
        let writer = feed(in_w, data.clone());
        let reader = drain(out_r);
        let t = Instant::now();
        let (outcome, stats) = relay(
            &s,
            "cat",
            Input {
                prefix: prefix.clone(),
                channels: 1,
                label: String::new(),
            },
            in_r.as_raw_fd(),
            out_w.as_raw_fd(),
            StderrSink::Discard,
            no_cancel(),
        )
        .await
        .expect("relay cat");
        let dt = t.elapsed();
        drop(out_w);
        let got = reader.join().expect("reader");
        writer.join().expect("writer");
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(got.len(), prefix.len() + data.len());
        assert!(
            got[..prefix.len()] == prefix[..] && got[prefix.len()..] == data[..],
            "bytes differ"
        );
        assert_eq!(
            stats,
            RelayStats {
                bytes_in: got.len() as u64,
                bytes_out: got.len() as u64,
                bytes_err: 0
            }
        );
        eprintln!(
            "relay 50 MB through cat: {dt:?} ({:.0} MB/s)",
            50.0 / dt.as_secs_f64()
        );
    }

    // stdout + stderr + exit 42, concurrently produced; stderr to a callback.
    {
        let (in_r, in_w) = pipe();
        drop(in_w);
        let (out_r, out_w) = pipe();
        let reader = drain(out_r);
        let err_buf = Arc::new(Mutex::new(Vec::new()));
        let eb = err_buf.clone();
        let sink = StderrSink::Callback(Box::new(move |b: &[u8]| {
            eb.lock().expect("lock").extend_from_slice(b)
        }));
        let (outcome, stats) = relay(
            &s,
            "(yes out | head -c 3000000) & (yes err | head -c 2000000 >&2) & wait; exit 42",
            Input::default(),
            in_r.as_raw_fd(),
            out_w.as_raw_fd(),
            sink,
            no_cancel(),
        )
        .await
        .expect("relay mix");
        drop(out_w);
        let out = reader.join().expect("reader");
        let err = err_buf.lock().expect("lock").clone();
        assert_eq!(outcome, ExitOutcome::Exited(42));
        assert_eq!(outcome.code(), 42);
        assert_eq!(out, b"out\n".repeat(750_000));
        assert_eq!(err, b"err\n".repeat(500_000));
        assert_eq!(
            (stats.bytes_in, stats.bytes_out, stats.bytes_err),
            (0, 3_000_000, 2_000_000)
        );
    }

    // EOF propagation: wc -c only answers after EOF.
    {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let writer = feed(in_w, vec![b'x'; 1_234_567]);
        let reader = drain(out_r);
        let (outcome, _) = relay(
            &s,
            "wc -c",
            Input::default(),
            in_r.as_raw_fd(),
            out_w.as_raw_fd(),
            StderrSink::Discard,
            no_cancel(),
        )
        .await
        .expect("relay wc");
        drop(out_w);
        writer.join().expect("writer");
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(
            String::from_utf8_lossy(&reader.join().expect("reader")).trim(),
            "1234567"
        );
    }

    // The remote exits while the local stdin stays open (idle), then while it is being flooded.
    for (cmd, flood) in [("exit 3", false), ("head -c 100 >/dev/null; exit 3", true)] {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        let reader = drain(out_r);
        let flooder = flood.then(|| {
            let w = in_w.try_clone().expect("dup");
            std::thread::spawn(move || {
                let mut f = fs::File::from(w);
                let chunk = vec![0u8; 65536];
                while f.write_all(&chunk).is_ok() {}
            })
        });
        let t = Instant::now();
        let (outcome, _) = tokio::time::timeout(
            Duration::from_secs(10),
            relay(
                &s,
                cmd,
                Input::default(),
                in_r.as_raw_fd(),
                out_w.as_raw_fd(),
                StderrSink::Discard,
                no_cancel(),
            ),
        )
        .await
        .expect("relay hung on an open stdin")
        .expect("relay early exit");
        let dt = t.elapsed();
        eprintln!("early exit ({cmd}, flood {flood}): {dt:?}");
        assert_eq!(outcome, ExitOutcome::Exited(3));
        assert!(dt < Duration::from_secs(3), "{dt:?}");
        drop(out_w);
        reader.join().expect("reader");
        drop(in_r); // the flooder gets EPIPE
        if let Some(f) = flooder {
            f.join().expect("flooder");
        }
        drop(in_w);
    }

    // Local stdout closed: EPIPE => stop, code 255, no hang.
    {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        drop(out_r);
        let t = Instant::now();
        let (outcome, _) = tokio::time::timeout(
            Duration::from_secs(10),
            relay(
                &s,
                "yes",
                Input::default(),
                in_r.as_raw_fd(),
                out_w.as_raw_fd(),
                StderrSink::Discard,
                no_cancel(),
            ),
        )
        .await
        .expect("relay hung on EPIPE")
        .expect("relay EPIPE");
        assert_eq!(outcome.code(), 255);
        eprintln!("EPIPE: {:?}", t.elapsed());
        drop(in_w);
    }

    // Cancel.
    {
        let (in_r, _in_w) = pipe();
        let (_out_r, out_w) = pipe();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(true);
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let t = Instant::now();
        let err = relay(
            &s,
            "sleep 30",
            Input::default(),
            in_r.as_raw_fd(),
            out_w.as_raw_fd(),
            StderrSink::Discard,
            rx,
        )
        .await
        .expect_err("cancel");
        assert!(matches!(err, SshError::Cancelled { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    // The relay future is Send (it runs in a spawned task), and the session is still fine.
    {
        let (in_r, in_w) = pipe();
        drop(in_w);
        let (out_r, out_w) = pipe();
        let reader = drain(out_r);
        let s2 = s.clone();
        let task = tokio::spawn(async move {
            relay(
                &s2,
                "echo spawned >&2; echo done",
                Input::default(),
                in_r.as_raw_fd(),
                out_w.as_raw_fd(),
                StderrSink::Fd2,
                no_cancel(),
            )
            .await
        });
        let (outcome, stats) = task.await.expect("join").expect("relay");
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(stats.bytes_err, 8);
        assert_eq!(reader.join().expect("reader"), b"done\n");
    }

    s.close().await;
}

/// Lines in the sshd log that start a command: one per session channel.
fn sessions_started(sshd: &Sshd) -> usize {
    fs::read_to_string(sshd.path("sshd.log"))
        .unwrap_or_default()
        .matches("Starting session: command")
        .count()
}

/// A relay of `data` (after `prefix`) through `cmd` asking for `channels`; stdout, stderr,
/// outcome and stats.
async fn relay_through(
    s: &Session,
    cmd: &str,
    prefix: &[u8],
    data: Vec<u8>,
    channels: u8,
) -> (Vec<u8>, String, ExitOutcome, RelayStats) {
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    set_nonblocking(&in_r);
    let writer = feed(in_w, data);
    let reader = drain(out_r);
    let err = Arc::new(Mutex::new(Vec::new()));
    let err2 = err.clone();
    let (outcome, stats) = relay(
        s,
        cmd,
        Input {
            prefix: prefix.to_vec(),
            channels,
            label: String::new(),
        },
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        StderrSink::Callback(Box::new(move |b| {
            err2.lock().expect("stderr").extend_from_slice(b)
        })),
        no_cancel(),
    )
    .await
    .expect("relay");
    drop(out_w);
    let out = reader.join().expect("reader");
    writer.join().expect("writer");
    let err = String::from_utf8_lossy(&err.lock().expect("stderr")).into_owned();
    (out, err, outcome, stats)
}

/// A restore-sized upload over an emulated 10 ms round trip goes over 4 channels (sshd starts 4
/// commands) and arrives byte-exact, in order, after its prefix; on loopback the same request
/// stays on one channel. Exit codes and stderr come through; nothing is left in the HN's /tmp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_several_channels() {
    let (sshd, direct) = basic().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let pport = listener.local_addr().expect("proxy addr").port();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], sshd.port));
    let proxy = tokio::spawn(delay_proxy::serve(
        listener,
        upstream,
        Duration::from_millis(5),
    ));
    let host_key = pub_of(&sshd.host_keys[0]);
    let kh = sshd.path("known_hosts_proxy");
    fs::write(&kh, format!("[127.0.0.1]:{pport} {host_key}")).expect("known_hosts");
    let mut addr = sshd.addr();
    addr.port = pport;
    let wan = Session::connect(&addr, &sshd.opts(vec![kh], vec![sshd.path("id_ed25519")]))
        .await
        .expect("connect through the proxy");
    let rtt = wan.round_trip().await.expect("ping");
    assert!(rtt >= upload::STRIPE_RTT, "round trip {rtt:?}");
    let leftovers = || -> Vec<String> {
        fs::read_dir("/tmp")
            .expect("/tmp")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("bpcovz-up."))
            .collect()
    };

    // 24 MiB: two dozen frames, every channel used several times.
    let data = pseudo_random(24 << 20);
    let prefix = b"rsync\0--server\0.\0/\0\0";
    let mut want = prefix.to_vec();
    want.extend_from_slice(&data);
    let before = sessions_started(&sshd);
    let (out, err, outcome, stats) = relay_through(&wan, "cat", prefix, data.clone(), 4).await;
    assert_eq!(outcome, ExitOutcome::Exited(0), "stderr: {err}");
    assert!(out == want, "{} bytes back, {} sent", out.len(), want.len());
    assert_eq!(stats.bytes_in, want.len() as u64);
    assert_eq!(stats.bytes_out, want.len() as u64);
    assert_eq!(err, "");
    assert_eq!(sessions_started(&sshd) - before, 4, "4 channels");
    assert!(leftovers().is_empty(), "left in /tmp: {:?}", leftovers());

    // The command's exit code and stderr; one that stops reading early is not an error.
    let (out, err, outcome, _) = relay_through(
        &wan,
        "head -c 100 >/dev/null; echo partial >&2; exit 23",
        b"",
        data[..8 << 20].to_vec(),
        4,
    )
    .await;
    assert_eq!(
        (outcome, out, err),
        (ExitOutcome::Exited(23), Vec::new(), "partial\n".into())
    );

    // Empty stdin: only the end mark.
    let (out, _, outcome, stats) = relay_through(&wan, "wc -c", b"", Vec::new(), 3).await;
    assert_eq!(
        (outcome, out, stats.bytes_in),
        (ExitOutcome::Exited(0), b"0\n".to_vec(), 0)
    );

    // Loopback: no round trip to hide, one channel.
    let before = sessions_started(&sshd);
    let (out, _, outcome, _) = relay_through(&direct, "cat", prefix, data, 4).await;
    assert_eq!(outcome, ExitOutcome::Exited(0));
    assert!(out == want);
    assert_eq!(sessions_started(&sshd) - before, 1, "one channel");
    assert!(leftovers().is_empty(), "left in /tmp: {:?}", leftovers());

    wan.close().await;
    direct.close().await;
    proxy.abort();
}

// ---------------------------------------------------------------------------------------------
// authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_key_types_and_passphrases() {
    let mut keys = Vec::new();
    let sshd = Sshd::start(&["ed25519"], |d| {
        keys = vec![
            keygen(d, "id_ed25519", "ed25519", "", false),
            keygen(d, "id_ecdsa", "ecdsa", "", false),
            keygen(d, "id_rsa", "rsa", "", false),
            keygen(d, "id_enc", "ed25519", "s3cret pass", false),
            keygen(d, "id_rsa_pem_enc", "rsa", "pem pass", true),
        ];
        keys.clone()
    });
    let [ed, ec, rsa, enc, pem_enc] = &keys[..] else {
        unreachable!()
    };
    let stranger = keygen(&sshd.path(""), "id_stranger", "ed25519", "", false);
    let kh = sshd.known_hosts("known_hosts", &["ed25519"]);
    let addr = sshd.addr();

    let works = |ids: Vec<PathBuf>, pass: Option<&str>| {
        let mut o = sshd.opts(vec![kh.clone()], ids);
        o.passphrase = pass.map(str::to_string);
        let addr = addr.clone();
        async move {
            let s = Session::connect(&addr, &o).await?;
            let out = s.exec("echo ok", b"").await?;
            assert_eq!(out.stdout, b"ok\n");
            s.close().await;
            Ok::<(), SshError>(())
        }
    };

    for k in [ed, ec, rsa] {
        let t = Instant::now();
        works(vec![k.clone()], None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", k.display()));
        eprintln!("{}: {:?}", k.display(), t.elapsed());
    }
    // A passphrase given for an unencrypted key is harmless.
    works(vec![ed.clone()], Some("unused"))
        .await
        .expect("plain key + passphrase");
    // Encrypted keys.
    works(vec![enc.clone()], Some("s3cret pass"))
        .await
        .expect("encrypted, right passphrase");
    works(vec![pem_enc.clone()], Some("pem pass"))
        .await
        .expect("PEM encrypted, right passphrase");

    let err = works(vec![enc.clone()], None)
        .await
        .expect_err("missing passphrase");
    let msg = err.to_string();
    eprintln!("missing passphrase: {msg}");
    assert!(matches!(err, SshError::Key { .. }), "{msg}");
    assert!(
        msg.contains("id_enc is encrypted: set ssh.passphrase_file or ssh.passphrase_env"),
        "{msg}"
    );

    for k in [enc, pem_enc] {
        let err = works(vec![k.clone()], Some("wrong"))
            .await
            .expect_err("wrong passphrase");
        let msg = err.to_string();
        eprintln!("wrong passphrase: {msg}");
        assert!(
            matches!(err, SshError::Key { .. }) && msg.contains("wrong passphrase"),
            "{msg}"
        );
    }

    // A key the server does not accept, alone and then followed by a good one.
    let err = works(vec![stranger.clone()], None)
        .await
        .expect_err("stranger");
    let msg = err.to_string();
    eprintln!("rejected: {msg}");
    assert!(matches!(err, SshError::Auth { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{}", sshd.port)) && msg.contains("id_stranger"),
        "{msg}"
    );
    works(vec![stranger.clone(), rsa.clone()], None)
        .await
        .expect("second key");

    // A missing identity file.
    let err = works(vec![sshd.path("nope")], None)
        .await
        .expect_err("missing file");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    // ... does not prevent a later key from working.
    works(vec![sshd.path("nope"), ed.clone()], None)
        .await
        .expect("missing then good");

    // Nothing to try.
    let err = works(vec![], None).await.expect_err("nothing");
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
}

/// ssh-agent, killed by PID on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_auth() {
    let mut rsa = PathBuf::new();
    let sshd = Sshd::start(&["ed25519"], |d| {
        rsa = keygen(d, "id_agent_rsa", "rsa", "", false);
        vec![rsa.clone()]
    });
    let other = keygen(&sshd.path(""), "id_agent_other", "ed25519", "", false);
    let sock = sshd.path("agent.sock");
    let _agent = Agent(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("ssh-agent"),
    );
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "agent socket missing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unauthorized key first, so the agent loop has to go on to the RSA key.
    for k in [&other, &rsa] {
        run(Command::new("ssh-add")
            .arg("-q")
            .arg(k)
            .env("SSH_AUTH_SOCK", &sock));
    }
    let kh = sshd.known_hosts("known_hosts", &["ed25519"]);
    let mut o = sshd.opts(vec![kh], vec![]);
    o.use_agent = true;
    o.agent_socket = Some(sock.clone());
    let t = Instant::now();
    let s = Session::connect(&sshd.addr(), &o)
        .await
        .expect("agent auth");
    eprintln!("agent auth: {:?}", t.elapsed());
    assert_eq!(s.exec("echo ok", b"").await.expect("exec").stdout, b"ok\n");
    s.close().await;

    // An agent that is not there is reported, not fatal to the message.
    o.agent_socket = Some(sshd.path("no-agent.sock"));
    let err = Session::connect(&sshd.addr(), &o)
        .await
        .expect_err("no agent");
    eprintln!("no agent: {err}");
    assert!(
        matches!(err, SshError::Auth { .. }) && err.to_string().contains("unavailable"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// host keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_checking() {
    let mut id = PathBuf::new();
    let sshd = Sshd::start(&["ed25519", "ecdsa"], |d| {
        id = keygen(d, "id_ed25519", "ed25519", "", false);
        vec![id.clone()]
    });
    let addr = sshd.addr();
    let hp = format!("127.0.0.1:{}", sshd.port);
    let connect = |kh: Vec<PathBuf>, policy: HostKeyPolicy| {
        let mut o = sshd.opts(kh, vec![id.clone()]);
        o.host_key_policy = policy;
        let addr = addr.clone();
        async move { Session::connect(&addr, &o).await.map(|_| ()) }
    };

    // Unknown: refused, naming host:port, the files and the fingerprint.
    let missing = sshd.path("missing_known_hosts");
    let empty = sshd.known_hosts("empty_known_hosts", &[]);
    let err = connect(vec![empty.clone(), missing.clone()], HostKeyPolicy::Strict)
        .await
        .expect_err("unknown");
    let msg = err.to_string();
    eprintln!("unknown: {msg}");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{msg}");
    assert!(
        msg.contains(&hp) && msg.contains("empty_known_hosts") && msg.contains("SHA256:"),
        "{msg}"
    );

    // Known in the second file.
    let good = sshd.known_hosts("good_known_hosts", &["ed25519"]);
    connect(vec![empty.clone(), good.clone()], HostKeyPolicy::Strict)
        .await
        .expect("known in 2nd file");

    // Only the ECDSA key recorded (the server prefers ed25519): the recorded algorithm is asked
    // for first.
    let ec_only = sshd.known_hosts("ecdsa_known_hosts", &["ecdsa"]);
    connect(vec![ec_only], HostKeyPolicy::Strict)
        .await
        .expect("only ECDSA recorded");

    // Changed: another ed25519 key recorded for this host, after a comment line.
    let impostor = keygen(&sshd.path(""), "impostor", "ed25519", "", false);
    let changed = sshd.path("changed_known_hosts");
    fs::write(
        &changed,
        format!("# comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n[127.0.0.1]:{} {}", sshd.port, pub_of(&impostor)),
    )
    .expect("write");
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let err = connect(vec![changed.clone()], policy)
            .await
            .expect_err("changed");
        let msg = err.to_string();
        eprintln!("changed: {msg}");
        match &err {
            SshError::ChangedHostKey { file, line, .. } => {
                assert_eq!(file, &changed);
                assert_eq!(*line, 3, "physical line");
            }
            _ => panic!("{msg}"),
        }
        assert!(
            msg.contains(&hp) && msg.contains("changed_known_hosts line 3"),
            "{msg}"
        );
    }

    // AcceptNew learns an unknown key into the first file (creating it), then Strict accepts it.
    let learnt = sshd.path("sub/dir/learnt_known_hosts");
    connect(
        vec![learnt.clone(), empty.clone()],
        HostKeyPolicy::AcceptNew,
    )
    .await
    .expect("accept-new");
    let text = fs::read_to_string(&learnt).expect("learnt file");
    // (russh writes a newline first into a new file.)
    assert!(
        text.trim_start()
            .starts_with(&format!("[127.0.0.1]:{} ", sshd.port)),
        "{text}"
    );
    connect(vec![learnt.clone()], HostKeyPolicy::Strict)
        .await
        .expect("learnt key accepted");
    assert_eq!(
        fs::read_to_string(&learnt).expect("read"),
        text,
        "learnt twice"
    );
}

// ---------------------------------------------------------------------------------------------
// connection errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_and_refused() {
    // Accepts TCP, never speaks SSH.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let addr = HnAddr {
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
    };
    let opts = SshOptions {
        connect_timeout: Duration::from_secs(1),
        ..SshOptions::default()
    };
    let t = Instant::now();
    let err = Session::connect(&addr, &opts).await.expect_err("timeout");
    let dt = t.elapsed();
    eprintln!("timeout: {err} after {dt:?}");
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        dt >= Duration::from_millis(900) && dt < Duration::from_secs(3),
        "{dt:?}"
    );

    // Nothing listening.
    let port = free_port();
    let addr = HnAddr { port, ..addr };
    let err = Session::connect(&addr, &opts).await.expect_err("refused");
    eprintln!("refused: {err}");
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
