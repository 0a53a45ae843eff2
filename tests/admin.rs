//! The admin commands against simulated HNs (tests/simhn: real sshd, real filesystems, stand-in
//! OpenVZ/LVM tools): `refresh` and the VE cache, `plan` (lock state, leftovers, and the plan
//! compared with what a real run executed), `check`, `sweep`; plus `generate` and the Debian
//! package.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn admin(bed: &Bed, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(&bed.config)
        .args(args)
        .output()
        .expect("bpc-ovz")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        out(o),
        err(o)
    )
}

fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", both(o));
}

/// How many `vzlist` exec requests the HN received.
fn vzlists(hn: &Hn) -> usize {
    hn.exec_log()
        .lines()
        .filter(|l| l.contains(" vzlist -a "))
        .count()
}

/// Start a process on the HN that holds `flock` on FILE (as a running guard would) and sleeps;
/// returns its pid (killed by the caller, and by hn-down in any case).
fn hold_lock(hn: &Hn, file: &str) -> u32 {
    let o = hn.exec_ok(&format!(
        "mkdir -p /run/bpc-ovz; setsid sh -c 'exec 9>{file}; flock -n 9 || exit 1; exec sleep 300' </dev/null >/dev/null 2>&1 & echo $!"
    ));
    let pid: u32 = o.trim().parse().expect("pid");
    // Wait until the lock is really held.
    for _ in 0..100 {
        if !hn.exec(&format!("flock -n {file} true")).status.success() {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{}: the lock on {file} was never taken", hn.name);
}

/// A snapshot, its mount and its state file, as a run of VE `veid` killed with SIGKILL leaves them.
fn leave_run(hn: &Hn, veid: u32, run: &str) {
    let name = format!("bpcovz-{veid}-{run}");
    let vg = &hn.vg;
    let fs = if vg == "vg0" { "xfs -o nouuid" } else { "ext4" };
    hn.exec_ok(&format!(
        "lvcreate -L 8m -s -n {name} {vg}/vz >/dev/null && mkdir -p /run/bpc-ovz/mnt/{name} && \
         mount -t {fs} /dev/{vg}/{name} /run/bpc-ovz/mnt/{name} && echo 1 > /run/bpc-ovz/state.{name}"
    ));
}

#[test]
fn refresh_writes_the_cache_that_locate_tries_first() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    hn2.create_ve(202, "ve202.example.com", "10.10.0.202", false);
    bed.write_config("ves:\n  db: { veid: \"202\", hn: hn2 }\n");

    let o = admin(&bed, &["refresh"]);
    assert_code(&o, 0, "refresh");
    assert_eq!(out(&o).lines().count(), 1, "one summary line: {}", both(&o));
    assert!(
        out(&o).contains("2 HNs asked, 2 answered; 2 VEs listed; 2 VEs cached in"),
        "{}",
        both(&o)
    );
    let cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.cache_path()).expect("cache"))
            .expect("json");
    assert_eq!(cache["format"], "bpc-ovz ve-cache 1");
    let ves = cache["ves"].as_array().expect("ves");
    assert!(
        ves.iter()
            .any(|v| v["hn"] == "hn1" && v["veid"] == "101" && v["status"] == "running")
    );
    assert!(
        ves.iter()
            .any(|v| v["hn"] == "hn2" && v["veid"] == "202" && v["status"] == "stopped")
    );

    // `plan` (like `ssh`/`server`: the same locate) asks only the cached HN.
    let before = (vzlists(hn1), vzlists(hn2));
    let o = admin(&bed, &["plan", "ve202.example.com"]);
    assert_code(&o, 0, "plan");
    assert_eq!(
        (vzlists(hn1), vzlists(hn2)),
        (before.0, before.1 + 1),
        "only hn2 asked"
    );

    // With HOST: exit codes for $Conf{UserCmdCheckStatus}.
    let o = admin(&bed, &["refresh", "ve101.example.com"]);
    assert_code(&o, 0, "refresh HOST");
    assert!(
        out(&o).ends_with("; ve101.example.com is VE 101 on hn1 (running)\n"),
        "{}",
        both(&o)
    );
    let o = admin(&bed, &["refresh", "db"]);
    assert_code(&o, 0, "refresh alias");
    assert!(
        out(&o).contains("db is VE 202 on hn2 (stopped)"),
        "{}",
        both(&o)
    );
    let o = admin(&bed, &["refresh", "nosuch.example.com"]);
    assert_code(&o, 70, "refresh unknown HOST");
    assert!(
        out(&o).contains("nosuch.example.com NOT FOUND on any HN"),
        "{}",
        both(&o)
    );

    // The cache is stale (VE 202 "moved" to hn1 in its eyes): hn1 first, then every HN, and the
    // cache learns the truth.
    let text = std::fs::read_to_string(bed.cache_path()).expect("cache");
    let stale = text.replace(
        "\"hn2\",\n      \"veid\": \"202\"",
        "\"hn1\",\n      \"veid\": \"202\"",
    );
    assert_ne!(stale, text, "cache layout");
    std::fs::write(bed.cache_path(), stale).expect("write");
    let before = (vzlists(hn1), vzlists(hn2));
    let o = admin(&bed, &["plan", "ve202.example.com"]);
    assert_code(&o, 0, "plan with a stale cache");
    assert_eq!((vzlists(hn1), vzlists(hn2)), (before.0 + 2, before.1 + 1));
    let text = std::fs::read_to_string(bed.cache_path()).expect("cache");
    assert!(text.contains("\"hn2\",\n      \"veid\": \"202\""), "{text}");

    // hn2 goes down: reported, not fatal unless it may hold the VE asked for.
    let _ = Command::new(simhn().join("hn-down")).arg(&hn2.dir).output();
    let o = admin(&bed, &["refresh", "ve101.example.com"]);
    assert_code(&o, 0, "refresh with hn2 down");
    assert!(
        out(&o).contains("2 HNs asked, 1 answered, 1 unreachable (hn2)"),
        "{}",
        both(&o)
    );
    assert!(
        err(&o).contains("hn2: unreachable: cannot connect to 127.0.0.1:"),
        "{}",
        both(&o)
    );
    let o = admin(&bed, &["refresh", "nosuch.example.com"]);
    assert_code(&o, 255, "unknown HOST, hn2 down");
    assert!(
        out(&o).contains("and hn2 that may hold it did not answer"),
        "{}",
        both(&o)
    );
    // db can only be on hn2, which is down.
    let o = admin(&bed, &["refresh", "db"]);
    assert_code(&o, 255, "alias on a down HN");
    // The cache keeps what hn2 held.
    let text = std::fs::read_to_string(bed.cache_path()).expect("cache");
    assert!(text.contains("\"veid\": \"202\""), "{text}");
    // A cache that cannot be written is an error (exit 1), with the reason.
    let cfg = std::fs::read_to_string(&bed.config).expect("cfg").replace(
        &format!("cache: {}", bed.cache_path().display()),
        "cache: /proc/no/such/dir/ve-cache.json",
    );
    std::fs::write(&bed.config, cfg).expect("cfg");
    let o = admin(&bed, &["refresh"]);
    assert_code(&o, 1, "unwritable cache");
    assert!(out(&o).contains("cache NOT written"), "{}", both(&o));
}

/// Escape a command the way the simulated HN's exec.log writes it (newline -> `\n`).
fn as_logged(cmd: &str) -> String {
    cmd.replace('\n', "\\n")
}

/// Replace a run's random values by the plan's placeholders.
fn normalize(line: &str, veid: u32) -> String {
    let nonce = regex::Regex::new("@@[0-9a-f]{32}").expect("re");
    let run = regex::Regex::new(&format!("bpcovz-{veid}-[0-9a-f]{{8}}")).expect("re");
    let l = nonce.replace_all(line, "@@NONCE");
    run.replace_all(&l, format!("bpcovz-{veid}-RUNID000").as_str())
        .into_owned()
}

/// `plan --json`, then a real backup: the exec requests that change anything on the HN (the guard
/// and the transfer) are exactly those of the plan printed just before.
fn plan_then_run(bed: &Bed, hn: &Hn, veid: u32, host: &str) {
    let o = admin(bed, &["plan", host, "--json"]);
    assert_code(&o, 0, "plan --json");
    let plan: serde_json::Value = serde_json::from_str(&out(&o)).expect("plan json");
    let cmds = plan["remote_commands"].as_array().expect("remote_commands");
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0]["channel"], "guard");
    assert_eq!(cmds[1]["channel"], "transfer");
    let guard = cmds[0]["command"].as_str().expect("guard");
    let transfer = cmds[1]["command"].as_str().expect("transfer");
    assert!(guard.starts_with("exec /bin/sh -c "));
    // The downtime window is marked in the plan the guard runs.
    let steps = plan["plan"]["steps"].as_array().expect("steps");
    assert_eq!(
        steps.iter().filter(|s| s["phase"] == "downtime").count(),
        1,
        "one downtime step"
    );

    let before = hn.exec_log().lines().count();
    let dest = bed.path(&format!("b{veid}"));
    let o = bed.rsync_bpc4(host, "/", &dest, true, &[]);
    assert_code(&o, 0, "backup");
    let log = hn.exec_log();
    let run: Vec<String> = log
        .lines()
        .skip(before)
        .map(|l| l.split_once(' ').map(|(_, c)| c).unwrap_or("").to_string())
        .collect();
    // Read-only look-ups first (vzlist, probes), then exactly the plan's commands.
    let changing: Vec<String> = run
        .iter()
        .filter(|c| c.starts_with("exec "))
        .map(|c| normalize(c, veid))
        .collect();
    assert_eq!(changing.len(), 2, "run: {run:#?}");
    assert_eq!(
        changing[0],
        as_logged(guard),
        "the guard the run sent differs from the plan's"
    );
    // The transfer: the same rsync server invocation; its option letters are the rsync client's
    // (the plan shows BackupPC 4's defaults), paths come through protect-args on stdin.
    let words = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let (ran, planned) = (words(&changing[1]), words(transfer));
    assert_eq!(ran[..4], planned[..4], "{ran:?} vs {planned:?}");
    assert_eq!(ran.len(), planned.len(), "{ran:?} vs {planned:?}");
    assert!(run[..run.len() - 2].iter().all(|c| !c.starts_with("exec ")));
}

#[test]
fn plan_shows_state_and_is_what_the_run_executes() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    hn2.create_ve(202, "ve202.example.com", "10.10.0.202", true);

    plan_then_run(&bed, hn1, 101, "ve101.example.com");
    plan_then_run(&bed, hn2, 202, "ve202.example.com");

    // Text form: facts, mount options, locks free, no leftovers, the downtime window marked.
    let o = admin(&bed, &["plan", "ve202.example.com"]);
    assert_code(&o, 0, "plan");
    let t = out(&o);
    for want in [
        "HN                 hn2 (127.0.0.1:",
        "VE                 202 (ve202.example.com, running)",
        "VG free            ",
        "mount              /run/bpc-ovz/mnt/bpcovz-202-RUNID000 -t xfs -o nouuid",
        "mount options      rw,",
        "bpc-ovz lock       free (/run/bpc-ovz/ve.202.lock)",
        "backup slots       0 of 2 busy",
        "vzctl lock         free",
        "leftovers          none",
        "<== VE DOWN: quiesced in this step (its summary says when it is back)",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    assert!(!t.contains("WARNING"), "{t}");

    // A backup of 202 running (its lock held, with its snapshot), vzctl busy with 202, and both
    // slots taken: plan says so, and warns, without touching anything.
    let holder = hold_lock(hn2, "/run/bpc-ovz/ve.202.lock");
    let s1 = hold_lock(hn2, "/run/bpc-ovz/slot.1");
    let s2 = hold_lock(hn2, "/run/bpc-ovz/slot.2");
    hn2.exec_ok(&format!(
        "mkdir -p /var/lib/vz/lock; printf '{holder}\\n\\n' > /var/lib/vz/lock/202.lck"
    ));
    leave_run(hn2, 202, "0a1b2c3d");
    let o = admin(&bed, &["plan", "ve202.example.com"]);
    assert_code(&o, 0, "plan with busy state");
    let t = out(&o);
    for want in [
        "bpc-ovz lock       HELD (/run/bpc-ovz/ve.202.lock): a run of this VE is alive, with snapshot vg0/bpcovz-202-0a1b2c3d",
        "backup slots       2 of 2 busy",
        &format!("vzctl lock         HELD by pid {holder}"),
        "leftovers          none",
        "WARNING: VE 202 is being backed up (or restored) right now",
        "WARNING: VE 202 is locked by vzctl",
        "WARNING: all 2 backup slots of hn2 are busy",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let o = admin(&bed, &["plan", "ve202.example.com", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(j["hn_state"]["ve_lock_held"], true);
    assert_eq!(j["hn_state"]["slots_busy"], 2);
    // The run dies (SIGKILL: no cleanup): its snapshot, mount and state file are now leftovers,
    // vzctl's lock is stale. Plan tells; step clear-stale (or sweep) removes them.
    for p in [holder, s1, s2] {
        hn2.exec_ok(&format!("kill -9 {p}"));
    }
    // (A killed process may linger as a zombie here, which counts as alive for vzctl: give the
    // lock file the pid of a process that is surely gone.)
    let dead = hn2.exec_ok("sh -c 'echo $$'").trim().to_string();
    hn2.exec_ok(&format!("printf '{dead}\\n\\n' > /var/lib/vz/lock/202.lck"));
    let o = admin(&bed, &["plan", "ve202.example.com"]);
    let t = out(&o);
    for want in [
        "bpc-ovz lock       free",
        "backup slots       0 of 2 busy",
        &format!("vzctl lock         stale (pid {dead} is gone; preflight removes it)"),
        "leftovers          snapshot vg0/bpcovz-202-0a1b2c3d (",
        "mount /run/bpc-ovz/mnt/bpcovz-202-0a1b2c3d, state file /run/bpc-ovz/state.bpcovz-202-0a1b2c3d\n",
        "WARNING: leftovers of an earlier, dead run of VE 202",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    // Plan took no lock and removed nothing; a backup now clears the leftovers itself.
    assert!(
        hn2.exec_ok("lvs --noheadings -o lv_name")
            .contains("bpcovz-202-0a1b2c3d")
    );
    let o = bed.rsync_bpc4("ve202.example.com", "/", &bed.path("b202"), true, &[]);
    assert_code(&o, 0, "backup over a dead run's leftovers");
    let left = hn2.leftovers();
    assert!(left.iter().all(|l| !l.contains("bpcovz-")), "{left:?}");

    // A restore plan: the same locks, the confined receiver, no downtime step.
    let o = admin(&bed, &["plan", "ve202.example.com", "--restore", "--json"]);
    assert_code(&o, 0, "plan --restore");
    let j: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    let steps = j["plan"]["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["name"], "lock");
    assert!(steps.iter().all(|s| s["phase"] != "downtime"), "{steps:?}");
    let transfer = j["remote_commands"][1]["command"].as_str().unwrap_or("");
    assert!(transfer.contains("chroot"), "{transfer}");
    assert!(!transfer.contains("--sender"), "{transfer}");
}

#[test]
fn check_reports_a_table_json_and_what_fails() {
    let bed = Bed::new(2);
    let (hn1, hn2) = (bed.hn("hn1"), bed.hn("hn2"));
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    hn2.create_ve(202, "ve202.example.com", "10.10.0.202", false);

    let o = admin(&bed, &["check"]);
    assert_code(&o, 0, "check");
    let t = out(&o);
    let head = t.lines().next().unwrap_or("");
    for col in [
        "HN",
        "SSH",
        "HOSTKEY",
        "AUTH",
        "RSYNC",
        "LVM2",
        "VZCTL",
        "VZLIST",
        "VE-ON-LV",
        "VG-ROOM",
        "LEFTOVERS",
        "RESULT",
    ] {
        assert!(head.contains(col), "{col} in {head}");
    }
    assert!(
        t.lines()
            .any(|l| l.starts_with("hn1 ") && l.ends_with(" ok")),
        "{t}"
    );
    assert!(
        t.contains("bpc-ovz check: 2 HNs, 2 passed, 0 failed"),
        "{t}"
    );
    let o = admin(&bed, &["check", "hn2", "--json"]);
    assert_code(&o, 0, "check --json");
    let j: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(j["ok"], true);
    let hns = j["hns"].as_array().expect("hns");
    assert_eq!(hns.len(), 1);
    let checks = hns[0]["checks"].as_array().expect("checks");
    let get = |n: &str| checks.iter().find(|c| c["name"] == n).cloned().expect(n);
    let rsync_version = String::from_utf8_lossy(
        &Command::new("rsync")
            .arg("--version")
            .output()
            .expect("rsync")
            .stdout,
    )
    .split_whitespace()
    .nth(2)
    .unwrap_or("")
    .to_string();
    assert_eq!(get("rsync")["value"], rsync_version.as_str());
    assert_eq!(get("ve-on-lv")["value"], "1/1");
    assert!(
        get("vg-room")["value"]
            .as_str()
            .unwrap_or("")
            .starts_with("vg0:")
    );

    // Break things: a dead run's snapshot on hn1, a VG without room on hn2, a VE whose private
    // area is not on an LV on hn2.
    leave_run(hn1, 101, "0a1b2c3d");
    hn2.exec_ok("echo $((560 * 1024 * 1024)) > /etc/vzsim/vg_size");
    hn2.create_ve(203, "ve203.example.com", "10.10.0.203", false);
    hn2.exec_ok("mkdir -p /tmp/private/203 && sed -i 's|^VE_PRIVATE=.*|VE_PRIVATE=\"/tmp/private/$VEID\"|' /etc/vz/conf/203.conf");
    let o = admin(&bed, &["check"]);
    assert_code(&o, 75, "check with problems");
    let t = out(&o);
    assert!(t.contains("hn1: leftovers FAILED: left by runs that are gone: snapshot vg-data/bpcovz-101-0a1b2c3d"), "{t}");
    assert!(t.contains("(run `bpc-ovz sweep`)"), "{t}");
    assert!(
        t.contains("hn2: vg-room FAILED: VG vg0 has 48M free, a snapshot needs 64M"),
        "{t}"
    );
    assert!(
        t.contains("hn2: ve-on-lv FAILED: VE 203: /tmp/private/203 is on ")
            && t.contains(" (tmpfs), not an LVM LV; these VEs cannot be backed up"),
        "{t}"
    );
    assert!(
        t.contains("bpc-ovz check: 2 HNs, 0 passed, 2 failed"),
        "{t}"
    );

    // Unknown host key and failing authentication are told apart.
    let other_key = bed.path("other_key");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .output()
        .expect("keygen");
    assert!(o.status.success());
    std::fs::write(bed.path("empty_known_hosts"), "").expect("kh");
    let cfg_text = std::fs::read_to_string(&bed.config).expect("cfg");
    let base: String = cfg_text
        .lines()
        .take_while(|l| !l.starts_with("ssh"))
        .map(|l| format!("{l}\n"))
        .collect();
    let unknown = bed.path("unknown.yaml");
    std::fs::write(
        &unknown,
        format!(
            "{base}ssh:\n  identity_files: [{}]\n  known_hosts: [{}]\n  agent: false\n",
            bed.key.display(),
            bed.path("empty_known_hosts").display()
        ),
    )
    .expect("cfg");
    let badauth = bed.path("badauth.yaml");
    std::fs::write(
        &badauth,
        format!(
            "{base}ssh:\n  identity_files: [{}]\n  known_hosts: [{}]\n  agent: false\n",
            other_key.display(),
            bed.known_hosts.display()
        ),
    )
    .expect("cfg");
    let run_with = |cfg: &Path, args: &[&str]| {
        Command::new(bin())
            .arg("--config")
            .arg(cfg)
            .args(args)
            .output()
            .expect("run")
    };
    let o = run_with(&unknown, &["check", "hn1", "--json"]);
    assert_code(&o, 75, "unknown host key");
    let j: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    let c = &j["hns"][0]["checks"];
    assert_eq!(c[0]["status"], "ok", "{c}");
    assert_eq!(c[1]["name"], "host-key");
    assert_eq!(c[1]["status"], "fail");
    assert!(
        c[1]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("is not in any known_hosts file"),
        "{c}"
    );
    assert_eq!(c[2]["status"], "skip");
    let o = run_with(&badauth, &["check", "hn1", "--json"]);
    assert_code(&o, 75, "bad key");
    let j: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    let c = &j["hns"][0]["checks"];
    assert_eq!(
        (c[1]["status"].as_str(), c[2]["status"].as_str()),
        (Some("ok"), Some("fail")),
        "{c}"
    );
    assert!(
        c[2]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("authentication as root"),
        "{c}"
    );
    let o = admin(&bed, &["check", "hn9"]);
    assert_code(&o, 1, "unknown HN");
    assert!(
        err(&o).contains("\"hn9\" is not a configured HN (configured: hn1, hn2)"),
        "{}",
        both(&o)
    );
}

#[test]
fn sweep_removes_what_dead_runs_left_and_nothing_else() {
    let bed = Bed::new(1);
    let hn1 = bed.hn("hn1");
    hn1.create_ve(101, "ve101.example.com", "10.10.0.101", true);
    hn1.create_ve(102, "ve102.example.com", "10.10.0.102", true);
    // 101: a dead run (snapshot mounted, state file); 102: a run that is alive (lock held);
    // things that only look like ours.
    leave_run(hn1, 101, "0a1b2c3d");
    leave_run(hn1, 102, "11111111");
    let holder = hold_lock(hn1, "/run/bpc-ovz/ve.102.lock");
    hn1.exec_ok("mkdir -p /run/bpc-ovz/mnt/not-ours && echo x > /run/bpc-ovz/state.other");

    let o = admin(&bed, &["sweep", "--dry-run"]);
    assert_code(&o, 0, "sweep --dry-run");
    let t = out(&o);
    for want in [
        "hn1: would remove mount /run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d",
        "hn1: would remove snapshot vg-data/bpcovz-101-0a1b2c3d",
        "hn1: would remove state file /run/bpc-ovz/state.bpcovz-101-0a1b2c3d",
        "hn1: in use, left alone: snapshot vg-data/bpcovz-102-11111111",
        "hn1: in use, left alone: mount /run/bpc-ovz/mnt/bpcovz-102-11111111 (a bpc-ovz run of VE 102 holds its lock)",
        "hn1: not ours, left alone: /run/bpc-ovz/mnt/not-ours is not named by bpc-ovz",
        "hn1: not ours, left alone: /run/bpc-ovz/state.other is not named by bpc-ovz",
        "bpc-ovz sweep --dry-run: 1 HNs, 3 would remove, 3 in use (left alone), 0 failed, 0 unreachable",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    // The dry run changed nothing and took no lock.
    let lvs = hn1.exec_ok("lvs --noheadings -o lv_name");
    assert!(
        lvs.contains("bpcovz-101-0a1b2c3d") && lvs.contains("bpcovz-102-11111111"),
        "{lvs}"
    );
    assert!(
        hn1.exec_log().lines().all(|l| !l.contains("flock")),
        "dry run takes no lock"
    );

    let o = admin(&bed, &["sweep", "hn1"]);
    assert_code(&o, 0, "sweep");
    let t = out(&o);
    for want in [
        "hn1: removed mount /run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d",
        "hn1: removed snapshot vg-data/bpcovz-101-0a1b2c3d",
        "hn1: removed state file /run/bpc-ovz/state.bpcovz-101-0a1b2c3d",
        "bpc-ovz sweep: 1 HNs, 3 removed, 3 in use (left alone), 0 failed, 0 unreachable",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    let left = hn1.leftovers();
    let left_text = left.join("\n");
    assert!(!left_text.contains("101"), "{left_text}");
    assert!(
        left_text.contains("lv: ") && left_text.contains("bpcovz-102-11111111"),
        "{left_text}"
    );
    assert!(
        hn1.exec_ok("ls /run/bpc-ovz/mnt; ls /run/bpc-ovz")
            .contains("not-ours")
    );
    assert!(hn1.exec_ok("cat /run/bpc-ovz/state.other").contains('x'));
    // The lock sweep took is released: a backup of 101 runs right after.
    let o = bed.rsync_bpc4("ve101.example.com", "/", &bed.path("b101"), true, &[]);
    assert_code(&o, 0, "backup after sweep");

    // The owner of 102's run dies: now its leftovers go too.
    hn1.exec_ok(&format!("kill {holder}"));
    let o = admin(&bed, &["sweep"]);
    assert_code(&o, 0, "second sweep");
    assert!(out(&o).contains("3 removed, 0 in use"), "{}", both(&o));
    let left = hn1.leftovers();
    assert!(left.iter().all(|l| !l.contains("bpcovz-")), "{left:?}");
    assert!(hn1.ve_running(101) && hn1.ve_running(102));

    // A snapshot still in use outside bpc-ovz's mount points is not removed: failure, exit 74.
    leave_run(hn1, 102, "22222222");
    hn1.exec_ok("umount /run/bpc-ovz/mnt/bpcovz-102-22222222 && mkdir -p /mnt/elsewhere && mount -t ext4 /dev/vg-data/bpcovz-102-22222222 /mnt/elsewhere");
    let o = admin(&bed, &["sweep"]);
    assert_code(&o, 74, "sweep of a snapshot mounted elsewhere");
    let t = out(&o);
    assert!(
        t.contains("hn1: FAILED to remove snapshot vg-data/bpcovz-102-22222222 (")
            && t.contains("(exit 3): snapshot vg-data/bpcovz-102-22222222 is still open")
            && t.contains("hn1: still there: snapshot vg-data/bpcovz-102-22222222"),
        "{}",
        both(&o)
    );
    assert!(
        hn1.exec_ok("lvs --noheadings -o lv_name")
            .contains("bpcovz-102-22222222")
    );
    hn1.exec_ok("umount /mnt/elsewhere");
    let o = admin(&bed, &["sweep"]);
    assert_code(&o, 0, "final sweep");
    assert!(hn1.leftovers().iter().all(|l| !l.contains("bpcovz-")));
}

#[test]
fn generated_man_pages_and_completions_match_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = Command::new(bin())
        .args(["generate", "man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("generate");
    assert!(o.status.success(), "{o:?}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    // One page per command `bpc-ovz --help` lists (but `help`), and the main page.
    let help = Command::new(bin()).arg("--help").output().expect("help");
    let help = out(&help);
    let mut want: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(|c| format!("bpc-ovz-{c}.1"))
        .collect();
    want.push("bpc-ovz.1".into());
    want.sort();
    assert_eq!(pages, want);
    for c in ["refresh", "check", "sweep", "plan"] {
        assert!(pages.contains(&format!("bpc-ovz-{c}.1")), "{c}");
    }
    let main = std::fs::read_to_string(dir.path().join("bpc-ovz.1")).expect("page");
    assert!(
        main.starts_with(".ie \\n(.g .ds Aq \\(aq") || main.contains(".TH bpc-ovz 1"),
        "{main}"
    );
    assert!(main.contains("refresh") && main.contains("sweep") && !main.contains("generate"));
    let refresh = std::fs::read_to_string(dir.path().join("bpc-ovz-refresh.1")).expect("page");
    assert!(
        refresh.contains("UserCmdCheckStatus"),
        "exit codes are in the page: {refresh}"
    );
    // man(1) renders it without complaint, if man is installed.
    if Path::new("/usr/bin/man").exists() {
        let o = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("bpc-ovz-sweep.1"))
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man");
        assert!(o.status.success(), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("dry"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // Completions: valid bash that knows the commands and their options.
    let o = Command::new(bin())
        .args(["generate", "completions", "bash"])
        .output()
        .expect("bash");
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(script.contains("refresh") && script.contains("--dry-run"));
    let st = Command::new("bash")
        .arg("-n")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("bash -n");
    assert!(st.success());
    // Completing `bpc-ovz sw` offers sweep.
    let probe = format!(
        "{script}\nCOMP_WORDS=(bpc-ovz sw); COMP_CWORD=1; COMP_LINE='bpc-ovz sw'; COMP_POINT=10; _bpc__ovz bpc-ovz sw bpc-ovz; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&probe)
        .output()
        .expect("bash");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "sweep", "{o:?}");
    for sh in ["zsh", "fish"] {
        let o = Command::new(bin())
            .args(["generate", "completions", sh])
            .output()
            .expect(sh);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("sweep"));
    }
}

/// The Debian package: built from the binary under test with `contrib/build-deb.sh` (cargo-deb,
/// installed from crates.io if missing), then installed with the real dpkg into a scratch root
/// (`dpkg --root`, maintainer scripts run chroot-less with $DPKG_ROOT), so this machine's own
/// package database and /usr stay untouched; the installed binary runs.
#[test]
fn debian_package_installs_and_runs() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("no dpkg here: skipped");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out_dir = tempfile::tempdir().expect("tmp");
    let o = Command::new(Path::new(root).join("contrib/build-deb.sh"))
        .args(["--binary", bin(), "--fast", "-o"])
        .arg(out_dir.path())
        .current_dir(root)
        .output()
        .expect("build-deb.sh");
    assert!(o.status.success(), "build-deb.sh: {}", both(&o));
    let deb = std::fs::read_dir(out_dir.path())
        .expect("dir")
        .map(|e| e.expect("e").path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    // The package's own metadata.
    let info = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    let info = out(&info);
    assert!(
        info.contains("Package: bpc-ovz") && info.contains("Depends: libc6"),
        "{info}"
    );

    // A scratch root with its own dpkg database, knowing this machine's libc6 so that the
    // package's Depends is really checked.
    let t = tempfile::tempdir().expect("root");
    let admin_dir = t.path().join("var/lib/dpkg");
    std::fs::create_dir_all(admin_dir.join("info")).expect("info");
    std::fs::create_dir_all(admin_dir.join("updates")).expect("updates");
    let libc = Command::new("dpkg-query")
        .args(["-s", "libc6"])
        .output()
        .expect("dpkg-query");
    assert!(libc.status.success());
    std::fs::write(admin_dir.join("status"), &libc.stdout).expect("status");
    std::fs::write(admin_dir.join("available"), "").expect("available");
    let dpkg = |args: &[&str]| {
        Command::new("dpkg")
            .arg(format!("--root={}", t.path().display()))
            .arg(format!("--log={}", t.path().join("dpkg.log").display()))
            .arg("--force-script-chrootless")
            .args(args)
            .output()
            .expect("dpkg")
    };
    let o = dpkg(&["-i", &deb.display().to_string()]);
    assert!(o.status.success(), "dpkg -i: {}", both(&o));
    let r = t.path();
    let o = Command::new(r.join("usr/bin/bpc-ovz"))
        .arg("--version")
        .output()
        .expect("run");
    assert_eq!(
        out(&o).trim(),
        format!("bpc-ovz {}", env!("CARGO_PKG_VERSION"))
    );
    for f in [
        "usr/share/man/man1/bpc-ovz.1.gz",
        "usr/share/man/man1/bpc-ovz-refresh.1.gz",
        "usr/share/bash-completion/completions/bpc-ovz",
        "usr/share/zsh/vendor-completions/_bpc-ovz",
        "usr/share/fish/vendor_completions.d/bpc-ovz.fish",
        "usr/share/doc/bpc-ovz/backuppc3.pl",
        "usr/share/doc/bpc-ovz/backuppc4.pl",
        "etc/bpc-ovz/config.yaml",
        "var/lib/bpc-ovz",
    ] {
        assert!(r.join(f).exists(), "{f} is not installed");
    }
    let conffiles =
        std::fs::read_to_string(admin_dir.join("info/bpc-ovz.conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/bpc-ovz/config.yaml");
    // The installed example config is a valid config (check refuses only for lack of reachable HNs).
    let o = Command::new(r.join("usr/bin/bpc-ovz"))
        .arg("--config")
        .arg(r.join("etc/bpc-ovz/config.yaml"))
        .args(["check", "nosuch"])
        .output()
        .expect("run");
    assert!(
        err(&o).contains(
            "\"nosuch\" is not a configured HN (configured: hn1.example.com, hn2.example.com)"
        ),
        "{}",
        both(&o)
    );
    // Purge removes everything, the cache directory included.
    let o = dpkg(&["--purge", "bpc-ovz"]);
    assert!(o.status.success(), "dpkg --purge: {}", both(&o));
    assert!(!r.join("usr/bin/bpc-ovz").exists() && !r.join("var/lib/bpc-ovz").exists());
    assert!(!r.join("etc/bpc-ovz/config.yaml").exists());
}
