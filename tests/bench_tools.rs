//! Smoke test of the benchmark tools (contrib/bench.sh): the hidden `bpc-ovz bench-exec`
//! subcommand and examples/delay_proxy.rs, against a real OpenSSH sshd on 127.0.0.1 (needs root
//! and /usr/sbin/sshd). Checks behaviour only, never speed: bytes and exit code through
//! bench-exec over the proxy, the proxy's delay, and that bench-exec stays out of --help; and the
//! log readers of contrib/bench-lib.sh on a simulated HN's and bpc-ovz's real logs.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bpc-ovz")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(o.status.success(), "ssh-keygen: {o:?}");
}

/// An sshd on 127.0.0.1, killed by PID on drop.
struct Sshd {
    child: Child,
    port: u16,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        keygen(&dir.join("host"));
        keygen(&dir.join("id"));
        fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        for _ in 0..5 {
            let port = free_port();
            let d = dir.display();
            let conf = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUseDNS no\n"
            );
            fs::write(dir.join("sshd_config"), conf).expect("sshd_config");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(dir.join("sshd_config"))
                .arg("-E")
                .arg(dir.join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sshd");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start: {}",
            fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn bench_exec_through_the_delay_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sshd = Sshd::start(d);
    let pport = common::start_delay_proxy(sshd.port, Duration::from_millis(10));

    // The proxy delays: the server's identification string arrives >= 10 ms after connecting.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", pport)).expect("connect to the proxy");
    let mut banner = [0u8; 4];
    s.read_exact(&mut banner).expect("banner through the proxy");
    assert_eq!(&banner, b"SSH-");
    assert!(
        t0.elapsed() >= Duration::from_millis(10),
        "no delay: {:?}",
        t0.elapsed()
    );
    drop(s);

    let hk = fs::read_to_string(d.join("host.pub")).expect("host.pub");
    let hk: Vec<&str> = hk.split_whitespace().take(2).collect();
    let hk = hk.join(" ");
    fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{} {hk}\n[127.0.0.1]:{pport} {hk}\n", sshd.port),
    )
    .expect("known_hosts");
    let cfg = d.join("config.yaml");
    fs::write(
        &cfg,
        format!(
            "hns:\n  - host: 127.0.0.1\n    port: {}\n    name: lo\n  - host: 127.0.0.1\n    port: {pport}\n    name: wan\n\
             ssh:\n  identity_files: [{id}]\n  known_hosts: [{kh}]\n  agent: false\n\
             log:\n  level: warn\ncache: {cache}\n",
            sshd.port,
            id = d.join("id").display(),
            kh = d.join("known_hosts").display(),
            cache = d.join("cache.json").display(),
        ),
    )
    .expect("config");

    // Bytes both ways, stderr and the exit code, through the relay and the proxy.
    let input = pseudo_random(3 << 20);
    let mut child = Command::new(bin())
        .args(["--config"])
        .arg(&cfg)
        .args([
            "bench-exec",
            "wan",
            "cat;",
            "echo",
            "done",
            ">&2;",
            "exit",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bpc-ovz bench-exec");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.clone();
    let feeder = std::thread::spawn(move || {
        stdin.write_all(&data).expect("write stdin");
    });
    let out = child.wait_with_output().expect("bench-exec");
    feeder.join().expect("feeder");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout == input, "stdout differs from stdin");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "done");

    // --upload: stdin spread over ssh.upload_channels channels (the proxy's 20 ms round trip is
    // above the threshold), the same bytes arrive, in order.
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["bench-exec", "--upload", "wan", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let mut stdin = c.stdin.take().expect("stdin");
            let data = input.clone();
            let feeder = std::thread::spawn(move || stdin.write_all(&data));
            let out = c.wait_with_output();
            feeder.join().expect("feeder").expect("write stdin");
            out
        })
        .expect("bench-exec --upload");
    let local = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(&input)?;
            c.wait_with_output()
        })
        .expect("local sha256sum");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, local.stdout);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // Unknown HN: refused before connecting.
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["bench-exec", "nope", "true"])
        .output()
        .expect("bench-exec nope");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope is not one of the configured hns"));

    // Hidden: not in the help.
    let help = Command::new(bin()).arg("--help").output().expect("--help");
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains("bench"));
}

/// contrib/bench-lib.sh, as contrib/bench.sh uses it: `ve_downtime`, `step_gap_ms` and
/// `reported_downtime` on the logs of real bpc-ovz backups in each quiesce mode against a
/// simulated HN (the VE's own log, written by the stand-in vzctl; bpc-ovz's debug log).
fn bench_lib(f: &str, args: &[&str]) -> String {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/bench-lib.sh");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}'; {f} \"$@\"", lib.display()))
        .arg("bench-lib")
        .args(args)
        .output()
        .expect("bash");
    assert!(o.status.success(), "{f} {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn lines(p: &Path) -> usize {
    fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn bench_lib_reads_downtime_per_mode() {
    let bed = common::Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(101, "ve101.bench", "10.77.0.101", true);
    let velog = hn1.path("/var/log/vzsim/ve-101.log");
    let velog_s = velog.to_str().expect("utf-8 path");
    let log_s = bed.log.to_str().expect("utf-8 path").to_string();
    let base = fs::read_to_string(&bed.config).expect("config");
    assert!(base.contains("snapshot:\n  size: 64M\n"), "{base}");

    // The bare commands, as the bench's reference runs them on the HN.
    let from = lines(&velog).to_string();
    hn1.exec_ok("vzctl --skiplock chkpnt 101 --suspend >/dev/null");
    assert_eq!(bench_lib("ve_downtime", &[velog_s, &from]), "nan open");
    hn1.exec_ok("vzctl --skiplock chkpnt 101 --resume >/dev/null");
    let got = bench_lib("ve_downtime", &[velog_s, &from]);
    let (ms, kind) = got.split_once(' ').expect("MS KIND");
    assert_eq!(kind, "suspend", "{got}");
    assert!(ms.parse::<u64>().is_ok(), "{got}");
    let from = lines(&velog).to_string();
    hn1.exec_ok("vzctl --skiplock stop 101 >/dev/null; vzctl --skiplock start 101 >/dev/null");
    let got = bench_lib("ve_downtime", &[velog_s, &from]);
    assert!(got.ends_with(" stop"), "{got}");
    assert!(
        got.split(' ')
            .next()
            .unwrap_or("")
            .parse::<u64>()
            .unwrap_or(0)
            > 0,
        "{got}"
    );

    for mode in ["stop", "suspend", "live"] {
        fs::write(
            &bed.config,
            base.replace(
                "snapshot:\n  size: 64M\n",
                &format!("snapshot:\n  size: 64M\n  modes: [{mode}]\n"),
            ),
        )
        .expect("config");
        let from = lines(&velog).to_string();
        let lfrom = lines(&bed.log).to_string();
        let t0 = Instant::now();
        let o = bed.rsync_bpc4("ve101.bench", "/etc/", &bed.path(mode), true, &[]);
        let wall_ms = t0.elapsed().as_millis() as u64;
        common::assert_ok(&o, &format!("backup in {mode} mode"));
        let got = bench_lib("ve_downtime", &[velog_s, &from]);
        let reported = bench_lib("reported_downtime", &[&log_s, &lfrom]);
        let gap = bench_lib("step_gap_ms", &[&log_s, &lfrom, "downtime", "mount"]);
        let gap: u64 = gap
            .parse()
            .unwrap_or_else(|_| panic!("{mode}: step gap {gap:?}"));
        assert!(
            gap > 0 && gap < wall_ms,
            "{mode}: step gap {gap} ms, wall {wall_ms} ms"
        );
        if mode == "live" {
            assert_eq!(got, "0 none", "live: the VE's log");
            assert_eq!(reported, "", "live: no downtime line");
            continue;
        }
        // The VE's own down interval lies inside what bpc-ovz's HN-side script measured, which
        // lies between the downtime step's start and the first undo as bpc-ovz's log times them
        // (the VE's start runs on in the background after the downtime step; step `started`
        // waits for it before the undos).
        let outer = bench_lib("step_gap_ms", &[&log_s, &lfrom, "downtime", "undo"]);
        let outer: u64 = outer
            .parse()
            .unwrap_or_else(|_| panic!("{mode}: downtime..undo {outer:?}"));
        let (ms, kind) = got.split_once(' ').expect("MS KIND");
        assert_eq!(kind, mode, "{got}");
        let ms: u64 = ms.parse().expect("ms");
        let (rep, parts) = reported.split_once(' ').expect("MS PARTS");
        let rep: u64 = rep.parse().expect("reported ms");
        assert!(parts.starts_with(&format!("{mode}=")), "{reported}");
        assert!(
            ms > 0 && ms <= rep && rep <= outer,
            "{mode}: VE log {ms} ms, reported {rep} ms, downtime step to first undo {outer} ms"
        );
    }
}
