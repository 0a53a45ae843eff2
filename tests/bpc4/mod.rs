//! A real BackupPC 4 (Debian's 4.4, installed by `contrib/install-deps.sh`) for the tests: a
//! *relocated* instance per test (`../shared/docs/backuppc4-harness.md` §2): a copy of
//! `/usr/share/backuppc` whose hard-coded `/etc/backuppc`, `/var/lib/backuppc` and `/run/backuppc`
//! are patched to a scratch directory, so nothing under `/etc` or `/var/lib` is read or written and
//! instances run side by side. The daemon listens on a unix socket only (`ServerPort = -1`) and is
//! started in the foreground as this process's child; dropping [`Bpc4`] stops it by its PID.
//!
//! A VE is a BackupPC host named by the VE's hostname (which does not resolve here), configured with
//! exactly the lines of `contrib/backuppc4.pl`, only the bpc-ovz binary path and `--config` path
//! substituted ([`Bpc4::ve_host_conf`]). Backups run with BackupPC's own `BackupPC_dump` (or through
//! the daemon, [`Bpc4::request_backup`]), and are read back with its own `BackupPC_ls`,
//! `BackupPC_tarCreate` and `BackupPC_zcat`. Restores: [`RestoreReq`], [`Bpc4::restore`].
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Bed, bin, scratch};

/// Where Debian's package puts BackupPC and rsync_bpc.
pub const BPC_SHARE: &str = "/usr/share/backuppc";
pub const RSYNC_BPC: &str = "/usr/libexec/backuppc-rsync/rsync_bpc";

/// The snippet the README tells admins to use, read at run time so the tests follow it.
pub fn contrib_snippet(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Replace `from` by `to` in `text`, insisting that `from` occurs exactly `n` times (so a changed
/// snippet or a changed Debian file fails loudly instead of silently testing something else).
pub fn replace_exactly(text: &str, from: &str, to: &str, n: usize, what: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, n,
        "{what}: expected {from:?} {n} time(s), found {found}"
    );
    text.replace(from, to)
}

/// Result of one BackupPC program run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    /// stdout then stderr.
    pub out: String,
    pub secs: f64,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run `cmd` to completion, killing it (by its PID) after `secs`.
pub fn run_timeout(cmd: &mut Command, secs: u64) -> Run {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let ho = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let he = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs}s (killed)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = ho.join().unwrap_or_default();
    out.extend(he.join().unwrap_or_default());
    Run {
        code: status.code(),
        out: String::from_utf8_lossy(&out).into_owned(),
        secs: t.elapsed().as_secs_f64(),
    }
}

/// One line of `$TopDir/pc/<host>/backups`.
#[derive(Debug, Clone)]
pub struct Backup {
    pub num: u32,
    /// `full`, `incr` or `partial`.
    pub kind: String,
    pub start: i64,
    pub end: i64,
    pub n_files: u64,
    pub xfer_errs: u64,
    pub level: u32,
}

/// One line of `$TopDir/pc/<host>/restores`.
#[derive(Debug, Clone)]
pub struct Restore {
    pub num: u32,
    pub start: i64,
    pub end: i64,
    /// `ok` or `failed`.
    pub result: String,
    pub error: String,
    pub n_files: u64,
    pub size: u64,
    pub tar_errs: u64,
    pub xfer_errs: u64,
}

/// One entry of `BackupPC_ls -R`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    /// Share-relative path without the leading `/` (`etc/passwd`).
    pub path: String,
    /// `d`, `-`, `l`, `c`, `b`, `p`, `s` (BackupPC_ls's mode character).
    pub kind: char,
    /// Permission bits (BackupPC_ls shows rwx only: no setuid/sticky).
    pub perms: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
    /// Hex digest (MD5 of the whole file, plus any collision extension).
    pub digest: Option<String>,
}

/// A restore request, written as the Perl `%RestoreReq` the CGI writes (harness doc §6).
#[derive(Debug, Clone)]
pub struct RestoreReq {
    pub host_src: String,
    /// A real backup number (`-1` is not accepted by BackupPC_restore).
    pub num: u32,
    pub share_src: String,
    /// Common leading directory of every `file_list` entry; stripped on the destination.
    pub path_hdr_src: String,
    pub host_dest: String,
    pub share_dest: String,
    pub path_hdr_dest: String,
    /// Share-relative paths, each starting with `path_hdr_src`.
    pub file_list: Vec<String>,
}

impl RestoreReq {
    /// Restore `paths` of backup `num` of `host` back to the same host and share.
    pub fn same_host(host: &str, num: u32, share: &str, path_hdr: &str, paths: &[&str]) -> Self {
        RestoreReq {
            host_src: host.into(),
            num,
            share_src: share.into(),
            path_hdr_src: path_hdr.into(),
            host_dest: host.into(),
            share_dest: share.into(),
            path_hdr_dest: path_hdr.into(),
            file_list: paths.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn to_perl(&self, user: &str) -> String {
        let list: Vec<String> = self.file_list.iter().map(|f| perl_str(f)).collect();
        format!(
            "%RestoreReq = (\n  'hostSrc' => {},\n  'num' => {},\n  'shareSrc' => {},\n  'pathHdrSrc' => {},\n  'hostDest' => {},\n  'shareDest' => {},\n  'pathHdrDest' => {},\n  'fileList' => [{}],\n  'user' => {},\n  'reqTime' => {},\n);\n",
            perl_str(&self.host_src),
            self.num,
            perl_str(&self.share_src),
            perl_str(&self.path_hdr_src),
            perl_str(&self.host_dest),
            perl_str(&self.share_dest),
            perl_str(&self.path_hdr_dest),
            list.join(", "),
            perl_str(user),
            now()
        )
    }
}

/// A single-quoted Perl string literal.
pub fn perl_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A relocated BackupPC 4 instance with its daemon running.
pub struct Bpc4 {
    dir: Option<tempfile::TempDir>,
    /// `$BASE`: inst/ (the patched copy), conf/, data/ (TopDir), run/.
    pub base: PathBuf,
    /// BackupPCUser, and the user in the hosts file (`id -un`).
    pub user: String,
    daemon: Option<Child>,
}

impl Bpc4 {
    pub fn top(&self) -> PathBuf {
        self.base.join("data")
    }
    pub fn conf_dir(&self) -> PathBuf {
        self.base.join("conf")
    }
    pub fn pc_dir(&self, host: &str) -> PathBuf {
        self.top().join("pc").join(host)
    }
    pub fn prog(&self, name: &str) -> PathBuf {
        self.base.join("inst/bin").join(name)
    }
    fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(self.prog(name));
        c.current_dir(&self.base);
        c
    }

    /// Copy and patch BackupPC, write its config, `hosts` and one `<host>.pl` per entry of `hosts`
    /// (name, per-host config text), and start the daemon.
    pub fn start(hosts: &[(&str, String)]) -> Bpc4 {
        for p in [
            format!("{BPC_SHARE}/bin/BackupPC"),
            format!("{BPC_SHARE}/lib/BackupPC/Lib.pm"),
            RSYNC_BPC.to_string(),
        ] {
            assert!(
                Path::new(&p).exists(),
                "{p} is missing: BackupPC 4 is not installed; run ./contrib/install-deps.sh as root"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("bpc4-")
            .tempdir_in(scratch())
            .expect("tempdir");
        let base = dir.path().to_path_buf();
        let b = base.display().to_string();
        assert!(
            b.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
            "BackupPC base {b} must be a plain path (it is pasted into Perl and rsync's -e)"
        );
        for d in [
            "conf",
            "data/pc",
            "data/cpool",
            "data/pool",
            "data/log",
            "run",
        ] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        let o = Command::new("cp")
            .args(["-a", BPC_SHARE])
            .arg(base.join("inst"))
            .output()
            .expect("cp");
        assert!(o.status.success(), "cp -a {BPC_SHARE}: {o:?}");

        // Relocation: every program says `use lib "/usr/share/backuppc/lib"`; Lib.pm hard-codes
        // TopDir, InstallDir, ConfDir and RunDir; Storage/Text.pm hard-codes localconfig.pl.
        let use_lib = "use lib \"/usr/share/backuppc/lib\"";
        for e in std::fs::read_dir(base.join("inst/bin")).expect("inst/bin") {
            let p = e.expect("entry").path();
            let t = std::fs::read_to_string(&p).unwrap_or_default();
            if t.contains(use_lib) {
                std::fs::write(&p, t.replace(use_lib, &format!("use lib \"{b}/inst/lib\"")))
                    .expect("patch bin");
            }
        }
        let lib = base.join("inst/lib/BackupPC/Lib.pm");
        let mut t = std::fs::read_to_string(&lib).expect("Lib.pm");
        t = replace_exactly(
            &t,
            "'/var/lib/backuppc'",
            &format!("'{b}/data'"),
            1,
            "Lib.pm",
        );
        t = replace_exactly(
            &t,
            "'/usr/share/backuppc'",
            &format!("'{b}/inst'"),
            1,
            "Lib.pm",
        );
        t = replace_exactly(
            &t,
            "ConfDir    => \"/etc/backuppc\"",
            &format!("ConfDir    => \"{b}/conf\""),
            1,
            "Lib.pm",
        );
        t = replace_exactly(
            &t,
            "\"/run/backuppc\"",
            &format!("\"{b}/run\""),
            1,
            "Lib.pm",
        );
        std::fs::write(&lib, t).expect("write Lib.pm");
        let text = base.join("inst/lib/BackupPC/Storage/Text.pm");
        let t = std::fs::read_to_string(&text).expect("Text.pm");
        let t = t.replace(
            "/etc/backuppc/localconfig.pl",
            &format!("{b}/conf/localconfig.pl"),
        );
        std::fs::write(&text, t).expect("write Text.pm");

        let user =
            String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
                .trim()
                .to_string();
        // Debian's config.pl plus the relocation and "no side effects" overrides (the last
        // assignment wins). Everything about the hosts themselves is in their own <host>.pl.
        let mut cfg = std::fs::read_to_string("/etc/backuppc/config.pl")
            .or_else(|_| std::fs::read_to_string(format!("{BPC_SHARE}/conf/config.pl")))
            .expect("Debian's /etc/backuppc/config.pl");
        cfg.push_str(&format!(
            r#"
# ---- tests/bpc4: relocated instance ----
$Conf{{TopDir}}     = '{b}/data';
$Conf{{ConfDir}}    = '{b}/conf';
$Conf{{LogDir}}     = '{b}/data/log';
$Conf{{RunDir}}     = '{b}/run';
$Conf{{InstallDir}} = '{b}/inst';
$Conf{{CgiDir}}     = '{b}/inst/cgi-bin';
$Conf{{BackupPCUser}} = '{user}';
# unix socket only ($RunDir/BackupPC.sock), no TCP
$Conf{{ServerHost}} = '127.0.0.1';
$Conf{{ServerPort}} = -1;
# no scheduled backups; requested ones still run
$Conf{{BackupsDisable}} = 1;
# the daemon exits if a configured tool is not executable; none of these is needed
$Conf{{PingPath}}      = '';
$Conf{{NmbLookupPath}} = '';
$Conf{{SmbClientPath}} = '';
$Conf{{SendmailPath}}  = '';
$Conf{{FixedIPNetBiosNameCheck}} = 0;
$Conf{{NmbLookupCmd}} = '';
$Conf{{DfMaxUsagePct}} = 100;
$Conf{{EMailAdminUserName}} = '';
$Conf{{XferLogLevel}} = 1;
"#
        ));
        std::fs::write(base.join("conf/config.pl"), cfg).expect("config.pl");
        let mut h = String::from("host\tdhcp\tuser\tmoreUsers\n");
        for (name, conf) in hosts {
            h.push_str(&format!("{name}\t0\t{user}\n"));
            std::fs::write(base.join(format!("conf/{name}.pl")), conf).expect("host conf");
        }
        std::fs::write(base.join("conf/hosts"), h).expect("hosts");

        let keep = std::env::var_os("BPC4_KEEP").is_some();
        let mut me = Bpc4 {
            dir: if keep {
                eprintln!("BPC4_KEEP: BackupPC instance kept in {b}");
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
            base,
            user,
            daemon: None,
        };
        me.start_daemon();
        me
    }

    /// The daemon, in the foreground (no `-d`), as our child.
    fn start_daemon(&mut self) {
        let out = std::fs::File::create(self.base.join("daemon.out")).expect("daemon.out");
        let child = Command::new(self.prog("BackupPC"))
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start BackupPC");
        self.daemon = Some(child);
        let sock = self.base.join("run/BackupPC.sock");
        let t = Instant::now();
        while !sock.exists() {
            if let Some(s) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "BackupPC daemon exited ({s}): {}\n{}",
                    std::fs::read_to_string(self.base.join("daemon.out")).unwrap_or_default(),
                    self.log()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "BackupPC daemon: no socket after 20s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `$LogDir/LOG`, the daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.top().join("log/LOG")).unwrap_or_default()
    }

    /// The per-host config for a VE backed up through bpc-ovz: exactly `contrib/backuppc4.pl`
    /// with the binary and `--config` paths substituted (each occurs exactly once there), then
    /// `extra` lines.
    pub fn ve_host_conf(bed: &Bed, extra: &str) -> String {
        let s = contrib_snippet("backuppc4.pl");
        for p in ["/usr/bin/bpc-ovz ", "/etc/bpc-ovz/config.yaml"] {
            assert_eq!(s.matches(p).count(), 1, "contrib/backuppc4.pl: {p:?} once");
        }
        Self::snippet_conf("backuppc4.pl", bed, extra)
    }

    /// Any contrib snippet (e.g. a tar-method one) with every `/usr/bin/bpc-ovz` and
    /// `/etc/bpc-ovz/config.yaml` replaced by the binary under test and the bed's config (each
    /// must occur at least once), then `extra`. Nothing else of the snippet is changed.
    pub fn snippet_conf(snippet: &str, bed: &Bed, extra: &str) -> String {
        let s = contrib_snippet(snippet);
        let bin = bin();
        let cfg = bed.config.display().to_string();
        for p in [bin, cfg.as_str()] {
            assert!(
                !p.contains(char::is_whitespace),
                "{p}: rsync splits -e on whitespace"
            );
        }
        for p in ["/usr/bin/bpc-ovz ", "/etc/bpc-ovz/config.yaml"] {
            assert!(s.contains(p), "contrib/{snippet} does not mention {p:?}");
        }
        let mut s = s
            .replace("/usr/bin/bpc-ovz ", &format!("{bin} "))
            .replace("/etc/bpc-ovz/config.yaml", &cfg);
        s.push_str(extra);
        s
    }

    /// Rewrite `<host>.pl` (BackupPC_dump and BackupPC_restore read it on every run).
    pub fn set_host_conf(&self, host: &str, conf: &str) {
        std::fs::write(self.conf_dir().join(format!("{host}.pl")), conf).expect("host conf");
    }

    /// Add a host after start: `hosts` line, `<host>.pl`, `server reload`.
    pub fn add_host(&self, host: &str, conf: &str) {
        self.set_host_conf(host, conf);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.conf_dir().join("hosts"))
            .expect("hosts");
        writeln!(f, "{host}\t0\t{}", self.user).expect("hosts");
        let r = self.server_mesg(&["server", "reload"]);
        assert!(r.ok(), "server reload: {}", r.out);
        let t = Instant::now();
        while !self.status_host(host).contains("=>") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{host} not known to the daemon after reload"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A host whose "ssh" runs the remote command locally (for restores into a local directory,
    /// e.g. to check a backup through BackupPC_restore without bpc-ovz on the receiving side).
    pub fn local_host_conf(&self) -> String {
        let w = self.base.join("local-exec");
        std::fs::write(&w, "#!/bin/sh\n# rsync -e program: HOST COMMAND... -> run COMMAND here\nshift\nexec \"$@\"\n")
            .expect("local-exec");
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        format!(
            "$Conf{{XferMethod}} = 'rsync';\n$Conf{{RsyncSshArgs}} = ['-e', '{}'];\n$Conf{{RsyncClientPath}} = '/usr/bin/rsync';\n$Conf{{PingCmd}} = '';\n$Conf{{NmbLookupFindHostCmd}} = '';\n",
            w.display()
        )
    }

    /// `BackupPC_serverMesg ARGS...`.
    pub fn server_mesg(&self, args: &[&str]) -> Run {
        run_timeout(self.cmd("BackupPC_serverMesg").args(args), 30)
    }

    /// The daemon's `%StatusHost` for `host` (empty if unknown).
    pub fn status_host(&self, host: &str) -> String {
        self.server_mesg(&[&format!("status host({host})")]).out
    }

    /// Synchronous backup: `BackupPC_dump -v -p -f|-i HOST` (exit 0 = done, 1 = failed).
    pub fn dump(&self, host: &str, full: bool) -> Run {
        run_timeout(
            self.cmd("BackupPC_dump")
                .args(["-v", "-p", if full { "-f" } else { "-i" }])
                .arg(host),
            180,
        )
    }

    /// As [`Bpc4::dump`] but without `-v`, as the daemon runs it: with `-v` the transfer child
    /// prints `cmdExecOrEval: about to exec ...` into the client command's output, which the tar
    /// method counts as a transfer error.
    pub fn dump_quiet(&self, host: &str, full: bool) -> Run {
        run_timeout(
            self.cmd("BackupPC_dump")
                .args(["-p", if full { "-f" } else { "-i" }])
                .arg(host),
            180,
        )
    }

    /// Asynchronous backup through the daemon: `BackupPC_serverMesg backup HOST HOST USER doFull`.
    pub fn request_backup(&self, host: &str, full: bool) {
        let r = self.server_mesg(&[
            "backup",
            host,
            host,
            &self.user,
            if full { "doFull" } else { "doIncr" },
        ]);
        assert!(
            r.ok() && r.out.contains("ok: requested backup"),
            "backup request: {}",
            r.out
        );
    }

    /// BackupPC's own cancel (CGI "Stop/Dequeue Backup"): the daemon sends SIGINT to BackupPC_dump,
    /// which aborts the transfer and then sends INT, waits 1 s and KILLs the transfer processes.
    pub fn stop_backup(&self, host: &str) -> String {
        let r = self.server_mesg(&["stop", host, &self.user, "0"]);
        assert!(r.ok(), "stop: {}", r.out);
        r.out
    }

    /// PID of the daemon's running job for `host` (BackupPC_dump / BackupPC_restore), if any.
    pub fn job_pid(&self, host: &str) -> Option<u32> {
        let out = self.server_mesg(&["status jobs"]).out;
        let key = format!("\"{host}\" => {{");
        let rest = &out[out.find(&key)? + key.len()..];
        let end = rest.find('}').unwrap_or(rest.len());
        let job = &rest[..end];
        let i = job.find("\"pid\" => ")? + "\"pid\" => ".len();
        job[i..]
            .trim_start_matches('"')
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// Wait until the daemon has no job for `host` any more (the BackupPC_dump process is gone).
    pub fn wait_job_gone(&self, host: &str, secs: u64) {
        let t = Instant::now();
        loop {
            let out = self.server_mesg(&["status jobs"]).out;
            if !out.contains(&format!("\"{host}\" =>")) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "job of {host} still running after {secs}s: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `$TopDir/pc/<host>/backups`.
    pub fn backups(&self, host: &str) -> Vec<Backup> {
        let t = std::fs::read_to_string(self.pc_dir(host).join("backups")).unwrap_or_default();
        t.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
                Backup {
                    num: n(0) as u32,
                    kind: f.get(1).unwrap_or(&"").to_string(),
                    start: n(2),
                    end: n(3),
                    n_files: n(4) as u64,
                    xfer_errs: n(10) as u64,
                    level: n(21) as u32,
                }
            })
            .collect()
    }

    /// The newest backup (highest number).
    pub fn last_backup(&self, host: &str) -> Option<Backup> {
        self.backups(host).into_iter().max_by_key(|b| b.num)
    }

    /// `BackupPC_zcat FILE` of a file in the host's directory.
    pub fn zcat(&self, host: &str, file: &str) -> String {
        let r = run_timeout(
            self.cmd("BackupPC_zcat").arg(self.pc_dir(host).join(file)),
            30,
        );
        assert!(r.ok(), "BackupPC_zcat {file}: {}", r.out);
        r.out
    }

    /// `XferLOG.<num>.z`.
    pub fn xferlog(&self, host: &str, num: u32) -> String {
        self.zcat(host, &format!("XferLOG.{num}.z"))
    }

    /// The most recently written XferLOG (`XferLOG.<n>.z` or `XferLOG.bad.z`): a failed dump's
    /// log may be either, and a failed dump may reuse a number.
    pub fn latest_xferlog(&self, host: &str) -> String {
        let mut best: Option<(std::time::SystemTime, String)> = None;
        for e in std::fs::read_dir(self.pc_dir(host))
            .expect("pc dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if !(name.starts_with("XferLOG.") && name.ends_with(".z")) {
                continue;
            }
            let m = e.metadata().and_then(|m| m.modified()).expect("mtime");
            if best.as_ref().is_none_or(|(t, _)| m > *t) {
                best = Some((m, name));
            }
        }
        let (_, name) = best.expect("an XferLOG");
        self.zcat(host, &name)
    }

    /// The host's own LOG (`LOG.MMYYYY`, current month).
    pub fn host_log(&self, host: &str) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(self.pc_dir(host))
            .expect("pc dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("LOG") && !name.ends_with(".z") {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        s
    }

    /// `BackupPC_ls -R -h HOST -n NUM -s SHARE PATH`, parsed. Paths are share-relative, without
    /// the leading `/`.
    pub fn ls(&self, host: &str, num: u32, share: &str, path: &str) -> Vec<LsEntry> {
        let r = run_timeout(
            self.cmd("BackupPC_ls").args([
                "-R",
                "-h",
                host,
                "-n",
                &num.to_string(),
                "-s",
                share,
                path,
            ]),
            60,
        );
        assert!(r.ok(), "BackupPC_ls: {}", r.out);
        parse_ls(&r.out)
    }

    /// `BackupPC_tarCreate -h HOST -n NUM -s SHARE PATH | tar -x -p --numeric-owner -C DEST`.
    pub fn tar_extract(&self, host: &str, num: u32, share: &str, path: &str, dest: &Path) {
        std::fs::create_dir_all(dest).expect("dest");
        let mut tc = self
            .cmd("BackupPC_tarCreate")
            .args(["-h", host, "-n", &num.to_string(), "-s", share, path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("BackupPC_tarCreate");
        let so = tc.stdout.take().expect("pipe");
        let tar = Command::new("tar")
            .args(["-x", "-p", "--numeric-owner", "-C"])
            .arg(dest)
            .stdin(so)
            .output()
            .expect("tar");
        let t = tc.wait_with_output().expect("tarCreate");
        assert!(
            t.status.success() && tar.status.success(),
            "BackupPC_tarCreate -n {num} {path} | tar -x: {}{}",
            String::from_utf8_lossy(&t.stderr),
            String::from_utf8_lossy(&tar.stderr)
        );
    }

    /// Write the request file `$TopDir/pc/<hostDest>/<name>` and return `name`.
    pub fn write_restore_req(&self, req: &RestoreReq) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "restoreReq.{}.{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let d = self.pc_dir(&req.host_dest);
        std::fs::create_dir_all(&d).expect("pc dir");
        std::fs::write(d.join(&name), req.to_perl(&self.user)).expect("restore request");
        name
    }

    /// Synchronous restore: write the request, `BackupPC_restore -v HOST HOST NAME` (the host
    /// name as `$hostIP`, as the daemon passes an unresolvable one). Returns the run, the new
    /// `restores` line (if BackupPC recorded one) and its RestoreLOG.
    pub fn restore(&self, req: &RestoreReq) -> (Run, Option<Restore>, String) {
        self.restore_opts(req, true)
    }

    /// [`Bpc4::restore`], with `-v` only if `verbose` (see [`Bpc4::dump_quiet`]).
    pub fn restore_opts(&self, req: &RestoreReq, verbose: bool) -> (Run, Option<Restore>, String) {
        let before = self.restores(&req.host_dest).len();
        let name = self.write_restore_req(req);
        let mut cmd = self.cmd("BackupPC_restore");
        if verbose {
            cmd.arg("-v");
        }
        let r = run_timeout(cmd.args([&req.host_dest, &req.host_dest, &name]), 180);
        let rows = self.restores(&req.host_dest);
        let row = if rows.len() > before {
            rows.into_iter().max_by_key(|r| r.num)
        } else {
            None
        };
        let log = row
            .as_ref()
            .map(|x| self.restore_log(&req.host_dest, x.num))
            .unwrap_or_default();
        (r, row, log)
    }

    /// `$TopDir/pc/<host>/restores`.
    pub fn restores(&self, host: &str) -> Vec<Restore> {
        let t = std::fs::read_to_string(self.pc_dir(host).join("restores")).unwrap_or_default();
        t.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let s = |i: usize| f.get(i).unwrap_or(&"").to_string();
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
                Restore {
                    num: n(0) as u32,
                    start: n(1),
                    end: n(2),
                    result: s(3),
                    error: s(4),
                    n_files: n(5) as u64,
                    size: n(6) as u64,
                    tar_errs: n(7) as u64,
                    xfer_errs: n(8) as u64,
                }
            })
            .collect()
    }

    /// `RestoreLOG.<num>.z`.
    pub fn restore_log(&self, host: &str, num: u32) -> String {
        self.zcat(host, &format!("RestoreLOG.{num}.z"))
    }
}

impl Drop for Bpc4 {
    fn drop(&mut self) {
        // Stop exactly the daemon we started, by PID: TERM (it INTs its jobs and exits), then KILL.
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            loop {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        drop(self.dir.take());
    }
}

/// Parse `BackupPC_ls -R` output (see `bin/BackupPC_ls`: mode, `uid/gid`, size, timestamp, path
/// with a type suffix, ` -> target` for symlinks, ` (digest)`).
pub fn parse_ls(out: &str) -> Vec<LsEntry> {
    let re = regex::Regex::new(
        r"^([-dlcbps?x])([-r][-w][-x][-r][-w][-x][-r][-w][-x])[+ ] +(\d+)/(\d+) +(\d+) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(.*)$",
    )
    .expect("regex");
    let mut v = Vec::new();
    for line in out.lines() {
        let Some(c) = re.captures(line) else {
            assert!(
                line.ends_with(':') || line.trim().is_empty(),
                "unparsed BackupPC_ls line: {line:?}"
            );
            continue;
        };
        let kind = c[1].chars().next().unwrap_or('?');
        let perms = c[2]
            .chars()
            .fold(0u32, |acc, ch| (acc << 1) | u32::from(ch != '-'));
        let mut rest = c[6].to_string();
        let mut digest = None;
        if rest.ends_with(')')
            && let Some(i) = rest.rfind(" (")
        {
            let d = &rest[i + 2..rest.len() - 1];
            if !d.is_empty() && d.chars().all(|ch| ch.is_ascii_hexdigit()) {
                digest = Some(d.to_string());
                rest.truncate(i);
            }
        }
        let mut target = None;
        if kind == 'l'
            && let Some(i) = rest.find("@ -> ")
        {
            target = Some(rest[i + 5..].to_string());
            rest.truncate(i + 1);
        }
        let suffix: &[char] = match kind {
            'd' => &['/'],
            'l' => &['@'],
            'c' | 'b' => &['%'],
            'p' => &['|'],
            's' => &['='],
            _ => &[],
        };
        let path = rest.strip_suffix(suffix).unwrap_or(&rest);
        v.push(LsEntry {
            path: path.trim_start_matches('/').to_string(),
            kind,
            perms,
            uid: c[3].parse().unwrap_or(u32::MAX),
            gid: c[4].parse().unwrap_or(u32::MAX),
            size: c[5].parse().unwrap_or(u64::MAX),
            target,
            digest,
        });
    }
    v
}

/// MD5 of each file (by `md5sum`, in argument order).
pub fn md5sums(files: &[PathBuf]) -> Vec<String> {
    if files.is_empty() {
        return Vec::new();
    }
    let o = Command::new("md5sum")
        .arg("--")
        .args(files)
        .output()
        .expect("md5sum");
    assert!(o.status.success(), "md5sum: {o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let v: Vec<String> = out
        .lines()
        .map(|l| l.trim_start_matches('\\').chars().take(32).collect())
        .collect();
    assert_eq!(v.len(), files.len());
    v
}

/// Map by path.
pub fn ls_map(v: Vec<LsEntry>) -> BTreeMap<String, LsEntry> {
    v.into_iter().map(|e| (e.path.clone(), e)).collect()
}
