//! A real BackupPC 4 (Debian's 4.4, relocated: `tests/bpc4`) drives bpc-ovz against simulated HNs
//! (`tests/common`). Each host is a VE's hostname, configured with exactly the lines of
//! `contrib/backuppc4.pl`; BackupPC_dump runs rsync_bpc, which runs bpc-ovz as its `-e` program.
//! Every backup is read back with BackupPC's own tools (`BackupPC_ls`, `BackupPC_tarCreate`) and
//! compared with the VE as it was at snapshot time.
//!
//! Restore and tar-method scenarios go here too once bpc-ovz implements them (issue 4); the
//! harness for them is `Bpc4::restore` / `RestoreReq` (checked below against a local directory).

mod bpc4;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bpc4::*;
use common::*;

const TICKER: &str = "var/lib/ticker";

/// The VE as the snapshot froze it: its private area (everything but the ticker, which the
/// running VE keeps writing after the snapshot) and the MD5 of every regular file.
struct Expected {
    tree: BTreeMap<String, Entry>,
    md5: BTreeMap<String, String>,
    /// `/etc/vz/conf/<VEID>.conf` on the HN.
    conf: Vec<u8>,
    /// The ticker's counter at bpc-ovz's `vzctl stop`, and the number of boots so far.
    counter: Option<String>,
    boots: usize,
}

/// Read right after a backup. Nothing but the ticker changes in the VE between the snapshot and
/// this call (the test makes its changes before the backup), so this is the snapshot's content.
fn capture(hn: &Hn, veid: u32) -> Expected {
    let private = hn.path(&format!("/vz/private/{veid}"));
    let tree = manifest(&private, &[TICKER]);
    let files: Vec<String> = tree
        .iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    let sums = md5sums(&files.iter().map(|f| private.join(f)).collect::<Vec<_>>());
    let log = hn.ve_log(veid);
    let counter = log
        .lines()
        .rev()
        .find(|l| l.starts_with("stopped"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("counter="))
                .map(String::from)
        });
    Expected {
        tree,
        md5: files.into_iter().zip(sums).collect(),
        conf: std::fs::read(hn.path(&format!("/etc/vz/conf/{veid}.conf"))).expect("VE conf"),
        counter,
        boots: log.lines().filter(|l| l.starts_with("started")).count(),
    }
}

/// Backup `num` of `host`, read with BackupPC_tarCreate and BackupPC_ls, equals `exp`, holds
/// `etc/vzdump/<VEID>.conf`, and (for a running VE) the ticker value frozen at the stop.
fn check_backup(bpc: &Bpc4, host: &str, num: u32, veid: u32, exp: &Expected, running: bool) {
    let what = format!("{host} backup #{num}");
    // 1. BackupPC_tarCreate | tar -x: content, modes, owners, file mtimes, symlinks, hard links.
    let out = bpc.base.join(format!("tar-{num}-{}", now()));
    let _ = std::fs::remove_dir_all(&out);
    bpc.tar_extract(host, num, "/", "/", &out);
    let got = manifest(&out, &[TICKER, "etc/vzdump"]);
    assert_same_tree(
        &exp.tree,
        &got,
        &format!("{what} (BackupPC_tarCreate) vs VE"),
    );
    let conf = std::fs::read(out.join(format!("etc/vzdump/{veid}.conf")))
        .unwrap_or_else(|e| panic!("{what}: etc/vzdump/{veid}.conf: {e}"));
    assert_eq!(conf, exp.conf, "{what}: etc/vzdump/{veid}.conf");
    if running {
        let counter = exp
            .counter
            .as_deref()
            .expect("the VE log has the stop line");
        let ticker = out.join(TICKER);
        let got = std::fs::read_to_string(ticker.join("counter")).expect("counter in backup");
        assert_eq!(
            got.trim(),
            counter,
            "{what} holds the counter frozen at the stop"
        );
        assert!(
            !ticker.join(format!("boot-{}", exp.boots)).exists(),
            "{what}: boot-{} was written after the snapshot",
            exp.boots
        );
        assert!(
            ticker.join(format!("boot-{}", exp.boots - 1)).exists(),
            "{what}: the boot before the snapshot is there"
        );
    }
    let _ = std::fs::remove_dir_all(&out);

    // 2. BackupPC_ls -R: the same paths, types, permissions, owners, sizes, symlink targets, and
    //    BackupPC's digest equals the MD5 of the VE's file.
    let ls = ls_map(bpc.ls(host, num, "/", "/"));
    let mut diffs = Vec::new();
    let skip = |p: &str| {
        [TICKER, "etc/vzdump"]
            .iter()
            .any(|s| p == *s || p.starts_with(&format!("{s}/")))
    };
    for (p, e) in &exp.tree {
        let Some(l) = ls.get(p) else {
            diffs.push(format!("missing in BackupPC_ls: {p}"));
            continue;
        };
        let ok = match e {
            Entry::Dir { mode, uid, gid } => {
                l.kind == 'd' && l.perms == mode & 0o777 && (l.uid, l.gid) == (*uid, *gid)
            }
            Entry::File {
                mode,
                uid,
                gid,
                content,
                ..
            } => {
                l.kind == '-'
                    && l.perms == mode & 0o777
                    && (l.uid, l.gid) == (*uid, *gid)
                    && l.size == content.len() as u64
                    && (content.is_empty()
                        || l.digest.as_deref().map(|d| &d[..d.len().min(32)])
                            == exp.md5.get(p).map(String::as_str))
            }
            Entry::Symlink { target, uid, gid } => {
                l.kind == 'l'
                    && l.target.as_deref() == Some(&*target.to_string_lossy())
                    && (l.uid, l.gid) == (*uid, *gid)
            }
            Entry::Other { .. } => l.kind != 'd' && l.kind != '-' && l.kind != 'l',
        };
        if !ok {
            diffs.push(format!("differs: {p}: BackupPC_ls {l:?}"));
        }
    }
    for p in ls.keys() {
        if !exp.tree.contains_key(p) && !skip(p) {
            diffs.push(format!("only in BackupPC_ls: {p}"));
        }
    }
    let vz = ls.get(&format!("etc/vzdump/{veid}.conf"));
    let conf_md5 = md5_bytes(&exp.conf);
    if vz.and_then(|l| l.digest.as_deref().map(|d| d[..32].to_string())) != Some(conf_md5) {
        diffs.push(format!(
            "etc/vzdump/{veid}.conf in BackupPC_ls: {vz:?}, want the HN's config"
        ));
    }
    assert!(
        diffs.is_empty(),
        "{what} (BackupPC_ls) vs VE:\n{}",
        diffs.join("\n")
    );
}

fn md5_bytes(b: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new_in(scratch()).expect("tmp");
    std::fs::write(f.path(), b).expect("write");
    md5sums(&[f.path().to_path_buf()]).remove(0)
}

fn assert_dump_ok(r: &Run, what: &str) {
    assert!(
        r.ok() && r.out.contains("backup complete"),
        "{what}: BackupPC_dump failed ({:?}, {:.1}s):\n{}",
        r.code,
        r.secs,
        r.out
    );
}

/// bpc-ovz's own lines are in the XferLOG (its stderr reaches BackupPC's log).
fn check_xferlog(bpc: &Bpc4, host: &str, num: u32, veid: u32, hn: &str) {
    let log = bpc.xferlog(host, num);
    for want in [
        format!("bpc-ovz: {host} is VE {veid} on {hn}"),
        "was down for".to_string(),
    ] {
        assert!(log.contains(&want), "XferLOG.{num} lacks {want:?}:\n{log}");
    }
}

fn check_clean(hn: &Hn) {
    check_clean_but(hn, None);
}

/// No leftovers, except the one line `allowed` (a lock the test itself put there).
fn check_clean_but(hn: &Hn, allowed: Option<&str>) {
    let left: Vec<String> = hn
        .leftovers()
        .into_iter()
        .filter(|l| Some(l.as_str()) != allowed)
        .collect();
    assert!(left.is_empty(), "{} has leftovers: {left:?}", hn.name);
}

fn vzctl_stops(hn: &Hn, veid: u32) -> usize {
    hn.commands_log()
        .lines()
        .filter(|l| l.contains("vzctl") && l.contains(" stop ") && l.ends_with(&veid.to_string()))
        .count()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// Full, incremental after changes inside the running VE, second full after a change that only a
/// full (`--checksum`) can see; every backup equals the VE at its snapshot, the older ones still do
/// after the newer ones, and a BackupPC_restore of the first one gives back its files.
#[test]
fn full_incremental_full_equal_the_ve_at_snapshot_time() {
    const HOST: &str = "ve101.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(101, HOST, "10.10.0.101", true);
    let bpc = Bpc4::start(&[(HOST, Bpc4::ve_host_conf(&bed, ""))]);

    // 1. Full.
    let t = Instant::now();
    let r = bpc.dump(HOST, true);
    assert_dump_ok(&r, "first full");
    eprintln!("first full: {:.1}s", t.elapsed().as_secs_f64());
    let exp0 = capture(hn1, 101);
    assert!(hn1.ve_running(101), "VE running after the backup");
    check_clean(hn1);
    let b0 = bpc.last_backup(HOST).expect("a backup");
    assert_eq!(b0.kind, "full", "{b0:?}");
    assert_eq!(b0.xfer_errs, 0, "{b0:?}");
    check_xferlog(&bpc, HOST, b0.num, 101, "hn1");
    check_backup(&bpc, HOST, b0.num, 101, &exp0, true);

    // 2. Changes inside the running VE (through its live root), then an incremental.
    hn1.exec_ok(
        "cd /vz/root/101 && echo more >> home/u/file && echo new > home/u/new && \
         mkdir home/u/newdir && echo x > home/u/newdir/x && rm var/www/index.html && \
         ln -sfn gone.html var/www/current && chmod 600 etc/passwd && \
         chown 1000:1000 etc/hostname && rmdir var/empty",
    );
    let r = bpc.dump(HOST, false);
    assert_dump_ok(&r, "incremental");
    let exp1 = capture(hn1, 101);
    assert!(hn1.ve_running(101));
    check_clean(hn1);
    let b1 = bpc.last_backup(HOST).expect("a backup");
    assert_eq!(b1.kind, "incr", "{b1:?}");
    assert!(b1.num > b0.num);
    check_xferlog(&bpc, HOST, b1.num, 101, "hn1");
    check_backup(&bpc, HOST, b1.num, 101, &exp1, true);

    // 3. Second full, after a change with the same size and mtime: an incremental (size+mtime)
    //    would miss it; a full compares checksums, so bpc-ovz must pass `--checksum` through.
    hn1.exec_ok(
        "cd /vz/root/101 && cp -p var/lib/blob.bin /tmp/ref && \
         printf BPCOVZ-FULL-TEST | dd of=var/lib/blob.bin conv=notrunc 2>/dev/null && \
         touch -r /tmp/ref var/lib/blob.bin && rm -f etc/group",
    );
    let r = bpc.dump(HOST, true);
    assert_dump_ok(&r, "second full");
    let exp2 = capture(hn1, 101);
    assert!(hn1.ve_running(101));
    check_clean(hn1);
    let b2 = bpc.last_backup(HOST).expect("a backup");
    assert_eq!(b2.kind, "full", "{b2:?}");
    assert!(b2.num > b1.num);
    check_xferlog(&bpc, HOST, b2.num, 101, "hn1");
    check_backup(&bpc, HOST, b2.num, 101, &exp2, true);
    let log2 = bpc.xferlog(HOST, b2.num);
    assert!(
        log2.lines()
            .any(|l| l.contains(" recv >fc") && l.ends_with(" var/lib/blob.bin")),
        "the full found the same-size, same-mtime change by checksum (`>fc`):\n{log2}"
    );

    // The older backups are unchanged by the newer ones (BackupPC 4 keeps them as deltas).
    check_backup(&bpc, HOST, b0.num, 101, &exp0, true);
    check_backup(&bpc, HOST, b1.num, 101, &exp1, true);
    let kinds: Vec<String> = bpc.backups(HOST).into_iter().map(|b| b.kind).collect();
    assert_eq!(kinds, ["full", "incr", "full"]);

    restore_harness_self_check(&bpc, HOST, b0.num, &exp0);
}

/// The restore harness (request file, BackupPC_restore, `restores`, RestoreLOG) against a local
/// directory: restore `/home/u` of a bpc-ovz backup to a host whose "ssh" runs rsync locally.
/// (Restores *into the VE* through bpc-ovz are issue 4's other half.)
fn restore_harness_self_check(bpc: &Bpc4, host: &str, num: u32, exp: &Expected) {
    const LOCAL: &str = "restore-target";
    bpc.add_host(LOCAL, &bpc.local_host_conf());
    let dest = bpc.base.join("restored");
    let req = RestoreReq {
        host_src: host.into(),
        num,
        share_src: "/".into(),
        path_hdr_src: "/home".into(),
        host_dest: LOCAL.into(),
        share_dest: dest.display().to_string(),
        path_hdr_dest: "/".into(),
        file_list: vec!["/home/u".into()],
    };
    let (r, row, log) = bpc.restore(&req);
    assert!(r.ok() && r.out.contains("restore complete"), "{}", r.out);
    let row = row.expect("a line in restores");
    assert_eq!(row.result, "ok", "{row:?}");
    assert!(row.n_files > 0, "{row:?}");
    assert!(log.contains("u/my file.txt"), "RestoreLOG: {log}");
    let want: BTreeMap<String, Entry> = exp
        .tree
        .iter()
        .filter_map(|(k, v)| {
            let mut v = v.clone();
            // Hard-link groups are named by a path: make it relative to the subtree too.
            if let Entry::File { links_group, .. } = &mut v {
                *links_group = links_group
                    .as_deref()
                    .map(|g| g.strip_prefix("home/u/").unwrap_or(g).to_string());
            }
            k.strip_prefix("home/u/").map(|k| (k.to_string(), v))
        })
        .collect();
    let got = manifest(&dest.join("u"), &[]);
    assert_same_tree(&want, &got, "BackupPC_restore of /home/u vs the VE");
}

/// bpc-ovz refuses the run (exit 71) before any downtime; BackupPC records a failed dump, and the
/// cause is in the XferLOG.
fn check_failed_dump(
    bpc: &Bpc4,
    host: &str,
    hn: &Hn,
    veid: u32,
    cause: &[&str],
    allowed_leftover: Option<&str>,
) {
    let before = bpc.backups(host).len();
    let r = bpc.dump(host, true);
    assert_eq!(r.code, Some(1), "BackupPC_dump must fail:\n{}", r.out);
    assert!(r.out.contains("dump failed"), "{}", r.out);
    let log = bpc.latest_xferlog(host);
    for c in cause {
        assert!(log.contains(c), "XferLOG lacks the cause {c:?}:\n{log}");
    }
    assert!(
        !bpc.backups(host).iter().any(|b| b.kind == "full"),
        "no full backup recorded: {:?}",
        bpc.backups(host)
    );
    assert!(bpc.backups(host).len() <= before + 1);
    assert!(
        bpc.host_log(host).contains("Backup aborted") || bpc.host_log(host).contains("failed"),
        "host LOG: {}",
        bpc.host_log(host)
    );
    assert_eq!(vzctl_stops(hn, veid), 0, "the VE was never stopped");
    assert!(hn.ve_running(veid));
    check_clean_but(hn, allowed_leftover);
}

#[test]
fn full_vg_fails_the_dump_with_the_cause_in_the_xferlog() {
    const HOST: &str = "ve102.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(102, HOST, "10.10.0.102", true);
    let bpc = Bpc4::start(&[(HOST, Bpc4::ve_host_conf(&bed, ""))]);
    // 512 MiB origin + 32 MiB free; the snapshot wants 64 MiB.
    hn1.exec_ok("echo $((544 * 1024 * 1024)) > /etc/vzsim/vg_size");
    check_failed_dump(
        &bpc,
        HOST,
        hn1,
        102,
        &["volume group vg-data has", "snapshot.size"],
        None,
    );
    // Room again: the next dump is a good full.
    hn1.exec_ok("rm /etc/vzsim/vg_size");
    assert_dump_ok(&bpc.dump(HOST, true), "full after the VG has room");
    let exp = capture(hn1, 102);
    let b = bpc.last_backup(HOST).expect("backup");
    assert_eq!(b.kind, "full");
    check_backup(&bpc, HOST, b.num, 102, &exp, true);
    check_clean(hn1);
}

#[test]
fn locked_ve_fails_the_dump_with_the_cause_in_the_xferlog() {
    const HOST: &str = "ve103.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(103, HOST, "10.10.0.103", true);
    let bpc = Bpc4::start(&[(HOST, Bpc4::ve_host_conf(&bed, ""))]);
    // A live PID (the HN's sshd) holds vzctl's lock: a migration is running.
    hn1.exec_ok(&format!(
        "mkdir -p /var/lib/vz/lock && echo {} > /var/lib/vz/lock/103.lck",
        hn1.pid
    ));
    let lock = format!("vzlock: /var/lib/vz/lock/103.lck {}", hn1.pid);
    check_failed_dump(
        &bpc,
        HOST,
        hn1,
        103,
        &["VE 103 is locked by vzctl"],
        Some(&lock),
    );
    assert_eq!(
        hn1.exec_ok("cat /var/lib/vz/lock/103.lck").trim(),
        hn1.pid.to_string(),
        "the foreign lock is left alone"
    );
}

/// BackupPC's own cancel (`BackupPC_serverMesg stop`, what the CGI's "Stop" does) while rsync
/// is transferring from the snapshot: the daemon INTs BackupPC_dump, which aborts rsync_bpc and
/// then sends INT, waits one second and KILLs the transfer processes (bpc-ovz among them). The
/// VE stays running, the HN-side guard removes the snapshot, and the next backup is good.
#[test]
fn backuppc_cancel_mid_transfer_leaves_the_ve_running_and_no_snapshot() {
    const HOST: &str = "ve104.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(104, HOST, "10.10.0.104", true);
    hn1.exec_ok("head -c 4000000 /dev/urandom > /vz/private/104/home/u/big");
    // Slow the transfer down (rsync passes --bwlimit to the sender) so the cancel lands mid-way.
    let slow = Bpc4::ve_host_conf(&bed, "$Conf{RsyncArgsExtra} = ['--bwlimit=400'];\n");
    let bpc = Bpc4::start(&[(HOST, slow)]);
    bpc.request_backup(HOST, true);
    wait_until("snapshot mounted and rsync sending", 30, || {
        hn1.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    let dump_pid = bpc.job_pid(HOST).expect("BackupPC_dump job");
    // What rsync_bpc ran: the `-e` words of contrib/backuppc4.pl, then `$hostIP` (the VE's
    // hostname, passed through unchanged because NmbLookupFindHostCmd is ''), RsyncClientPath and
    // the server options; the share path is not in argv (protect-args).
    let argv = bpc_ovz_argv_under_rsync_bpc(HOST).expect("bpc-ovz running under rsync_bpc");
    let cfg = bed.config.display().to_string();
    let want = [
        bin(),
        "ssh",
        "--config",
        &cfg,
        "-l",
        "root",
        HOST,
        "/usr/bin/rsync",
        "--server",
        "--sender",
    ];
    assert_eq!(argv.len(), want.len() + 1, "{argv:?}");
    assert_eq!(&argv[..want.len()], &want[..], "{argv:?}");
    let flags = &argv[want.len()];
    assert!(
        flags.starts_with("-s") && flags.contains('c') && flags.contains('x'),
        "protect-args, --checksum (full) and --one-file-system in {flags:?}"
    );
    let reply = bpc.stop_backup(HOST);
    assert!(reply.contains("canceled"), "{reply}");
    bpc.wait_job_gone(HOST, 30);
    assert!(
        !Path::new(&format!("/proc/{dump_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{dump_pid}/cmdline"))
                .map(|c| !c.contains("BackupPC_dump"))
                .unwrap_or(true),
        "BackupPC_dump {dump_pid} has exited"
    );
    assert!(hn1.ve_running(104), "the VE runs after the cancel");
    assert_eq!(bpc_ovz_procs(HOST), vec![], "bpc-ovz is gone with the dump");
    let log = bpc.latest_xferlog(HOST);
    assert!(log.contains("aborted by user"), "XferLOG: {log}");
    assert!(
        bpc.status_host(HOST)
            .contains("Reason_backup_canceled_by_user"),
        "{}",
        bpc.status_host(HOST)
    );
    // The HN-side guard cleans up by itself once bpc-ovz is gone.
    let t = Instant::now();
    wait_until("no snapshot, mount or lock left on the HN", 20, || {
        hn1.leftovers().is_empty()
    });
    eprintln!(
        "cancel: HN clean {:.1}s after BackupPC_dump exited",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !bpc.backups(HOST).iter().any(|b| b.kind == "full"),
        "{:?}",
        bpc.backups(HOST)
    );

    // The next backup (through the daemon, at full speed) is good.
    bpc.set_host_conf(HOST, &Bpc4::ve_host_conf(&bed, ""));
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = now();
    bpc.request_backup(HOST, true);
    let mut status = String::new();
    wait_until("the next backup has finished", 90, || {
        status = bpc.status_host(HOST);
        let end = field(&status, "endTime")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        status.contains("\"state\" => \"Status_idle\"")
            && end >= t0
            && (status.contains("Reason_backup_done") || status.contains("Reason_backup_failed"))
            && bpc.job_pid(HOST).is_none()
    });
    assert!(status.contains("Reason_backup_done"), "{status}");
    let exp = capture(hn1, 104);
    let b = bpc.last_backup(HOST).expect("backup");
    assert_eq!(b.kind, "full", "{:?}", bpc.backups(HOST));
    check_xferlog(&bpc, HOST, b.num, 104, "hn1");
    check_backup(&bpc, HOST, b.num, 104, &exp, true);
    assert!(hn1.ve_running(104));
    check_clean(hn1);
}

/// The bpc-ovz processes for `host` (found through /proc; other tests' processes are told apart
/// by the host name): (pid, parent's argv\[0\], argv).
fn bpc_ovz_procs(host: &str) -> Vec<(String, String, Vec<String>)> {
    let cmdline = |pid: &str| -> Vec<String> {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let argv = cmdline(&pid);
        if argv.first().map(String::as_str) != Some(bin()) || !argv.iter().any(|a| a == host) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        let parent = cmdline(&ppid).into_iter().next().unwrap_or_default();
        v.push((pid, parent, argv));
    }
    v
}

/// The argv of the bpc-ovz process for `host` whose parent is an rsync_bpc.
fn bpc_ovz_argv_under_rsync_bpc(host: &str) -> Option<Vec<String>> {
    bpc_ovz_procs(host)
        .into_iter()
        .find(|(_, parent, _)| parent == RSYNC_BPC)
        .map(|(_, _, argv)| argv)
}

/// `"name" => value` from a BackupPC_serverMesg status reply.
fn field(status: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\" => ");
    let i = status.find(&key)? + key.len();
    let v = status[i..].trim_start_matches('"');
    Some(v.split(['"', ',']).next().unwrap_or("").to_string())
}
