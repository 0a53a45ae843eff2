//! Test bed: simulated HNs (real sshd, real filesystems, stand-in OpenVZ/LVM tools) from
//! `tests/simhn`, a generated client key and known_hosts, and a bpc-ovz config pointing at them.
//! Everything is stopped by PID when the bed is dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "../../examples/delay_proxy.rs"]
mod delay_proxy;

/// Starts the delay proxy in front of `upstream` on a thread of this test; returns its port.
pub fn start_delay_proxy(upstream: u16, delay: std::time::Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            delay_proxy::serve(
                l,
                std::net::SocketAddr::from(([127, 0, 0, 1], upstream)),
                delay,
            )
            .await;
        });
    });
    port
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bpc-ovz")
}

pub fn simhn() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/simhn")
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fail the test with the command's output unless it succeeded.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

pub fn sh(script: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(script))
}

/// Lists what bpc-ovz may leave on an HN (one line each; nothing when clean): snapshot LVs,
/// snapshot mounts and mount points, held bpc-ovz locks, vzctl locks.
pub const LEFTOVERS_SH: &str = "lvs --noheadings -o lv_name 2>/dev/null | grep bpcovz- | sed 's/^/lv: /'; \
     grep bpc-ovz /proc/mounts | sed 's/^/mount: /'; \
     for d in /run/bpc-ovz/mnt/*; do [ -e \"$d\" ] && echo \"dir: $d\"; done; \
     for l in /run/bpc-ovz/ve.*.lock /run/bpc-ovz/slot.*; do [ -e \"$l\" ] && { flock -n \"$l\" true || echo \"held: $l\"; }; done; \
     for l in /var/lib/vz/lock/*.lck; do [ -e \"$l\" ] && echo \"vzlock: $l $(cat $l)\"; done; \
     for f in /run/bpc-ovz/state.*; do [ -e \"$f\" ] && echo \"state: $f\"; done; true";

pub struct Hn {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub pid: u32,
    pub vg: String,
}

impl Hn {
    /// Run a shell command inside the HN (its mount namespace).
    pub fn exec(&self, script: &str) -> Output {
        run(Command::new(simhn().join("hn-exec"))
            .arg(&self.dir)
            .arg("sh")
            .arg("-c")
            .arg(script))
    }
    pub fn exec_ok(&self, script: &str) -> String {
        let o = self.exec(script);
        assert!(
            o.status.success(),
            "{}: `{script}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// A path inside the HN's mount namespace, seen from the host.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid, p))
    }
    pub fn create_ve(&self, veid: u32, hostname: &str, ip: &str, running: bool) {
        let o = run(Command::new(simhn().join("ve-create"))
            .arg(&self.dir)
            .arg(veid.to_string())
            .arg(hostname)
            .arg(ip)
            .arg(if running { "running" } else { "stopped" }));
        assert!(
            o.status.success(),
            "ve-create: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    pub fn ve_running(&self, veid: u32) -> bool {
        self.exec_ok(&format!("vzctl status {veid}"))
            .contains(" running")
    }
    /// Snapshot LVs, snapshot mounts and held locks that bpc-ovz left behind (should be empty).
    pub fn leftovers(&self) -> Vec<String> {
        let out = self.exec_ok(LEFTOVERS_SH);
        out.lines()
            .map(String::from)
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
    /// Every command line the HN's sshd was asked to run.
    pub fn exec_log(&self) -> String {
        std::fs::read_to_string(self.path("/var/log/vzsim/exec.log")).unwrap_or_default()
    }
    pub fn commands_log(&self) -> String {
        std::fs::read_to_string(self.path("/var/log/vzsim/commands.log")).unwrap_or_default()
    }
    pub fn ve_log(&self, veid: u32) -> String {
        std::fs::read_to_string(self.path(&format!("/var/log/vzsim/ve-{veid}.log")))
            .unwrap_or_default()
    }
    pub fn fault(&self, name: &str, count: Option<u32>) {
        self.exec_ok(&format!(
            "mkdir -p /etc/vzsim/faults && printf '%s' '{}' > /etc/vzsim/faults/{name}",
            count.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
}

/// The ticker counter on the VE log's last `EVENT counter=N ...` line (`stopped`, `suspended`):
/// the value the VE had when it was stopped or suspended.
pub fn last_counter(log: &str, event: &str) -> Option<String> {
    let prefix = format!("{event} counter=");
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|r| r.split_whitespace().next())
        .map(String::from)
}

/// What the VE log says right after a backup: the counter value at the last stop (bpc-ovz's) and
/// the number of boots so far.
pub struct Frozen {
    pub counter: Option<String>,
    pub boots: usize,
}

pub fn frozen(n: &dyn Node, veid: u32) -> Frozen {
    let log = n.ve_log(veid);
    Frozen {
        counter: last_counter(&log, "stopped"),
        boots: log.lines().filter(|l| l.starts_with("started")).count(),
    }
}

/// The backup under `dest` holds the VE's ticker counter exactly as the VE's log recorded it at
/// the last `EVENT counter=N` line: the snapshot froze the VE there.
pub fn assert_holds_frozen_counter(n: &dyn Node, veid: u32, event: &str, dest: &Path) {
    let log = n.ve_log(veid);
    let frozen = last_counter(&log, event)
        .unwrap_or_else(|| panic!("no `{event} counter=` line in VE {veid}'s log:\n{log}"));
    let got = std::fs::read_to_string(dest.join("var/lib/ticker/counter"))
        .expect("the ticker's counter in the backup");
    assert_eq!(
        got.trim(),
        frozen,
        "the backup holds the counter frozen at `{event}`; VE {veid}'s log:\n{log}"
    );
}

/// A hardware node a scenario runs against: a simulated HN ([`Hn`]) or a VM hardware node with
/// real LVM (tests/vm.rs), so one choreography can run on both and their results be compared.
pub trait Node {
    fn name(&self) -> &str;
    fn vg(&self) -> &str;
    /// Runs a shell command on the node as root, outside bpc-ovz (not in its exec log).
    fn exec(&self, script: &str) -> Output;
    fn exec_ok(&self, script: &str) -> String {
        let o = self.exec(script);
        assert!(
            o.status.success(),
            "{}: `{script}` failed: {}{}",
            self.name(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// Adds a VE with tests/simhn/ve-create's content, started if `running`.
    fn create_ve(&self, veid: u32, hostname: &str, ip: &str, running: bool);
    fn ve_running(&self, veid: u32) -> bool {
        self.exec_ok(&format!("vzctl status {veid}"))
            .contains(" running")
    }
    /// What bpc-ovz left behind (see [`LEFTOVERS_SH`]); empty when clean.
    fn leftovers(&self) -> Vec<String> {
        self.exec_ok(LEFTOVERS_SH)
            .lines()
            .map(String::from)
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
    fn ve_log(&self, veid: u32) -> String {
        self.exec_ok(&format!(
            "cat /var/log/vzsim/ve-{veid}.log 2>/dev/null; true"
        ))
    }
    /// The stand-ins' command log (`vzctl ...` lines; on a simulated HN the lvm ones too).
    fn commands_log(&self) -> String {
        self.exec_ok("cat /var/log/vzsim/commands.log 2>/dev/null; true")
    }
    /// Every command line the node's sshd ran for a client (bpc-ovz).
    fn exec_log(&self) -> String {
        self.exec_ok("cat /var/log/vzsim/exec.log 2>/dev/null; true")
    }
    /// A directory of the node as a host path (a VM copies it into `scratch` first).
    fn tree(&self, path: &str, scratch: &Path) -> PathBuf;
    /// Leaves exactly `free` bytes (a multiple of 4 MiB) free in the VG; `None` undoes it.
    fn set_vg_free(&self, free: Option<u64>);
}

impl Node for Hn {
    fn name(&self) -> &str {
        &self.name
    }
    fn vg(&self) -> &str {
        &self.vg
    }
    fn exec(&self, script: &str) -> Output {
        Hn::exec(self, script)
    }
    fn create_ve(&self, veid: u32, hostname: &str, ip: &str, running: bool) {
        Hn::create_ve(self, veid, hostname, ip, running)
    }
    fn exec_log(&self) -> String {
        Hn::exec_log(self)
    }
    fn tree(&self, path: &str, _scratch: &Path) -> PathBuf {
        self.path(path)
    }
    fn set_vg_free(&self, free: Option<u64>) {
        match free {
            // The simulated VG holds the 512 MiB origin `vz` (and any snapshots).
            Some(f) => self.exec_ok(&format!(
                "echo $(( {f} + $(lvs --noheadings --units b --nosuffix -o lv_size | awk '{{s += $1}} END {{print s}}') )) > /etc/vzsim/vg_size"
            )),
            None => self.exec_ok("rm -f /etc/vzsim/vg_size"),
        };
    }
}

pub struct Bed {
    pub dir: tempfile::TempDir,
    pub hns: Vec<Hn>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Bed {
    /// Boot `n` HNs: hn1 (ext4, VG `vg-data`), hn2 (xfs, VG `vg0`), hn3.. alternating.
    pub fn new(n: usize) -> Bed {
        let dir = tempfile::Builder::new()
            .prefix("bpcovz-bed")
            .tempdir_in(scratch())
            .expect("tempdir");
        let key = dir.path().join("id_ed25519");
        let o = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key));
        assert!(o.status.success());
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
        let mut hns = Vec::new();
        let mut kh = String::new();
        // If this panics half-way (an HN that does not come up), the HNs booted so far are shut
        // down here: the TempDir goes, and their sshd must not outlive it.
        let mut booted = Booted(Vec::new());
        for i in 0..n {
            let name = format!("hn{}", i + 1);
            let hdir = dir.path().join(&name);
            let (vg, fs) = if i % 2 == 0 {
                ("vg-data", "ext4")
            } else {
                ("vg0", "xfs")
            };
            booted.0.push(hdir.clone());
            // free_port() cannot hold the port: another test may bind it before this HN's sshd
            // does. hn-up then fails on "Address already in use" (undoing its boot); try again
            // on another port.
            let (mut port, mut o);
            let mut tries = 0;
            loop {
                port = free_port();
                o = run(Command::new(simhn().join("hn-up"))
                    .arg(&hdir)
                    .arg(&name)
                    .arg(port.to_string())
                    .arg(vg)
                    .arg(fs));
                tries += 1;
                if o.status.success()
                    || tries == 5
                    || !String::from_utf8_lossy(&o.stderr).contains("already in use")
                {
                    break;
                }
                eprintln!("hn-up {name}: port {port} taken meanwhile; another port");
            }
            assert!(
                o.status.success(),
                "hn-up {name}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let pid: u32 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .parse()
                .expect("hn-up prints the sshd pid");
            let ak = hdir.join("ssh/authorized_keys");
            let mut cur = std::fs::read_to_string(&ak).unwrap_or_default();
            cur.push_str(&pubkey);
            std::fs::write(&ak, cur).expect("authorized_keys");
            let hk = std::fs::read_to_string(hdir.join("ssh/ssh_host_ed25519_key.pub"))
                .expect("host key");
            let mut w = hk.split_whitespace();
            kh.push_str(&format!(
                "[127.0.0.1]:{port} {} {}\n",
                w.next().unwrap_or(""),
                w.next().unwrap_or("")
            ));
            hns.push(Hn {
                name,
                dir: hdir,
                port,
                pid,
                vg: vg.to_string(),
            });
        }
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, kh).expect("known_hosts");
        let config = dir.path().join("config.yaml");
        let log = dir.path().join("bpc-ovz.log");
        booted.0.clear(); // the Bed shuts them down from now on
        let bed = Bed {
            dir,
            hns,
            key,
            known_hosts,
            config,
            log,
        };
        bed.write_config("");
        bed
    }

    /// (Re)write the config; `extra` is appended (YAML at top level).
    pub fn write_config(&self, extra: &str) {
        self.write_config_with("64M", extra)
    }

    pub fn write_config_with(&self, snapshot_size: &str, extra: &str) {
        let mut y = String::from("hns:\n");
        for h in &self.hns {
            y.push_str(&format!(
                "  - host: 127.0.0.1\n    port: {}\n    user: root\n    name: {}\n",
                h.port, h.name
            ));
        }
        y.push_str(&format!(
            "ssh:\n  identity_files: [{}]\n  known_hosts: [{}]\n  agent: false\n  connect_timeout: 10s\nsnapshot:\n  size: {}\nlog:\n  file: {}\n  level: debug\n",
            self.key.display(),
            self.known_hosts.display(),
            snapshot_size,
            self.log.display()
        ));
        // The VE cache of this bed (never the machine's /var/lib/bpc-ovz one).
        y.push_str(&format!("cache: {}\n", self.cache_path().display()));
        y.push_str(extra);
        std::fs::write(&self.config, y).expect("config");
    }

    /// The `cache:` file of this bed's config (written by `bpc-ovz refresh`).
    pub fn cache_path(&self) -> PathBuf {
        self.dir.path().join("ve-cache.json")
    }

    pub fn hn(&self, name: &str) -> &Hn {
        self.hns.iter().find(|h| h.name == name).expect("hn")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// BackupPC 4 style: a real rsync client with bpc-ovz as its `-e` program.
    pub fn rsync_bpc4(
        &self,
        host: &str,
        share: &str,
        dest: &Path,
        protect_args: bool,
        extra: &[&str],
    ) -> Output {
        std::fs::create_dir_all(dest).expect("dest");
        let e = format!("{} ssh --config {} -l root", bin(), self.config.display());
        let mut c = Command::new("rsync");
        c.args(["-a", "-H", "--numeric-ids", "--delete"]);
        c.arg(if protect_args {
            "--protect-args"
        } else {
            "--no-protect-args"
        });
        c.args(extra);
        c.arg("-e")
            .arg(e)
            .arg(format!("{host}:{share}"))
            .arg(format!("{}/", dest.display()));
        c.env("PATH", "/bin:/usr/bin");
        run(&mut c)
    }

    /// BackupPC 3 style: `bpc-ovz server $host $sshPath -q -x -l root $host $rsyncPath $argList+`
    /// with fds 0, 1 and 2 on one socket and protocol 28 (File::RsyncP's). The `-e` wrapper is
    /// Perl, escaping `$argList+` exactly as BackupPC's cmdVarSubstitute does.
    pub fn rsync_bpc3(&self, host: &str, share: &str, dest: &Path, restore: bool) -> Output {
        std::fs::create_dir_all(dest).expect("dest");
        self.rsync_bpc3_args(
            host,
            &[&format!("{host}:{share}"), &format!("{}/", dest.display())],
            restore,
        )
    }

    /// BackupPC 3 style with explicit source/destination arguments (a push is a restore).
    pub fn rsync_bpc3_args(&self, host: &str, src_dst: &[&str], restore: bool) -> Output {
        let wrapper = self.path("bpc3-wrapper.pl");
        let script = format!(
            r#"#!/usr/bin/perl
# rsync -e calls: wrapper HOST RSYNC-PATH ARGS...  -> exec the BackupPC 3 RsyncClientCmd form.
use Socket;
my ($host, $rsync, @args) = @ARGV;
shift @args while @args && $args[0] eq '-l';
for (@args) {{ s/([][;&()<>{{}}|^\n\r\t *\$\\'"`?])/\\$1/g; }}
my @cmd = ('{bin}', '--config', '{cfg}', 'server', ({restore} ? ('restore') : ()), $host, '/usr/bin/ssh', '-q', '-x', '-l', 'root', $host, $rsync, @args);
# One socket for fds 0, 1 and 2, as File::RsyncP sets it up.
socketpair(my $a, my $b, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socketpair: $!";
my $pid = fork();
if ($pid == 0) {{
    close $a;
    open(STDIN, '<&', $b); open(STDOUT, '>&', $b); open(STDERR, '>&', $b);
    exec @cmd or die "exec: $!";
}}
close $b;
# Relay between our stdio (rsync's pipes) and the socket.
my $in = fileno(STDIN); my $out = fileno(STDOUT); my $s = fileno($a);
my ($rin, $buf) = ('', '');
# rsync hands its -e child non-blocking pipes: write everything, waiting on EAGAIN.
sub writeall {{ my ($fh, $data) = @_; my $off = 0;
    while ($off < length $data) {{
        my $n = syswrite($fh, $data, length($data) - $off, $off);
        if (defined $n) {{ $off += $n; next; }}
        die "write: $!" unless $!{{EAGAIN}};
        my $w = ''; vec($w, fileno($fh), 1) = 1; select(undef, $w, undef, undef);
    }} }}
my $stdin_open = 1;
while (1) {{
    $rin = ''; vec($rin, $s, 1) = 1; vec($rin, $in, 1) = 1 if $stdin_open;
    select(my $rout = $rin, undef, undef, undef);
    if (vec($rout, $s, 1)) {{ my $n = sysread($a, $buf, 65536); last unless $n; writeall(\*STDOUT, $buf); }}
    if ($stdin_open && vec($rout, $in, 1)) {{ my $n = sysread(STDIN, $buf, 65536); if (!$n) {{ shutdown($a, 1); $stdin_open = 0; }} else {{ writeall($a, $buf); }} }}
}}
waitpid($pid, 0);
exit($? >> 8);
"#,
            bin = bin(),
            cfg = self.config.display(),
            restore = if restore { 1 } else { 0 },
        );
        std::fs::write(&wrapper, script).expect("wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut c = Command::new("rsync");
        c.args([
            "--numeric-ids",
            "--perms",
            "--owner",
            "--group",
            "-D",
            "--links",
            "--hard-links",
            "--times",
            "--block-size=2048",
            "--recursive",
            "--protocol=28",
            "--no-protect-args",
        ]);
        let _ = host;
        c.arg("-e").arg(&wrapper).args(src_dst);
        run(&mut c)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn hn_down(dir: &Path) {
    let _ = Command::new(simhn().join("hn-down"))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Bed {
    fn drop(&mut self) {
        for h in &self.hns {
            hn_down(&h.dir);
        }
    }
}

/// The HNs `Bed::new` has started to boot, shut down if it does not finish.
struct Booted(Vec<PathBuf>);

impl Drop for Booted {
    fn drop(&mut self) {
        for d in &self.0 {
            hn_down(d);
        }
    }
}

/// Scratch space outside the HNs' private /tmp, so both sides see the same files.
pub fn scratch() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&p).expect("scratch");
    p
}

/// One entry of a directory tree, for comparing a backup with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        content: Vec<u8>,
        links_group: Option<String>,
    },
    Symlink {
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
    Other {
        mode: u32,
    },
}

/// Walk `root` (not following symlinks) into a map from relative path to entry. Hard links are
/// compared by group: the group id is the smallest path index sharing the inode.
pub fn manifest(root: &Path, skip: &[&str]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md =
            std::fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        let key = rel.to_string_lossy().to_string();
        if skip
            .iter()
            .any(|s| key == *s || key.starts_with(&format!("{s}/")))
        {
            continue;
        }
        let ft = md.file_type();
        let e = if ft.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&full)
                .expect("read_dir")
                .filter_map(|d| d.ok())
                .map(|d| d.file_name())
                .collect();
            kids.sort();
            for k in kids {
                stack.push(rel.join(k));
            }
            Entry::Dir {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
            }
        } else if ft.is_symlink() {
            Entry::Symlink {
                target: std::fs::read_link(&full).expect("readlink"),
                uid: md.uid(),
                gid: md.gid(),
            }
        } else if ft.is_file() {
            let group = if md.nlink() > 1 {
                Some(
                    inodes
                        .entry((md.dev(), md.ino()))
                        .or_insert_with(|| key.clone())
                        .clone(),
                )
            } else {
                None
            };
            Entry::File {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                content: std::fs::read(&full).expect("read"),
                links_group: group,
            }
        } else {
            Entry::Other { mode: md.mode() }
        };
        if !key.is_empty() {
            out.insert(key, e);
        }
    }
    out
}

/// Assert two manifests are equal, listing the differences.
pub fn assert_same_tree(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in first: {k}")),
            Some(w) if w != v => {
                diffs.push(format!("differs: {k}: {:?} vs {:?}", short(v), short(w)))
            }
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("only in second: {k}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

fn short(e: &Entry) -> String {
    match e {
        Entry::File {
            mode,
            uid,
            gid,
            mtime,
            content,
            links_group,
        } => {
            format!(
                "file mode {mode:o} {uid}:{gid} mtime {mtime} {} bytes links {links_group:?}",
                content.len()
            )
        }
        o => format!("{o:?}"),
    }
}

// ---- Process helpers for fault tests (tests/faults.rs, hostile.rs, concurrency.rs) ----------

/// `(ppid, comm)` of a process, from /proc.
fn proc_stat(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

/// Every process whose parent is `ppid`, by PID.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if proc_stat(pid).map(|(p, _)| p) == Some(ppid) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// The (first) child of `ppid`: the bpc-ovz that a test's rsync started.
pub fn child_of(ppid: u32) -> Option<u32> {
    children_of(ppid).into_iter().next()
}

/// The first child of `ppid` whose command name is `comm` (e.g. the bpc-ovz that rsync started).
pub fn child_named(ppid: u32, comm: &str) -> Option<u32> {
    children_of(ppid)
        .into_iter()
        .find(|&c| proc_stat(c).is_some_and(|(_, n)| n == comm))
}

/// `pid` and all its descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let kids = children_of(out[i]);
        out.extend(kids);
        i += 1;
    }
    out
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// kill(2) of a process the test started (directly or through rsync), by PID.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2); the caller found `pid` as a process it started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Socket inodes of a process's open fds.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// `(local port, remote port, inode)` of every IPv4 TCP socket of this network namespace.
fn tcp_table() -> Vec<(u16, u16, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |a: &str| {
        a.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((port(f.get(1)?)?, port(f.get(2)?)?, f.get(9)?.parse().ok()?))
        })
        .collect()
}

impl Hn {
    /// The HN-side sshd process serving the SSH connection(s) of client process `client`: the
    /// per-connection child of this HN's listening sshd (found by parent PID, and matched to the
    /// client by the TCP ports of the sockets they hold — never by process name).
    pub fn sshd_serving(&self, client: u32) -> Option<u32> {
        let table = tcp_table();
        let mine = socket_inodes(client);
        let client_ports: Vec<u16> = table
            .iter()
            .filter(|(_, rport, ino)| *rport == self.port && mine.contains(ino))
            .map(|(lport, _, _)| *lport)
            .collect();
        if client_ports.is_empty() {
            return None;
        }
        children_of(self.pid).into_iter().find(|&c| {
            let inodes: Vec<u64> = process_tree(c)
                .into_iter()
                .flat_map(socket_inodes)
                .collect();
            table.iter().any(|(lport, rport, ino)| {
                *lport == self.port && client_ports.contains(rport) && inodes.contains(ino)
            })
        })
    }
}

/// A BackupPC 4 style backup running in the background: a real rsync client whose `-e` program
/// is `bpc-ovz ssh` behind a tiny wrapper that records bpc-ovz's own exit code.
pub struct Backup {
    pub rsync: std::process::Child,
    pub dest: PathBuf,
    code_file: PathBuf,
}

/// How a [`Backup`] ended.
pub struct Finished {
    /// bpc-ovz's exit code (`None` if it never ran or was killed by a signal; 128+N then).
    pub code: Option<i32>,
    pub rsync_ok: bool,
    pub stderr: String,
}

impl Finished {
    /// bpc-ovz's own stderr lines (the XferLOG part it wrote), without rsync's.
    pub fn bpc_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("bpc-ovz"))
            .collect()
    }
    /// bpc-ovz's last stderr line: the one that names the outcome.
    pub fn last_line(&self) -> &str {
        self.bpc_lines().last().copied().unwrap_or("")
    }
}

impl Backup {
    /// Start `rsync -a --protect-args [extra] -e 'bpc-ovz ssh --config CONFIG' HOST:/ DEST/`.
    pub fn start(bed: &Bed, config: &Path, host: &str, dest: &Path, extra: &[&str]) -> Backup {
        std::fs::create_dir_all(dest).expect("dest");
        let wrapper = bed.path("bpc-ovz-ssh-wrapper");
        if !wrapper.exists() {
            let tmp = bed.path(&format!("bpc-ovz-ssh-wrapper.{}", std::process::id()));
            std::fs::write(
                &tmp,
                format!(
                    "#!/bin/sh\n# rsync's -e program: bpc-ovz ssh; records its exit code in $BPCOVZ_CODE.\n\"{}\" ssh \"$@\"\nrc=$?\necho $rc > \"$BPCOVZ_CODE\"\nexit $rc\n",
                    bin()
                ),
            )
            .expect("wrapper");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            std::fs::rename(&tmp, &wrapper).expect("wrapper");
        }
        let code_file = dest.with_extension("code");
        let _ = std::fs::remove_file(&code_file);
        let rsync = Command::new("rsync")
            .args(["-a", "--protect-args"])
            .args(extra)
            .arg("-e")
            .arg(format!(
                "{} --config {} -l root",
                wrapper.display(),
                config.display()
            ))
            .arg(format!("{host}:/"))
            .arg(format!("{}/", dest.display()))
            .env("BPCOVZ_CODE", &code_file)
            .env("PATH", "/bin:/usr/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rsync");
        Backup {
            rsync,
            dest: dest.to_path_buf(),
            code_file,
        }
    }

    /// The bpc-ovz process of this backup (a descendant of rsync), by PID.
    pub fn bpc_ovz_pid(&self) -> Option<u32> {
        process_tree(self.rsync.id())
            .into_iter()
            .skip(1)
            .find(|&p| proc_stat(p).is_some_and(|(_, n)| n == "bpc-ovz"))
    }

    /// Wait until bpc-ovz runs and return its PID.
    pub fn wait_bpc_ovz(&self) -> u32 {
        let mut pid = None;
        wait_until("bpc-ovz started by rsync", 20, || {
            pid = self.bpc_ovz_pid();
            pid.is_some()
        });
        pid.unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.rsync.try_wait(), Ok(None))
    }

    pub fn finish(self) -> Finished {
        let o = self.rsync.wait_with_output().expect("rsync wait");
        let code = std::fs::read_to_string(&self.code_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Finished {
            code,
            rsync_ok: o.status.success(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Set a bed config's log level to info: what BackupPC's XferLOG gets by default (a bed's own
/// is debug, whose transport chatter would follow bpc-ovz's closing line on stderr).
pub fn info_level(config: &Path) {
    let text = std::fs::read_to_string(config).expect("config");
    std::fs::write(config, text.replace("level: debug", "level: info")).expect("config");
}

/// Before an incremental of a running VE whose previous backup is under `dest`: waits until the
/// VE has rewritten its ticker counter in a later wall-clock second than the counter in `dest`.
/// rsync's quick check (what an incremental uses) compares size and mtime in whole seconds, and the
/// counter keeps its size for a while ("15\n", "26\n"). If the incremental's stop fell in the same
/// second as the previous backup's, rsync would rightly skip the counter, and the freeze check
/// after it would compare against a stale file (seen once in CI, in the simulated-HN half of
/// tests/vm.rs's choreography: two stops 0.7 s apart).
pub fn wait_for_a_newer_counter(n: &dyn Node, veid: u32, dest: &Path) {
    let backed_up = std::fs::metadata(dest.join("var/lib/ticker/counter"))
        .expect("the ticker's counter in the previous backup")
        .mtime();
    let live = format!("stat -c %Y /vz/private/{veid}/var/lib/ticker/counter");
    wait_until(
        &format!("VE {veid} rewriting its counter after second {backed_up}"),
        30,
        || {
            n.exec_ok(&live)
                .trim()
                .parse::<i64>()
                .is_ok_and(|s| s > backed_up)
        },
    );
}
