//! Hostile and bad input: what an HN lists, what BackupPC (or whoever runs bpc-ovz) asks for,
//! SSH keys and host keys, the config. Each is refused with a clear message before anything
//! changes on an HN — checked against the simulated HN's own logs (`/var/log/vzsim/exec.log`: every
//! command its sshd ran; `commands.log`: every vzctl/vzlist/lvm call). A value an HN lists for a
//! VE (host name, IP, VE_PRIVATE, VE_ROOT) that is not plainly a name, an address or a path
//! refuses that VE alone: only the read-only listing (or probe) ran, nothing the value spells
//! runs, and the other VEs of that HN still back up.

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

    /// Only the read-only listing ran (`vzlist`): no probe, no guard, no other tool.
    fn only_listed(&self, hn: &Hn, what: &str) {
        let exec = hn.exec_log();
        let new = exec.strip_prefix(&self.exec).unwrap_or(&exec);
        for l in new.lines() {
            let cmd = l.split_once(' ').map(|(_, c)| c).unwrap_or("");
            assert!(
                cmd.starts_with("vzlist -a -H -o veid,status,hostname 2>&1; echo "),
                "{what}: {} was asked to run `{cmd}`",
                hn.name
            );
        }
        let cmds = hn.commands_log();
        let new = cmds.strip_prefix(&self.commands).unwrap_or(&cmds);
        for l in new.lines() {
            let tool = l.split_whitespace().nth(1).unwrap_or("");
            assert_eq!(tool, "vzlist", "{what}: {} ran `{l}`", hn.name);
        }
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

/// How bpc-ovz shows a value an HN listed, cut to its first `n` characters: escaped as Rust's
/// `{:?}` does, without the closing quote (the message goes on with `...` when it is longer).
fn escaped_prefix(v: &str, n: usize) -> String {
    let head: String = v.chars().take(n).collect();
    let e = format!("{head:?}");
    e[..e.len() - 1].to_string()
}

/// Set `KEY="value"` in a VE's config on the HN (written from the host: no shell sees `value`).
fn set_conf(hn: &Hn, id: u32, key: &str, value: &str) {
    let conf = hn.path(&format!("/etc/vz/conf/{id}.conf"));
    let text = std::fs::read_to_string(&conf).expect("conf");
    let mut found = false;
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with(&format!("{key}=")) {
            out.push_str(&format!("{key}=\"{value}\"\n"));
            found = true;
        } else {
            out.push_str(&format!("{l}\n"));
        }
    }
    assert!(found, "{key} in {id}.conf");
    std::fs::write(&conf, out).expect("conf");
}

#[test]
fn hostile_values_listed_by_the_hn_are_refused_and_other_ves_still_back_up() {
    let bed = Bed::new(1);
    info_level(&bed.config);
    let hn = &bed.hns[0];
    // VE 400 is well-behaved; every other VE on the same HN has one hostile value.
    hn.create_ve(400, "ve400.example.com", "10.10.4.100", true);
    for id in 401..=405 {
        hn.create_ve(
            id,
            &format!("ve{id}.example.com"),
            &format!("10.10.4.{}", id - 400),
            true,
        );
    }
    for id in 406..=407 {
        hn.create_ve(
            id,
            &format!("ve{id}.example.com"),
            &format!("10.10.4.{}", id - 400),
            false,
        );
    }
    // 401: a host name full of shell syntax (`;`, `$(...)`, backticks, quotes, `&&`, `|`,
    // spaces); 403: 3012 characters; 404: control characters (ESC, BEL, CR, tab).
    let evil_host = payload("host");
    let long_host = format!("{}.example.com", "l".repeat(3000));
    let ctrl_host = "ve404\u{1b}[2J\u{7}.example\r.com\tx";
    set_conf(hn, 401, "HOSTNAME", &evil_host);
    set_conf(hn, 403, "HOSTNAME", &long_host);
    set_conf(hn, 404, "HOSTNAME", ctrl_host);
    // 402: VE_PRIVATE (still on the LV, really holding the VE) spelling shell syntax and
    // blanks; 405: VE_PRIVATE with a single space.
    let evil_dir = format!("/vz/private/{}", payload("path").replace('/', "_"));
    let space_dir = "/vz/private/ve 405".to_string();
    for (id, dir) in [(402, &evil_dir), (405, &space_dir)] {
        hn.exec_ok(&format!("vzctl stop {id} >/dev/null"));
        std::fs::rename(hn.path(&format!("/vz/private/{id}")), hn.path(dir)).expect("move");
        set_conf(hn, id, "VE_PRIVATE", dir);
        hn.exec_ok(&format!("vzctl start {id} >/dev/null"));
    }
    // 406 (stopped): a VE_ROOT with a command substitution; 407 (stopped): an IP that is not one.
    let evil_root = format!("/vz/root/406$(touch {PWNED}-root)");
    set_conf(hn, 406, "VE_ROOT", &evil_root);
    let evil_ip = format!("10.10.4.17;touch {PWNED}-ip");
    set_conf(hn, 407, "IP_ADDRESS", &format!("10.10.4.7 {evil_ip}"));
    let listed = hn.exec_ok("vzlist -a -H -o veid,status,hostname; vzlist -a -H -o veid,ip");
    for v in [&evil_host, &long_host, ctrl_host, &evil_ip] {
        assert!(listed.contains(v), "the HN lists {v:?}: {listed}");
    }
    let running_before: Vec<(u32, bool)> = (400..=407).map(|id| (id, hn.ve_running(id))).collect();

    // Each hostile VE, asked for by an IP (and 402 also by its name): refused (71) with one line
    // naming the HN, the VE, the field and the value (escaped, cut); only reads ran on the HN.
    let at_locate: &[(&str, u32, &str, String, &str)] = &[
        (
            "10.10.4.1",
            401,
            "hostname",
            escaped_prefix(&evil_host, 40),
            "it holds ';'",
        ),
        (
            "10.10.4.3",
            403,
            "hostname",
            escaped_prefix(&long_host, 80),
            "(3012 characters)",
        ),
        (
            "10.10.4.4",
            404,
            "hostname",
            "\"ve404\\u{1b}[2J\\u{7}.example\\r.com\\tx\"".into(),
            "it holds '\\u{1b}'",
        ),
        (
            "10.10.4.7",
            407,
            "ip",
            format!("{:?}", "10.10.4.17;touch"),
            "is not an IP address",
        ),
    ];
    let at_probe: &[(&str, u32, &str, String, &str)] = &[
        (
            "10.10.4.2",
            402,
            "VE_PRIVATE",
            escaped_prefix(&evil_dir, 40),
            "it holds ';'",
        ),
        (
            "ve402.example.com",
            402,
            "VE_PRIVATE",
            escaped_prefix(&evil_dir, 40),
            "it holds ';'",
        ),
        (
            "10.10.4.5",
            405,
            "VE_PRIVATE",
            format!("{space_dir:?}"),
            "it holds ' '",
        ),
        (
            "10.10.4.6",
            406,
            "VE_ROOT",
            escaped_prefix(&evil_root, 40),
            "it holds '$'",
        ),
    ];
    for (cases, only_vzlist) in [(at_locate, true), (at_probe, false)] {
        for (host, id, field, value, why) in cases {
            let before = Logs::of(hn);
            let o = bpc_ovz(&bed.config, host, SENDER, b"");
            let ve = format!("VE {id}");
            refused(&o, 71, &["hn1", &ve, field, value, why, "refused"]);
            let last = stderr(&o).trim().lines().last().unwrap_or("").to_string();
            assert!(last.len() < 400, "{host}: a short line: {last}");
            assert!(
                !last.contains(&long_host[..200]) && !last.contains('\u{1b}'),
                "{host}: the value is escaped and cut: {last}"
            );
            if only_vzlist {
                before.only_listed(hn, host);
            } else {
                before.only_read(hn, host);
            }
            assert_not_pwned(hn);
        }
    }
    // The hostile names themselves, as the BackupPC host (no rsync client could pass them; bpc-ovz
    // is run as rsync_bpc would run it): they match nothing.
    for host in [evil_host.as_str(), long_host.as_str(), ctrl_host] {
        let before = Logs::of(hn);
        let o = bpc_ovz(&bed.config, host, SENDER, b"");
        refused(&o, 70, &["no VE with that name"]);
        before.only_listed(hn, &escaped_prefix(host, 40));
        assert_not_pwned(hn);
    }
    let running_after: Vec<(u32, bool)> = (400..=407).map(|id| (id, hn.ve_running(id))).collect();
    assert_eq!(running_after, running_before, "no VE changed its run state");

    // `refresh` lists them all, caches none of the hostile values, says which VEs it left out,
    // and refuses one of them as HOST (71).
    let o = run(Command::new(bin())
        .args(["refresh", "--config"])
        .arg(&bed.config));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    for id in [401, 403, 404, 407] {
        assert!(
            e.contains(&format!(
                "VE {id} is not cached and its backups are refused"
            )),
            "refresh names VE {id}: {e}"
        );
    }
    assert!(e.lines().all(|l| !l.contains('\u{1b}')), "{e}");
    let cache = std::fs::read_to_string(bed.cache_path()).expect("cache");
    for bad in ["bpcovz-pwned", "lllllllll", "\\u001b", "ve404"] {
        assert!(!cache.contains(bad), "the cache holds {bad:?}: {cache}");
    }
    assert!(cache.contains("ve400.example.com"), "{cache}");
    let o = run(Command::new(bin())
        .args(["refresh", "--config"])
        .arg(&bed.config)
        .arg("10.10.4.1"));
    assert_eq!(o.status.code(), Some(71), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("VE 401 on hn1") && out.contains("REFUSED"),
        "{out}"
    );

    // `check` reads every VE's VE_PRIVATE through `vzlist`: it does not choke on them, and it
    // fails the two a backup would refuse (402: shell syntax, 405: a space), naming each.
    let o = run(Command::new(bin())
        .args(["check", "--json", "--config"])
        .arg(&bed.config));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(75), "{out}{}", stderr(&o));
    assert!(out.contains("8 VEs"), "{out}");
    assert!(out.contains("6/8"), "{out}");
    for needle in [
        "VE 402: VE_PRIVATE",
        "VE 405: VE_PRIVATE \\\"/vz/private/ve 405\\\" refused: it holds ' '",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    assert_not_pwned(hn);

    // The well-behaved VE on the same HN backs up, by name (through the cache) and by IP.
    for (n, host) in ["ve400.example.com", "10.10.4.100"].into_iter().enumerate() {
        let dest = bed.path(&format!("b400-{n}"));
        let f = Backup::start(&bed, &bed.config, host, &dest, &[]).finish();
        assert_eq!(f.code, Some(0), "VE 400 by {host}:\n{}", f.stderr);
        assert_eq!(
            std::fs::read(dest.join("home/u/file")).expect("backup"),
            std::fs::read(hn.path("/vz/private/400/home/u/file")).expect("VE file"),
            "the backup read VE 400's own files"
        );
    }
    assert!(hn.ve_running(400));
    assert_not_pwned(hn);
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
            71,
            &["VE 412", "VE_PRIVATE", "not a clean absolute path"][..],
        ),
        (
            "ve413.example.com",
            413,
            71,
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
    // A program word that only starts (or ends) like rsync: shell syntax, blanks, control
    // characters, a look-alike name; each in an otherwise valid sender invocation.
    let hostile_words = [
        "rsync;id",
        "rsync$(id)",
        "rsync`id`",
        "/usr/bin/rsync|x",
        "rsync&&id",
        "/tmp/$(id)/rsync",
        "rsync\nid",
        "rsync\u{1b}[2J",
        "rsyncd",
    ];
    let word_cases = hostile_words
        .iter()
        .map(|w| (s(&[w, "--server", "--sender", "-lr", ".", "/"]), "neither"));
    let cases: Vec<(Vec<String>, &str)> = word_cases
        .chain(vec![
            // Not an rsync or tar server.
            (s(&["sh", "-c", "id"]), "neither an rsync server nor"),
            (s(&["bash"]), "neither an rsync server nor"),
            (s(&["rsync", "--daemon"]), "neither an rsync server nor"),
            (s(&["sh", "-c", "rsync --server --sender . /"]), "neither"),
            (s(&["nice", "-n", "5", "sh", "--server"]), "neither"),
            (s(&["cat", "/etc/shadow"]), "neither"),
            (
                s(&["nice;id", "rsync", "--server", "--sender", "-lr", ".", "/"]),
                "neither",
            ),
            (
                s(&["tar;id", "-c", "-f", "-", "-C", "/", "."]),
                "neither an rsync server nor",
            ),
            (
                s(&["/x$(id)/tar", "-c", "-f", "-", "-C", "/", "."]),
                "not an rsync or tar server command",
            ),
            (
                s(&["env;id", "LC_ALL=C", "tar", "-c", "-f", "-", "-C", "/", "."]),
                "not an rsync or tar server command",
            ),
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
        ])
        .collect();
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
        // Type errors, which serde only places by line and column: the key is named too.
        (
            format!("{good}concurrency:\n  per_hn: many\n"),
            vec![cfg.as_str(), "key `concurrency.per_hn`", "line 18"],
        ),
        (
            format!("{good}concurrency: {{per_hn: \"lots\"}}\n"),
            vec![cfg.as_str(), "key `concurrency.per_hn`", "invalid u32"],
        ),
        (
            good.replace("size: 64M", "size: [1]"),
            vec![cfg.as_str(), "key `snapshot.size`"],
        ),
        (
            good.replace("  agent: false\n", "  agent: maybe\n"),
            vec![cfg.as_str(), "key `ssh.agent`"],
        ),
        (
            good.replace("  known_hosts: [", "  known_hosts: [{a: 1}, "),
            vec![cfg.as_str(), "key `ssh.known_hosts[0]`"],
        ),
        (
            good.replace("    user: root\n", "    user: [root]\n"),
            vec![cfg.as_str(), "key `hns[0]`"],
        ),
        (
            format!("{good}ves:\n  web.example.com: {{veid: [101]}}\n"),
            vec![cfg.as_str(), "key `ves.web.example.com.veid`"],
        ),
        (
            format!("{good}lease:\n  ttl: {{a: 1}}\n"),
            vec![cfg.as_str(), "key `lease.ttl`"],
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
