//! The README's main command, `./contrib/demo.sh`, runs to its end against the binary under test
//! (`DEMO_BIN`: no install, no release build) and reports a clean HN. The demo boots its own
//! simulated HN on a port it picks and stops it by its own cleanup.

use std::process::Command;

#[test]
fn the_demo_runs_to_its_end_and_leaves_the_hn_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash")
        .arg(format!("{root}/contrib/demo.sh"))
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_bpc-ovz"))
        .output()
        .expect("run contrib/demo.sh");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "demo failed: {:?}\n{out}\n{err}",
        o.status
    );
    for want in [
        "== bpc-ovz plan ve101.example.com",
        "was down for",
        "backup of VE 101 complete; snapshot removed, VE running",
        "etc/vzdump in the backup: 101.conf",
        "VE 101 now: CTID 101 exist mounted running",
        "snapshots / mounts left on the HN: 0 0",
        "== demo done",
    ] {
        assert!(
            out.contains(want),
            "missing {want:?} in the demo's output:\n{out}\n{err}"
        );
    }
}
