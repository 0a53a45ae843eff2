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

/// `vzctl snapshot-list`, retried while vzctl's own container lock is held (as after a kill: a
/// vzctl the dead run had started may still be finishing; vzctl says "Container already locked").
fn ploop_snapshots(hn: &Hn, veid: u32) -> String {
    let mut out = String::new();
    wait_until(
        "vzctl snapshot-list without the container locked",
        30,
        || {
            let o = hn.exec(&format!("vzctl snapshot-list {veid} -H"));
            out = String::from_utf8_lossy(&o.stdout).into_owned();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() || err.contains("already locked"),
                "vzctl snapshot-list {veid}: {err}"
            );
            o.status.success()
        },
    );
    out
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
    // ... and the dead run's snapshot, which step clear-stale will remove.
    assert!(
        plan.contains("leftovers          ploop snapshot bpcovz-181-deadbeef {00000000-0000-0000-0000-00000000dead} of VE 181\n")
            && plan.contains("WARNING: leftovers of an earlier, dead run of VE 181"),
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
    assert!(
        stderr(&o).contains("hn1: snapshot backend: ploop (detected"),
        "the XferLOG names the backend: {}",
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
    assert_holds_frozen_counter(hn1, 181, "stopped", &dest);
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

/// Start a process on the HN that holds `flock` on FILE (as a running guard would) and sleeps;
/// returns its pid.
fn hold_lock(hn: &Hn, file: &str) -> u32 {
    let o = hn.exec_ok(&format!(
        "mkdir -p /run/bpc-ovz; setsid sh -c 'exec 9>{file}; flock -n 9 || exit 1; exec sleep 300' </dev/null >/dev/null 2>&1 & echo $!"
    ));
    let pid: u32 = o.trim().parse().expect("pid");
    wait_until("the lock is held", 10, || {
        !hn.exec(&format!("flock -n {file} true")).status.success()
    });
    pid
}

/// The HN-side processes that have VE `veid`'s bpc-ovz lock file open: the run's guard.
fn guard_pids(hn: &Hn, veid: u32) -> Vec<u32> {
    hn.exec_ok(&format!(
        "for p in /proc/[0-9]*; do for f in $p/fd/*; do [ \"$(readlink $f 2>/dev/null)\" = /run/bpc-ovz/ve.{veid}.lock ] && echo ${{p#/proc/}}; done; done | sort -u"
    ))
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

fn sweep(bed: &Bed, args: &[&str]) -> (i32, String) {
    let o = Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .arg("sweep")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A run killed (bpc-ovz and its HN-side guard, SIGKILL: no undo) after `vzctl snapshot` and the
/// mount leaves a ploop snapshot, its mounts and its state file: sweep lists them (dry run) and
/// removes them, vzctl's snapshot-delete included, without touching the VE; the next backup of
/// that VE works. A ploop snapshot of a live run (its VE lock held) is left alone.
#[test]
fn sweep_removes_the_ploop_snapshot_of_a_killed_run() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    create_ploop_ve(hn1, 183, "ve183.example.com", "10.10.0.183");
    // A slow transfer (3 MiB at 300 KiB/s), so the kill lands while the snapshot is mounted.
    hn1.exec_ok("head -c 3M /dev/urandom > /vz/root/183/var/lib/big.bin");
    let b = Backup::start(
        &bed,
        &bed.config,
        "ve183.example.com",
        &bed.path("b183-killed"),
        &["--bwlimit=300"],
    );
    let pid = b.wait_bpc_ovz();
    wait_until(
        "the ploop snapshot is mounted under its overlay",
        60,
        || {
            hn1.exec("grep -Eq ' /run/bpc-ovz/mnt/bpcovz-183-[0-9a-f]{8} overlay ' /proc/mounts")
                .status
                .success()
        },
    );
    let guards = guard_pids(hn1, 183);
    assert!(!guards.is_empty(), "the run's guard holds the VE lock");
    for g in &guards {
        hn1.exec_ok(&format!("kill -9 {g}"));
    }
    kill(pid, libc::SIGKILL);
    let f = b.finish();
    assert_eq!(f.code, Some(128 + libc::SIGKILL), "{}", f.stderr);
    // The HN-side rsync ends with the connection; nothing keeps the mounts busy then.
    wait_until("the dead run's processes are gone", 30, || {
        hn1.exec_ok(
            "for p in /proc/[0-9]*; do ls -l $p/cwd $p/fd 2>/dev/null; done | grep -c /run/bpc-ovz/mnt/ || true",
        )
        .trim()
            == "0"
            && hn1
                .exec("flock -n /run/bpc-ovz/ve.183.lock true")
                .status
                .success()
    });
    let snaps = ploop_snapshots(hn1, 183);
    let name = snaps
        .split_whitespace()
        .find(|w| w.starts_with("bpcovz-183-"))
        .unwrap_or_else(|| panic!("the killed run's ploop snapshot: {snaps}"))
        .to_string();
    assert!(
        hn1.ve_running(183),
        "the run restarted the VE before it was killed"
    );
    let stops = hn1
        .commands_log()
        .lines()
        .filter(|l| l.contains("vzctl --skiplock stop 183"))
        .count();

    // Dry run: everything listed, nothing touched.
    let (code, t) = sweep(&bed, &["--dry-run"]);
    assert_eq!(code, 0, "{t}");
    for want in [
        format!("hn1: would remove ploop snapshot {name} {{"),
        format!("hn1: would remove mount /run/bpc-ovz/mnt/{name}\n"),
        format!("hn1: would remove mount /run/bpc-ovz/mnt/{name}.rw"),
        format!("hn1: would remove mount /run/bpc-ovz/mnt/{name}.ro"),
        format!("hn1: would remove state file /run/bpc-ovz/state.{name}\n"),
        // The output of the VE's start, which step 4 ran in the background: the killed guard
        // never collected it.
        format!("hn1: would remove state file /run/bpc-ovz/state.{name}.start"),
        "bpc-ovz sweep --dry-run: 1 HNs, 6 would remove, 0 in use (left alone), 0 failed".into(),
    ] {
        assert!(t.contains(&want), "missing {want:?} in:\n{t}");
    }
    assert!(ploop_snapshots(hn1, 183).contains(&name));
    // `check` counts the dead run's ploop snapshot among the stale leftovers and fails.
    let o = Command::new(bin())
        .args(["check", "--json", "--config"])
        .arg(&bed.config)
        .output()
        .expect("bpc-ovz check");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(75), "{out}");
    assert!(
        out.contains(&format!("ploop snapshot {name} {{")) && out.contains("run `bpc-ovz sweep`"),
        "{out}"
    );

    let (code, t) = sweep(&bed, &[]);
    assert_eq!(code, 0, "{t}");
    for want in [
        format!("hn1: removed ploop snapshot {name} {{"),
        format!("hn1: removed mount /run/bpc-ovz/mnt/{name}.ro"),
        "bpc-ovz sweep: 1 HNs, 6 removed, 0 in use (left alone), 0 failed, 0 unreachable".into(),
    ] {
        assert!(t.contains(&want), "missing {want:?} in:\n{t}");
    }
    assert!(!t.contains("still there"), "{t}");
    assert!(
        !ploop_snapshots(hn1, 183).contains("bpcovz-"),
        "{}",
        ploop_snapshots(hn1, 183)
    );
    assert!(
        hn1.commands_log()
            .contains(" vzctl --skiplock snapshot-delete 183 --id "),
        "removed by vzctl"
    );
    // The delta is gone (vzctl deleted it), the image is the VE's.
    let hdd = hn1.exec_ok("ls /vz/private/183/root.hdd");
    assert!(!hdd.contains("root.hds.{"), "{hdd}");
    let left = hn1.leftovers();
    assert!(
        left.iter()
            .all(|l| !l.contains("bpcovz-") && !l.starts_with("mount:")),
        "{left:?}"
    );
    // The VE was not touched by sweep.
    assert!(hn1.ve_running(183));
    assert_eq!(
        hn1.commands_log()
            .lines()
            .filter(|l| l.contains("vzctl --skiplock stop 183"))
            .count(),
        stops
    );

    // The next backup of that VE works and has nothing stale to clear.
    let o = bed.rsync_bpc4("ve183.example.com", "/", &bed.path("b183"), true, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("removing stale"), "{}", stderr(&o));
    assert!(bed.path("b183/var/lib/big.bin").is_file());
    assert!(!ploop_snapshots(hn1, 183).contains("bpcovz-"));

    // A live run's ploop snapshot (its VE lock held) is left alone, then removed once it is gone.
    hn1.exec_ok("vzctl snapshot 183 --id 00000000-0000-0000-0000-0000000000aa --name bpcovz-183-0a1b2c3d >/dev/null");
    let holder = hold_lock(hn1, "/run/bpc-ovz/ve.183.lock");
    let (code, t) = sweep(&bed, &[]);
    assert_eq!(code, 0, "{t}");
    assert!(
        t.contains("hn1: in use, left alone: ploop snapshot bpcovz-183-0a1b2c3d {00000000-0000-0000-0000-0000000000aa} of VE 183 (a bpc-ovz run of VE 183 holds its lock)"),
        "{t}"
    );
    assert!(ploop_snapshots(hn1, 183).contains("bpcovz-183-0a1b2c3d"));
    hn1.exec_ok(&format!("kill {holder}"));
    wait_until("the lock is free", 10, || {
        hn1.exec("flock -n /run/bpc-ovz/ve.183.lock true")
            .status
            .success()
    });
    let (code, t) = sweep(&bed, &[]);
    assert_eq!(code, 0, "{t}");
    assert!(t.contains("1 removed, 0 in use"), "{t}");
    assert!(!ploop_snapshots(hn1, 183).contains("bpcovz-"));
}

/// Rewrite the bed's config with more `snapshot:` keys (indented lines) and more top-level YAML.
fn with_snapshot_keys(bed: &Bed, snapshot: &str, extra: &str) {
    bed.write_config(extra);
    let cfg = std::fs::read_to_string(&bed.config)
        .unwrap()
        .replace("  size: 64M\n", &format!("  size: 64M\n{snapshot}"));
    std::fs::write(&bed.config, cfg).unwrap();
}

fn plan(bed: &Bed, host: &str) -> (i32, String, String) {
    let o = Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(["plan", host])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `plan` shows the mode, its fallback and the backend (detected or forced); a forced backend
/// that does not fit the VE is refused with one line naming the key, before any downtime (exit
/// 71); an unknown backend is a config error naming the file and the key.
#[test]
fn plan_shows_mode_fallback_and_backend_and_a_misfit_backend_is_refused() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    create_ploop_ve(hn1, 184, "ve184.example.com", "10.10.0.184");
    hn1.create_ve(185, "ve185.example.com", "10.10.0.185", true);

    bed.write_config("ves:\n  ve184.example.com:\n    modes: [suspend, stop]\n");
    let (code, t, e) = plan(&bed, "ve184.example.com");
    assert_eq!(code, 0, "{e}");
    for want in [
        "mode               suspend\n",
        "fallback           stop (used when suspend fails before the snapshot exists)\n",
        "backend            ploop (detected: a ploop image)\n",
        "suspend → stop (fallback)",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let (code, t, e) = plan(&bed, "ve185.example.com");
    assert_eq!(code, 0, "{e}");
    for want in [
        "mode               stop\n",
        "fallback           none\n",
        "backend            lvm-thick (detected: a thick LV)\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }

    // Forced and fitting: said so.
    with_snapshot_keys(
        &bed,
        "  backend: lvm-thick\n",
        "ves:\n  ve184.example.com:\n    backend: ploop\n",
    );
    let (code, t, e) = plan(&bed, "ve184.example.com");
    assert_eq!(code, 0, "{e}");
    assert!(
        t.contains(
            "backend            ploop (forced by ves.ve184.example.com.backend; detected the same)"
        ),
        "{t}"
    );
    let (code, t, e) = plan(&bed, "ve185.example.com");
    assert_eq!(code, 0, "{e}");
    assert!(
        t.contains("backend            lvm-thick (forced by snapshot.backend; detected the same)"),
        "{t}"
    );

    // Forced and not fitting: refused by plan and by a backup, before anything changes on the HN.
    let misfits = [
        (
            "ve185.example.com",
            185,
            "  backend: ploop\n",
            "",
            "snapshot.backend forces backend ploop but /vz/private/185 is on a thick LV",
        ),
        (
            "ve185.example.com",
            185,
            "",
            "ves:\n  ve185.example.com:\n    backend: lvm-thin\n",
            "ves.ve185.example.com.backend forces backend lvm-thin but /vz/private/185 is on a thick LV: a thin snapshot needs a thin volume",
        ),
        (
            "ve184.example.com",
            184,
            "  backend: lvm-thick\n",
            "",
            "snapshot.backend forces backend lvm-thick but /vz/private/184 is on a ploop image",
        ),
    ];
    for (host, veid, snap, ves, want) in misfits {
        with_snapshot_keys(&bed, snap, ves);
        let (code, _, e) = plan(&bed, host);
        assert_eq!(code, 71, "plan: {e}");
        assert!(e.contains(want), "plan: missing {want:?} in {e}");
        let before = hn1.commands_log();
        let f =
            Backup::start(&bed, &bed.config, host, &bed.path(&format!("b{veid}")), &[]).finish();
        assert_eq!(f.code, Some(71), "{}", f.stderr);
        assert!(
            f.last_line().contains(want) && f.last_line().contains("refused before any downtime"),
            "backup: missing {want:?} in {}",
            f.stderr
        );
        // Nothing ran on the HN: no stop, no snapshot, no lock taken.
        let after = hn1.commands_log();
        let new = &after[before.len()..];
        assert!(
            !new.contains("stop") && !new.contains("snapshot") && !new.contains("lvcreate"),
            "{new}"
        );
        assert!(hn1.ve_running(veid));
    }
    assert!(hn1.leftovers().is_empty(), "{:?}", hn1.leftovers());

    // An unknown value is a config error: file and key named, exit 1.
    with_snapshot_keys(&bed, "  backend: zfs\n", "");
    let (code, _, e) = plan(&bed, "ve185.example.com");
    assert_eq!(code, 1, "{e}");
    assert!(
        e.contains(&bed.config.display().to_string())
            && e.contains("snapshot.backend")
            && e.contains("zfs"),
        "{e}"
    );
}
