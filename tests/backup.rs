//! End-to-end backups through bpc-ovz against simulated HNs (real sshd, real rsync on both ends,
//! real ext4/xfs snapshots; OpenVZ and lvm2 are stand-ins, see tests/simhn/SPEC.md).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const TICKER: &str = "var/lib/ticker";

/// The received tree equals the VE's private area as it was frozen by the snapshot.
///
/// The running VE keeps writing `var/lib/ticker` after the snapshot; everything else is static,
/// so it is compared whole, and the ticker proves the freeze: the backup holds exactly the
/// counter value the VE had when bpc-ovz's `vzctl stop` ran, and not the boot file of the restart.
fn check_backup(hn: &Hn, veid: u32, dest: &Path, paths_under: &str, fz: Option<&Frozen>) {
    let private = hn.path(&format!("/vz/private/{veid}{paths_under}"));
    let skip_src = [TICKER];
    let skip_dst = [TICKER, "etc/vzdump"];
    let (src_skip, dst_skip): (&[&str], &[&str]) = if paths_under.is_empty() {
        (&skip_src, &skip_dst)
    } else {
        (&[], &["vzdump"])
    };
    let a = manifest(&private, src_skip);
    let b = manifest(dest, dst_skip);
    assert_same_tree(&a, &b, &format!("VE {veid} vs backup"));
    if let Some(fz) = fz {
        let counter = fz
            .counter
            .as_deref()
            .expect("the VE log has bpc-ovz's stop line");
        let got =
            std::fs::read_to_string(dest.join(TICKER).join("counter")).expect("counter in backup");
        assert_eq!(
            got.trim(),
            counter,
            "backup must hold the counter value frozen at the stop; the VE's log:\n{}",
            hn.ve_log(veid)
        );
        let boot = dest.join(TICKER).join(format!("boot-{}", fz.boots));
        assert!(
            !boot.exists(),
            "{} was written after the snapshot and must not be in the backup",
            boot.display()
        );
        assert!(
            dest.join(TICKER)
                .join(format!("boot-{}", fz.boots - 1))
                .exists(),
            "the boot before the snapshot is there"
        );
    }
}

fn check_vzdump(hn: &Hn, veid: u32, etc: &Path) {
    let conf = std::fs::read(hn.path(&format!("/etc/vz/conf/{veid}.conf"))).expect("conf");
    let got = std::fs::read(etc.join(format!("vzdump/{veid}.conf")))
        .expect("etc/vzdump/VEID.conf in backup");
    assert_eq!(conf, got);
}

fn check_clean(hn: &Hn) {
    let left = hn.leftovers();
    assert!(left.is_empty(), "{} has leftovers: {left:?}", hn.name);
}

#[test]
fn bpc4_protect_args_full_then_incremental() {
    let bed = Bed::new(2);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    let dest = bed.path("b101");
    let o = bed.rsync_bpc4("ve101.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "full backup");
    let log = stderr(&o);
    assert!(
        log.contains("was down for"),
        "downtime in the XferLOG: {log}"
    );
    assert!(log.contains("ve101.example.com is VE 101 on hn1"), "{log}");
    assert!(hn1.ve_running(101), "VE back up");
    check_clean(hn1);
    check_vzdump(hn1, 101, &dest.join("etc"));
    let fz = frozen(hn1, 101);
    // Stop the VE to compare the static part of the tree.
    hn1.exec_ok("vzctl stop 101 >/dev/null");
    check_backup(hn1, 101, &dest, "", Some(&fz));
    hn1.exec_ok("vzctl start 101 >/dev/null");

    // Incremental after changes inside the VE.
    hn1.exec_ok("echo changed > /vz/root/101/home/u/file; echo new > /vz/root/101/home/u/new; rm -f /vz/root/101/var/www/index.html");
    wait_for_a_newer_counter(hn1, 101, &dest);
    let o = bed.rsync_bpc4("ve101.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "incremental backup");
    assert!(hn1.ve_running(101));
    check_clean(hn1);
    let fz = frozen(hn1, 101);
    hn1.exec_ok("vzctl stop 101 >/dev/null");
    check_backup(hn1, 101, &dest, "", Some(&fz));
    assert_eq!(
        std::fs::read_to_string(dest.join("home/u/new")).unwrap(),
        "new\n"
    );
    assert!(!dest.join("var/www/index.html").exists());
}

/// A VE whose init takes seconds to come up after the backup's start (a loaded HN): the VE runs
/// on its private area afterwards, so the next backup holds what it wrote. (Once seen in the VM
/// tier, where every exec is slow: the simulated vzctl gave up on a slow init after 3 s, unmounted
/// VE_ROOT under it, and the retried start found it running in the bare mount point.)
#[test]
fn a_ve_whose_init_is_slow_to_come_up_runs_on_its_private_area() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    let dest = bed.path("b101");
    hn1.exec_ok("echo 4000 > /etc/vzsim/faults/slow-init-ms");
    let o = bed.rsync_bpc4("ve101.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "full backup");
    assert!(hn1.ve_running(101), "VE back up");
    hn1.exec_ok("rm -f /etc/vzsim/faults/slow-init-ms");
    let log = stderr(&o);
    assert!(!log.contains("retrying"), "one start was enough:\n{log}");
    assert_eq!(
        hn1.exec_ok("mountpoint -q /vz/root/101 && echo mounted"),
        "mounted\n",
        "VE_ROOT of the running VE is its private area"
    );
    // The slow init writes its boot file into the private area once it is up.
    let boot = hn1.path(&format!(
        "/vz/private/101/{TICKER}/boot-{}",
        frozen(hn1, 101).boots
    ));
    wait_until("the slow init's boot file", 30, || boot.exists());

    hn1.exec_ok("echo new > /vz/root/101/home/u/new");
    wait_for_a_newer_counter(hn1, 101, &dest);
    let o = bed.rsync_bpc4("ve101.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "incremental backup");
    check_clean(hn1);
    let fz = frozen(hn1, 101);
    hn1.exec_ok("vzctl stop 101 >/dev/null");
    check_backup(hn1, 101, &dest, "", Some(&fz));
    assert_eq!(
        std::fs::read_to_string(dest.join("home/u/new")).expect("home/u/new in the backup"),
        "new\n"
    );
}

#[test]
fn bpc4_paths_in_argv_ve_on_second_hn_by_ip_on_xfs() {
    let bed = Bed::new(2);
    let hn2 = bed.hn("hn2");
    hn2.create_ve(202, "ve202.example.com", "10.10.0.202", true);
    let dest = bed.path("b202");
    let o = bed.rsync_bpc4("10.10.0.202", "/etc/", &dest, false, &[]);
    assert_ok(&o, "backup of /etc without protect-args");
    assert!(stderr(&o).contains("VE 202 on hn2"), "{}", stderr(&o));
    assert!(hn2.ve_running(202));
    check_clean(hn2);
    check_clean(bed.hn("hn1"));
    check_vzdump(hn2, 202, &dest);
    check_backup(hn2, 202, &dest, "/etc", None);
    // The xfs snapshot needed nouuid: the mount command in the exec log says so.
    assert!(
        hn2.exec_log().contains("nouuid"),
        "xfs snapshot mounted with nouuid"
    );
}

#[test]
fn bpc3_server_form_one_socket_protocol_28() {
    let bed = Bed::new(2);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(103, "ve103.example.com", "10.10.0.103", true);
    let dest = bed.path("b103");
    let o = bed.rsync_bpc3("ve103.example.com", "/", &dest, false);
    assert_ok(&o, "BackupPC 3 form backup");
    assert!(hn1.ve_running(103));
    check_clean(hn1);
    check_vzdump(hn1, 103, &dest.join("etc"));
    let fz = frozen(hn1, 103);
    hn1.exec_ok("vzctl stop 103 >/dev/null");
    check_backup(hn1, 103, &dest, "", Some(&fz));
    // Diagnostics went to the log file, never to the protocol socket.
    let log = bed.log_text();
    assert!(log.contains("was down for"), "{log}");
}

#[test]
fn stopped_ve_is_backed_up_and_stays_stopped() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(104, "ve104.example.com", "10.10.0.104", false);
    let dest = bed.path("b104");
    let o = bed.rsync_bpc4("ve104.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "backup of a stopped VE");
    assert!(!hn1.ve_running(104), "a stopped VE stays stopped");
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
    let cmds = hn1.commands_log();
    assert!(
        !cmds
            .lines()
            .any(|l| l.contains("vzctl") && (l.contains(" start") || l.contains(" stop"))),
        "no stop/start: {cmds}"
    );
    check_clean(hn1);
    check_backup(hn1, 104, &dest, "", None);
}

#[test]
fn migrated_ve_is_found_on_its_new_hn() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(105, "ve105.example.com", "10.10.0.105", true);
    let dest = bed.path("b105");
    assert_ok(
        &bed.rsync_bpc4("ve105.example.com", "/", &dest, true, &[]),
        "backup before migration",
    );
    // "vzmigrate": the VE leaves hn1 and appears on hn2 (no config change for bpc-ovz).
    hn1.exec_ok("vzctl stop 105 >/dev/null; rm -f /etc/vz/conf/105.conf; rm -rf /vz/private/105");
    hn2.create_ve(105, "ve105.example.com", "10.10.0.105", true);
    let o = bed.rsync_bpc4("ve105.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "backup after migration");
    assert!(stderr(&o).contains("VE 105 on hn2"), "{}", stderr(&o));
    assert!(hn2.ve_running(105));
    check_clean(hn1);
    check_clean(hn2);
    let fz = frozen(hn2, 105);
    hn2.exec_ok("vzctl stop 105 >/dev/null");
    check_backup(hn2, 105, &dest, "", Some(&fz));
}

/// When the exec of `what` (a part of its command line) started on `hn`, in epoch ms: the last one.
fn exec_started(hn: &Hn, what: &str) -> u64 {
    hn.exec_log()
        .lines()
        .rfind(|l| l.contains(what))
        .and_then(|l| l.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no exec of {what:?} on {}:\n{}", hn.name, hn.exec_log()))
}

/// With the VE → HN cache (`refresh`), the probe runs on the cached HN while its `vzlist`
/// confirms the VE: a slow `vzlist` does not hold it back. Its result is used only for the VE the
/// cache named: a VE that took over the host name (another VEID) is probed anew, and a VE that
/// moved is found on its new HN.
#[test]
fn the_probe_runs_next_to_the_cached_hns_vzlist() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(106, "ve106.example.com", "10.10.0.106", true);
    let refresh = |what: &str| {
        let o = Command::new(bin())
            .arg("--config")
            .arg(&bed.config)
            .args(["refresh"])
            .output()
            .expect("bpc-ovz refresh");
        assert_ok(&o, what);
    };
    refresh("refresh");
    hn1.exec_ok("echo 1500 > /etc/vzsim/faults/slow-vzlist-ms");
    let dest = bed.path("b106");
    let o = bed.rsync_bpc4("ve106.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "backup with the cache");
    let (list, probe) = (
        exec_started(hn1, "vzlist -a -H"),
        exec_started(hn1, "sec status; vzctl status 106"),
    );
    assert!(
        probe.abs_diff(list) < 1000,
        "the probe started {probe} ms, vzlist (1.5 s) at {list} ms: not side by side"
    );
    assert!(
        bed.log_text()
            .contains("hn1: VE 106: probed next to vzlist"),
        "{}",
        bed.log_text()
    );
    check_clean(hn1);
    let fz = frozen(hn1, 106);
    hn1.exec_ok("vzctl stop 106 >/dev/null");
    check_backup(hn1, 106, &dest, "", Some(&fz));

    // VE 106 is gone; VE 107 on the same HN now has its name: the early probe (of 106) is not
    // used, VE 107 is probed and backed up.
    hn1.exec_ok("rm -f /etc/vz/conf/106.conf; rm -rf /vz/private/106");
    hn1.create_ve(107, "ve106.example.com", "10.10.0.106", true);
    let d107 = bed.path("b107");
    let o = bed.rsync_bpc4("ve106.example.com", "/", &d107, true, &[]);
    assert_ok(&o, "backup of the VE that took the name");
    assert!(stderr(&o).contains("VE 107 on hn1"), "{}", stderr(&o));
    assert!(
        exec_started(hn1, "vzctl status 107") > exec_started(hn1, "sec status; vzctl status 106"),
        "VE 107 probed after the early probe of 106"
    );
    let fz = frozen(hn1, 107);
    hn1.exec_ok("vzctl stop 107 >/dev/null");
    check_backup(hn1, 107, &d107, "", Some(&fz));

    // The VE moved to hn2: found there (the cache's HN no longer lists it).
    refresh("refresh after the swap");
    hn1.exec_ok(
        "rm -f /etc/vz/conf/107.conf; rm -rf /vz/private/107; rm /etc/vzsim/faults/slow-vzlist-ms",
    );
    hn2.create_ve(107, "ve106.example.com", "10.10.0.106", true);
    let o = bed.rsync_bpc4("ve106.example.com", "/", &d107, true, &[]);
    assert_ok(&o, "backup after the move");
    assert!(stderr(&o).contains("VE 107 on hn2"), "{}", stderr(&o));
    check_clean(hn1);
    check_clean(hn2);
    let fz = frozen(hn2, 107);
    hn2.exec_ok("vzctl stop 107 >/dev/null");
    check_backup(hn2, 107, &d107, "", Some(&fz));
}

#[test]
fn refuses_what_is_not_an_rsync_server_before_connecting() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(106, "ve106.example.com", "10.10.0.106", true);
    let before = hn1.exec_log();
    for cmd in [
        vec!["rm", "-rf", "/"],
        vec![
            "rsync",
            "--server",
            "--sender",
            "--log-file=/etc/passwd",
            ".",
            "/",
        ],
        vec!["rsync", "--server", "--sender", "-lr", ".", "/../../etc"],
        vec!["sh", "-c", "rsync --server --sender . /"],
    ] {
        let o = Command::new(bin())
            .args(["ssh", "--config"])
            .arg(&bed.config)
            .args(["-l", "root", "ve106.example.com"])
            .args(&cmd)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        assert!(stderr(&o).lines().count() >= 1);
    }
    assert_eq!(hn1.exec_log(), before, "nothing ran on the HN");
}

#[test]
fn unknown_ve_names_the_hns_asked() {
    let bed = Bed::new(2);
    let o = Command::new(bin())
        .args(["ssh", "--config"])
        .arg(&bed.config)
        .args([
            "-l",
            "root",
            "nosuchve.example.com",
            "rsync",
            "--server",
            "--sender",
            "-lr",
            ".",
            "/",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(70), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("hn1") && e.contains("hn2"), "{e}");
}

/// Start a BackupPC 4 style backup in the background; returns the rsync child.
fn spawn_bpc4(bed: &Bed, host: &str, dest: &Path, extra: &[&str]) -> std::process::Child {
    std::fs::create_dir_all(dest).unwrap();
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    Command::new("rsync")
        .args(["-a", "--protect-args"])
        .args(extra)
        .arg("-e")
        .arg(e)
        .arg(format!("{host}:/"))
        .arg(format!("{}/", dest.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// bpc-ovz killed with SIGKILL while the VE is down (inside `lvcreate`): the HN still restarts
/// the VE and, once the connection is gone, the guard removes the snapshot by itself.
#[test]
fn sigkill_inside_the_downtime_window_hn_restarts_and_cleans_up() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(107, "ve107.example.com", "10.10.0.107", true);
    hn1.exec_ok("mkdir -p /etc/vzsim/faults && echo 2500 > /etc/vzsim/faults/slow-lvcreate-ms");
    let mut rsync = spawn_bpc4(&bed, "ve107.example.com", &bed.path("b107"), &[]);
    let mut pid = None;
    wait_until("bpc-ovz started", 10, || {
        pid = child_of(rsync.id());
        pid.is_some()
    });
    wait_until("VE stopped by the downtime step", 15, || {
        !hn1.ve_running(107)
    });
    kill(pid.unwrap(), libc::SIGKILL);
    let _ = rsync.wait();
    wait_until("VE running again", 20, || hn1.ve_running(107));
    wait_until("no snapshot, mount or lock left", 30, || {
        hn1.leftovers().is_empty()
    });
}

/// BackupPC's abort during the transfer: SIGINT, then SIGKILL one second later.
#[test]
fn backuppc_abort_during_transfer_leaves_nothing_behind() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(108, "ve108.example.com", "10.10.0.108", true);
    hn1.exec_ok("head -c 4000000 /dev/urandom > /vz/private/108/home/u/big");
    let mut rsync = spawn_bpc4(
        &bed,
        "ve108.example.com",
        &bed.path("b108"),
        &["--bwlimit=400"],
    );
    let mut pid = None;
    wait_until("bpc-ovz started", 10, || {
        pid = child_of(rsync.id());
        pid.is_some()
    });
    wait_until("snapshot mounted and transfer running", 20, || {
        hn1.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    let pid = pid.unwrap();
    kill(pid, libc::SIGINT);
    std::thread::sleep(std::time::Duration::from_secs(1));
    kill(pid, libc::SIGKILL);
    let _ = rsync.kill();
    let _ = rsync.wait();
    assert!(hn1.ve_running(108));
    wait_until("no snapshot, mount or lock left", 40, || {
        hn1.leftovers().is_empty()
    });
}

fn bpc4(bed: &Bed, host: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["ssh", "--config"])
        .arg(&bed.config)
        .args(["-l", "root", host])
        .args(args)
        .output()
        .unwrap()
}

fn vzctl_stops(hn: &Hn, veid: u32) -> usize {
    hn.commands_log()
        .lines()
        .filter(|l| l.contains("vzctl") && l.contains(" stop") && l.contains(&veid.to_string()))
        .count()
}

#[test]
fn vg_without_room_is_refused_before_the_ve_is_stopped() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(110, "ve110.example.com", "10.10.0.110", true);
    // 512 MiB origin + 32 MiB free; the snapshot wants 64 MiB.
    hn1.exec_ok("echo $((544 * 1024 * 1024)) > /etc/vzsim/vg_size");
    let o = bed.rsync_bpc4("ve110.example.com", "/", &bed.path("b110"), true, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("volume group vg-data has") && e.contains("snapshot.size"),
        "{e}"
    );
    assert_eq!(vzctl_stops(hn1, 110), 0, "the VE was never stopped");
    assert!(hn1.ve_running(110));
    check_clean(hn1);
    // Exit code as bpc-ovz reports it (rsync wraps it): 71.
    let o = bpc4(
        &bed,
        "ve110.example.com",
        &["rsync", "--server", "--sender", "-lr", ".", "/"],
    );
    assert_eq!(o.status.code(), Some(71), "{}", stderr(&o));
}

#[test]
fn ve_locked_by_vzctl_is_refused_before_any_downtime() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(111, "ve111.example.com", "10.10.0.111", true);
    // A live PID (the HN's sshd) holds vzctl's lock: a migration is running.
    hn1.exec_ok(&format!(
        "mkdir -p /var/lib/vz/lock && echo {} > /var/lib/vz/lock/111.lck",
        hn1.pid
    ));
    let o = bpc4(
        &bed,
        "ve111.example.com",
        &["rsync", "--server", "--sender", "-lr", ".", "/"],
    );
    assert_eq!(o.status.code(), Some(71), "{}", stderr(&o));
    assert!(stderr(&o).contains("locked by vzctl"), "{}", stderr(&o));
    assert_eq!(vzctl_stops(hn1, 111), 0);
    assert!(hn1.ve_running(111));
    // The foreign lock is left alone.
    assert_eq!(
        hn1.exec_ok("cat /var/lib/vz/lock/111.lck").trim(),
        hn1.pid.to_string()
    );
    // A stale lock (dead PID) is removed and the backup runs.
    hn1.exec_ok("echo 999999 > /var/lib/vz/lock/111.lck");
    assert_ok(
        &bed.rsync_bpc4("ve111.example.com", "/", &bed.path("b111"), true, &[]),
        "backup after a stale lock",
    );
    check_clean(hn1);
}

#[test]
fn snapshot_overflow_during_the_transfer_fails_the_backup() {
    let bed = Bed::new(1);
    bed.write_config_with("8M", "");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(112, "ve112.example.com", "10.10.0.112", true);
    hn1.exec_ok("head -c 3000000 /dev/urandom > /vz/private/112/home/u/big");
    let dest = bed.path("b112");
    let rsync = spawn_bpc4(&bed, "ve112.example.com", &dest, &["--bwlimit=600"]);
    wait_until("transfer running", 20, || {
        hn1.exec("grep -q bpc-ovz /proc/mounts && pgrep -f 'rsync --server --sender' >/dev/null")
            .status
            .success()
    });
    // The running VE writes far more than the 8 MiB COW area holds.
    hn1.exec_ok(
        "dd if=/dev/urandom of=/vz/root/112/home/u/churn bs=1M count=24 conv=fsync 2>/dev/null",
    );
    let o = rsync.wait_with_output().unwrap();
    let e = stderr(&o);
    // bpc-ovz's 73 (torn snapshot), passed on by the rsync client as its own exit code.
    assert_eq!(
        o.status.code(),
        Some(73),
        "an overflowed snapshot fails the backup as torn: {e}"
    );
    assert!(
        e.contains("failed at step verify")
            && (e.contains("overflowed") || e.contains("is full"))
            && e.contains("the backup read a torn snapshot; raise snapshot.size"),
        "{e}"
    );
    assert!(hn1.ve_running(112));
    check_clean(hn1);
}

#[test]
fn per_hn_limit_queues_concurrent_backups() {
    let bed = Bed::new(1);
    bed.write_config("concurrency:\n  per_hn: 1\n");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(113, "ve113.example.com", "10.10.0.113", true);
    hn1.create_ve(114, "ve114.example.com", "10.10.0.114", true);
    for id in [113, 114] {
        hn1.exec_ok(&format!(
            "head -c 1500000 /dev/urandom > /vz/private/{id}/home/u/big"
        ));
    }
    let a = spawn_bpc4(
        &bed,
        "ve113.example.com",
        &bed.path("b113"),
        &["--bwlimit=1000"],
    );
    let b = spawn_bpc4(
        &bed,
        "ve114.example.com",
        &bed.path("b114"),
        &["--bwlimit=1000"],
    );
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_ok(&oa, "first");
    assert_ok(&ob, "second");
    let both = format!("{}{}", stderr(&oa), stderr(&ob));
    assert!(
        both.contains("backup slots of this HN are busy"),
        "one of them waited: {both}"
    );
    assert!(hn1.ve_running(113) && hn1.ve_running(114));
    check_clean(hn1);
}

#[test]
fn unknown_host_key_and_bad_config_are_refused_with_one_clear_line() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(115, "ve115.example.com", "10.10.0.115", true);
    let before = hn1.exec_log();
    std::fs::write(&bed.known_hosts, "").unwrap();
    let o = bpc4(
        &bed,
        "ve115.example.com",
        &["rsync", "--server", "--sender", "-lr", ".", "/"],
    );
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("127.0.0.1") && e.contains(&bed.known_hosts.display().to_string()),
        "{e}"
    );
    assert_eq!(hn1.exec_log(), before);

    std::fs::write(&bed.config, "hns: [127.0.0.1]\nsnapshot:\n  size: plenty\n").unwrap();
    let o = bpc4(
        &bed,
        "ve115.example.com",
        &["rsync", "--server", "--sender", "-lr", ".", "/"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&bed.config.display().to_string()) && e.contains("snapshot.size"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
}
