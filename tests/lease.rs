//! One snapshot per BackupPC dump: `dump-begin` / transfers / `dump-end`, lease expiry on the HN,
//! and no reuse of a lease by another dump.

mod common;

use std::process::{Command, Output};

use common::*;

fn lease_bed(n: usize, ttl: &str) -> Bed {
    let bed = Bed::new(n);
    let dir = bed.path("leases");
    bed.write_config(&format!("lease:\n  dir: {}\n  ttl: {ttl}\n", dir.display()));
    bed
}

/// A BackupPC_dump stand-in: one shell process that runs DumpPreUserCmd, the share transfers and
/// DumpPostUserCmd as its children, exactly as BackupPC_dump does.
fn dump_script(bed: &Bed, host: &str, shares: &[(&str, &str)], pre: bool, post: bool) -> Output {
    let b = bin();
    let c = bed.config.display();
    let mut s = String::from("set -u\n");
    if pre {
        s.push_str(&format!("{b} --config {c} dump-begin {host} || exit 10\n"));
    }
    for (i, (share, dest)) in shares.iter().enumerate() {
        s.push_str(&format!(
            "mkdir -p {dest}; sleep 0.4; rsync -a -H --numeric-ids --protect-args -e '{b} ssh --config {c} -l root' {host}:{share} {dest}/ || exit {}\n",
            20 + i
        ));
    }
    if post {
        s.push_str(&format!("{b} --config {c} dump-end {host} || exit 30\n"));
    }
    Command::new("sh").arg("-c").arg(s).output().unwrap()
}

fn stops(hn: &Hn, veid: u32) -> usize {
    hn.commands_log()
        .lines()
        .filter(|l| l.contains("vzctl") && l.contains(" stop") && l.ends_with(&format!(" {veid}")))
        .count()
}

#[test]
fn three_shares_of_one_dump_read_one_snapshot() {
    let bed = lease_bed(1, "60s");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(151, "ve151.example.com", "10.10.0.151", true);
    let (d1, d2, d3) = (bed.path("s1"), bed.path("s2"), bed.path("s3"));
    let o = dump_script(
        &bed,
        "ve151.example.com",
        &[
            ("/", &d1.display().to_string()),
            ("/etc/", &d2.display().to_string()),
            ("/var/", &d3.display().to_string()),
        ],
        true,
        true,
    );
    assert!(
        o.status.success(),
        "dump failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    assert_eq!(stops(hn1, 151), 1, "one stop/start for the whole dump");
    // The running VE rewrites the counter every 50 ms: all three shares read the same moment.
    let c1 = std::fs::read_to_string(d1.join("var/lib/ticker/counter")).unwrap();
    let c3 = std::fs::read_to_string(d3.join("lib/ticker/counter")).unwrap();
    assert_eq!(c1, c3, "shares / and /var/ come from one snapshot");
    assert_eq!(
        std::fs::read(d1.join("etc/hostname")).unwrap(),
        std::fs::read(d2.join("hostname")).unwrap()
    );
    assert!(
        d2.join("vzdump/151.conf").is_file(),
        "etc/vzdump in the /etc share"
    );
    let e = stderr(&o);
    assert!(e.contains("using the dump's snapshot"), "{e}");
    assert!(e.contains("was down for"), "{e}");
    assert!(hn1.ve_running(151));
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());
    // Without the pre/post commands: one snapshot per transfer, as before.
    let (e1, e2) = (bed.path("e1"), bed.path("e2"));
    let o = dump_script(
        &bed,
        "ve151.example.com",
        &[
            ("/", &e1.display().to_string()),
            ("/var/", &e2.display().to_string()),
        ],
        false,
        false,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stops(hn1, 151), 3);
}

#[test]
fn a_lease_without_dump_end_expires_on_the_hn_by_itself() {
    let bed = lease_bed(1, "3s");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(152, "ve152.example.com", "10.10.0.152", true);
    // BackupPC_dump runs dump-begin, then dies: no transfer, no dump-end.
    let o = dump_script(&bed, "ve152.example.com", &[], true, false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!hn1.leftovers().is_empty(), "the snapshot is held");
    let t = std::time::Instant::now();
    while !hn1.leftovers().is_empty() {
        assert!(
            t.elapsed().as_secs() < 30,
            "lease did not expire: {:?}",
            hn1.leftovers()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(hn1.ve_running(152));
    // The next dump starts cleanly (the stale local lease is ended, never reused).
    let d = bed.path("n1");
    let o = dump_script(
        &bed,
        "ve152.example.com",
        &[("/", &d.display().to_string())],
        true,
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn a_lease_is_not_used_by_another_dump() {
    let bed = lease_bed(1, "60s");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(153, "ve153.example.com", "10.10.0.153", true);
    let o = dump_script(&bed, "ve153.example.com", &[], true, false);
    assert!(o.status.success(), "{}", stderr(&o));
    // A transfer that is not a child of that dump: it must not read the other dump's snapshot.
    let d = bed.path("x");
    std::fs::create_dir_all(&d).unwrap();
    let e = format!("{} ssh --config {} -l root", bin(), bed.config.display());
    let o = Command::new("rsync")
        .args(["-a", "--protect-args", "-e", &e, "ve153.example.com:/"])
        .arg(format!("{}/", d.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already being backed up"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("using the dump's snapshot"));
    // dump-end from here still releases it.
    let o = Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(["dump-end", "ve153.example.com"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn a_failed_dump_begin_aborts_the_dump_with_its_cause() {
    let bed = lease_bed(1, "60s");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(154, "ve154.example.com", "10.10.0.154", true);
    hn1.exec_ok("echo $((544 * 1024 * 1024)) > /etc/vzsim/vg_size");
    let o = dump_script(
        &bed,
        "ve154.example.com",
        &[("/", &bed.path("f").display().to_string())],
        true,
        true,
    );
    assert_eq!(
        o.status.code(),
        Some(10),
        "dump-begin fails: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("volume group vg-data has"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stops(hn1, 154), 0);
    assert!(hn1.leftovers().is_empty());
}
