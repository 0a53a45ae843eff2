//! OpenVZ knowledge: VEIDs, `vzlist` and `vzctl status` output, VE config files.
//!
//! Everything parsed here comes from an HN and is untrusted: a line that does not have the
//! expected shape is reported, never guessed at, and no value is ever evaluated by a shell.
//! This module knows nothing about SSH, LVM or BackupPC.

use std::collections::BTreeMap;
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
    pub hostname: Option<String>,
    pub ips: Vec<String>,
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
                let hostname = if host.is_empty() || host == "-" {
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
                    },
                );
            }
            _ => warnings.push(format!("skipped vzlist line {:?}", truncate(line, 120))),
        }
    }
    let (ips, rc2) = &sections[1];
    if empty_list(ips, *rc2)?.is_none() {
        for line in ips {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            let mut words = t.split_whitespace();
            let id = words.next().unwrap_or("");
            match VeId::parse(id).ok().and_then(|v| ves.get_mut(&v)) {
                Some(ve) => ve.ips = words.filter(|w| *w != "-").map(str::to_string).collect(),
                None => warnings.push(format!("skipped vzlist line {:?}", truncate(line, 120))),
            }
        }
    }
    Ok((ves.into_values().collect(), warnings))
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
        let out = "       101 running $(reboot);`id` 'x\"\nrm -rf / running a\n       10;2 running b\n@@m rc 0\n       101 10.0.0.1\n@@m rc 0\n";
        let (ves, warn) = parse_vzlist(out, M).unwrap();
        assert_eq!(ves.len(), 1);
        assert_eq!(ves[0].hostname.as_deref(), Some("$(reboot);`id` 'x\""));
        assert_eq!(warn.len(), 2);
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
