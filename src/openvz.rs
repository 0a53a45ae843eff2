//! OpenVZ knowledge: VEIDs, `vzlist` and `vzctl status` output, VE config files.
//!
//! Everything parsed here comes from an HN and is untrusted: a line that does not have the
//! expected shape is reported, never guessed at, and no value is ever evaluated by a shell.
//! Values are also checked where they are parsed ([`check_hostname`], [`check_ip`],
//! [`check_ve_path`]): a VE whose HN lists one that fails is kept, marked
//! [`ListedVe::unusable`], so that asking for it is refused with the field and the value (shown
//! escaped and cut by [`shown`]) while the other VEs of that HN are unaffected. Quoting every
//! value that reaches a remote shell stays, as a second guard.
//! This module knows nothing about SSH, LVM or BackupPC.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::quote::RemoteCmd;

/// A container id: digits on OpenVZ 6; OpenVZ 7 also allows names and UUIDs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct VeId(String);

impl VeId {
    pub fn parse(s: &str) -> Result<VeId, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !s.starts_with('-');
        if ok {
            Ok(VeId(s.to_string()))
        } else {
            Err(format!("{:?} is not a valid VEID", truncate(s, 80)))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VeStatus {
    Running,
    Stopped,
    Mounted,
    Suspended,
}

impl VeStatus {
    fn parse(s: &str) -> Option<VeStatus> {
        match s {
            "running" => Some(VeStatus::Running),
            "stopped" | "down" => Some(VeStatus::Stopped),
            "mounted" => Some(VeStatus::Mounted),
            "suspended" | "paused" => Some(VeStatus::Suspended),
            _ => None,
        }
    }
}

impl fmt::Display for VeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VeStatus::Running => "running",
            VeStatus::Stopped => "stopped",
            VeStatus::Mounted => "mounted",
            VeStatus::Suspended => "suspended",
        })
    }
}

/// One VE as listed by `vzlist` on one HN.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListedVe {
    pub veid: VeId,
    pub status: VeStatus,
    /// A valid DNS host name ([`check_hostname`]); a listed name that is not one is never kept.
    pub hostname: Option<String>,
    /// Addresses that passed [`check_ip`].
    pub ips: Vec<String>,
    /// Why this VE must not be backed up: a value its HN listed for it that bpc-ovz refuses to
    /// use (the field and the value, escaped and truncated). Such a VE can still be matched by a
    /// valid IP or a `ves:` alias, so that asking for it ends in this message, never in a backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unusable: Option<String>,
}

/// The remote command that lists VEs: two `vzlist` calls so that neither the host name nor the
/// IP list is truncated (a field is only printed whole when it is the last one), each followed by
/// its exit code. Works with vzctl 3.x and 4.x (no `-t`/`-j`, which 3.x lacks).
pub fn vzlist_command(marker: &str) -> String {
    let a = RemoteCmd::new("vzlist").args(["-a", "-H", "-o", "veid,status,hostname"]);
    let b = RemoteCmd::new("vzlist").args(["-a", "-H", "-o", "veid,ip"]);
    format!(
        "{a} 2>&1; echo {m} rc $?; {b} 2>&1; echo {m} rc $?",
        m = crate::quote::quote(marker)
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VzlistError {
    #[error("vzlist failed (exit {rc}): {msg}")]
    Failed { rc: i32, msg: String },
    #[error("unexpected vzlist output: {0}")]
    Garbled(String),
}

/// Parse the output of [`vzlist_command`]. Returns the VEs and warnings about lines skipped.
pub fn parse_vzlist(
    output: &str,
    marker: &str,
) -> Result<(Vec<ListedVe>, Vec<String>), VzlistError> {
    let mut sections: Vec<(Vec<&str>, i32)> = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line
            .strip_prefix(marker)
            .and_then(|r| r.strip_prefix(" rc "))
        {
            let rc = rest
                .trim()
                .parse::<i32>()
                .map_err(|_| VzlistError::Garbled(truncate(line, 120)))?;
            sections.push((std::mem::take(&mut cur), rc));
        } else {
            cur.push(line);
        }
    }
    if sections.len() != 2 {
        return Err(VzlistError::Garbled(format!(
            "expected 2 sections, got {}",
            sections.len()
        )));
    }
    let mut warnings = Vec::new();
    let mut ves: BTreeMap<VeId, ListedVe> = BTreeMap::new();
    let (names, rc1) = &sections[0];
    if let Some(none) = empty_list(names, *rc1)? {
        return Ok((Vec::new(), none));
    }
    for line in names {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let mut it = t.splitn(3, char::is_whitespace);
        let id = it.next().unwrap_or("");
        let st = it.next().unwrap_or("");
        let host = it.next().unwrap_or("").trim();
        match (VeId::parse(id), VeStatus::parse(st)) {
            (Ok(veid), Some(status)) => {
                if let Some(ve) = ves.get_mut(&veid) {
                    // vzlist prints one line per VE: a second one was made by a value holding
                    // a line break (which may have spelled this line). Trust neither.
                    ve.hostname = None;
                    ve.unusable = Some(format!(
                        "vzlist lists it twice (a value holding a line break?), the second time as {}",
                        shown(t)
                    ));
                    continue;
                }
                let mut unusable = None;
                let hostname = if host.is_empty() || host == "-" {
                    None
                } else if let Err(why) = check_hostname(host) {
                    unusable = Some(format!(
                        "hostname {} is not a valid DNS host name ({why})",
                        shown(host)
                    ));
                    None
                } else {
                    Some(host.to_string())
                };
                ves.insert(
                    veid.clone(),
                    ListedVe {
                        veid,
                        status,
                        hostname,
                        ips: Vec::new(),
                        unusable,
                    },
                );
            }
            _ => warnings.push(format!("skipped vzlist line {}", shown(line))),
        }
    }
    let (ips, rc2) = &sections[1];
    if empty_list(ips, *rc2)?.is_none() {
        let mut seen: BTreeSet<VeId> = BTreeSet::new();
        for line in ips {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            let mut words = t.split_whitespace();
            let id = words.next().unwrap_or("");
            let Some(ve) = VeId::parse(id).ok().and_then(|v| ves.get_mut(&v)) else {
                warnings.push(format!("skipped vzlist line {}", shown(line)));
                continue;
            };
            if !seen.insert(ve.veid.clone()) {
                ve.ips.clear();
                ve.unusable.get_or_insert_with(|| {
                    format!(
                        "vzlist lists its IPs twice (a value holding a line break?), the second time as {}",
                        shown(t)
                    )
                });
                continue;
            }
            for w in words.filter(|w| *w != "-") {
                match check_ip(w) {
                    Ok(()) => ve.ips.push(w.to_string()),
                    Err(why) => {
                        if ve.unusable.is_none() {
                            ve.unusable =
                                Some(format!("ip {} is not an IP address ({why})", shown(w)));
                        }
                    }
                }
            }
        }
    }
    Ok((ves.into_values().collect(), warnings))
}

/// Longest host name accepted (RFC 1123: 253 characters, without a trailing dot).
pub const MAX_HOSTNAME: usize = 253;
/// Longest host name label (RFC 1123).
pub const MAX_LABEL: usize = 63;
/// Longest VE_PRIVATE / VE_ROOT / LOCKDIR accepted (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Characters of a VE path besides ASCII letters and digits: enough for every real layout, and
/// nothing a shell (or a reader of a log line) would take for syntax.
const PATH_CHARS: &str = "._-+@:,=/";

/// A value an HN listed, for a message: escaped (`{:?}`: quotes, control characters and line
/// breaks are shown, never acted on) and cut to 80 characters.
pub fn shown(v: &str) -> String {
    const N: usize = 80;
    let n = v.chars().count();
    if n > N {
        let head: String = v.chars().take(N).collect();
        format!("{head:?}... ({n} characters)")
    } else {
        format!("{v:?}")
    }
}

/// A DNS host name as RFC 1123 has it (letters, digits, `-`, and `_` as real zones have it;
/// labels of 1–63 characters, not starting or ending with `-`; at most 253 characters, one
/// trailing dot allowed). `Err` says what is wrong (without the value).
pub fn check_hostname(h: &str) -> Result<(), String> {
    let name = h.strip_suffix('.').unwrap_or(h);
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("it holds {c:?}"));
    }
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_HOSTNAME {
        return Err(format!(
            "{} characters, more than {MAX_HOSTNAME}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "a label of {} characters, more than {MAX_LABEL}",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with `-`"));
        }
    }
    Ok(())
}

/// A clean absolute path for VE_PRIVATE, VE_ROOT or LOCKDIR: starts with `/`, no `.` or `..`
/// component, only ASCII letters, digits and `._-+@:,=/`, at most [`MAX_PATH`] bytes. `Err` says
/// what is wrong (without the value).
pub fn check_ve_path(p: &str) -> Result<(), String> {
    if p.len() > MAX_PATH {
        return Err(format!("{} bytes, more than {MAX_PATH}", p.len()));
    }
    if !p.starts_with('/') {
        return Err("it is not absolute".into());
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || PATH_CHARS.contains(*c)))
    {
        return Err(format!("it holds {c:?}"));
    }
    if let Some(c) = p.split('/').find(|c| *c == "." || *c == "..") {
        return Err(format!("it has a `{c}` component"));
    }
    Ok(())
}

/// An address as `vzlist -o ip` lists it: IPv4 or IPv6, optionally with `/PREFIX` or
/// `/NETMASK`. `Err` says what is wrong (without the value).
pub fn check_ip(w: &str) -> Result<(), String> {
    let (addr, mask) = match w.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (w, None),
    };
    if addr.parse::<std::net::IpAddr>().is_err() {
        return Err("the address does not parse".into());
    }
    if let Some(m) = mask {
        let ok = (!m.is_empty() && m.len() <= 3 && m.chars().all(|c| c.is_ascii_digit()))
            || m.parse::<std::net::Ipv4Addr>().is_ok();
        if !ok {
            return Err("the part after `/` is neither a prefix length nor a netmask".into());
        }
    }
    Ok(())
}

/// rc 1 with "not found" is an empty list (vzctl prints `Container(s) not found`).
fn empty_list(lines: &[&str], rc: i32) -> Result<Option<Vec<String>>, VzlistError> {
    if rc == 0 {
        return Ok(None);
    }
    let text = lines.join(" ");
    if rc == 1 && (text.contains("not found")) {
        return Ok(Some(Vec::new()));
    }
    Err(VzlistError::Failed {
        rc,
        msg: truncate(text.trim(), 200),
    })
}

/// Parsed `vzctl status`: `CTID 101 exist mounted running` (or `VEID ...`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VzStatus {
    pub exists: bool,
    pub mounted: bool,
    pub running: bool,
}

pub fn parse_vzctl_status(line: &str) -> Option<VzStatus> {
    let l = line
        .lines()
        .find(|l| l.starts_with("CTID ") || l.starts_with("VEID "))?;
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.len() < 5 {
        return None;
    }
    Some(VzStatus {
        exists: w[2] == "exist",
        mounted: w[3] == "mounted",
        running: w[4] == "running",
    })
}

/// Parse a shell-style VE config (`KEY="value"` lines) without evaluating it. `$VEID` and
/// `${VEID}` are substituted; nothing else is expanded.
pub fn parse_conf(text: &str, veid: &VeId) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let v = v.trim();
        let value = if let Some(inner) = v.strip_prefix('"') {
            inner
                .rsplit_once('"')
                .map(|(a, _)| a)
                .unwrap_or(inner)
                .to_string()
        } else if let Some(inner) = v.strip_prefix('\'') {
            inner
                .rsplit_once('\'')
                .map(|(a, _)| a)
                .unwrap_or(inner)
                .to_string()
        } else {
            v.split('#').next().unwrap_or("").trim().to_string()
        };
        let value = value
            .replace("${VEID}", veid.as_str())
            .replace("$VEID", veid.as_str());
        out.insert(k.to_string(), value);
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}...", s.chars().take(n).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "@@m";

    #[test]
    fn vzlist_two_sections() {
        let out = "       101 running ve101.example.com\n       102 stopped -\n@@m rc 0\n       101 10.0.0.101 10.0.0.201\n       102 -\n@@m rc 0\n";
        let (ves, warn) = parse_vzlist(out, M).unwrap();
        assert!(warn.is_empty());
        assert_eq!(ves.len(), 2);
        assert_eq!(ves[0].hostname.as_deref(), Some("ve101.example.com"));
        assert_eq!(ves[0].ips, vec!["10.0.0.101", "10.0.0.201"]);
        assert_eq!(ves[1].status, VeStatus::Stopped);
        assert_eq!(ves[1].hostname, None);
    }

    #[test]
    fn vzlist_empty_and_failure() {
        let out = "Container(s) not found\n@@m rc 1\nContainer(s) not found\n@@m rc 1\n";
        assert!(parse_vzlist(out, M).unwrap().0.is_empty());
        let out = "Unable to open /proc/vz/veinfo\n@@m rc 1\nx\n@@m rc 1\n";
        assert!(matches!(
            parse_vzlist(out, M),
            Err(VzlistError::Failed { rc: 1, .. })
        ));
        assert!(parse_vzlist("junk", M).is_err());
    }

    #[test]
    fn vzlist_hostile_lines_are_skipped_not_trusted() {
        let out = "       101 running $(reboot);`id` 'x\"\nrm -rf / running a\n       10;2 running b\n       102 running ok.example.com\n@@m rc 0\n       101 10.0.0.1\n       102 10.0.0.2\n@@m rc 0\n";
        let (ves, warn) = parse_vzlist(out, M).unwrap();
        assert_eq!(ves.len(), 2);
        // The VE stays listed (its IP still finds it, to be refused), its host name is not kept.
        assert_eq!(ves[0].hostname, None);
        assert_eq!(ves[0].ips, vec!["10.0.0.1"]);
        let why = ves[0].unusable.as_deref().unwrap();
        assert!(
            why.starts_with(
                "hostname \"$(reboot);`id` 'x\\\"\" is not a valid DNS host name (it holds '$')"
            ),
            "{why}"
        );
        // The VE beside it is untouched.
        assert_eq!(ves[1].hostname.as_deref(), Some("ok.example.com"));
        assert_eq!(ves[1].unusable, None);
        assert_eq!(warn.len(), 2);
        assert!(warn.iter().all(|w| !w.contains('\n')));
    }

    #[test]
    fn vzlist_hostile_values_make_only_their_ve_unusable() {
        let long = format!("{}.example.com", "l".repeat(3000));
        let out = format!(
            "       101 running a b.example.com\n       102 running ve\u{1b}[31m.example.com\n       103 running {long}\n       104 running ve\rx.example.com\n       105 running good.example.com\n       106 running -bad.example.com\n@@m rc 0\n       101 10.0.0.1\n       105 10.0.0.5 fd00::5/64 10.0.1.5/255.255.255.0\n       106 10.0.0.6;id 10.0.0.16\n@@m rc 0\n"
        );
        let (ves, _) = parse_vzlist(&out, M).unwrap();
        let by: BTreeMap<&str, &ListedVe> = ves.iter().map(|v| (v.veid.as_str(), v)).collect();
        for (id, needle) in [
            (
                "101",
                "\"a b.example.com\" is not a valid DNS host name (it holds ' ')",
            ),
            (
                "102",
                "\"ve\\u{1b}[31m.example.com\" is not a valid DNS host name (it holds '\\u{1b}')",
            ),
            (
                "103",
                "... (3012 characters) is not a valid DNS host name (3012 characters, more than 253)",
            ),
            ("104", "(it holds '\\r')"),
            ("106", "starts or ends with `-`"),
        ] {
            let why = by[id].unusable.as_deref().unwrap_or("");
            assert!(why.contains(needle), "VE {id}: {why}");
            assert!(
                why.len() < 200 && !why.contains('\n'),
                "VE {id}: short, one line: {why}"
            );
            assert_eq!(by[id].hostname, None);
        }
        assert_eq!(by["105"].unusable, None);
        assert_eq!(
            by["105"].ips,
            vec!["10.0.0.5", "fd00::5/64", "10.0.1.5/255.255.255.0"]
        );
        // A hostile IP: the good one is kept (it finds the VE, to be refused), the bad one not.
        assert_eq!(by["106"].ips, vec!["10.0.0.16"]);
    }

    #[test]
    fn vzlist_a_line_break_in_a_value_cannot_pass_for_another_ve() {
        // VE 101's host name "x\n 102 running victim.example.com" makes a line for VE 102.
        let out = "       101 running x\n       102 running victim.example.com\n       102 running ve102.example.com\n@@m rc 0\n       101 10.0.0.1\n       102 10.0.0.2\n       102 10.6.6.6\n@@m rc 0\n";
        let (ves, _) = parse_vzlist(out, M).unwrap();
        assert_eq!(ves[0].hostname.as_deref(), Some("x"));
        assert_eq!(ves[1].hostname, None);
        assert!(
            ves[1]
                .unusable
                .as_deref()
                .unwrap()
                .contains("lists it twice")
        );
        let out = "       102 running ve102.example.com\n@@m rc 0\n       102 10.0.0.2\n       102 10.6.6.6\n@@m rc 0\n";
        let (ves, _) = parse_vzlist(out, M).unwrap();
        assert!(ves[0].unusable.as_deref().unwrap().contains("IPs twice"));
        assert!(ves[0].ips.is_empty());
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        let l63 = "a".repeat(63);
        let ok253 = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(ok253.len(), 253);
        for good in [
            "ve101",
            "ve101.example.com",
            "VE101.Example.COM.",
            "_srv.x-y.example",
            "1.2.3.4",
            l63.as_str(),
            ok253.as_str(),
        ] {
            assert_eq!(check_hostname(good), Ok(()), "{good:?}");
        }
        let long = format!("{ok253}c");
        let l64 = "a".repeat(64);
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a",
            "a-",
            "a.-b",
            "a b",
            "a;b",
            "a$(id)",
            "a`id`",
            "a'b",
            "a\"b",
            "a\nb",
            "a\tb",
            "a\u{1}b",
            "a\u{7f}b",
            "a/b",
            "a\\b",
            "é.example",
            long.as_str(),
            l64.as_str(),
        ] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ve_paths_are_clean_absolute_paths_of_plain_characters() {
        for good in [
            "/vz/private/101",
            "/var/lib/vz/root/101/",
            "/srv/vz_1/p-2/a.b+c@d:e,f=g",
            "//vz/private/101",
        ] {
            assert_eq!(check_ve_path(good), Ok(()), "{good:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        for (bad, why) in [
            ("vz/private/101", "not absolute"),
            ("", "not absolute"),
            ("/vz/private/a b", "holds ' '"),
            ("/vz/private/$(id)", "holds '$'"),
            ("/vz/private/`id`", "holds '`'"),
            ("/vz/private/1;2", "holds ';'"),
            ("/vz/private/'1'", "holds '\\''"),
            ("/vz/private/\"1", "holds '\"'"),
            ("/vz/private/1\n2", "holds '\\n'"),
            ("/vz/private/1\u{1b}2", "holds '\\u{1b}'"),
            ("/vz/private/1*", "holds '*'"),
            ("/vz/priv\u{e9}/1", "holds '\u{e9}'"),
            ("/vz/root/../private/101", "`..` component"),
            ("/vz/./private/101", "`.` component"),
            (long.as_str(), "more than 4096"),
        ] {
            let e = check_ve_path(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ips_are_addresses_with_an_optional_prefix() {
        for good in [
            "10.0.0.1",
            "10.0.0.1/24",
            "10.0.0.1/255.255.255.0",
            "fd00::1",
            "fd00::1/64",
        ] {
            assert_eq!(check_ip(good), Ok(()), "{good:?}");
        }
        for bad in [
            "10.0.0.1;id",
            "x",
            "10.0.0.1/",
            "10.0.0.1/24;id",
            "$(id)",
            "10.0.0.256",
        ] {
            assert!(check_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let s = shown(&"x".repeat(3000));
        assert!(s.starts_with(&format!("\"{}\"...", "x".repeat(80))), "{s}");
        assert!(s.ends_with("(3000 characters)"), "{s}");
    }

    #[test]
    fn vzctl_status_forms() {
        let s = parse_vzctl_status("CTID 101 exist mounted running\n").unwrap();
        assert!(s.exists && s.mounted && s.running);
        let s = parse_vzctl_status("VEID 101 exist unmounted down").unwrap();
        assert!(s.exists && !s.running);
        let s = parse_vzctl_status("CTID 101 exist mounted down suspended").unwrap();
        assert!(!s.running);
        assert!(parse_vzctl_status("garbage").is_none());
    }

    #[test]
    fn conf_parsing_substitutes_veid_only() {
        let id = VeId::parse("101").unwrap();
        let c = parse_conf(
            "# comment\nVE_PRIVATE=\"/vz/private/$VEID\"\nVE_ROOT='/vz/root/${VEID}'\nHOSTNAME=\"a $(reboot)\"\nONBOOT=yes # x\nbad line\n",
            &id,
        );
        assert_eq!(c["VE_PRIVATE"], "/vz/private/101");
        assert_eq!(c["VE_ROOT"], "/vz/root/101");
        assert_eq!(c["HOSTNAME"], "a $(reboot)");
        assert_eq!(c["ONBOOT"], "yes");
    }

    #[test]
    fn veid_validation() {
        assert!(VeId::parse("101").is_ok());
        assert!(VeId::parse("1f2e-uuid").is_ok());
        for bad in ["", "-1", "1;2", "a b", "../x", "1\n2"] {
            assert!(VeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
