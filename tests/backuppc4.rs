//! A real BackupPC 4 (Debian's 4.4, relocated: `tests/bpc4`) drives bpc-ovz against simulated HNs
//! (`tests/common`). Each host is a VE's hostname, configured with exactly the lines of
//! `contrib/backuppc4.pl`; BackupPC_dump runs rsync_bpc, which runs bpc-ovz as its `-e` program.
//! Every backup is read back with BackupPC's own tools (`BackupPC_ls`, `BackupPC_tarCreate`) and
//! compared with the VE as it was at snapshot time.
//!
//! Also: `BackupPC_restore` into the VE (running, stopped, through hostile symlinks), the tar
//! XferMethod (`contrib/backuppc4-tar.pl`), and a multi-share host holding one snapshot per dump
//! (`contrib/backuppc4-dump-lease.pl`). The restore harness itself (`Bpc4::restore`,
//! `RestoreReq`) is checked against a local directory first.

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
    let counter = last_counter(&log, "stopped");
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
    let want = subtree(&exp.tree, "home/u");
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

// ---------------------------------------------------------------------------------------------
// Restores (BackupPC_restore through bpc-ovz), the tar XferMethod, one snapshot per dump.
// ---------------------------------------------------------------------------------------------

/// The entries of `tree` below `prefix` (`home/u`), keyed relative to it; hard-link groups are
/// renamed the same way.
fn subtree(tree: &BTreeMap<String, Entry>, prefix: &str) -> BTreeMap<String, Entry> {
    let p = format!("{prefix}/");
    tree.iter()
        .filter_map(|(k, v)| {
            let mut v = v.clone();
            if let Entry::File { links_group, .. } = &mut v {
                *links_group = links_group
                    .as_deref()
                    .map(|g| g.strip_prefix(&p).unwrap_or(g).to_string());
            }
            k.strip_prefix(&p).map(|k| (k.to_string(), v))
        })
        .collect()
}

/// `path` of backup `num` of `host` as BackupPC_tarCreate gives it back, as a manifest.
fn backup_tree(
    bpc: &Bpc4,
    host: &str,
    num: u32,
    share: &str,
    path: &str,
) -> BTreeMap<String, Entry> {
    let out = bpc.base.join(format!("bt-{num}-{}-{}", now(), seq()));
    bpc.tar_extract(host, num, share, path, &out);
    let rel = path.trim_start_matches('/');
    let m = manifest(
        &if rel.is_empty() {
            out.clone()
        } else {
            out.join(rel)
        },
        &[],
    );
    let _ = std::fs::remove_dir_all(&out);
    m
}

fn seq() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// `vzctl stop|start VEID` lines in the HN's command log.
fn vzctl_runs(hn: &Hn, veid: u32) -> usize {
    hn.commands_log()
        .lines()
        .filter(|l| {
            l.contains("vzctl")
                && (l.contains(" stop ") || l.contains(" start "))
                && l.ends_with(&format!(" {veid}"))
        })
        .count()
}

/// A BackupPC_restore that BackupPC records as good.
fn assert_restore_ok(run: &Run, row: &Option<Restore>, log: &str, what: &str) -> Restore {
    assert!(
        run.ok() && run.out.contains("restore complete"),
        "{what}: BackupPC_restore failed ({:?}, {:.1}s):\n{}\nRestoreLOG:\n{log}",
        run.code,
        run.secs,
        run.out
    );
    let row = row
        .clone()
        .unwrap_or_else(|| panic!("{what}: no line in restores"));
    assert_eq!(row.result, "ok", "{what}: {row:?}\n{log}");
    assert_eq!(row.xfer_errs, 0, "{what}: {row:?}\n{log}");
    assert!(row.n_files > 0, "{what}: {row:?}\n{log}");
    row
}

/// Nothing of a restore is left in the VE's tree or on the HN.
fn check_restore_clean(hn: &Hn, veid: u32) {
    check_clean(hn);
    let top: Vec<String> = std::fs::read_dir(hn.path(&format!("/vz/private/{veid}")))
        .expect("private area")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !top.iter().any(|n| n.starts_with(".bpcovz")),
        "VE {veid}: the restore's tool directory is left: {top:?}"
    );
}

/// BackupPC_restore through bpc-ovz (the receiver form of `contrib/backuppc4.pl`): a subtree into
/// the running VE (in place, and to another directory), a restore through a hostile symlink that
/// leaves the HN and the other VEs byte-identical, and everything into the stopped VE.
#[test]
fn backuppc_restores_into_the_ve_running_and_stopped_and_never_outside() {
    const HOST: &str = "ve161.example.com";
    const OTHER: &str = "ve162.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(161, HOST, "10.10.0.161", true);
    hn1.create_ve(162, OTHER, "10.10.0.162", false);
    let bpc = Bpc4::start(&[(HOST, Bpc4::ve_host_conf(&bed, ""))]);
    assert_dump_ok(&bpc.dump(HOST, true), "full");
    let exp = capture(hn1, 161);
    let b0 = bpc.last_backup(HOST).expect("a backup").num;
    check_clean(hn1);

    // 1. A subtree into the running VE, in place (the CGI's default: pathHdrDest = pathHdrSrc),
    //    after changes and deletions inside the VE; --delete removes what the backup lacks.
    hn1.exec_ok(
        "cd /vz/root/161/home/u && echo changed > file && rm 'my file.txt' .hidden && \
         echo extra > extra && mkdir -p newdir/deep && echo y > newdir/deep/y && \
         chmod 600 'naïve résumé.txt' && chown 0:0 file.hardlink",
    );
    let runs = vzctl_runs(hn1, 161);
    let req = RestoreReq::same_host(HOST, b0, "/", "/home", &["/home/u"]);
    let (r, row, log) = bpc.restore(&req);
    assert_restore_ok(&r, &row, &log, "restore of /home/u");
    eprintln!("restore of /home/u: {:.1}s", r.secs);
    assert_same_tree(
        &subtree(&exp.tree, "home/u"),
        &manifest(&hn1.path("/vz/private/161/home/u"), &[]),
        "VE's /home/u after BackupPC_restore vs backup #0",
    );
    assert!(hn1.ve_running(161), "the VE still runs");
    assert_eq!(
        vzctl_runs(hn1, 161),
        runs,
        "a restore never stops or starts the VE"
    );
    check_restore_clean(hn1, 161);
    // The rest of the VE is untouched.
    let rest = manifest(&hn1.path("/vz/private/161"), &[TICKER, "home/u"]);
    let want: BTreeMap<String, Entry> = exp
        .tree
        .iter()
        .filter(|(k, _)| *k != "home/u" && !k.starts_with("home/u/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_same_tree(&want, &rest, "the VE outside /home/u after the restore");

    // 1b. The same subtree to another directory (pathHdrDest is not pathHdrSrc): rsync_bpc then
    //     runs `... --files-from=F /home HOST:/home/restored`.
    let mut req = RestoreReq::same_host(HOST, b0, "/", "/home", &["/home/u"]);
    req.path_hdr_dest = "/home/restored".into();
    let (r, row, log) = bpc.restore(&req);
    assert_restore_ok(&r, &row, &log, "restore of /home/u to /home/restored");
    let running = log
        .lines()
        .find(|l| l.starts_with("Running: ") && l.contains("rsync_bpc"))
        .expect("the rsync_bpc command line in the RestoreLOG");
    assert!(
        running.contains("--protect-args")
            && running.ends_with(&format!(" /home {HOST}:/home/restored"))
            && running.contains(" --files-from="),
        "{running}"
    );
    assert_same_tree(
        &subtree(&exp.tree, "home/u"),
        &manifest(&hn1.path("/vz/private/161/home/restored/u"), &[]),
        "VE's /home/restored/u vs backup #0's /home/u",
    );
    assert!(hn1.ve_running(161));
    check_restore_clean(hn1, 161);

    // 3. Hostile symlinks in the VE: var/www -> /etc (absolute), home/u/up climbing with `..`,
    //    other -> the other VE's private area. BackupPC restores backup #0's /var/www (which holds
    //    files) to "another directory" that is such a link, then in place.
    hn1.exec_ok(
        "cd /vz/root/161 && rm -rf var/www && ln -s /etc var/www && \
         ln -s ../../../../../../../../etc home/u/up && ln -s /vz/private/162 other",
    );
    let hn_etc = manifest(&hn1.path("/etc"), &[]);
    let other = manifest(&hn1.path("/vz/private/162"), &[]);
    let restore_to = |hdr_src: &str, files: &[&str], hdr_dest: &str| {
        let mut req = RestoreReq::same_host(HOST, b0, "/", hdr_src, files);
        req.path_hdr_dest = hdr_dest.into();
        let (r, row, log) = bpc.restore(&req);
        // Whatever the receiver makes of it, it stays in the VE and the VE keeps running.
        assert!(hn1.ve_running(161), "restore to {hdr_dest}");
        check_restore_clean(hn1, 161);
        (r, row, log)
    };
    let www = subtree(&exp.tree, "var/www");
    // Remote dir `/var/www`, the link itself: lands in the VE's own /etc/www.
    let (r, row, log) = restore_to("/var", &["/var/www"], "/var/www");
    assert_restore_ok(&r, &row, &log, "restore to /var/www -> /etc");
    assert_same_tree(
        &www,
        &manifest(&hn1.path("/vz/private/161/etc/www"), &[]),
        "through var/www -> /etc: the VE's own etc/www",
    );
    // Remote dir `/home/u/up` -> ../../../../../../../../etc: `..` stops at the VE's root.
    let (r, row, log) = restore_to("/home", &["/home/u"], "/home/u/up");
    assert_restore_ok(&r, &row, &log, "restore to /home/u/up -> ../../..");
    assert_same_tree(
        &subtree(&exp.tree, "home/u"),
        &manifest(&hn1.path("/vz/private/161/etc/u"), &[]),
        "through home/u/up -> ../../../etc: the VE's own etc/u",
    );
    // Remote dir `/other` -> /vz/private/162, which does not exist inside the VE: refused there.
    let (r, row, log) = restore_to("/var", &["/var/www"], "/other");
    assert_eq!(
        r.code,
        Some(1),
        "restore through a link to the other VE:\n{log}"
    );
    assert_eq!(
        row.as_ref().map(|x| x.result.as_str()),
        Some("failed"),
        "{log}"
    );
    // rsync_bpc usually prints the receiver's error; when it kills bpc-ovz (SIGUSR1) first, the
    // message can be lost in the race and only its fatal status remains.
    assert!(
        log.contains("mkdir \"/other\" failed") || log.contains("exited with fatal status"),
        "RestoreLOG:\n{log}"
    );
    // In place (remote dir `/`, files var/www/index.html and var/www/current): the receiver
    // replaces the VE's var/www link by the backup's directory.
    let (r, row, log) = restore_to(
        "/var/www",
        &["/var/www/index.html", "/var/www/current"],
        "/var/www",
    );
    assert_restore_ok(&r, &row, &log, "in-place restore of /var/www");
    assert_same_tree(
        &www,
        &manifest(&hn1.path("/vz/private/161/var/www"), &[]),
        "the VE's var/www restored in place",
    );
    assert_same_tree(&hn_etc, &manifest(&hn1.path("/etc"), &[]), "the HN's /etc");
    assert_same_tree(
        &other,
        &manifest(&hn1.path("/vz/private/162"), &[]),
        "the other VE",
    );

    // 2. Everything into the stopped VE, after damage: it lands in the private area, the VE stays
    //    stopped, the private area then equals backup #0 exactly (ticker included: --delete), and
    //    the VE starts.
    hn1.exec_ok(
        "vzctl stop 161 >/dev/null && cd /vz/private/161 && rm -f etc/passwd && \
         echo junk > junk && rm -rf var/lib && chmod 700 home/u",
    );
    assert!(!hn1.ve_running(161));
    let runs = vzctl_runs(hn1, 161);
    let (r, row, log) = bpc.restore(&RestoreReq::same_host(HOST, b0, "/", "/", &["/"]));
    assert_restore_ok(&r, &row, &log, "restore of everything into the stopped VE");
    eprintln!("restore of everything: {:.1}s", r.secs);
    assert!(
        log.contains("restore into VE 161 complete; VE stopped"),
        "RestoreLOG:\n{log}"
    );
    assert!(!hn1.ve_running(161), "the VE stays stopped");
    assert_eq!(
        vzctl_runs(hn1, 161),
        runs,
        "the restore did not start the VE"
    );
    check_restore_clean(hn1, 161);
    let all = backup_tree(&bpc, HOST, b0, "/", "/");
    assert_same_tree(
        &all,
        &manifest(&hn1.path("/vz/private/161"), &[]),
        "the stopped VE's private area vs backup #0",
    );
    hn1.exec_ok("vzctl start 161 >/dev/null");
    assert!(hn1.ve_running(161), "the restored VE starts");
    let no_ticker = |m: &BTreeMap<String, Entry>| -> BTreeMap<String, Entry> {
        m.iter()
            .filter(|(k, _)| !(k.as_str() == TICKER || k.starts_with(&format!("{TICKER}/"))))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_same_tree(
        &no_ticker(&all),
        &manifest(&hn1.path("/vz/root/161"), &[TICKER]),
        "the restarted VE's tree vs backup #0",
    );
    assert_same_tree(
        &other,
        &manifest(&hn1.path("/vz/private/162"), &[]),
        "the other VE",
    );
    check_clean(hn1);
}

/// With the tar method BackupPC counts every line of the client command's stderr that is not
/// tar's own as a transfer error: bpc-ovz, given ssh's `-q` by TarClientCmd, keeps its info lines
/// for its log file (the bed's, `level: debug`). `n`: the number of tar backups so far.
fn check_tar_logs(bpc: &Bpc4, bed: &Bed, host: &str, num: u32, n: usize) {
    let log = bpc.xferlog(host, num);
    assert!(
        log.contains("Total bytes written"),
        "tar's --totals in XferLOG.{num}:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("bpc-ovz: ")),
        "bpc-ovz's info lines in XferLOG.{num} (each counts as an xferErr):\n{log}"
    );
    let own = bed.log_text();
    assert_eq!(
        own.matches("was down for").count(),
        n,
        "bpc-ovz log:\n{own}"
    );
    assert_eq!(own.matches("tar exit 0").count(), n, "bpc-ovz log:\n{own}");
}

/// The tar XferMethod with exactly `contrib/backuppc4-tar.pl`: a full and an incremental
/// BackupPC_dump, each equal to the VE at snapshot time (BackupPC_tarCreate, BackupPC_ls), and a
/// BackupPC_restore (BackupPC_tarCreate | TarClientRestoreCmd) of a subtree into the running VE.
#[test]
fn tar_xfer_method_full_incremental_and_restore() {
    const HOST: &str = "ve163.example.com";
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(163, HOST, "10.10.0.163", true);
    let conf = Bpc4::snippet_conf("backuppc4-tar.pl", &bed, "");
    assert!(
        conf.contains("$Conf{XferMethod}          = 'tar';"),
        "{conf}"
    );
    let bpc = Bpc4::start(&[(HOST, conf)]);

    let r = bpc.dump_quiet(HOST, true);
    assert_dump_ok(&r, "tar full");
    eprintln!("tar full: {:.1}s", r.secs);
    let exp0 = capture(hn1, 163);
    assert!(hn1.ve_running(163));
    check_clean(hn1);
    let b0 = bpc.last_backup(HOST).expect("a backup");
    assert_eq!((b0.kind.as_str(), b0.xfer_errs), ("full", 0), "{b0:?}");
    check_tar_logs(&bpc, &bed, HOST, b0.num, 1);
    check_backup(&bpc, HOST, b0.num, 163, &exp0, true);

    // An incremental (tar --newer): new and changed files. (A tar incremental cannot see
    // deletions: BackupPC documents that; so nothing is deleted here.)
    std::thread::sleep(Duration::from_millis(1100));
    hn1.exec_ok(
        "cd /vz/root/163 && echo more >> home/u/file && echo new > home/u/new && \
         mkdir home/u/newdir && echo x > home/u/newdir/x && echo v2 > var/www/index.html",
    );
    let r = bpc.dump_quiet(HOST, false);
    assert_dump_ok(&r, "tar incremental");
    eprintln!("tar incr: {:.1}s", r.secs);
    let exp1 = capture(hn1, 163);
    check_clean(hn1);
    let b1 = bpc.last_backup(HOST).expect("a backup");
    assert_eq!((b1.kind.as_str(), b1.xfer_errs), ("incr", 0), "{b1:?}");
    assert!(b1.num > b0.num);
    check_tar_logs(&bpc, &bed, HOST, b1.num, 2);
    assert!(
        bpc.xferlog(HOST, b1.num).contains(" --newer="),
        "the incremental ran tar --newer"
    );
    check_backup(&bpc, HOST, b1.num, 163, &exp1, true);
    check_backup(&bpc, HOST, b0.num, 163, &exp0, true);

    // Restore backup #0's /home/u into the running VE after changes and deletions. tar neither
    // deletes nor sees what the archive lacks: the files of the backup come back exactly, and
    // what the backup did not have (home/u/new, newdir) stays.
    hn1.exec_ok(
        "cd /vz/root/163/home/u && echo changed > 'my file.txt' && rm .hidden file && \
         chmod 600 'naïve résumé.txt'",
    );
    let runs = vzctl_runs(hn1, 163);
    let req = RestoreReq::same_host(HOST, b0.num, "/", "/home", &["/home/u"]);
    let (r, row, log) = bpc.restore_opts(&req, false);
    assert_restore_ok(&r, &row, &log, "tar restore of /home/u");
    eprintln!("tar restore: {:.1}s", r.secs);
    assert!(
        !log.lines().any(|l| l.starts_with("bpc-ovz: ")),
        "RestoreLOG:\n{log}"
    );
    assert!(
        bed.log_text()
            .contains("restore into VE 163 complete; VE running"),
        "{}",
        bed.log_text()
    );
    let mut want = subtree(&exp0.tree, "home/u");
    for (k, v) in subtree(&exp1.tree, "home/u") {
        want.entry(k).or_insert(v);
    }
    // home/u/file grew in backup #1; #0's version comes back, still hard-linked.
    assert_same_tree(
        &want,
        &manifest(&hn1.path("/vz/private/163/home/u"), &[]),
        "VE's /home/u after the tar restore",
    );
    assert!(hn1.ve_running(163), "the VE still runs");
    assert_eq!(vzctl_runs(hn1, 163), runs);
    check_restore_clean(hn1, 163);
}

/// A process in the HN (its own session) that keeps writing one increasing, fixed-width number
/// into `marker` at the top of each share of a VE while the VE runs; killed (its process group,
/// by its PID) when dropped.
struct MarkerWriter(i32);

impl MarkerWriter {
    /// The writer goes through the private area, the same files as the running VE's live root
    /// (a bind mount of it): writing through the live root would keep it busy and make the
    /// `vzctl stop` of the snapshot fail. It writes only while the VE's init is alive, so the
    /// stop → snapshot window never falls between the writes of one number.
    fn start(hn: &Hn, veid: u32, dirs: &[&str]) -> MarkerWriter {
        let files: Vec<String> = dirs
            .iter()
            .map(|d| format!("/vz/private/{veid}/{d}/marker").replace("//", "/"))
            .collect();
        let script = format!(
            "# bpcovz-test-marker-writer\nI=/var/lib/vzsim/ve/{veid}/init.pid\nn=0\n\
             while :; do\n  p=; {{ read -r p < $I; }} 2>/dev/null\n\
             \x20 if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then\n\
             \x20   n=$((n + 1)); v=$(printf %010d $n)\n\
             \x20   for f in {files}; do printf '%s\\n' \"$v\" 1<>\"$f\"; done\n  fi\n\
             \x20 sleep 0.05\ndone\n",
            files = files.join(" ")
        );
        std::fs::write(hn.path("/root/marker-writer.sh"), script).expect("writer script");
        let pid: i32 = hn
            .exec_ok("setsid sh /root/marker-writer.sh </dev/null >/dev/null 2>&1 & echo $!")
            .trim()
            .parse()
            .expect("writer pid");
        let w = MarkerWriter(pid);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmd).contains("marker-writer.sh"),
            "the writer runs as {pid}"
        );
        w
    }
}

impl Drop for MarkerWriter {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group the writer leads (setsid made PID its PGID).
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

fn marker(p: &Path) -> u64 {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    t.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: not a number: {t:?}", p.display()))
}

/// Issue 8: a host with three shares configured exactly as `contrib/backuppc4-dump-lease.pl`
/// (DumpPreUserCmd `dump-begin`, DumpPostUserCmd `dump-end`, UserCmdCheckStatus): one
/// BackupPC_dump stops the VE once, and all three shares come from that one snapshot; a failing
/// dump-begin aborts the dump before any transfer, with its cause in the XferLOG.
#[test]
fn dump_lease_one_snapshot_for_all_shares_of_a_dump() {
    const HOST: &str = "ve164.example.com";
    const SHARES: [&str; 3] = ["/", "/var/lib/mysql", "/home"];
    let bed = Bed::new(1);
    let leases = bed.path("leases");
    bed.write_config(&format!(
        "lease:\n  dir: {}\n  ttl: 60s\n",
        leases.display()
    ));
    let hn1 = bed.hn("hn1");
    hn1.create_ve(164, HOST, "10.10.0.164", true);
    hn1.exec_ok("mkdir -p /vz/private/164/var/lib/mysql /vz/private/164/home");
    let conf = Bpc4::snippet_conf("backuppc4-dump-lease.pl", &bed, "");
    assert!(
        conf.contains("$Conf{RsyncShareName}     = ['/', '/var/lib/mysql', '/home'];"),
        "{conf}"
    );
    let bpc = Bpc4::start(&[(HOST, conf)]);
    let writer = MarkerWriter::start(hn1, 164, &SHARES);
    let live =
        |d: &str| marker(&hn1.path(&format!("/vz/private/164{d}/marker").replace("//", "/")));
    wait_until("the writer has written", 10, || {
        hn1.path("/vz/private/164/marker").exists() && live("/") > 2
    });

    let r = bpc.dump(HOST, true);
    assert_dump_ok(&r, "three-share full");
    eprintln!("three-share full: {:.1}s", r.secs);
    let b = bpc.last_backup(HOST).expect("a backup");
    assert_eq!((b.kind.as_str(), b.xfer_errs), ("full", 0), "{b:?}");
    assert_eq!(vzctl_stops(hn1, 164), 1, "one stop for the whole dump");
    assert!(hn1.ve_running(164));
    // The snapshot is gone once DumpPostUserCmd (dump-end) has run; so is the local lease.
    check_clean(hn1);
    let left: Vec<_> = std::fs::read_dir(&leases)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "lease files left: {left:?}");
    assert!(
        hn1.exec_ok("cat /run/bpc-ovz/lease.164.status")
            .starts_with("ended"),
        "the HN's lease holder has ended"
    );

    // Every share's marker is the same number: one snapshot. (The writer went on meanwhile.)
    let mut got = Vec::new();
    for share in SHARES {
        let ls = ls_map(bpc.ls(HOST, b.num, share, "/"));
        assert!(ls.contains_key("marker"), "share {share}: {:?}", ls.keys());
        let out = bpc.base.join(format!("share-{}", seq()));
        bpc.tar_extract(HOST, b.num, share, "/", &out);
        got.push(marker(&out.join("marker")));
        if share == "/" {
            // The ticker of share `/` is the one frozen at the one stop; etc/vzdump is there.
            assert_holds_frozen_counter(hn1, 164, "stopped", &out);
            assert!(out.join("etc/vzdump/164.conf").is_file());
            for d in &SHARES[1..] {
                assert_eq!(
                    marker(&out.join(d.trim_start_matches('/')).join("marker")),
                    got[0],
                    "{d}/marker inside share /"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(got[0] > 0, "{got:?}");
    assert!(
        got.iter().all(|m| *m == got[0]),
        "the three shares' markers differ (not one snapshot): {SHARES:?} = {got:?}"
    );
    assert!(
        live("/") > got[0],
        "the writer kept writing ({} vs {got:?})",
        live("/")
    );
    let log = bpc.xferlog(HOST, b.num);
    for want in [
        "Executing DumpPreUserCmd",
        "held for this dump",
        "Executing DumpPostUserCmd",
        "dump lease of VE 164 ended; snapshot removed",
    ] {
        assert!(log.contains(want), "XferLOG lacks {want:?}:\n{log}");
    }
    assert_eq!(
        log.matches("using the dump's snapshot").count(),
        3,
        "each share read the dump's snapshot:\n{log}"
    );

    // A failing dump-begin (the VG has no room for the snapshot): UserCmdCheckStatus aborts the
    // dump before any transfer; the cause is in the XferLOG; nothing is held.
    hn1.set_vg_free(Some(32 << 20));
    let execs = hn1.exec_log().lines().count();
    let before = bpc.backups(HOST).len();
    let r = bpc.dump(HOST, true);
    assert_eq!(r.code, Some(1), "BackupPC_dump must fail:\n{}", r.out);
    let log = bpc.latest_xferlog(HOST);
    for want in [
        "volume group vg-data has",
        "dump-begin for VE 164 failed at step preflight; nothing is held",
        // bpc-ovz's exit 71 (a precondition failed), as wait(2) status.
        "DumpPreUserCmd returned error status 18176",
    ] {
        assert!(log.contains(want), "XferLOG lacks {want:?}:\n{log}");
    }
    assert!(
        !log.contains("Running: ") && !log.contains("rsync_bpc") && !log.contains("@@"),
        "no transfer was started; no protocol lines:\n{log}"
    );
    let new: Vec<String> = hn1
        .exec_log()
        .lines()
        .skip(execs)
        .map(String::from)
        .collect();
    assert!(
        !new.iter().any(|l| l.contains("rsync")),
        "no rsync ran on the HN: {new:?}"
    );
    // BackupPC 4 may keep what it prepared for the new full as a `partial` (it fills a new full
    // from the previous backup before the transfer); no new full is recorded.
    let after = bpc.backups(HOST);
    assert!(
        after.len() <= before + 1 && after.iter().filter(|b| b.kind == "full").count() == 1,
        "{after:?}"
    );
    assert_eq!(vzctl_stops(hn1, 164), 1, "the VE was not stopped again");
    assert!(hn1.ve_running(164));
    check_clean(hn1);
    assert!(
        std::fs::read_dir(&leases).map(|d| d.count()).unwrap_or(0) == 0,
        "no lease recorded"
    );
    hn1.set_vg_free(None);
    drop(writer);
}
