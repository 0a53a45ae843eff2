//! End-to-end backups through bpc-ovz against simulated HNs (real sshd, real rsync on both ends,
//! real ext4/xfs snapshots; OpenVZ and lvm2 are stand-ins, see tests/simhn/SPEC.md).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const TICKER: &str = "var/lib/ticker";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// The received tree equals the VE's private area as it was frozen by the snapshot.
///
/// The running VE keeps writing `var/lib/ticker` after the snapshot; everything else is static,
/// so it is compared whole, and the ticker proves the freeze: the backup holds exactly the
/// counter value the VE had when `vzctl stop` ran, and not the boot file of the restart.
fn check_backup(hn: &Hn, veid: u32, dest: &Path, paths_under: &str, was_running: bool) {
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
    if paths_under.is_empty() {
        let log = hn.ve_log(veid);
        let boots = log.lines().filter(|l| l.starts_with("started")).count();
        if was_running {
            let stopped = log
                .lines()
                .rev()
                .find(|l| l.starts_with("stopped"))
                .expect("ve log has a stop line");
            let counter = stopped
                .split_whitespace()
                .find_map(|w| w.strip_prefix("counter="))
                .expect("counter");
            let got = std::fs::read_to_string(dest.join(TICKER).join("counter"))
                .expect("counter in backup");
            assert_eq!(
                got.trim(),
                counter,
                "backup must hold the counter value frozen at the stop"
            );
            assert!(
                !dest.join(TICKER).join(format!("boot-{boots}")).exists(),
                "boot-{boots} was written after the snapshot and must not be in the backup"
            );
        }
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
    // Freeze the VE to compare the static part of the tree.
    hn1.exec_ok("vzctl stop 101 >/dev/null");
    check_backup(hn1, 101, &dest, "", true);
    hn1.exec_ok("vzctl start 101 >/dev/null");

    // Incremental after changes inside the VE.
    hn1.exec_ok("echo changed > /vz/root/101/home/u/file; echo new > /vz/root/101/home/u/new; rm -f /vz/root/101/var/www/index.html");
    let o = bed.rsync_bpc4("ve101.example.com", "/", &dest, true, &[]);
    assert_ok(&o, "incremental backup");
    assert!(hn1.ve_running(101));
    check_clean(hn1);
    hn1.exec_ok("vzctl stop 101 >/dev/null");
    check_backup(hn1, 101, &dest, "", true);
    assert_eq!(
        std::fs::read_to_string(dest.join("home/u/new")).unwrap(),
        "new\n"
    );
    assert!(!dest.join("var/www/index.html").exists());
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
    check_backup(hn2, 202, &dest, "/etc", true);
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
    hn1.exec_ok("vzctl stop 103 >/dev/null");
    check_backup(hn1, 103, &dest, "", true);
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
    check_backup(hn1, 104, &dest, "", false);
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
    hn2.exec_ok("vzctl stop 105 >/dev/null");
    check_backup(hn2, 105, &dest, "", true);
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
