//! The ploop backend (OpenVZ 7 / vzctl 4.x snapshots) against the simulated HN, whose vzctl
//! stand-in keeps ploop VEs in an ext4 image and implements snapshot / snapshot-mount /
//! snapshot-umount / snapshot-delete / snapshot-list (tests/simhn/bin/vzctl).

mod common;

use std::process::Command;

use common::*;

fn create_ploop_ve(hn: &Hn, veid: u32, host: &str, ip: &str) {
    let o = Command::new(simhn().join("ve-create"))
        .arg(&hn.dir)
        .arg(veid.to_string())
        .args([host, ip, "running", "ploop"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn ploop_snapshots(hn: &Hn, veid: u32) -> String {
    hn.exec_ok(&format!("vzctl snapshot-list {veid} -H"))
}

#[test]
fn ploop_backup_from_a_frozen_snapshot() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    create_ploop_ve(hn1, 181, "ve181.example.com", "10.10.0.181");
    // A snapshot a crashed run left behind is recognised by its name and removed.
    hn1.exec_ok("vzctl snapshot 181 --id 00000000-0000-0000-0000-00000000dead --name bpcovz-181-deadbeef --skip-suspend --skip-config >/dev/null");
    let p = Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(["plan", "ve181.example.com"])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&p.stdout);
    assert!(
        plan.contains("backend") && plan.contains("ploop") && plan.contains("snapshot-mount"),
        "{plan}"
    );
    let dest = bed.path("b181");
    let o = bed.rsync_bpc4("ve181.example.com", "/", &dest, true, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("removing stale ploop snapshot bpcovz-181-deadbeef"),
        "{}",
        stderr(&o)
    );
    assert!(hn1.ve_running(181));
    assert!(
        !ploop_snapshots(hn1, 181).contains("bpcovz-"),
        "no ploop snapshot left: {}",
        ploop_snapshots(hn1, 181)
    );
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    assert!(dest.join("etc/vzdump/181.conf").is_file());
    // The backup is the VE's tree (the image's filesystem) as frozen at the stop.
    let log = hn1.ve_log(181);
    let counter = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("stopped counter="))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(dest.join("var/lib/ticker/counter"))
            .unwrap()
            .trim(),
        counter
    );
    let live = manifest(&hn1.path("/vz/root/181"), &["var/lib/ticker", "lost+found"]);
    let got = manifest(&dest, &["var/lib/ticker", "lost+found", "etc/vzdump"]);
    assert_same_tree(&live, &got, "ploop VE vs backup");
}

#[test]
fn ploop_restore_into_running_ve_and_refusal_when_stopped() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    create_ploop_ve(hn1, 182, "ve182.example.com", "10.10.0.182");
    let src = bed.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("r.txt"), "into the image\n").unwrap();
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    let push = || {
        Command::new("rsync")
            .args(["-a", "--numeric-ids", "--protect-args", "-e", &e])
            .arg(format!("{}/", src.display()))
            .arg("ve182.example.com:/home/u/")
            .output()
            .unwrap()
    };
    let o = push();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hn1.path("/vz/root/182/home/u/r.txt")).unwrap(),
        "into the image\n"
    );
    hn1.exec_ok("vzctl stop 182 >/dev/null");
    let o = push();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("stopped ploop container"),
        "{}",
        stderr(&o)
    );
    assert!(hn1.leftovers().is_empty());
}
