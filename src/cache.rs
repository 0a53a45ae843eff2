//! The VE → HN cache: which HN listed which VE when `bpc-ovz refresh` last asked them all.
//!
//! `refresh` writes it (`cache:` in the config, default `/var/lib/bpc-ovz/ve-cache.json`);
//! `locate` reads it to try one HN first, verifies there with `vzlist`, and falls back to asking
//! every HN when the VE is not there any more. A cache is only ever a hint: a missing, unreadable,
//! stale or foreign file costs one wasted connection at worst, never a wrong backup.
//!
//! Writes are atomic (a temporary file in the same directory, fsync, rename), so a reader sees the
//! old file or the new one, never half of one, and concurrent writers cannot interleave. This
//! module knows the file format and the matching rules; it does not talk to HNs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::openvz::{ListedVe, VeId, VeStatus};

/// First field of every cache file; a file without it is not ours and is ignored.
pub const FORMAT: &str = "bpc-ovz ve-cache 1";

/// One VE as an HN listed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedVe {
    /// The HN's display name (`name:` in the config, else its host).
    pub hn: String,
    pub veid: String,
    pub status: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    /// When that HN last listed it (seconds since the epoch).
    pub seen: u64,
}

impl CachedVe {
    pub fn from_listed(hn: &str, ve: &ListedVe, seen: u64) -> CachedVe {
        CachedVe {
            hn: hn.to_string(),
            veid: ve.veid.to_string(),
            status: ve.status.to_string(),
            hostname: ve.hostname.clone(),
            ips: ve.ips.clone(),
            seen,
        }
    }

    /// Back to what `vzlist` said, for the matching rules of `locate`; `None` if the entry is
    /// damaged (a cache file is input like any other: a host name or IP that `vzlist` output
    /// could not have passed with is damage too).
    pub fn to_listed(&self) -> Option<ListedVe> {
        if let Some(h) = &self.hostname {
            crate::openvz::check_hostname(h).ok()?;
        }
        for ip in &self.ips {
            crate::openvz::check_ip(ip).ok()?;
        }
        let status = match self.status.as_str() {
            "running" => VeStatus::Running,
            "stopped" => VeStatus::Stopped,
            "mounted" => VeStatus::Mounted,
            "suspended" => VeStatus::Suspended,
            _ => return None,
        };
        Some(ListedVe {
            veid: VeId::parse(&self.veid).ok()?,
            status,
            hostname: self.hostname.clone(),
            ips: self.ips.clone(),
            unusable: None,
        })
    }
}

/// What one HN answered at the last refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnState {
    /// Last time it answered (seconds since the epoch; 0: never).
    pub answered: u64,
    /// Why it did not answer at the last refresh, if it did not.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VeCache {
    pub format: String,
    /// When the file was written (seconds since the epoch).
    pub written: u64,
    pub hns: BTreeMap<String, HnState>,
    pub ves: Vec<CachedVe>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {}: cannot read: {msg}", .path.display())]
    Read { path: PathBuf, msg: String },
    #[error("cache {}: not a bpc-ovz VE cache: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },
    #[error("cache {}: cannot write: {msg}", .path.display())]
    Write { path: PathBuf, msg: String },
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for VeCache {
    fn default() -> Self {
        VeCache {
            format: FORMAT.to_string(),
            written: 0,
            hns: BTreeMap::new(),
            ves: Vec::new(),
        }
    }
}

impl VeCache {
    /// Read the cache; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<VeCache>, CacheError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CacheError::Read {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                });
            }
        };
        let c: VeCache = serde_json::from_str(&text).map_err(|e| CacheError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        if c.format != FORMAT {
            return Err(CacheError::Format {
                path: path.to_path_buf(),
                msg: format!("format {:?}, expected {FORMAT:?}", c.format),
            });
        }
        Ok(Some(c))
    }

    /// Write atomically: temp file beside the target, fsync, rename, fsync the directory.
    /// Creates the directory if it is missing.
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        let err = |msg: String| CacheError::Write {
            path: path.to_path_buf(),
            msg,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ve-cache.json".into());
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            &crate::nonce()[..8]
        ));
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            // The file is a hint for whoever runs backups (often another user): readable by all.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&tmp, path)?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e.to_string()));
        }
        Ok(())
    }

    /// Replace what the HNs in `answered` hold with what they listed now; keep the entries of
    /// HNs that did not answer (their last known VEs stay the best hint), record their errors,
    /// and drop HNs that are no longer configured.
    pub fn merge(
        &mut self,
        configured: &[String],
        answered: &BTreeMap<String, Vec<ListedVe>>,
        failed: &BTreeMap<String, String>,
        at: u64,
    ) {
        let keep: BTreeSet<&str> = configured.iter().map(String::as_str).collect();
        self.ves
            .retain(|v| keep.contains(v.hn.as_str()) && !answered.contains_key(&v.hn));
        self.hns.retain(|h, _| keep.contains(h.as_str()));
        for (hn, ves) in answered {
            // A VE its HN lists with an unusable value is refused on every run: not a hint.
            for ve in ves.iter().filter(|v| v.unusable.is_none()) {
                self.ves.push(CachedVe::from_listed(hn, ve, at));
            }
            self.hns.insert(
                hn.clone(),
                HnState {
                    answered: at,
                    error: None,
                },
            );
        }
        for (hn, e) in failed {
            let st = self.hns.entry(hn.clone()).or_insert(HnState {
                answered: 0,
                error: None,
            });
            st.error = Some(e.clone());
        }
        self.ves
            .sort_by(|a, b| (&a.hn, &a.veid).cmp(&(&b.hn, &b.veid)));
        self.written = at;
    }

    /// Record that `hn` holds `ve` (and no other HN does), as a full scan just found.
    pub fn note(&mut self, hn: &str, ve: &ListedVe, at: u64) {
        if ve.unusable.is_some() {
            return;
        }
        let id = ve.veid.as_str();
        self.ves.retain(|v| v.veid != id);
        self.ves.push(CachedVe::from_listed(hn, ve, at));
        self.ves
            .sort_by(|a, b| (&a.hn, &a.veid).cmp(&(&b.hn, &b.veid)));
        self.written = at;
    }

    /// The HNs (among `allowed`) whose cached VEs match HOST, by the rules of `locate`.
    pub fn hns_for(
        &self,
        host: &str,
        ips: &BTreeSet<IpAddr>,
        alias_veid: Option<&str>,
        allowed: &[String],
    ) -> BTreeSet<String> {
        self.ves
            .iter()
            .filter(|v| allowed.contains(&v.hn))
            .filter(|v| {
                v.to_listed()
                    .is_some_and(|l| crate::locate::matches(host, ips, alias_veid, &l))
            })
            .map(|v| v.hn.clone())
            .collect()
    }

    /// The VEs the cache holds on HN `hn` that match HOST (as [`Self::hns_for`] matches).
    pub fn veids_for(
        &self,
        host: &str,
        ips: &BTreeSet<IpAddr>,
        alias_veid: Option<&str>,
        hn: &str,
    ) -> Vec<VeId> {
        self.ves
            .iter()
            .filter(|v| v.hn == hn)
            .filter_map(|v| v.to_listed())
            .filter(|l| crate::locate::matches(host, ips, alias_veid, l))
            .map(|l| l.veid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ve(id: &str, host: &str, ip: &str) -> ListedVe {
        ListedVe {
            veid: VeId::parse(id).unwrap(),
            status: VeStatus::Running,
            hostname: Some(host.into()),
            ips: vec![ip.into()],
            unusable: None,
        }
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/ve-cache.json");
        let mut c = VeCache::default();
        let mut ans = BTreeMap::new();
        ans.insert("hn1".to_string(), vec![ve("101", "a.example", "10.0.0.1")]);
        c.merge(&["hn1".into()], &ans, &BTreeMap::new(), 5);
        c.save(&p).unwrap();
        let back = VeCache::load(&p).unwrap().unwrap();
        assert_eq!(back, c);
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ve-cache.json"]);
        assert!(
            VeCache::load(&d.path().join("none.json"))
                .unwrap()
                .is_none()
        );
        std::fs::write(
            &p,
            "{\"format\": \"other\", \"written\": 1, \"hns\": {}, \"ves\": []}",
        )
        .unwrap();
        assert!(matches!(VeCache::load(&p), Err(CacheError::Format { .. })));
        std::fs::write(&p, "garbage").unwrap();
        assert!(matches!(VeCache::load(&p), Err(CacheError::Format { .. })));
    }

    #[test]
    fn merge_keeps_unreachable_hns_and_drops_unconfigured_ones() {
        let mut c = VeCache::default();
        let mut ans = BTreeMap::new();
        ans.insert("hn1".to_string(), vec![ve("101", "a", "10.0.0.1")]);
        ans.insert("hn2".to_string(), vec![ve("202", "b", "10.0.0.2")]);
        ans.insert("hn3".to_string(), vec![ve("303", "c", "10.0.0.3")]);
        let all = ["hn1".to_string(), "hn2".into(), "hn3".into()];
        c.merge(&all, &ans, &BTreeMap::new(), 1);
        // Second refresh: hn2 is down, hn3 is no longer configured, 101 moved to... nowhere.
        let mut ans = BTreeMap::new();
        ans.insert("hn1".to_string(), vec![]);
        let mut failed = BTreeMap::new();
        failed.insert("hn2".to_string(), "timed out".to_string());
        c.merge(&all[..2], &ans, &failed, 2);
        let ids: Vec<(&str, &str, u64)> = c
            .ves
            .iter()
            .map(|v| (v.hn.as_str(), v.veid.as_str(), v.seen))
            .collect();
        assert_eq!(ids, vec![("hn2", "202", 1)]);
        assert_eq!(c.hns["hn2"].error.as_deref(), Some("timed out"));
        assert_eq!(c.hns["hn2"].answered, 1);
        assert_eq!(c.hns["hn1"].answered, 2);
        assert!(!c.hns.contains_key("hn3"));
    }

    #[test]
    fn lookup_uses_the_locate_rules_and_note_moves_a_ve() {
        let mut c = VeCache::default();
        let mut ans = BTreeMap::new();
        ans.insert(
            "hn1".to_string(),
            vec![ve("101", "ve101.example.com", "10.0.0.1")],
        );
        ans.insert(
            "hn2".to_string(),
            vec![ve("202", "ve202.example.com", "10.0.0.2")],
        );
        let all = ["hn1".to_string(), "hn2".into()];
        c.merge(&all, &ans, &BTreeMap::new(), 1);
        let none = BTreeSet::new();
        let one = |s: &str| [s.to_string()].into_iter().collect::<BTreeSet<_>>();
        assert_eq!(c.hns_for("ve101", &none, None, &all), one("hn1"));
        let ip: BTreeSet<IpAddr> = ["10.0.0.2".parse().unwrap()].into_iter().collect();
        assert_eq!(c.hns_for("whatever", &ip, None, &all), one("hn2"));
        assert_eq!(c.hns_for("x", &none, Some("202"), &all), one("hn2"));
        assert!(c.hns_for("ve101", &none, None, &all[1..]).is_empty());
        c.note("hn2", &ve("101", "ve101.example.com", "10.0.0.1"), 3);
        assert_eq!(
            c.hns_for("ve101.example.com", &none, None, &all),
            one("hn2")
        );
        // A damaged entry is skipped, not trusted.
        assert_eq!(
            (c.ves[0].hn.as_str(), c.ves[0].veid.as_str()),
            ("hn2", "101")
        );
        c.ves[0].veid = "1;reboot".into();
        assert!(c.hns_for("ve101.example.com", &none, None, &all).is_empty());
    }

    #[test]
    fn unusable_ves_and_hostile_entries_are_never_hints() {
        let mut bad = ve("102", "x", "10.0.0.2");
        bad.hostname = None;
        bad.unusable = Some("hostname \"a;b\" is not a valid DNS host name".into());
        let mut c = VeCache::default();
        let mut ans = BTreeMap::new();
        ans.insert(
            "hn1".to_string(),
            vec![ve("101", "ve101.example.com", "10.0.0.1"), bad.clone()],
        );
        let all = ["hn1".to_string()];
        c.merge(&all, &ans, &BTreeMap::new(), 1);
        let ids: Vec<&str> = c.ves.iter().map(|v| v.veid.as_str()).collect();
        assert_eq!(ids, vec!["101"], "only the usable VE is cached");
        c.note("hn1", &bad, 2);
        assert_eq!(c.ves.len(), 1);
        // A cache file edited to hold hostile values: those entries match nothing.
        let none = BTreeSet::new();
        let ip: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into_iter().collect();
        c.ves[0].hostname = Some("a;b".into());
        assert!(c.hns_for("a;b", &none, None, &all).is_empty());
        assert!(c.hns_for("x", &ip, None, &all).is_empty());
        c.ves[0].hostname = Some("ve101.example.com".into());
        c.ves[0].ips = vec!["10.0.0.1".into(), "$(id)".into()];
        assert!(c.hns_for("x", &ip, None, &all).is_empty());
        c.ves[0].ips = vec!["10.0.0.1".into()];
        assert_eq!(c.hns_for("x", &ip, None, &all).len(), 1);
    }
}
