//! Hostile and bad input: what an HN lists, what BackupPC (or whoever runs bpc-ovz) asks for,
//! SSH keys and host keys, the config. Each is refused with a clear message before anything
//! changes on an HN — checked against the simulated HN's own logs (`/var/log/vzsim/exec.log`: every
//! command its sshd ran; `commands.log`: every vzctl/vzlist/lvm call) — or, for values an HN lists
//! that are merely unusual (a host name or a VE_PRIVATE full of shell syntax), proven inert: they
//! reach the HN only single-quoted, and nothing they spell ever runs.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// `bpc-ovz ssh --config CONFIG -l root HOST ARGS...` with `stdin` on its standard input.
fn bpc_ovz(config: &Path, host: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(bin())
        .args(["ssh", "--config"])
        .arg(config)
        .args(["-l", "root", host])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpc-ovz");
    let mut input = c.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // bpc-ovz may stop reading early (an oversized block): a broken pipe here is fine.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let o = c.wait_with_output().expect("bpc-ovz wait");
    let _ = feeder.join();
    o
}

const SENDER: &[&str] = &["rsync", "--server", "--sender", "-lr", ".", "/etc/hostname"];

/// Exit code `code`, and bpc-ovz's message is one line holding every word of `needles`.
fn refused(o: &Output, code: i32, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or("");
    for n in needles {
        assert!(last.contains(n), "the closing line names {n:?}: {e}");
    }
}

/// The HN's logs as they are now; [`Logs::nothing_ran`] then checks nothing was added.
struct Logs {
    exec: String,
    commands: String,
}

impl Logs {
    fn of(hn: &Hn) -> Logs {
        Logs {
            exec: hn.exec_log(),
            commands: hn.commands_log(),
        }
    }

    /// Not a single command ran on the HN since.
    fn nothing_ran(&self, hn: &Hn, what: &str) {
        assert_eq!(
            hn.exec_log(),
            self.exec,
            "{what}: a command ran on {}",
            hn.name
        );
        assert_eq!(
            hn.commands_log(),
            self.commands,
            "{what}: a tool ran on {}",
            hn.name
        );
    }

    /// Only bpc-ovz's read-only locate and probe ran: no guard, nothing that changes state.
    fn only_read(&self, hn: &Hn, what: &str) {
        let exec = hn.exec_log();
        let new = exec.strip_prefix(&self.exec).unwrap_or(&exec);
        assert!(
            !new.contains("exec /bin/sh -c"),
            "{what}: a guard was started on {}: {new}",
            hn.name
        );
        let cmds = hn.commands_log();
        let new = cmds.strip_prefix(&self.commands).unwrap_or(&cmds);
        for l in new.lines() {
            let tool = l.split_whitespace().nth(1).unwrap_or("");
            let ok = match tool {
                "vzlist" | "lvs" | "vgs" => true,
                "vzctl" => l.split_whitespace().nth(2) == Some("status"),
                _ => false,
            };
            assert!(ok, "{what}: {} ran `{l}`", hn.name);
        }
    }
}

/// Marker files a hostile value would create if any shell ever evaluated it.
const PWNED: &str = "/tmp/bpcovz-pwned";

fn assert_not_pwned(hn: &Hn) {
    let inside = hn.exec_ok(&format!("ls -d {PWNED}* 2>/dev/null; true"));
    assert!(inside.trim().is_empty(), "a value ran on the HN: {inside}");
    let outside = sh(&format!("ls -d {PWNED}* 2>/dev/null; true"));
    assert!(
        outside.stdout.is_empty(),
        "a value ran on the BackupPC server"
    );
}

/// Shell syntax that creates a marker file when evaluated, in every form.
fn payload(tag: &str) -> String {
    format!(
        "x;touch {PWNED}-{tag}-semi $(touch {PWNED}-{tag}-dollar)`touch {PWNED}-{tag}-tick` q'q\"q&&touch {PWNED}-{tag}-and|id"
    )
}

#[test]
fn hostile_host_names_and_paths_listed_by_the_hn_never_run() {
    let bed = Bed::new(1);
    info_level(&bed.config);
    let hn = &bed.hns[0];
    hn.create_ve(401, "ve401.example.com", "10.10.4.1", true);
    hn.create_ve(402, "ve402.example.com", "10.10.4.2", true);
    hn.create_ve(403, "ve403.example.com", "10.10.4.3", true);
    // VE 401: a host name full of shell syntax; VE 403: a very long host name.
    let evil_host = payload("host");
    let long_host = format!("{}.example.com", "l".repeat(3000));
    let set_host = |id: u32, h: &str| {
        let conf = hn.path(&format!("/etc/vz/conf/{id}.conf"));
        let text = std::fs::read_to_string(&conf).expect("conf");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("HOSTNAME=") {
                    format!("HOSTNAME=\"{h}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&conf, text).expect("conf");
    };
    set_host(401, &evil_host);
    set_host(403, &long_host);
    // VE 402: VE_PRIVATE (on the LV) whose path holds the same syntax and a space.
    let evil_dir = format!("/vz/private/{}", payload("path").replace('/', "_"));
    let conf = hn.path("/etc/vz/conf/402.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(
        &conf,
        text.replace(
            "VE_PRIVATE=\"/vz/private/$VEID\"",
            &format!("VE_PRIVATE=\"{evil_dir}\""),
        ),
    )
    .expect("conf");
    hn.exec_ok("vzctl stop 402 >/dev/null");
    std::fs::rename(hn.path("/vz/private/402"), hn.path(&evil_dir)).expect("move private");
    hn.exec_ok("vzctl start 402 >/dev/null");
    let listed = hn.exec_ok("vzlist -a -H -o veid,status,hostname");
    assert!(listed.contains(&evil_host), "{listed}");
    assert!(listed.contains(&long_host));

    // The VE with the hostile host name, by IP; the one with the hostile path, by name; the one
    // with the long name, by that name.
    for (host, id, private) in [
        ("10.10.4.1", 401, "/vz/private/401".to_string()),
        ("ve402.example.com", 402, evil_dir.clone()),
        (long_host.as_str(), 403, "/vz/private/403".to_string()),
    ] {
        let dest = bed.path(&format!("b{id}-{}", host.len()));
        let f = Backup::start(&bed, &bed.config, host, &dest, &[]).finish();
        assert_eq!(f.code, Some(0), "VE {id}:\n{}", f.stderr);
        assert_eq!(
            std::fs::read(dest.join("home/u/file")).expect("backup"),
            std::fs::read(hn.path(&format!("{private}/home/u/file"))).expect("VE file"),
            "VE {id}: the backup read the VE's own files"
        );
        assert!(hn.ve_running(id));
        assert_not_pwned(hn);
    }
    // The hostile name itself as the BackupPC host (no rsync client could pass it: it holds a
    // `/`, so bpc-ovz is run as rsync_bpc would run it): it is just a name to match.
    let o = bpc_ovz(&bed.config, &evil_host, SENDER, b"");
    assert!(stderr(&o).contains("is VE 401 on hn1"), "{}", stderr(&o));
    assert!(hn.ve_running(401));
    assert_not_pwned(hn);
    // The hostile path reached the HN only single-quoted.
    let exec = hn.exec_log();
    let quoted = format!("'{}'", evil_dir.replace('\'', "'\\''"));
    assert!(exec.contains(&quoted), "quoted path in exec.log");
    assert!(hn.leftovers().is_empty(), "{:?}", hn.leftovers());
}

#[test]
fn ve_private_outside_any_lv_and_unusable_paths_are_refused_before_any_downtime() {
    let bed = Bed::new(1);
    info_level(&bed.config);
    let hn = &bed.hns[0];
    hn.create_ve(411, "ve411.example.com", "10.10.4.11", true);
    hn.create_ve(412, "ve412.example.com", "10.10.4.12", true);
    hn.create_ve(413, "ve413.example.com", "10.10.4.13", true);
    // VE 411 lives in a plain directory on the HN's /tmp (a tmpfs, no LV under it).
    hn.exec_ok(
        "vzctl stop 411 >/dev/null && mkdir -p /tmp/plain && mv /vz/private/411 /tmp/plain/411 && \
         sed -i 's|^VE_PRIVATE=.*|VE_PRIVATE=\"/tmp/plain/$VEID\"|' /etc/vz/conf/411.conf && vzctl start 411 >/dev/null",
    );
    // VE 412: VE_PRIVATE with `..` (it still names the VE's private area: vzctl does not
    // mind, bpc-ovz does); VE 413: a relative VE_ROOT.
    hn.exec_ok(
        "sed -i 's|^VE_PRIVATE=.*|VE_PRIVATE=\"/vz/root/../private/$VEID\"|' /etc/vz/conf/412.conf && \
         sed -i 's|^VE_ROOT=.*|VE_ROOT=\"vz/root/$VEID\"|' /etc/vz/conf/413.conf",
    );
    for (host, id, code, needles) in [
        (
            "ve411.example.com",
            411,
            71,
            &["VE 411", "/tmp/plain/411", "not an LVM logical volume"][..],
        ),
        (
            "ve412.example.com",
            412,
            72,
            &["VE 412", "VE_PRIVATE", "not a clean absolute path"][..],
        ),
        (
            "ve413.example.com",
            413,
            72,
            &["VE 413", "VE_ROOT", "not a clean absolute path"][..],
        ),
    ] {
        let before = Logs::of(hn);
        let o = bpc_ovz(&bed.config, host, SENDER, b"");
        refused(&o, code, needles);
        before.only_read(hn, host);
        assert!(hn.ve_running(id));
    }
    assert!(hn.leftovers().is_empty(), "{:?}", hn.leftovers());
}

#[test]
fn an_ip_listed_by_two_ves_is_refused() {
    let bed = Bed::new(2);
    info_level(&bed.config);
    let (hn1, hn2) = (&bed.hns[0], &bed.hns[1]);
    // Two VEs on one HN share 10.10.4.21; two VEs on two HNs share 10.10.4.22.
    hn1.create_ve(421, "ve421.example.com", "10.10.4.21", true);
    hn1.create_ve(422, "ve422.example.com", "10.10.4.23 10.10.4.21", true);
    hn1.create_ve(423, "ve423.example.com", "10.10.4.22", true);
    hn2.create_ve(424, "ve424.example.com", "10.10.4.22", false);
    for (host, needles) in [
        (
            "10.10.4.21",
            &["10.10.4.21", "more than one", "421", "422"][..],
        ),
        (
            "10.10.4.22",
            &["10.10.4.22", "more than one", "hn1", "hn2"][..],
        ),
    ] {
        let (b1, b2) = (Logs::of(hn1), Logs::of(hn2));
        let o = bpc_ovz(&bed.config, host, SENDER, b"");
        refused(&o, 70, needles);
        b1.only_read(hn1, host);
        b2.only_read(hn2, host);
    }
    assert!(hn1.ve_running(421) && hn1.ve_running(422) && hn1.ve_running(423));
}

#[test]
fn remote_commands_options_and_paths_that_reach_outside_are_refused_before_connecting() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    hn.create_ve(431, "ve431.example.com", "10.10.4.31", true);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Not an rsync or tar server.
        (s(&["sh", "-c", "id"]), "neither an rsync server nor"),
        (s(&["bash"]), "neither an rsync server nor"),
        (s(&["rsync", "--daemon"]), "neither an rsync server nor"),
        (s(&["sh", "-c", "rsync --server --sender . /"]), "neither"),
        (s(&["nice", "-n", "5", "sh", "--server"]), "neither"),
        (s(&["cat", "/etc/shadow"]), "neither"),
        // Options that name HN files or run programs.
        (
            s(&[
                "rsync",
                "--server",
                "--sender",
                "--log-file=/etc/passwd",
                ".",
                "/",
            ]),
            "--log-file",
        ),
        (
            s(&[
                "rsync",
                "--server",
                "--sender",
                "--files-from=/etc/shadow",
                ".",
                "/",
            ]),
            "--files-from",
        ),
        (
            s(&[
                "rsync",
                "--server",
                "--sender",
                "--filter=merge /etc/shadow",
                ".",
                "/",
            ]),
            "--filter",
        ),
        (
            s(&["rsync", "--server", "--sender", "--rsync-path=sh", ".", "/"]),
            "--rsync-path",
        ),
        (
            s(&[
                "rsync",
                "--server",
                "--sender",
                "--write-batch=/tmp/x",
                ".",
                "/",
            ]),
            "--write-batch",
        ),
        (
            s(&[
                "rsync",
                "--server",
                "--sender",
                "--compare-dest=/",
                ".",
                "/",
            ]),
            "--compare-dest",
        ),
        (
            s(&["rsync", "--server", "--sender", "-T", "/tmp", ".", "/"]),
            "-T",
        ),
        (
            s(&["tar", "-c", "-f", "/etc/shadow", "-C", "/", "."]),
            "\"-f /etc/shadow\" is not allowed",
        ),
        (
            s(&["tar", "-c", "--to-command=sh", "-f", "-", "-C", "/", "."]),
            "--to-command",
        ),
        // `..` escapes, in argv paths and through --relative.
        (
            s(&["rsync", "--server", "--sender", "-lr", ".", "/../../etc"]),
            "`..`",
        ),
        (
            s(&["rsync", "--server", "--sender", "-lr", ".", "/etc/../../x"]),
            "`..`",
        ),
        (
            s(&["rsync", "--server", "--sender", "-lR", ".", "/./../root"]),
            "`..`",
        ),
        (
            s(&["rsync", "--server", "--sender", "-lr", ".", ".."]),
            "`..`",
        ),
        (s(&["tar", "-c", "-f", "-", "-C", "/../..", "."]), "`..`"),
    ];
    for (words, needle) in cases {
        let before = Logs::of(hn);
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        let o = bpc_ovz(&bed.config, "ve431.example.com", &args, b"");
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{words:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{words:?}: one line: {e}");
        assert!(e.contains(needle), "{words:?}: names {needle:?}: {e}");
        before.nothing_ran(hn, &format!("{words:?}"));
    }
}

#[test]
fn a_symlink_leading_out_of_the_ve_is_refused_inside_the_snapshot() {
    let bed = Bed::new(1);
    info_level(&bed.config);
    let hn = &bed.hns[0];
    hn.create_ve(432, "ve432.example.com", "10.10.4.32", true);
    // Inside the VE: `escape -> /` (the HN's root, seen from the HN) and `up -> ../../../..`.
    hn.exec_ok("ln -s / /vz/private/432/escape && ln -s ../../../.. /vz/private/432/up");
    for path in ["/escape/etc/", "/up/"] {
        let o = bpc_ovz(
            &bed.config,
            "ve432.example.com",
            &["rsync", "--server", "--sender", "-lr", ".", path],
            b"",
        );
        refused(&o, 1, &["leads outside the VE"]);
        assert!(hn.ve_running(432));
        assert!(hn.leftovers().is_empty(), "{:?}", hn.leftovers());
    }
    assert!(
        !hn.exec_log().contains("exec rsync"),
        "no rsync ran on the HN"
    );
}

#[test]
fn protect_args_blocks_truncated_oversized_or_bad_are_refused_before_connecting() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    hn.create_ve(433, "ve433.example.com", "10.10.4.33", true);
    let argv = ["rsync", "--server", "--sender", "-slogDtpre.iLsfxC"];
    let mut big = b"rsync\0--numeric-ids\0.\0/".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"rsync\0--numeric-ids\0.\0/etc".to_vec(), "truncated"),
        (b"".to_vec(), "truncated"),
        (big, "larger than"),
        (b"\0".to_vec(), "empty protect-args block"),
        (b"rsync\0--numeric-ids\0\0".to_vec(), "no `.` and path"),
        (b"rsync\0.\0/../../etc\0\0".to_vec(), "`..`"),
        (b"rsync\0.\0/etc/\0/x/../../..\0\0".to_vec(), "`..`"),
        (
            b"rsync\0--log-file=/etc/passwd\0.\0/\0\0".to_vec(),
            "--log-file",
        ),
        (b"rsync\0-T\0.\0/\0\0".to_vec(), "-T"),
        (b"rsync\0.\0/\xff\xfe\0\0".to_vec(), "not UTF-8"),
        (b"rsync\0stray\0.\0/\0\0".to_vec(), "unexpected word"),
    ];
    for (block, needle) in cases {
        let before = Logs::of(hn);
        let o = bpc_ovz(&bed.config, "ve433.example.com", &argv, &block);
        let e = stderr(&o);
        let shown = String::from_utf8_lossy(&block[..block.len().min(60)]).into_owned();
        assert_eq!(o.status.code(), Some(1), "{shown:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{shown:?}: one line: {e}");
        assert!(e.contains(needle), "{shown:?}: names {needle:?}: {e}");
        assert!(o.stdout.is_empty(), "nothing on the rsync protocol stream");
        before.nothing_ran(hn, &shown);
    }
}

#[test]
fn unknown_and_changed_host_keys_are_refused() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    hn.create_ve(441, "ve441.example.com", "10.10.4.41", true);
    let good = std::fs::read_to_string(&bed.known_hosts).expect("known_hosts");
    // A changed key: the known_hosts line holds another ed25519 key for the HN.
    let other = bed.path("other_host_key");
    let o = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other));
    assert!(o.status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let mut w = other_pub.split_whitespace();
    let (kt, kb) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    let changed = format!("[127.0.0.1]:{} {kt} {kb}\n", hn.port);
    let kh = bed.known_hosts.display().to_string();
    for (policy, known, needles) in [
        (
            "strict",
            changed.clone(),
            vec!["HOST KEY", "CHANGED", kh.as_str(), "line 1"],
        ),
        (
            "accept-new",
            changed.clone(),
            vec!["HOST KEY", "CHANGED", kh.as_str()],
        ),
        (
            "strict",
            String::new(),
            vec!["not in any known_hosts file", kh.as_str()],
        ),
    ] {
        std::fs::write(&bed.known_hosts, &known).expect("known_hosts");
        bed.write_config("");
        let cfg = std::fs::read_to_string(&bed.config)
            .expect("config")
            .replace(
                "  agent: false\n",
                &format!("  agent: false\n  host_key_policy: {policy}\n"),
            );
        std::fs::write(&bed.config, cfg).expect("config");
        let before = Logs::of(hn);
        let o = bpc_ovz(&bed.config, "ve441.example.com", SENDER, b"");
        refused(&o, 255, &needles);
        before.nothing_ran(hn, policy);
        assert_eq!(
            std::fs::read_to_string(&bed.known_hosts).expect("known_hosts"),
            known,
            "a changed key is never learnt"
        );
    }
    std::fs::write(&bed.known_hosts, good).expect("known_hosts");
}

#[test]
fn unreadable_or_undecryptable_keys_are_refused() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    hn.create_ve(442, "ve442.example.com", "10.10.4.42", true);
    let key = bed.path("enc_key");
    let o = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "right horse", "-f"])
        .arg(&key));
    assert!(o.status.success());
    let ak = hn.dir.join("ssh/authorized_keys");
    let mut cur = std::fs::read_to_string(&ak).expect("authorized_keys");
    cur.push_str(&std::fs::read_to_string(key.with_extension("pub")).expect("pub"));
    std::fs::write(&ak, cur).expect("authorized_keys");
    let pass = bed.path("passphrase");
    let garbage = bed.path("garbage_key");
    std::fs::write(&garbage, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n").expect("key");
    let missing = bed.path("no_such_key");
    let config_with = |identity: &Path, passphrase: Option<&str>| {
        let base = std::fs::read_to_string(bed.dir.path().join("config.yaml")).expect("config");
        let mut y = base.replace(
            &format!("identity_files: [{}]", bed.key.display()),
            &format!("identity_files: [{}]", identity.display()),
        );
        if let Some(p) = passphrase {
            std::fs::write(&pass, format!("{p}\n")).expect("passphrase");
            y = y.replace(
                "  agent: false\n",
                &format!("  agent: false\n  passphrase_file: {}\n", pass.display()),
            );
        }
        let f = bed.path("key-config.yaml");
        std::fs::write(&f, y).expect("config");
        f
    };
    let ks = |p: &Path| p.display().to_string();
    for (identity, passphrase, needles) in [
        (
            &key,
            Some("wrong horse"),
            vec![ks(&key), "wrong passphrase".into()],
        ),
        (&key, None, vec![ks(&key), "is encrypted".into()]),
        (&garbage, None, vec![ks(&garbage)]),
        (&missing, None, vec![ks(&missing)]),
    ] {
        let cfg = config_with(identity, passphrase);
        let before = Logs::of(hn);
        let o = bpc_ovz(&cfg, "ve442.example.com", SENDER, b"");
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let e = stderr(&o);
        assert!(
            matches!(o.status.code(), Some(1) | Some(255)),
            "{identity:?}: {e}"
        );
        let last = e.trim().lines().last().unwrap_or("");
        for n in needles {
            assert!(last.contains(n), "the closing line names {n:?}: {e}");
        }
        before.nothing_ran(hn, &ks(identity));
    }
    // The right passphrase works (the refusals above were about the key, not the HN).
    let cfg = config_with(&key, Some("right horse"));
    let o = bpc_ovz(
        &cfg,
        "ve442.example.com",
        &[
            "rsync",
            "--server",
            "--sender",
            "--protocol=31",
            "-lr",
            ".",
            "/etc/hostname",
        ],
        b"",
    );
    let e = stderr(&o);
    assert!(
        e.contains("is VE 442 on hn1"),
        "the encrypted key logs in: {e}"
    );
    assert!(hn.leftovers().is_empty(), "{:?}", hn.leftovers());
}

#[test]
fn malformed_configs_are_refused_with_the_file_and_the_key() {
    let bed = Bed::new(1);
    let hn = &bed.hns[0];
    hn.create_ve(451, "ve451.example.com", "10.10.4.51", true);
    let good = std::fs::read_to_string(&bed.config).expect("config");
    let cfg = bed.config.display().to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("hns: [127.0.0.1\nssh: {".into(), vec![cfg.as_str()]),
        (
            format!("{good}no_such_key: 1\n"),
            vec![cfg.as_str(), "no_such_key"],
        ),
        (
            good.replace("size: 64M", "size: -5G"),
            vec![cfg.as_str(), "snapshot.size"],
        ),
        (
            format!("{good}concurrency:\n  per_hn: 0\n"),
            vec![cfg.as_str(), "concurrency.per_hn"],
        ),
        (
            // serde's type errors name the line, not the key.
            format!("{good}concurrency:\n  per_hn: many\n"),
            vec![cfg.as_str(), "line 18"],
        ),
        (
            good.replace(
                "  agent: false\n",
                "  agent: false\n  host_key_policy: trust-all\n",
            ),
            vec![cfg.as_str(), "host_key_policy"],
        ),
        ("\0\u{1}binary".into(), vec![cfg.as_str()]),
    ];
    for (text, needles) in cases {
        std::fs::write(&bed.config, &text).expect("config");
        let before = Logs::of(hn);
        let o = bpc_ovz(&bed.config, "ve451.example.com", SENDER, b"");
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{text:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{text:?}: one line: {e}");
        for n in needles {
            assert!(e.contains(n), "{text:?}: names {n:?}: {e}");
        }
        before.nothing_ran(hn, &text);
    }
    // A missing config file and a directory in its place.
    for path in [bed.path("nope.yaml"), bed.dir.path().to_path_buf()] {
        let o = bpc_ovz(&path, "ve451.example.com", SENDER, b"");
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {e}", path.display());
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
