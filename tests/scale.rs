//! Scale: `bpc-ovz refresh` (and `locate` through the VE cache) against 100 hardware nodes.
//!
//! The full simulated HN (tests/simhn: a mount namespace, loop devices, ...) is too heavy for 100,
//! so this bed has *lightweight* HNs. Each is a real SSH endpoint on its own loopback port with
//! its own ed25519 host key (its own known_hosts line), accepting only the test's client key, and
//! runs every exec request with `/bin/sh -c` and a PATH whose `vzlist` answers from that HN's VE
//! table in vzctl 4.x's format (and logs the request). Two kinds of endpoint:
//!
//! - [`Kind::Russh`] (the default): an SSH server inside the test process (russh's server side, one
//!   listener and host key per HN); the command still runs in a real `/bin/sh`. Cheap: 100 of them
//!   cost little more than their 100 shells, so the suite stays fast and the benchmark measures
//!   bpc-ovz rather than the HN emulation.
//! - [`Kind::Sshd`]: one OpenSSH `sshd` process per HN (ForceCommand `hn-shell`). The real thing,
//!   but each connection costs OpenSSH ~50-150 ms of CPU on this machine (fork, re-exec, privilege
//!   separation), all of it on the same 2 cores as bpc-ovz: fine for a few HNs, slow for 100.
//!
//! Nothing else of an HN is there: these HNs can be listed, not backed up.
//!
//! The benchmark (`contrib/bench-refresh.sh`, i.e. `cargo test --release --test scale --
//! --ignored --nocapture`) prints refresh times for 1, 10 and 100 HNs.

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bpc-ovz")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `vzlist` for a lightweight HN: `-a -H -o veid,status,hostname` and `-a -H -o veid,ip` from
/// `$HN_DIR/ves` (`VEID STATUS HOSTNAME IP...` per line), laid out as vzctl 4.x's vzlist does
/// (CTID `%10s`, STATUS `%-9s` when not last, the last field whole). The body of the script
/// (after the first two lines) is also used as a shell function by [`Kind::Russh`] HNs.
const VZLIST: &str = r#"#!/bin/sh
# vzlist stand-in of the scale test bed (see tests/scale.rs).
fields=
while [ $# -gt 0 ]; do
	case "$1" in
	-a|-H) ;;
	-o) shift; fields=$1 ;;
	*) echo "vzlist: unsupported argument $1" >&2; exit 1 ;;
	esac
	shift
done
[ -s "$HN_DIR/ves" ] || { echo "Container(s) not found" >&2; exit 0; }
while read -r id st host ips; do
	case "$fields" in
	veid,status,hostname) printf '%10s %-9s %s\n' "$id" "$st" "$host" ;;
	veid,ip) printf '%10s %s\n' "$id" "$ips" ;;
	*) echo "Unknown field: $fields" >&2; exit 1 ;;
	esac
done < "$HN_DIR/ves"
"#;

/// The sshd ForceCommand: log the request, then run it as sshd would, with this HN's tools.
const HN_SHELL: &str = r#"#!/bin/sh
# ForceCommand of a lightweight HN (tests/scale.rs): HN_DIR is the HN's directory.
HN_DIR=$1
export HN_DIR
PATH=${0%/*}:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
printf '%s\n' "$SSH_ORIGINAL_COMMAND" >> "$HN_DIR/exec.log"
# An HN that takes $HN_DIR/delay seconds to answer (a busy HN, a long way off).
if [ -s "$HN_DIR/delay" ]; then read -r d < "$HN_DIR/delay"; sleep "$d"; fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"#;

/// [`VZLIST`] as a shell function (a subshell, so `exit` and its variables stay inside), which the
/// in-process servers define before the command: one process per request instead of three.
fn vzlist_function() -> String {
    let body: Vec<&str> = VZLIST.lines().skip(2).collect();
    format!("vzlist() (\n{}\n)\n", body.join("\n"))
}

/// What answers SSH for a lightweight HN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Russh,
    Sshd,
}

pub struct LightHn {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    sshd: Option<Child>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl LightHn {
    pub fn exec_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("exec.log")).unwrap_or_default()
    }
    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(self.dir.join("exec.log"));
    }
    /// Stop this HN: its sshd (the one process this bed started for it) or its server task.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.server.take() {
            t.abort();
            // The listener is closed once the task is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The in-process SSH server of one lightweight HN ([`Kind::Russh`]).
mod hn_server {
    use std::path::PathBuf;
    use std::sync::Arc;

    use russh::keys::PublicKey;
    use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
    use russh::{Channel, ChannelId};

    #[derive(Clone)]
    pub struct Hn {
        pub dir: PathBuf,
        pub bin: PathBuf,
        pub authorized: Arc<PublicKey>,
    }

    impl server::Server for Hn {
        type Handler = Hn;
        fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> Hn {
            self.clone()
        }
    }

    impl server::Handler for Hn {
        type Error = russh::Error;

        async fn auth_publickey(
            &mut self,
            user: &str,
            key: VerifiedPublicKey<'_>,
        ) -> Result<Auth, Self::Error> {
            if user == "root" && key.public_key.key_data() == self.authorized.key_data() {
                Ok(Auth::Accept)
            } else {
                Ok(Auth::reject())
            }
        }

        async fn channel_open_session(
            &mut self,
            _channel: Channel<Msg>,
            reply: ChannelOpenHandle,
            _session: &mut Session,
        ) -> Result<(), Self::Error> {
            reply.accept().await;
            Ok(())
        }

        /// As sshd does: log the request, run it with `/bin/sh -c`, relay its output and exit code.
        async fn exec_request(
            &mut self,
            channel: ChannelId,
            data: &[u8],
            session: &mut Session,
        ) -> Result<(), Self::Error> {
            let cmd = String::from_utf8_lossy(data).into_owned();
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("exec.log"))
            {
                use std::io::Write as _;
                let _ = writeln!(f, "{cmd}");
            }
            session.channel_success(channel)?;
            let handle = session.handle();
            let (dir, bin) = (self.dir.clone(), self.bin.clone());
            tokio::spawn(async move {
                // An HN that takes `delay` seconds to answer (a busy HN, a long way off).
                let delay = std::fs::read_to_string(dir.join("delay"))
                    .ok()
                    .and_then(|d| d.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                if delay > 0.0 {
                    tokio::time::sleep(std::time::Duration::from_secs_f64(delay)).await;
                }
                let out = tokio::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(format!("{}{cmd}", super::vzlist_function()))
                    .env_clear()
                    .env(
                        "PATH",
                        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
                    )
                    .env("HN_DIR", &dir)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await;
                let code = match out {
                    Ok(o) => {
                        let _ = handle.data(channel, o.stdout).await;
                        let _ = handle.extended_data(channel, 1, o.stderr).await;
                        o.status.code().unwrap_or(255) as u32
                    }
                    Err(e) => {
                        let _ = handle
                            .extended_data(channel, 1, format!("sh: {e}\n").into_bytes())
                            .await;
                        127
                    }
                };
                let _ = handle.exit_status_request(channel, code).await;
                let _ = handle.eof(channel).await;
                let _ = handle.close(channel).await;
            });
            Ok(())
        }
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub hns: Vec<LightHn>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// Runs the in-process servers ([`Kind::Russh`]).
    rt: Option<tokio::runtime::Runtime>,
}

impl Fleet {
    /// Start `n` HNs: hnI holds VEs I01 and I02 (`veI01.example.com`, ...); the caller adds more.
    pub fn new(n: usize, kind: Kind) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("bpcovz-fleet")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).expect("bin");
        for (name, text) in [("vzlist", VZLIST), ("hn-shell", HN_SHELL)] {
            let p = bin_dir.join(name);
            std::fs::write(&p, text).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let key = dir.path().join("id_ed25519");
        keygen(&key);
        let ak = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &ak).expect("authorized_keys");
        let rt = (kind == Kind::Russh).then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
        });
        let authorized = Arc::new(
            russh::keys::PublicKey::from_openssh(
                &std::fs::read_to_string(key.with_extension("pub")).expect("pub"),
            )
            .expect("client public key"),
        );
        let mut hns = Vec::new();
        let mut kh = String::new();
        for i in 1..=n {
            let name = format!("hn{i}");
            let hdir = dir.path().join(&name);
            std::fs::create_dir_all(&hdir).expect("hn dir");
            let hk = hdir.join("host_key");
            keygen(&hk);
            let pubkey = std::fs::read_to_string(hk.with_extension("pub")).expect("pub");
            let mut w = pubkey.split_whitespace();
            // The in-process server keeps the listener it binds (no port race).
            let listener = match kind {
                Kind::Russh => Some(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")),
                Kind::Sshd => None,
            };
            let port = match &listener {
                Some(l) => l.local_addr().expect("addr").port(),
                None => free_port(),
            };
            kh.push_str(&format!(
                "[127.0.0.1]:{port} {} {}\n",
                w.next().unwrap_or(""),
                w.next().unwrap_or("")
            ));
            std::fs::write(
                hdir.join("ves"),
                format!(
                    "{i}01 running ve{i}01.example.com 10.{}.{}.1\n{i}02 stopped ve{i}02.example.com 10.{}.{}.2\n",
                    i / 256,
                    i % 256,
                    i / 256,
                    i % 256
                ),
            )
            .expect("ves");
            std::fs::set_permissions(&hk, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if let (Some(rt), Some(listener)) = (&rt, listener) {
                let hn = hn_server::Hn {
                    dir: hdir.clone(),
                    bin: bin_dir.clone(),
                    authorized: authorized.clone(),
                };
                let config = Arc::new(russh::server::Config {
                    keys: vec![russh::keys::load_secret_key(&hk, None).expect("host key")],
                    auth_rejection_time: Duration::from_millis(10),
                    auth_rejection_time_initial: Some(Duration::ZERO),
                    nodelay: true,
                    ..Default::default()
                });
                listener.set_nonblocking(true).expect("nonblocking");
                let task = rt.spawn(async move {
                    use russh::server::Server as _;
                    let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let mut hn = hn;
                    let _ = hn.run_on_socket(config, &l).await;
                });
                hns.push(LightHn {
                    name,
                    dir: hdir,
                    port,
                    sshd: None,
                    server: Some(task),
                });
                continue;
            }
            let cfg = hdir.join("sshd_config");
            std::fs::write(
                &cfg,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nAddressFamily inet\nHostKey {hk}\nPidFile {pid}\n\
                     AuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                     MaxStartups 100:30:200\nMaxSessions 50\nUseDNS no\nPrintMotd no\nX11Forwarding no\n\
                     LogLevel ERROR\nForceCommand {shell} {hdir}\n",
                    hk = hk.display(),
                    pid = hdir.join("sshd.pid").display(),
                    ak = ak.display(),
                    shell = bin_dir.join("hn-shell").display(),
                    hdir = hdir.display(),
                ),
            )
            .expect("sshd_config");
            let child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&cfg)
                .arg("-E")
                .arg(hdir.join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd");
            hns.push(LightHn {
                name,
                dir: hdir,
                port,
                sshd: Some(child),
                server: None,
            });
        }
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, kh).expect("known_hosts");
        let fleet = Fleet {
            dir,
            hns,
            key,
            known_hosts,
            rt,
        };
        // Every HN listens before the bed is handed out.
        let deadline = Instant::now() + Duration::from_secs(30);
        for h in &fleet.hns {
            while TcpStream::connect(("127.0.0.1", h.port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{}: sshd does not listen on {}: {}",
                    h.name,
                    h.port,
                    std::fs::read_to_string(h.dir.join("sshd.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        fleet
    }

    pub fn hn(&self, i: usize) -> &LightHn {
        &self.hns[i - 1]
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("ve-cache.json")
    }

    /// A config listing the first `n` HNs (plus `extra` YAML); returns its path.
    pub fn config(&self, n: usize, extra: &str) -> PathBuf {
        let mut y = String::from("hns:\n");
        for h in &self.hns[..n] {
            y.push_str(&format!(
                "  - host: 127.0.0.1\n    port: {}\n    user: root\n    name: {}\n",
                h.port, h.name
            ));
        }
        y.push_str(&format!(
            "ssh:\n  identity_files: [{}]\n  known_hosts: [{}]\n  agent: false\n  connect_timeout: 20s\n\
             locate_timeout: 30s\ncache: {}\nlog:\n  file: {}\n  level: info\n{extra}",
            self.key.display(),
            self.known_hosts.display(),
            self.cache().display(),
            self.dir.path().join("bpc-ovz.log").display(),
        ));
        let p = self.dir.path().join(format!("config-{n}.yaml"));
        std::fs::write(&p, y).expect("config");
        p
    }

    pub fn bpc_ovz(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("bpc-ovz")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &mut self.hns {
            if let Some(mut c) = h.sshd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(o.status.success(), "ssh-keygen: {o:?}");
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Which HNs received a `vzlist` request.
fn asked(f: &Fleet) -> Vec<String> {
    f.hns
        .iter()
        .filter(|h| h.exec_log().contains("vzlist"))
        .map(|h| h.name.clone())
        .collect()
}

#[test]
fn refresh_finds_a_ve_on_hn_97_of_100_and_locate_asks_only_that_hn() {
    let t0 = Instant::now();
    let mut f = Fleet::new(100, Kind::Russh);
    std::fs::OpenOptions::new()
        .append(true)
        .open(f.hn(97).dir.join("ves"))
        .and_then(|mut w| w.write_all(b"31337 running target.example.com 10.97.0.1 fd00::97\n"))
        .expect("add VE");
    let boot = t0.elapsed();
    let cfg = f.config(100, "");

    // Every HN answers; the VE is on hn97; the cache holds all 100 HNs.
    let t = Instant::now();
    let o = f.bpc_ovz(&cfg, &["refresh", "target.example.com"]);
    let took = t.elapsed();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "one summary line: {out}");
    assert!(out.contains("100 HNs asked, 100 answered"), "{out}");
    assert!(out.contains("201 VEs listed"), "{out}");
    assert!(
        out.contains("target.example.com is VE 31337 on hn97 (running)"),
        "{out}"
    );
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.cache()).expect("cache")).expect("json");
    assert_eq!(cache["hns"].as_object().map(|m| m.len()), Some(100));
    assert_eq!(cache["ves"].as_array().map(|v| v.len()), Some(201));
    assert_eq!(asked(&f).len(), 100);

    // locate (here through `plan`) asks the cached HN only. These HNs cannot be probed further
    // (no vzctl), so plan stops after locating, with a clear error.
    for h in &f.hns {
        h.clear_log();
    }
    let o = f.bpc_ovz(&cfg, &["plan", "10.97.0.1"]);
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(asked(&f), vec!["hn97"], "{err}");
    assert!(err.contains("vzctl status 31337"), "{err}");

    // One HN down: reported; fatal here because it may hold the VE asked for (tests/admin.rs
    // covers the other exit codes on two HNs).
    f.hns[49].stop();
    let o = f.bpc_ovz(&cfg, &["refresh", "nosuch.example.com"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(255), "{out}{err}");
    assert!(
        out.contains("100 HNs asked, 99 answered, 1 unreachable (hn50)"),
        "{out}"
    );
    assert!(err.contains("hn50: unreachable: cannot connect"), "{err}");
    assert!(
        out.contains("hn50 that may hold it did not answer"),
        "{out}"
    );
    // ... and the cache keeps what hn50 held at the last refresh.
    let c = std::fs::read_to_string(f.cache()).expect("cache");
    assert!(c.contains("ve5001.example.com"), "{c}");
    eprintln!(
        "100 HNs: bed up in {:.1}s, first refresh {:.2}s",
        boot.as_secs_f64(),
        took.as_secs_f64()
    );
}

#[test]
fn per_hn_timeout_and_bounded_concurrency() {
    let f = Fleet::new(3, Kind::Sshd);
    // An "HN" that accepts TCP but never speaks SSH (the kernel completes the handshake).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let cfg = f.config(3, "concurrency:\n  hn_queries: 1\n");
    let mut y = std::fs::read_to_string(&cfg).expect("cfg");
    y = y.replacen(
        "hns:\n",
        &format!("hns:\n  - host: 127.0.0.1\n    port: {port}\n    name: silent\n"),
        1,
    );
    std::fs::write(&cfg, y).expect("cfg");
    let t = Instant::now();
    let o = f.bpc_ovz(
        &cfg,
        &["refresh", "--timeout", "1500ms", "ve201.example.com"],
    );
    let took = t.elapsed();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("4 HNs asked, 3 answered, 1 unreachable (silent)"),
        "{out}"
    );
    assert!(
        err.contains("silent: unreachable: no answer within 1.5s"),
        "{err}"
    );
    assert!(out.contains("ve201.example.com is VE 201 on hn2"), "{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(silent);
}

/// `contrib/bench-refresh.sh` (`cargo test --release --test scale -- --ignored --nocapture
/// bench`): refresh wall time for 1, 10 and 100 HNs, median of 5 runs each, with HNs that answer
/// at once and with HNs that take 0.5 s to answer (a busy real HN, a long way off; the wait costs
/// no CPU here, as it costs none on the BackupPC server). `BENCH_KIND=sshd` (or
/// `both`) also measures OpenSSH sshd HNs. Everything shares this machine's cores: the HN side
/// (shells, sshd) competes with bpc-ovz, which a real network of HNs does not.
#[test]
#[ignore]
fn bench_refresh_1_10_100() {
    let kinds: Vec<Kind> = match std::env::var("BENCH_KIND").as_deref() {
        Ok("sshd") => vec![Kind::Sshd],
        Ok("both") => vec![Kind::Russh, Kind::Sshd],
        _ => vec![Kind::Russh],
    };
    let sizes = [1usize, 10, 100];
    let runs = 5;
    println!();
    println!(
        "bpc-ovz refresh ({}), median of {runs} runs, {} cores",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        num_cpus()
    );
    println!(
        "{:<14} {:<24} {:>8} {:>8} {:>8} {:>9} {:>12} {:>12}",
        "HN endpoint",
        "HN answer time",
        "1 HN",
        "10 HNs",
        "100 HNs",
        "100 vs 1",
        "CPU@1 HN",
        "CPU@100 HNs"
    );
    let mut verdict = Vec::new();
    for kind in kinds {
        let f = Fleet::new(100, kind);
        let configs: Vec<PathBuf> = sizes.iter().map(|n| f.config(*n, "")).collect();
        // Median wall time, and bpc-ovz's own CPU time (user + system) per run.
        let measure = |cfg: &Path| -> (f64, f64) {
            let _ = f.bpc_ovz(cfg, &["refresh"]); // warm-up
            let mut cpu = 0.0;
            let mut t: Vec<f64> = (0..runs)
                .map(|_| {
                    let (wall, c) = timed_refresh(cfg);
                    cpu += c;
                    wall
                })
                .collect();
            t.sort_by(|a, b| a.total_cmp(b));
            (t[runs / 2], cpu / runs as f64)
        };
        for delay in ["", "0.5"] {
            for h in &f.hns {
                std::fs::write(h.dir.join("delay"), delay).expect("delay");
            }
            let m: Vec<(f64, f64)> = configs.iter().map(|c| measure(c)).collect();
            let t: Vec<f64> = m.iter().map(|x| x.0).collect();
            let ratio = t[2] / t[0];
            let label = if delay.is_empty() {
                "at once (CPU-bound)".to_string()
            } else {
                format!("answers after {delay}s")
            };
            let k = match kind {
                Kind::Russh => "russh+sh",
                Kind::Sshd => "OpenSSH sshd",
            };
            println!(
                "{k:<14} {label:<24} {:>7.3}s {:>7.3}s {:>7.3}s {:>8.2}x {:>10.0}ms {:>10.0}ms",
                t[0],
                t[1],
                t[2],
                ratio,
                m[0].1 * 1000.0,
                m[2].1 * 1000.0
            );
            verdict.push((format!("{k}, {label}"), ratio));
        }
    }
    println!(
        "(CPU = bpc-ovz's own user+system time per refresh; the rest of the wall time is the HN side, \
         which shares these cores here)"
    );
    for (label, r) in verdict {
        println!(
            "goal (100 HNs in at most 2x the time of 1) with {label}: {}",
            if r <= 2.0 { "met" } else { "NOT met" }
        );
    }
}

/// One `bpc-ovz refresh`: wall time and the CPU time (user + system) of that process alone,
/// from wait4(2) (the HN-side shells of the in-process servers are children of this test too).
fn timed_refresh(cfg: &Path) -> (f64, f64) {
    let start = Instant::now();
    let child = Command::new(bin())
        .arg("--config")
        .arg(cfg)
        .arg("refresh")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpc-ovz");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child, with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "refresh failed: {status}"
    );
    std::mem::forget(child); // already reaped
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (wall, tv(ru.ru_utime) + tv(ru.ru_stime))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
