//! Quiesce modes: stop (default), suspend (`vzctl chkpnt --suspend/--resume`), live (no
//! downtime), and the fallback order when a mode fails before the snapshot exists.

mod common;

use std::process::Output;

use common::*;

fn count(hn: &Hn, needle: &str) -> usize {
    hn.commands_log()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Set `snapshot.modes` in the bed's config.
fn with_modes(bed: &Bed, modes: &str) {
    let cfg = std::fs::read_to_string(&bed.config).unwrap().replace(
        "snapshot:\n  size: 64M\n",
        &format!("snapshot:\n  size: 64M\n  modes: {modes}\n"),
    );
    std::fs::write(&bed.config, cfg).unwrap();
}

fn backup(bed: &Bed, host: &str, name: &str) -> (Output, std::path::PathBuf) {
    let dest = bed.path(name);
    let o = bed.rsync_bpc4(host, "/", &dest, true, &[]);
    (o, dest)
}

#[test]
fn suspend_mode_freezes_without_stopping() {
    let bed = Bed::new(1);
    with_modes(&bed, "[suspend]");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(161, "ve161.example.com", "10.10.0.161", true);
    let (o, dest) = backup(&bed, "ve161.example.com", "b161");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("was down for") && e.contains("suspend="), "{e}");
    assert!(
        e.contains("hn1: snapshot backend: lvm-thick (detected"),
        "the XferLOG names the backend: {e}"
    );
    assert_eq!(count(hn1, "vzctl --skiplock stop 161"), 0, "not stopped");
    assert_eq!(count(hn1, "chkpnt 161 --suspend"), 1);
    assert_eq!(count(hn1, "chkpnt 161 --resume"), 1);
    // The backup holds the counter value at the moment of the suspend.
    assert_holds_frozen_counter(hn1, 161, "suspended", &dest);
    assert!(hn1.ve_running(161));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn failed_resume_falls_back_to_a_start_loudly() {
    let bed = Bed::new(1);
    with_modes(&bed, "[suspend]");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(162, "ve162.example.com", "10.10.0.162", true);
    hn1.fault("vzctl-resume", Some(1));
    let (o, _) = backup(&bed, "ve162.example.com", "b162");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("resume of VE 162 failed") && e.contains("WARNING"),
        "{e}"
    );
    assert!(hn1.ve_running(162), "started instead");
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn fallback_order_suspend_then_stop() {
    let bed = Bed::new(1);
    let cfg = std::fs::read_to_string(&bed.config).unwrap()
        + "ves:\n  ve163.example.com:\n    modes: [suspend, stop]\n";
    std::fs::write(&bed.config, cfg).unwrap();
    let hn1 = bed.hn("hn1");
    hn1.create_ve(163, "ve163.example.com", "10.10.0.163", true);
    hn1.fault("vzctl-suspend", Some(1));
    let (o, _) = backup(&bed, "ve163.example.com", "b163");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("mode suspend failed before the snapshot"), "{e}");
    assert!(
        e.contains("stop=") && e.contains("was down for"),
        "the XferLOG says stop ran: {e}"
    );
    assert_eq!(count(hn1, "vzctl --skiplock stop 163"), 1);
    assert!(hn1.ve_running(163));
    assert!(hn1.leftovers().is_empty());
}

#[test]
fn live_mode_never_stops_the_ve() {
    let bed = Bed::new(1);
    with_modes(&bed, "[live]");
    let hn1 = bed.hn("hn1");
    hn1.create_ve(164, "ve164.example.com", "10.10.0.164", true);
    let (o, dest) = backup(&bed, "ve164.example.com", "b164");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("live mode"), "{}", stderr(&o));
    assert_eq!(count(hn1, "stop 164") + count(hn1, "chkpnt 164"), 0);
    assert!(dest.join("etc/vzdump/164.conf").is_file());
    assert!(hn1.ve_running(164));
    assert!(hn1.leftovers().is_empty());
    // plan shows the mode, that there is no fallback, and the detected backend.
    let p = std::process::Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(["plan", "ve164.example.com"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&p.stdout);
    for want in [
        "mode               live\n",
        "fallback           none\n",
        "backend            lvm-thick (detected: a thick LV)\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}
