//! Restores through bpc-ovz against simulated HNs: into a running VE's live root, into a stopped
//! VE's private area, in both BackupPC forms; and the promise that a restore never writes outside
//! the VE, whatever symlinks the VE holds.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// A local tree to restore from.
fn source_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("restored.txt"), "restored\n").unwrap();
    std::fs::write(dir.join("sub/deeper/file with space"), "x\n").unwrap();
    std::os::unix::fs::symlink("restored.txt", dir.join("link")).unwrap();
}

/// BackupPC 4's receiver form: a real rsync pushing through `bpc-ovz ssh`.
fn push_bpc4(
    bed: &Bed,
    host: &str,
    src: &Path,
    dest: &str,
    protect_args: bool,
    extra: &[&str],
) -> Output {
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    Command::new("rsync")
        .args(["-a", "-H", "--numeric-ids"])
        .arg(if protect_args {
            "--protect-args"
        } else {
            "--no-protect-args"
        })
        .args(extra)
        .arg("-e")
        .arg(e)
        .arg(format!("{}/", src.display()))
        .arg(format!("{host}:{dest}"))
        .output()
        .unwrap()
}

fn check_restored(root: &Path) {
    assert_eq!(
        std::fs::read_to_string(root.join("restored.txt")).unwrap(),
        "restored\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("sub/deeper/file with space")).unwrap(),
        "x\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("restored.txt")
    );
}

#[test]
fn restore_into_running_ve_uses_its_live_root_and_keeps_it_running() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(121, "ve121.example.com", "10.10.0.121", true);
    let src = bed.path("src");
    source_tree(&src);
    let before = hn1.commands_log().len();
    for (pa, dest) in [
        (true, "/home/u/restore-pa"),
        (false, "/home/u/restore-argv"),
    ] {
        let o = push_bpc4(&bed, "ve121.example.com", &src, dest, pa, &[]);
        assert_ok(&o, "restore");
        check_restored(&hn1.path(&format!("/vz/root/121{dest}")));
        assert!(
            stderr(&o).contains("restore into VE 121 complete"),
            "{}",
            stderr(&o)
        );
    }
    assert!(hn1.ve_running(121));
    let cmds = hn1.commands_log()[before..].to_string();
    assert!(
        !cmds
            .lines()
            .any(|l| l.contains("vzctl") && (l.contains(" stop ") || l.contains(" start "))),
        "{cmds}"
    );
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    let top: Vec<String> = std::fs::read_dir(hn1.path("/vz/private/121"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !top.iter().any(|n| n.starts_with(".bpcovz")),
        "tool dir removed: {top:?}"
    );
}

/// Over a slow link (a delay proxy in front of the HN's sshd: a 20 ms round trip) a restore
/// spreads its upload over `ssh.upload_channels` SSH channels (sshd's 2 MiB window per channel
/// would bound it), says so in the log, and lands byte-exact; the HN keeps no fifo directory.
#[test]
fn restore_over_a_slow_link_spreads_the_upload() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(124, "ve124.example.com", "10.10.0.124", true);
    let src = bed.path("src");
    source_tree(&src);
    // 12 MiB in files of 0.5-3 MiB: a dozen frames.
    let mut x: u32 = 7;
    for i in 0..6 {
        let len = (i + 1) << 19;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(src.join(format!("sub/blob{i}")), data).unwrap();
    }
    let pport = start_delay_proxy(hn1.port, std::time::Duration::from_millis(10));
    let kh = std::fs::read_to_string(&bed.known_hosts).unwrap();
    let proxied = kh.replace(
        &format!("[127.0.0.1]:{} ", hn1.port),
        &format!("[127.0.0.1]:{pport} "),
    );
    std::fs::write(&bed.known_hosts, format!("{kh}{proxied}")).unwrap();
    bed.write_config("");
    let cfg = std::fs::read_to_string(&bed.config).unwrap();
    let cfg = cfg.replace(
        &format!("port: {}\n", hn1.port),
        &format!("port: {pport}\n"),
    );
    std::fs::write(&bed.config, cfg).unwrap();
    let tmp_dirs = || -> Vec<String> {
        std::fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("bpcovz-up."))
            .collect()
    };

    let o = push_bpc4(&bed, "ve124.example.com", &src, "/home/u/r", true, &[]);
    assert_ok(&o, "restore over the slow link");
    assert!(
        stderr(&o).contains("hn1: upload over 4 SSH channels"),
        "{}",
        stderr(&o)
    );
    assert_same_tree(
        &manifest(&src, &[]),
        &manifest(&hn1.path("/vz/root/124/home/u/r"), &[]),
        "restored tree",
    );
    assert!(hn1.ve_running(124));
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    assert!(tmp_dirs().is_empty(), "left in /tmp: {:?}", tmp_dirs());

    // The HN's rsync fails at once (the target's parent is missing) while the client's rsync
    // waits for it: the restore ends with rsync's error, as over plain ssh (the HN side used to
    // wait for the rest of the upload for ever).
    let o = push_bpc4(&bed, "ve124.example.com", &src, "/no/such/dir", true, &[]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mkdir \"/no/such/dir\" failed"),
        "{}",
        stderr(&o)
    );
    assert!(hn1.ve_running(124));
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    assert!(tmp_dirs().is_empty(), "left in /tmp: {:?}", tmp_dirs());

    // bpc-ovz killed (SIGKILL) in the middle of the upload: on the HN, the reassembler, its
    // `cat`s and the receiving rsync all end; the guard cleans up; nothing stays in /tmp.
    // The reassembler (its $0 is bpc-ovz-upload) and the `cat`s writing into its fifos.
    let hn_side = || -> (usize, usize) {
        let (mut scripts, mut cats) = (0, 0);
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains("bpc-ovz-upload") {
                scripts += 1;
            } else if cmd == b"cat\0"
                && std::fs::read_link(e.path().join("fd/1"))
                    .is_ok_and(|t| t.to_string_lossy().starts_with("/tmp/bpcovz-up."))
            {
                cats += 1;
            }
        }
        (scripts, cats)
    };
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    let mut rsync = Command::new("rsync")
        .args([
            "-a",
            "--numeric-ids",
            "--protect-args",
            "--bwlimit=1500",
            "-e",
            &e,
        ])
        .arg(format!("{}/", src.display()))
        .arg("ve124.example.com:/home/u/killed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rsync_pid = rsync.id();
    let mut bpc = None;
    wait_until("the striped upload under way", 20, || {
        bpc = bpc.or_else(|| child_named(rsync_pid, "bpc-ovz"));
        let (scripts, cats) = hn_side();
        bpc.is_some() && scripts >= 1 && cats == 3
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(bpc.unwrap(), libc::SIGKILL);
    let _ = rsync.wait();
    wait_until("the HN side of the upload gone", 20, || hn_side() == (0, 0));
    wait_until("the guard's cleanup", 20, || hn1.leftovers().is_empty());
    assert!(hn1.ve_running(124));
    assert!(tmp_dirs().is_empty(), "left in /tmp: {:?}", tmp_dirs());

    // ssh.upload_channels: 1 keeps it on one channel.
    bed.write_config("");
    let cfg = std::fs::read_to_string(&bed.config).unwrap();
    let cfg = cfg
        .replace(
            &format!("port: {}\n", hn1.port),
            &format!("port: {pport}\n"),
        )
        .replace("  agent: false\n", "  agent: false\n  upload_channels: 1\n");
    std::fs::write(&bed.config, cfg).unwrap();
    let o = push_bpc4(&bed, "ve124.example.com", &src, "/home/u/r1", true, &[]);
    assert_ok(&o, "restore over one channel");
    assert!(!stderr(&o).contains("SSH channels"), "{}", stderr(&o));
    assert_same_tree(
        &manifest(&src, &[]),
        &manifest(&hn1.path("/vz/root/124/home/u/r1"), &[]),
        "restored tree (one channel)",
    );
}

#[test]
fn restore_into_stopped_ve_uses_its_private_area_and_keeps_it_stopped() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(122, "ve122.example.com", "10.10.0.122", false);
    let src = bed.path("src");
    source_tree(&src);
    let o = push_bpc4(&bed, "ve122.example.com", &src, "/", true, &[]);
    assert_ok(&o, "restore");
    check_restored(&hn1.path("/vz/private/122"));
    assert!(!hn1.ve_running(122));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn backuppc3_restore_form() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(123, "ve123.example.com", "10.10.0.123", true);
    let src = bed.path("src");
    source_tree(&src);
    let o = bed.rsync_bpc3_args(
        "ve123.example.com",
        &[
            &format!("{}/", src.display()),
            "ve123.example.com:/home/u/r3/",
        ],
        true,
    );
    assert_ok(&o, "BackupPC 3 restore");
    check_restored(&hn1.path("/vz/root/123/home/u/r3"));
    assert!(hn1.ve_running(123));
}

#[test]
fn restore_needs_numeric_ids() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(124, "ve124.example.com", "10.10.0.124", true);
    let o = Command::new(bin())
        .args(["ssh", "--config"])
        .arg(&bed.config)
        .args([
            "-l",
            "root",
            "ve124.example.com",
            "rsync",
            "--server",
            "-lr",
            ".",
            "/srv/x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--numeric-ids"), "{}", stderr(&o));
}

/// Hostile symlinks in the VE (absolute, relative climbing with `..`, a symlinked parent created by
/// the same restore): after restoring through them, the HN's own files and the other VEs are
/// byte-identical; what was written stayed inside the VE.
#[test]
fn restore_through_hostile_symlinks_never_writes_outside_the_ve() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(125, "ve125.example.com", "10.10.0.125", true);
    hn1.create_ve(126, "ve126.example.com", "10.10.0.126", true);
    hn1.exec_ok(
        "cd /vz/private/125 && rm -rf var/www && ln -s /etc var/www && ln -s ../../../../../../../../etc home/u/up \
         && ln -s /vz/private/126 other && ln -s /etc/vz/conf conf",
    );
    hn1.exec_ok("vzctl stop 126 >/dev/null");
    let hn_etc_before = manifest(&hn1.path("/etc"), &[]);
    let other_before = manifest(&hn1.path("/vz/private/126"), &[]);
    let src = bed.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("passwd"), "pwned\n").unwrap();
    std::fs::write(src.join("126.conf"), "pwned\n").unwrap();
    for dest in ["/var/www/", "/home/u/up/", "/other/", "/conf/"] {
        let o = push_bpc4(&bed, "ve125.example.com", &src, dest, true, &[]);
        // Whatever rsync makes of it inside the VE, nothing outside may change.
        let _ = o;
    }
    // A symlinked parent created by the same restore: `evil -> /etc` and then `evil/passwd`.
    let a = bed.path("a");
    let b = bed.path("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(b.join("evil")).unwrap();
    std::os::unix::fs::symlink("/etc", a.join("evil")).unwrap();
    std::fs::write(b.join("evil/passwd"), "pwned\n").unwrap();
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    let _ = Command::new("rsync")
        .args(["-a", "--numeric-ids", "-R", "--protect-args", "-e", &e])
        .arg(format!("{}/./evil", a.display()))
        .arg(format!("{}/./evil/passwd", b.display()))
        .arg("ve125.example.com:/")
        .output()
        .unwrap();
    assert_same_tree(&hn_etc_before, &manifest(&hn1.path("/etc"), &[]), "HN /etc");
    assert_same_tree(
        &other_before,
        &manifest(&hn1.path("/vz/private/126"), &[]),
        "the other VE",
    );
    // The writes landed in the VE's own /etc (its symlinks resolve inside the VE).
    assert_eq!(
        std::fs::read_to_string(hn1.path("/vz/private/125/etc/passwd")).unwrap(),
        "pwned\n"
    );
    assert!(hn1.ve_running(125));
    assert!(hn1.leftovers().is_empty());
}

/// Bare-metal recovery: the VE and its HN are gone; its config comes back from the backup's
/// etc/vzdump onto another HN under a new VEID, the backup is restored into the stopped VE, and it
/// starts. Recovering again is refused (no overwrite of an existing VE).
#[test]
fn bare_metal_recovery_from_etc_vzdump_under_a_new_veid() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(131, "ve131.example.com", "10.10.0.131", true);
    let backup = bed.path("b131");
    std::fs::create_dir_all(&backup).unwrap();
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    let o = Command::new("rsync")
        .args([
            "-a",
            "-H",
            "--numeric-ids",
            "--protect-args",
            "-e",
            &e,
            "ve131.example.com:/",
        ])
        .arg(format!("{}/", backup.display()))
        .output()
        .unwrap();
    assert_ok(&o, "backup");
    // hn1 burns down.
    hn1.exec_ok("vzctl stop 131 >/dev/null; rm -rf /etc/vz/conf/131.conf /vz/private/131");
    let recover = |extra: &[&str]| {
        Command::new(bin())
            .arg("--config")
            .arg(&bed.config)
            .args(["recover-config", "--from"])
            .arg(backup.join("etc/vzdump"))
            .args(["--hn", "hn2", "--veid", "231"])
            .args(extra)
            .output()
            .unwrap()
    };
    // A recovered config naming a private area with shell syntax is refused, nothing written.
    let evil = bed.path("evil-vzdump");
    std::fs::create_dir_all(&evil).unwrap();
    for f in std::fs::read_dir(backup.join("etc/vzdump")).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("VE_PRIVATE=") {
                    "VE_PRIVATE=\"/vz/private/$(touch /tmp/bpcovz-pwned-recover)\"\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(evil.join(f.file_name().unwrap()), text).unwrap();
    }
    let o = Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(["recover-config", "--from"])
        .arg(&evil)
        .args(["--hn", "hn2", "--veid", "231"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("recovered VE_PRIVATE=\"/vz/private/$(touch")
            && stderr(&o).contains("is not a clean absolute path: it holds '$'"),
        "{}",
        stderr(&o)
    );
    assert!(!hn2.path("/etc/vz/conf/231.conf").exists());
    assert!(!hn2.path("/tmp/bpcovz-pwned-recover").exists());
    let o = recover(&["--dry-run"]);
    assert_ok(&o, "dry run");
    assert!(
        !hn2.path("/etc/vz/conf/231.conf").exists(),
        "dry run writes nothing"
    );
    let o = recover(&[]);
    assert_ok(&o, "recover-config");
    let conf = std::fs::read_to_string(hn2.path("/etc/vz/conf/231.conf")).unwrap();
    assert!(conf.contains("ve131.example.com"), "{conf}");
    assert!(
        hn2.exec_ok("vzlist -a -H -o veid")
            .lines()
            .any(|l| l.trim() == "231")
    );
    // Restore everything into the stopped VE (BackupPC's restore of the whole backup).
    let o = Command::new("rsync")
        .args(["-a", "-H", "--numeric-ids", "--protect-args", "-e", &e])
        .arg(format!("{}/", backup.display()))
        .arg("ve131.example.com:/")
        .output()
        .unwrap();
    assert_ok(&o, "restore into the recovered VE");
    assert!(stderr(&o).contains("VE 231 on hn2"), "{}", stderr(&o));
    assert_same_tree(
        &manifest(&backup, &[]),
        &manifest(&hn2.path("/vz/private/231"), &[]),
        "restored VE vs backup",
    );
    hn2.exec_ok("vzctl start 231");
    assert!(hn2.ve_running(231));
    // Once more: refused, nothing changed.
    let o = recover(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hn2.path("/etc/vz/conf/231.conf")).unwrap(),
        conf
    );
}
