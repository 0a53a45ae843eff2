//! Admin commands an operator runs by hand or from BackupPC's pre-commands: `refresh` (VE → HN
//! cache), `check` (is every HN fit for backups), `sweep` (remove what dead runs left), the extra
//! read-only facts of `plan`, and `generate` (man page, shell completions).
//!
//! This module holds what they share: choosing HNs, asking many HNs at once with a bound and a
//! per-HN time limit, progress on a terminal, reading marker-delimited probe output, and finding
//! bpc-ovz's own leftovers on an HN (snapshot LVs, mounts, state files) and whether their owner —
//! the guard holding the VE's `flock` — is still alive. Every remote value goes through `quote`.

pub mod check;
pub mod generate;
pub mod plan;
pub mod refresh;
pub mod sweep;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::{Config, Hn};
use crate::lvm::{self, Lv, Mount};
use crate::openvz::VeId;
use crate::quote::{RemoteCmd, quote};
use crate::snapshot::{HN_STATE_DIR, SNAP_PREFIX};
use crate::ssh::Session;

/// Exit code of `check` when at least one check failed on at least one HN.
pub const EXIT_CHECK_FAILED: i32 = 75;

/// Per-command overrides of the config's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// HNs asked at once.
    pub jobs: usize,
    /// Time limit for everything done on one HN (connect included).
    pub timeout: Duration,
}

impl Limits {
    pub fn new(
        cfg: &Config,
        jobs: Option<u32>,
        timeout: Option<Duration>,
        default: Duration,
    ) -> Self {
        Limits {
            jobs: jobs.unwrap_or(cfg.hn_queries).max(1) as usize,
            timeout: timeout.unwrap_or(default),
        }
    }
}

/// `30s`, `5m`, ... for `--timeout`.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// The HNs named on the command line (by name, host, or `host:port`), or all configured ones.
pub fn select_hns(cfg: &Config, names: &[String]) -> Result<Vec<Hn>, String> {
    if cfg.hns.is_empty() {
        return Err(format!(
            "{}: key `hns`: no hardware nodes configured",
            cfg.source
        ));
    }
    if names.is_empty() {
        return Ok(cfg.hns.clone());
    }
    let mut out: Vec<Hn> = Vec::new();
    for n in names {
        let hit = cfg
            .hns
            .iter()
            .find(|h| h.name == *n || h.host == *n || format!("{}:{}", h.host, h.port) == *n);
        match hit {
            Some(h) if !out.contains(h) => out.push(h.clone()),
            Some(_) => {}
            None => {
                let known: Vec<&str> = cfg.hns.iter().map(|h| h.name.as_str()).collect();
                let shown = if known.len() > 10 {
                    format!("{}, ... ({} in all)", known[..10].join(", "), known.len())
                } else {
                    known.join(", ")
                };
                return Err(format!(
                    "{n:?} is not a configured HN (configured: {shown})"
                ));
            }
        }
    }
    Ok(out)
}

/// Progress across HNs: a bar on a terminal (stderr), plain lines otherwise.
#[derive(Clone)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// `quiet`: no bar even on a terminal (e.g. `--json`, whose stdout a script reads).
    pub fn new(len: usize, what: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(len as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} HNs {elapsed} {wide_msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    pub fn done_one(&self, hn: &str) {
        if let Some(b) = &self.bar {
            b.set_message(hn.to_string());
            b.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Run `f` for every HN, at most `limits.jobs` at once, each bounded by `limits.timeout`.
/// Results come back in the order of `hns`.
pub async fn for_each_hn<T, F, Fut>(
    hns: &[Hn],
    limits: Limits,
    progress: &Progress,
    f: F,
) -> Vec<(Hn, Result<T, String>)>
where
    T: Send + 'static,
    F: Fn(Hn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limits.jobs));
    let f = Arc::new(f);
    let mut set = JoinSet::new();
    for (i, hn) in hns.iter().cloned().enumerate() {
        let sem = sem.clone();
        let f = f.clone();
        let progress = progress.clone();
        let timeout = limits.timeout;
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let name = hn.name.clone();
            let r = match tokio::time::timeout(timeout, f(hn.clone())).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}", show_duration(timeout))),
            };
            progress.done_one(&name);
            (i, hn, r)
        });
    }
    let mut out = Vec::with_capacity(hns.len());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => out.push(x),
            Err(e) => tracing::error!("HN task failed: {e}"),
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, h, r)| (h, r)).collect()
}

pub fn show_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Bytes for people: `1.5G`, `512M`, `0`.
pub fn human(bytes: u64) -> String {
    const U: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, m) in U {
        if bytes >= m {
            let v = bytes as f64 / m as f64;
            return if v >= 100.0 || (v - v.round()).abs() < 0.05 {
                format!("{}{u}", v.round() as u64)
            } else {
                format!("{v:.1}{u}")
            };
        }
    }
    bytes.to_string()
}

/// Connect to an HN with the config's SSH options.
pub async fn connect(
    hn: &Hn,
    opts: &crate::ssh::SshOptions,
) -> Result<Session, crate::ssh::SshError> {
    Session::connect(&crate::locate::addr(hn), opts).await
}

/// Output of a probe script, cut into named sections.
#[derive(Debug, Default, Clone)]
pub struct Sections {
    pub text: BTreeMap<String, String>,
    pub rc: BTreeMap<String, i32>,
}

impl Sections {
    pub fn get(&self, name: &str) -> &str {
        self.text.get(name).map(String::as_str).unwrap_or("")
    }

    /// Split output whose section headers are `MARKER sec NAME` lines and whose exit codes are
    /// `MARKER rc NAME CODE` lines. Lines before the first header are dropped.
    pub fn parse(out: &str, marker: &str) -> Sections {
        let mut s = Sections::default();
        let mut cur: Option<String> = None;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix(marker) {
                let mut w = rest.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("sec"), Some(name), None) => {
                        s.text.entry(name.to_string()).or_default();
                        cur = Some(name.to_string());
                        continue;
                    }
                    (Some("rc"), Some(name), Some(code)) => {
                        if let Ok(c) = code.parse() {
                            s.rc.insert(name.to_string(), c);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            if let Some(c) = &cur {
                let t = s.text.entry(c.clone()).or_default();
                t.push_str(line);
                t.push('\n');
            }
        }
        s
    }
}

/// Run a read-only probe script; `body` uses `"$M sec NAME"` / `"$M rc NAME $?"` lines.
pub async fn probe(session: &Session, body: &str) -> Result<Sections, String> {
    let marker = format!("@@{}", crate::nonce());
    let script = format!("M={}\n{body}\necho \"$M sec end\"\n", quote(&marker));
    let out = session
        .exec(&script, b"")
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = Sections::parse(&text, &marker);
    if !s.text.contains_key("end") {
        return Err(format!(
            "the probe script did not finish ({}): {}",
            out.outcome,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("no message")
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Locks: who holds a flock, read from /proc/locks (read-only: never takes the lock itself).

/// One granted lock from `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub pid: u32,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

/// Parse `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`); waiters (`->`) are
/// not holders and are skipped.
pub fn parse_proc_locks(text: &str) -> Vec<HeldLock> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 6 || w.get(1) == Some(&"->") {
            continue;
        }
        let (pid, dev) = (w[4], w[5]);
        let mut parts = dev.split(':');
        let (Some(ma), Some(mi), Some(ino), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(pid), Ok(major), Ok(minor), Ok(inode)) = (
            pid.parse::<u32>(),
            u32::from_str_radix(ma, 16),
            u32::from_str_radix(mi, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(HeldLock {
            pid,
            major,
            minor,
            inode,
        });
    }
    out
}

/// Linux `st_dev` (as `stat -c %d` prints it) split into major and minor.
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// A file as `stat -c '%d %i %n'` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    pub dev: u64,
    pub inode: u64,
    pub path: String,
}

pub fn parse_stat_lines(text: &str) -> Vec<StatLine> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.splitn(3, ' ');
            Some(StatLine {
                dev: w.next()?.parse().ok()?,
                inode: w.next()?.parse().ok()?,
                path: w.next()?.to_string(),
            })
        })
        .collect()
}

/// The pid that took a lock on the file, if the file is locked. That process may be gone (a
/// `flock` command run by the guard takes the lock on the guard's descriptor): what counts is
/// that the lock is held.
pub fn holder(locks: &[HeldLock], file: &StatLine) -> Option<u32> {
    let (ma, mi) = dev_major_minor(file.dev);
    locks
        .iter()
        .find(|l| l.inode == file.inode && l.major == ma && l.minor == mi)
        .map(|l| l.pid)
}

/// `/run/bpc-ovz/ve.VEID.lock`: held by the guard of a running backup of that VE.
pub fn ve_lock_path(veid: &VeId) -> String {
    format!("{HN_STATE_DIR}/ve.{veid}.lock")
}

// ---------------------------------------------------------------------------------------------
// Leftovers: what bpc-ovz creates on an HN, recognised by its own names.

/// Split `bpcovz-<VEID>-<run id>`; the run id is 8 lowercase hex digits (a real run's).
pub fn parse_snap_name(name: &str) -> Option<(VeId, String)> {
    let rest = name.strip_prefix(SNAP_PREFIX)?;
    let (veid, run) = rest.rsplit_once('-')?;
    if run.len() != 8
        || !run
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((VeId::parse(veid).ok()?, run.to_string()))
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// A snapshot LV `VG/bpcovz-VEID-RUNID`.
    Snapshot {
        vg: String,
        lv: String,
        /// lvs attr says open (mounted or in use).
        open: bool,
        usage: Option<f64>,
    },
    /// A mount point directory `/run/bpc-ovz/mnt/bpcovz-VEID-RUNID`.
    Mount { path: String, mounted: bool },
    /// A run-state file `/run/bpc-ovz/state.bpcovz-VEID-RUNID`.
    State { path: String },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Leftover {
    pub veid: VeId,
    pub run_id: String,
    #[serde(flatten)]
    pub kind: LeftoverKind,
    /// The VE's bpc-ovz lock is held: the run that owns this is alive.
    pub in_use: bool,
}

impl Leftover {
    pub fn describe(&self) -> String {
        match &self.kind {
            LeftoverKind::Snapshot { vg, lv, usage, .. } => format!(
                "snapshot {vg}/{lv}{}",
                usage
                    .map(|u| format!(" ({u:.0}% used)"))
                    .unwrap_or_default()
            ),
            LeftoverKind::Mount { path, mounted } => {
                format!("{} {path}", if *mounted { "mount" } else { "mount point" })
            }
            LeftoverKind::State { path } => format!("state file {path}"),
        }
    }
}

/// Everything of bpc-ovz's found on one HN.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Leftovers {
    pub items: Vec<Leftover>,
    /// Things that look like ours by name but are not (e.g. an LV named `bpcovz-...` that is not
    /// a snapshot): reported, never touched.
    pub foreign: Vec<String>,
}

impl Leftovers {
    pub fn stale(&self) -> impl Iterator<Item = &Leftover> {
        self.items.iter().filter(|l| !l.in_use)
    }
    pub fn in_use(&self) -> impl Iterator<Item = &Leftover> {
        self.items.iter().filter(|l| l.in_use)
    }
}

/// Probe sections for [`parse_leftovers`] (read-only).
pub fn leftovers_probe() -> String {
    let lvs = RemoteCmd::new("lvs").args(&lvm::lvs_args()[1..]);
    format!(
        "echo \"$M sec lvs\"; {lvs} 2>/dev/null\n\
         echo \"$M sec mnt\"; for d in {base}/mnt/*; do [ -e \"$d\" ] || [ -L \"$d\" ] && echo \"$d\"; done\n\
         echo \"$M sec state\"; for f in {base}/state.*; do [ -e \"$f\" ] && echo \"$f\"; done\n\
         echo \"$M sec lockfiles\"; for f in {base}/ve.*.lock {base}/slot.*; do [ -e \"$f\" ] && stat -c '%d %i %n' \"$f\"; done\n\
         echo \"$M sec locks\"; cat /proc/locks\n\
         echo \"$M sec mountinfo\"; cat /proc/self/mountinfo",
        base = HN_STATE_DIR,
    )
}

/// Find bpc-ovz's snapshots, mounts and state files in the probe output, and their owners.
pub fn parse_leftovers(s: &Sections) -> Leftovers {
    let (lvs, _) = lvm::parse_lvs(s.get("lvs"));
    let mounts = lvm::parse_mountinfo(s.get("mountinfo"));
    let locks = parse_proc_locks(s.get("locks"));
    let lockfiles = parse_stat_lines(s.get("lockfiles"));
    let owner = |veid: &VeId| {
        let p = ve_lock_path(veid);
        lockfiles
            .iter()
            .find(|f| f.path == p)
            .is_some_and(|f| holder(&locks, f).is_some())
    };
    let mut out = Leftovers::default();
    for lv in &lvs {
        let Some((veid, run_id)) = parse_snap_name(&lv.name) else {
            continue;
        };
        if !is_snapshot(lv) {
            out.foreign.push(format!(
                "LV {}/{} is named like a bpc-ovz snapshot but is not a snapshot (attr {})",
                lv.vg, lv.name, lv.attr
            ));
            continue;
        }
        out.items.push(Leftover {
            in_use: owner(&veid),
            veid,
            run_id,
            kind: LeftoverKind::Snapshot {
                vg: lv.vg.clone(),
                lv: lv.name.clone(),
                open: lv.attr.chars().nth(5) == Some('o'),
                usage: lv.snap_percent,
            },
        });
    }
    let mnt_dir = format!("{HN_STATE_DIR}/mnt/");
    let mut paths: Vec<String> = s.get("mnt").lines().map(String::from).collect();
    // A mount whose directory listing failed (e.g. a stale NFS-like state) still counts.
    for m in &mounts {
        if m.mount_point.starts_with(&mnt_dir) && !paths.contains(&m.mount_point) {
            paths.push(m.mount_point.clone());
        }
    }
    // The overlay of a ploop run is unmounted before its upper (`.rw`) and lower (`.ro`) parts.
    paths.sort_by_key(|p| (p.ends_with(".ro"), p.ends_with(".rw"), p.clone()));
    for path in paths {
        let name = path.strip_prefix(&mnt_dir).unwrap_or("");
        match parse_mount_name(name) {
            Some((veid, run_id, _)) => out.items.push(Leftover {
                in_use: owner(&veid),
                veid,
                run_id,
                kind: LeftoverKind::Mount {
                    mounted: mounts.iter().any(|m: &Mount| m.mount_point == path),
                    path,
                },
            }),
            None => out.foreign.push(format!("{path} is not named by bpc-ovz")),
        }
    }
    let state_prefix = format!("{HN_STATE_DIR}/state.");
    for path in s.get("state").lines() {
        let name = path.strip_prefix(&state_prefix).unwrap_or("");
        // `state.NAME.start`: the output of a background VE start (backup step 4).
        let name = name.strip_suffix(".start").unwrap_or(name);
        match parse_snap_name(name) {
            Some((veid, run_id)) => out.items.push(Leftover {
                in_use: owner(&veid),
                veid,
                run_id,
                kind: LeftoverKind::State {
                    path: path.to_string(),
                },
            }),
            None => out.foreign.push(format!("{path} is not named by bpc-ovz")),
        }
    }
    out
}

/// A snapshot LV: thick (`s`, `S` invalid) or thin (`V` with an origin).
pub fn is_snapshot(lv: &Lv) -> bool {
    lv.attr.starts_with('s')
        || lv.attr.starts_with('S')
        || (lv.attr.starts_with('V') && !lv.origin.is_empty())
}

/// A mount point name under the mount dir: `bpcovz-VEID-RUNID`, or the ploop backend's
/// `bpcovz-VEID-RUNID.ro` (the snapshot) and `.rw` (the tmpfs of the overlay). Returns the run's
/// name and the suffix.
fn parse_mount_name(name: &str) -> Option<(VeId, String, &str)> {
    let (base, suffix) = match name.rsplit_once('.') {
        Some((b, s @ ("ro" | "rw"))) => (b, s),
        _ => (name, ""),
    };
    let (veid, run) = parse_snap_name(base)?;
    Some((veid, run, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_and_devices() {
        let t = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:5678 0 EOF\n\
                 1: -> FLOCK  ADVISORY  WRITE 4343 00:1a:5678 0 EOF\n\
                 2: POSIX  ADVISORY  READ 99 fd:01:12 0 EOF\n\
                 garbage\n";
        let l = parse_proc_locks(t);
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            HeldLock {
                pid: 4242,
                major: 0,
                minor: 0x1a,
                inode: 5678
            }
        );
        assert_eq!((l[1].major, l[1].minor), (0xfd, 1));
        // st_dev 26 = 0:26 (a tmpfs); 64769 = 253:1 (a dm device).
        assert_eq!(dev_major_minor(26), (0, 26));
        assert_eq!(dev_major_minor(64769), (253, 1));
        let f = StatLine {
            dev: 26,
            inode: 5678,
            path: "/run/bpc-ovz/ve.101.lock".into(),
        };
        assert_eq!(holder(&l, &f), Some(4242));
        let g = StatLine { inode: 1, ..f };
        assert_eq!(holder(&l, &g), None);
    }

    /// The device numbers `stat` prints and those in /proc/locks agree on this very machine.
    #[test]
    fn held_lock_is_seen_in_proc_locks() {
        let d = tempfile::tempdir().unwrap();
        let held = d.path().join("ve.1.lock");
        let free = d.path().join("ve.2.lock");
        std::fs::write(&free, "").unwrap();
        // As the guard does it: the shell keeps fd 9, the `flock` command takes the lock on it.
        let script = format!(
            "exec 9>{h}; flock -n 9 || exit 9; stat -c '%d %i %n' {h} {f}; cat /proc/locks",
            h = quote(&held.display().to_string()),
            f = quote(&free.display().to_string()),
        );
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        let st = parse_stat_lines(&text);
        assert_eq!(st.len(), 2, "{text}");
        let locks = parse_proc_locks(&text);
        assert!(holder(&locks, &st[0]).is_some(), "{text}");
        assert_eq!(holder(&locks, &st[1]), None, "{text}");
    }

    #[test]
    fn snapshot_names() {
        let (v, r) = parse_snap_name("bpcovz-101-0a1b2c3d").unwrap();
        assert_eq!((v.as_str(), r.as_str()), ("101", "0a1b2c3d"));
        let (v, _) = parse_snap_name("bpcovz-6f1e-uuid-ffffffff").unwrap();
        assert_eq!(v.as_str(), "6f1e-uuid");
        for bad in [
            "bpcovz-101-RUNID000",
            "bpcovz-101",
            "vz",
            "bpcovz--0a1b2c3d",
            "bpcovz-1;2-0a1b2c3d",
            "bpcovz-101-0a1b2c3",
        ] {
            assert!(parse_snap_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn leftovers_are_recognised_and_owned() {
        let out = "@@m sec lvs\n  vg-data:vz:536870912:owi-aos---::::\n  vg-data:bpcovz-101-0a1b2c3d:67108864:swi-aos---:vz:12.50:7:3\n  vg-data:bpcovz-102-00000000:67108864:-wi-a-----::::\n  vg-data:bpcovz-103-11111111:67108864:swi-a-s---:vz:0.01:7:4\n\
                   @@m sec mnt\n/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d\n/run/bpc-ovz/mnt/other\n\
                   @@m sec state\n/run/bpc-ovz/state.bpcovz-103-11111111\n/run/bpc-ovz/state.bpcovz-103-11111111.start\n\
                   @@m sec lockfiles\n26 77 /run/bpc-ovz/ve.101.lock\n26 78 /run/bpc-ovz/ve.103.lock\n\
                   @@m sec locks\n1: FLOCK  ADVISORY  WRITE 500 00:1a:77 0 EOF\n\
                   @@m sec mountinfo\n90 40 7:3 / /run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d rw - ext4 /dev/mapper/vg--data-bpcovz--101--0a1b2c3d rw\n\
                   @@m sec end\n";
        let s = Sections::parse(out, "@@m");
        let l = parse_leftovers(&s);
        let got: Vec<(String, bool)> = l.items.iter().map(|i| (i.describe(), i.in_use)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "snapshot vg-data/bpcovz-101-0a1b2c3d (12% used)".to_string(),
                    true
                ),
                (
                    "snapshot vg-data/bpcovz-103-11111111 (0% used)".to_string(),
                    false
                ),
                (
                    "mount /run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d".to_string(),
                    true
                ),
                (
                    "state file /run/bpc-ovz/state.bpcovz-103-11111111".to_string(),
                    false
                ),
                (
                    "state file /run/bpc-ovz/state.bpcovz-103-11111111.start".to_string(),
                    false
                ),
            ]
        );
        assert_eq!(l.foreign.len(), 2, "{:?}", l.foreign);
        assert_eq!(l.stale().count(), 3);
        assert!(matches!(
            l.items[0].kind,
            LeftoverKind::Snapshot { open: true, .. }
        ));
    }

    #[test]
    fn thin_snapshots_and_ploop_mounts_are_ours() {
        let out = "@@m sec lvs\n  vg0:bpcovz-101-0a1b2c3d:1073741824:Vwi-a-tz-k:thinvol:::\n  vg0:bpcovz-102-0a1b2c3d:1073741824:Vwi-a-tz--::::\n\
                   @@m sec mnt\n/run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d.ro\n/run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d\n/run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d.rw\n/run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d.xx\n\
                   @@m sec end\n";
        let l = parse_leftovers(&Sections::parse(out, "@@m"));
        let got: Vec<String> = l.items.iter().map(|i| i.describe()).collect();
        assert_eq!(
            got,
            vec![
                "snapshot vg0/bpcovz-101-0a1b2c3d",
                "mount point /run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d",
                "mount point /run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d.rw",
                "mount point /run/bpc-ovz/mnt/bpcovz-103-0a1b2c3d.ro",
            ]
        );
        // A thin volume without an origin is not a snapshot; `.xx` is not a ploop suffix.
        assert_eq!(l.foreign.len(), 2, "{:?}", l.foreign);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(0), "0");
        assert_eq!(human(1 << 30), "1G");
        assert_eq!(human(3 << 29), "1.5G");
        assert_eq!(human(512 << 20), "512M");
    }
}
