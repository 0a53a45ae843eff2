//! BackupPC's tar XferMethod through bpc-ovz: backup from the snapshot, restore into the VE with
//! the same confinement as rsync restores, and refusal of tar options that reach beyond that.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

/// `$Conf{TarClientCmd}` with bpc-ovz as `$sshPath` (BackupPC 3 and 4 alike).
fn tar_cmd(bed: &Bed, host: &str, tar_args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(bin());
    c.args(["ssh", "--config"]).arg(&bed.config).args([
        "-q", "-x", "-n", "-l", "root", host, "env", "LC_ALL=C", "/bin/tar",
    ]);
    c.args(tar_args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut si = child.stdin.take().unwrap();
    if let Some(b) = stdin {
        si.write_all(b).unwrap();
    }
    drop(si);
    child.wait_with_output().unwrap()
}

fn untar(archive: &[u8], dest: &std::path::Path) {
    std::fs::create_dir_all(dest).unwrap();
    let mut c = Command::new("tar")
        .args(["-x", "-p", "--numeric-owner", "-f", "-", "-C"])
        .arg(dest)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(archive).unwrap();
    assert!(c.wait().unwrap().success());
}

#[test]
fn tar_backup_from_the_snapshot_full_and_incremental() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(141, "ve141.example.com", "10.10.0.141", true);
    let o = tar_cmd(
        &bed,
        "ve141.example.com",
        &["-c", "-v", "-f", "-", "-C", "/", "--totals", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    // `-q` (as in BackupPC's TarClientCmd): bpc-ovz's info lines go to its log, not to stderr,
    // where BackupPC's tar method would count each as a transfer error.
    let l = bed.log_text();
    assert!(
        l.contains("was down for") && l.contains("tar exit 0"),
        "{l}"
    );
    assert!(!e.contains("bpc-ovz: "), "{e}");
    assert!(
        e.contains("Total bytes written"),
        "tar's --totals reach the XferLOG: {e}"
    );
    let dest = bed.path("t141");
    untar(&o.stdout, &dest);
    assert!(dest.join("etc/vzdump/141.conf").is_file());
    assert!(hn1.ve_running(141));
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    hn1.exec_ok("vzctl stop 141 >/dev/null");
    let a = manifest(&hn1.path("/vz/private/141"), &["var/lib/ticker"]);
    let b = manifest(&dest, &["var/lib/ticker", "etc/vzdump"]);
    assert_same_tree(&a, &b, "VE vs tar backup");
    hn1.exec_ok("vzctl start 141 >/dev/null");

    // Incremental: only what changed since the date.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let since = hn1.exec_ok("date '+%Y-%m-%d %H:%M:%S'").trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    hn1.exec_ok("echo new > /vz/root/141/home/u/new-file");
    // BackupPC's `$incrDate+` escapes the space, as the remote shell needs it.
    let newer = format!("--newer={}", since.replace(' ', "\\ "));
    let o = tar_cmd(
        &bed,
        "ve141.example.com",
        &[
            "-c", "-v", "-f", "-", "-C", "/", "--totals", &newer, "./home",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let inc = bed.path("t141i");
    untar(&o.stdout, &inc);
    assert_eq!(
        std::fs::read_to_string(inc.join("home/u/new-file")).unwrap(),
        "new\n"
    );
    assert!(
        !inc.join("home/u/file").exists(),
        "unchanged files are not in the incremental"
    );
}

#[test]
fn tar_restore_is_confined_to_the_ve() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(142, "ve142.example.com", "10.10.0.142", true);
    hn1.exec_ok("cd /vz/private/142 && rm -rf var/www && ln -s /etc var/www");
    let hn_etc = manifest(&hn1.path("/etc"), &[]);
    // An archive with a file for the VE and one aimed through the hostile symlink.
    let src = bed.path("src");
    std::fs::create_dir_all(src.join("var/www")).unwrap();
    std::fs::write(src.join("restored.txt"), "from tar\n").unwrap();
    std::fs::write(src.join("var/www/passwd"), "pwned\n").unwrap();
    let ar = Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(&src)
        .args(["restored.txt", "var/www/passwd"])
        .output()
        .unwrap();
    assert!(ar.status.success());
    let o = tar_cmd(
        &bed,
        "ve142.example.com",
        &[
            "-x",
            "-p",
            "--numeric-owner",
            "--same-owner",
            "-v",
            "-f",
            "-",
            "-C",
            "/home/u",
        ],
        Some(&ar.stdout),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hn1.path("/vz/private/142/home/u/restored.txt")).unwrap(),
        "from tar\n"
    );
    let o = tar_cmd(
        &bed,
        "ve142.example.com",
        &[
            "-x",
            "-p",
            "--numeric-owner",
            "--same-owner",
            "-v",
            "-f",
            "-",
            "-C",
            "/",
        ],
        Some(&ar.stdout),
    );
    let _ = o;
    assert_same_tree(
        &hn_etc,
        &manifest(&hn1.path("/etc"), &[]),
        "HN /etc after tar restores",
    );
    assert!(hn1.ve_running(142));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn tar_options_that_reach_outside_are_refused() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(143, "ve143.example.com", "10.10.0.143", true);
    let before = hn1.exec_log();
    for args in [
        &["-c", "-f", "/etc/shadow", "-C", "/", "."][..],
        &["-c", "-f", "-", "-C", "/", "--to-command=sh", "."],
        &["-c", "-f", "-", "-C", "/", "-T", "/etc/list"],
        &["-c", "-f", "-", "-C", "/", "../../etc"],
        &["-x", "-f", "-", "-C", "/"],
    ] {
        let o = tar_cmd(&bed, "ve143.example.com", args, None);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(hn1.exec_log(), before, "nothing ran on the HN");
}
