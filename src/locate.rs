//! Finding a VE: ask every HN's `vzlist` in parallel and match the name BackupPC passed.
//!
//! A VE is matched by a config alias (`ves:`), by host name, or by IP (the name resolved through
//! the system resolver). Zero matches, or matches on two HNs, are errors naming the HNs asked.
//! A match whose HN lists an unusable value for it ([`ListedVe::unusable`]: a host name that is
//! not one, an IP that is not an address) is refused (71) right after the listing, before
//! anything else runs on that HN; such a value never matches a name and is never cached.
//!
//! When the VE → HN cache written by `bpc-ovz refresh` names one HN for the VE, that HN alone is
//! asked first (its `vzlist` must still list the VE); only if it does not is every HN asked, and
//! the cache then learns where the VE went.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tokio::task::JoinSet;

use crate::cache::VeCache;
use crate::config::{Config, Hn, VeAlias};
use crate::openvz::{ListedVe, VeId, parse_vzlist, vzlist_command};
use crate::ssh::{HnAddr, Output, Session, SshError, SshOptions};

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{host}: no VE with that name, IP or alias on {asked}")]
    NotFound { host: String, asked: String },
    #[error("{host}: not found on the reachable HNs ({asked}); unreachable: {unreachable}")]
    NotFoundSomeUnreachable {
        host: String,
        asked: String,
        unreachable: String,
    },
    #[error("{host}: found on more than one HN: {found}")]
    Ambiguous { host: String, found: String },
    /// The VE was found, but a value its HN lists for it is unusable (see
    /// [`ListedVe::unusable`]): nothing but the read-only listing ran (and, on a cache hit, the
    /// read-only probe of the cached VEID, which no listed value spells).
    #[error("{host} is VE {veid} on {hn}: refused (only read-only commands ran there): {why}")]
    Unusable {
        host: String,
        hn: String,
        veid: String,
        why: String,
    },
    #[error("{0}")]
    Config(String),
}

impl LocateError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LocateError::NotFoundSomeUnreachable { .. } => 255,
            LocateError::Config(_) => 1,
            LocateError::Unusable { .. } => crate::EXIT_PRECONDITION,
            _ => crate::EXIT_NOT_FOUND,
        }
    }
}

/// SSH options from the config (reads the key passphrase now, so a bad one fails early).
pub fn ssh_options(cfg: &Config) -> Result<SshOptions, String> {
    let passphrase = if let Some(f) = &cfg.ssh.passphrase_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| format!("ssh.passphrase_file {}: {e}", f.display()))?;
        Some(t.trim_end_matches(['\n', '\r']).to_string())
    } else if let Some(v) = &cfg.ssh.passphrase_env {
        Some(std::env::var(v).map_err(|_| format!("ssh.passphrase_env: variable {v} is not set"))?)
    } else {
        None
    };
    Ok(SshOptions {
        identity_files: cfg.ssh.identity_files.clone(),
        passphrase,
        use_agent: cfg.ssh.agent,
        agent_socket: cfg.ssh.agent_socket.clone(),
        known_hosts: cfg.ssh.known_hosts.clone(),
        host_key_policy: match cfg.ssh.host_key_policy {
            crate::config::HostKeyPolicy::Strict => crate::ssh::HostKeyPolicy::Strict,
            crate::config::HostKeyPolicy::AcceptNew => crate::ssh::HostKeyPolicy::AcceptNew,
        },
        connect_timeout: cfg.ssh.connect_timeout,
        keepalive_interval: cfg.ssh.keepalive,
        window_size: cfg.ssh.window_size,
    })
}

pub fn addr(hn: &Hn) -> HnAddr {
    HnAddr {
        host: hn.host.clone(),
        port: hn.port,
        user: hn.user.clone(),
    }
}

/// What one HN said.
pub struct HnListing {
    pub hn: Hn,
    pub result: Result<(Session, Vec<ListedVe>, Vec<String>), String>,
}

/// Connect to every HN in parallel and list its VEs.
pub async fn list_all(cfg: &Config, opts: &SshOptions, hns: &[Hn]) -> Vec<HnListing> {
    let mut set = JoinSet::new();
    for (i, hn) in hns.iter().cloned().enumerate() {
        let opts = opts.clone();
        let timeout = cfg.locate_timeout;
        set.spawn(async move {
            let fut = list_one(&hn, &opts);
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
            };
            (i, HnListing { hn, result: r })
        });
    }
    let mut out: Vec<(usize, HnListing)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, l)| l).collect()
}

pub async fn list_one(
    hn: &Hn,
    opts: &SshOptions,
) -> Result<(Session, Vec<ListedVe>, Vec<String>), String> {
    let (s, ves, warn, _) = list_one_with(hn, opts, None).await?;
    Ok((s, ves, warn))
}

/// [`list_one`], with `rider` (a command and the VE it is for) run at the same time on a second
/// channel; its output is `None` if it could not be run.
async fn list_one_with(
    hn: &Hn,
    opts: &SshOptions,
    rider: Option<(VeId, String)>,
) -> Result<(Session, Vec<ListedVe>, Vec<String>, Option<(VeId, Output)>), String> {
    let s = Session::connect(&addr(hn), opts)
        .await
        .map_err(|e: SshError| e.to_string())?;
    let marker = format!("@@{}", crate::nonce());
    let list_cmd = vzlist_command(&marker);
    let list = s.exec(&list_cmd, b"");
    let (out, rider) = match &rider {
        Some((veid, cmd)) => {
            let (out, r) = tokio::join!(list, s.exec(cmd, b""));
            (out, r.ok().map(|o| (veid.clone(), o)))
        }
        None => (list.await, None),
    };
    let out = out.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (ves, warn) = parse_vzlist(&text, &marker).map_err(|e| e.to_string())?;
    Ok((s, ves, warn, rider))
}

/// How HOST matches a listed VE.
pub fn matches(
    host: &str,
    ips: &BTreeSet<IpAddr>,
    alias_veid: Option<&str>,
    ve: &ListedVe,
) -> bool {
    if let Some(id) = alias_veid {
        return ve.veid.as_str() == id;
    }
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(name) = &ve.hostname {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if n == h || (!h.contains('.') && n.split('.').next() == Some(h.as_str())) {
            return true;
        }
    }
    ve.ips.iter().any(|ip| {
        let bare = ip.split('/').next().unwrap_or(ip);
        bare.parse::<IpAddr>()
            .map(|a| ips.contains(&a))
            .unwrap_or(false)
    })
}

/// Resolve HOST through the system resolver (an IP literal resolves to itself).
pub async fn resolve(host: &str) -> BTreeSet<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return [ip].into_iter().collect();
    }
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host, 0)),
    )
    .await
    {
        Ok(Ok(it)) => it.map(|a| a.ip()).collect(),
        _ => BTreeSet::new(),
    }
}

pub struct Located {
    pub hn: Hn,
    pub ve: ListedVe,
    pub session: Session,
    /// The rider's output (see [`locate_with`]) for the VE the cache named: use it only if that
    /// is [`Self::ve`].
    pub rider: Option<(VeId, Output)>,
}

/// A read-only HN command for the VE the cache names (a backup's probe), run on the cached HN
/// on a second channel while its `vzlist` confirms that the VE is still there: one round of HN
/// commands less per backup. Its output is dropped if the VE is not where the cache says.
pub type Rider<'a> = &'a (dyn Fn(&VeId) -> String + Sync);

/// The `ves:` alias of HOST, if any, and the HNs that may hold it (the alias's `hn:`, else all).
pub fn alias_and_hns(cfg: &Config, host: &str) -> (Option<VeAlias>, Vec<Hn>) {
    let alias = cfg.ves.get(&host.to_ascii_lowercase()).cloned();
    let hns: Vec<Hn> = match alias.as_ref().and_then(|a| a.hn.clone()) {
        Some(name) => cfg
            .hns
            .iter()
            .filter(|h| h.name == name || h.host == name)
            .cloned()
            .collect(),
        None => cfg.hns.clone(),
    };
    (alias, hns)
}

/// What asking the cached HN first gave.
enum CacheTry {
    Found(Located),
    /// No cache, no single HN in it for HOST, or that HN no longer lists it.
    Miss,
    /// The cached HN did not answer; the full scan need not wait for it again.
    Unreachable(Hn, String),
}

async fn try_cache(
    cfg: &Config,
    opts: &SshOptions,
    host: &str,
    ips: &BTreeSet<IpAddr>,
    alias_veid: Option<&str>,
    hns: &[Hn],
    rider: Option<Rider<'_>>,
) -> CacheTry {
    let Some(path) = &cfg.cache else {
        return CacheTry::Miss;
    };
    let cache = match VeCache::load(path) {
        Ok(Some(c)) => c,
        Ok(None) => return CacheTry::Miss,
        Err(e) => {
            tracing::debug!("{e}; asking every HN");
            return CacheTry::Miss;
        }
    };
    let names: Vec<String> = hns.iter().map(|h| h.name.clone()).collect();
    let cands = cache.hns_for(host, ips, alias_veid, &names);
    let Some(hn) = (if cands.len() == 1 {
        cands
            .first()
            .and_then(|n| hns.iter().find(|h| &h.name == n))
            .cloned()
    } else {
        None
    }) else {
        return CacheTry::Miss;
    };
    // The rider runs only when the cache names exactly one VE there.
    let ids = cache.veids_for(host, ips, alias_veid, &hn.name);
    let rider = match (rider, ids.as_slice()) {
        (Some(f), [veid]) => Some((veid.clone(), f(veid))),
        _ => None,
    };
    let res = match tokio::time::timeout(cfg.locate_timeout, list_one_with(&hn, opts, rider)).await
    {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}s",
            cfg.locate_timeout.as_secs()
        )),
    };
    match res {
        Ok((session, ves, warns, rider)) => {
            for w in warns {
                tracing::warn!("{}: {}", hn.name, w);
            }
            let mut hits: Vec<ListedVe> = ves
                .into_iter()
                .filter(|v| matches(host, ips, alias_veid, v))
                .collect();
            if hits.len() == 1 {
                tracing::debug!("{host}: on {} as the VE cache says", hn.name);
                return CacheTry::Found(Located {
                    hn,
                    ve: hits.remove(0),
                    session,
                    rider,
                });
            }
            session.close().await;
            tracing::info!(
                "{host}: the VE cache says {}, which does not list it now: asking every HN",
                hn.name
            );
            CacheTry::Miss
        }
        Err(e) => {
            tracing::warn!("{}: {e}", hn.name);
            CacheTry::Unreachable(hn, e)
        }
    }
}

/// A found VE whose HN listed a value bpc-ovz will not use is refused (its session closed).
async fn usable(host: &str, l: Located) -> Result<Located, LocateError> {
    let Some(why) = l.ve.unusable.clone() else {
        return Ok(l);
    };
    l.session.close().await;
    Err(LocateError::Unusable {
        host: host.into(),
        hn: l.hn.name.clone(),
        veid: l.ve.veid.to_string(),
        why,
    })
}

/// After a full scan found HOST: teach the cache, if there is one (only `refresh` creates it).
fn remember(cfg: &Config, hn: &Hn, ve: &ListedVe) {
    let Some(path) = &cfg.cache else { return };
    match VeCache::load(path) {
        Ok(Some(mut c)) => {
            c.note(&hn.name, ve, crate::cache::now());
            if let Err(e) = c.save(path) {
                tracing::debug!("{e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("{e}"),
    }
}

/// Find HOST on the configured HNs; `rider` (if any) runs on the cached HN for the cached VE
/// next to its `vzlist`.
pub async fn locate_with(
    cfg: &Config,
    opts: &SshOptions,
    host: &str,
    rider: Option<Rider<'_>>,
) -> Result<Located, LocateError> {
    let (alias, mut hns) = alias_and_hns(cfg, host);
    if hns.is_empty() {
        return Err(LocateError::Config(format!(
            "{}: no hardware nodes configured (key `hns`)",
            cfg.source
        )));
    }
    let ips = if alias.as_ref().and_then(|a| a.veid.as_ref()).is_some() {
        BTreeSet::new()
    } else {
        resolve(host).await
    };
    let alias_veid = alias.as_ref().and_then(|a| a.veid.clone());
    let mut asked: Vec<String> = Vec::new();
    let mut unreachable = Vec::new();
    match try_cache(cfg, opts, host, &ips, alias_veid.as_deref(), &hns, rider).await {
        CacheTry::Found(l) => return usable(host, l).await,
        CacheTry::Miss => {}
        CacheTry::Unreachable(hn, e) => {
            asked.push(hn.name.clone());
            unreachable.push(format!("{} ({e})", hn.name));
            hns.retain(|h| h.name != hn.name);
        }
    }
    let listings = list_all(cfg, opts, &hns).await;
    asked.extend(listings.iter().map(|l| l.hn.name.clone()));
    let mut found: Vec<Located> = Vec::new();
    for l in listings {
        match l.result {
            Err(e) => {
                tracing::warn!("{}: {}", l.hn.name, e);
                unreachable.push(format!("{} ({e})", l.hn.name));
            }
            Ok((session, ves, warns)) => {
                for w in warns {
                    tracing::warn!("{}: {}", l.hn.name, w);
                }
                let hits: Vec<ListedVe> = ves
                    .into_iter()
                    .filter(|v| {
                        matches(
                            host,
                            &ips,
                            alias.as_ref().and_then(|a| a.veid.as_deref()),
                            v,
                        )
                    })
                    .collect();
                if hits.len() > 1 {
                    let ids: Vec<String> = hits.iter().map(|v| v.veid.to_string()).collect();
                    return Err(LocateError::Ambiguous {
                        host: host.into(),
                        found: format!("{}: VEs {}", l.hn.name, ids.join(", ")),
                    });
                }
                if let Some(ve) = hits.into_iter().next() {
                    found.push(Located {
                        hn: l.hn.clone(),
                        ve,
                        session,
                        rider: None,
                    });
                } else {
                    session.close().await;
                }
            }
        }
    }
    match found.len() {
        1 => {
            let l = usable(host, found.remove(0)).await?;
            remember(cfg, &l.hn, &l.ve);
            Ok(l)
        }
        0 if !unreachable.is_empty() => Err(LocateError::NotFoundSomeUnreachable {
            host: host.into(),
            asked: asked.join(", "),
            unreachable: unreachable.join("; "),
        }),
        0 => Err(LocateError::NotFound {
            host: host.into(),
            asked: asked.join(", "),
        }),
        _ => Err(LocateError::Ambiguous {
            host: host.into(),
            found: found
                .iter()
                .map(|f| format!("{} (VE {})", f.hn.name, f.ve.veid))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openvz::{VeId, VeStatus};

    fn ve(id: &str, host: Option<&str>, ips: &[&str]) -> ListedVe {
        ListedVe {
            veid: VeId::parse(id).unwrap(),
            status: VeStatus::Running,
            hostname: host.map(String::from),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            unusable: None,
        }
    }

    #[test]
    fn matching_rules() {
        let none = BTreeSet::new();
        let v = ve(
            "101",
            Some("ve101.example.com"),
            &["10.0.0.101", "fd00::1/64"],
        );
        assert!(matches("ve101.example.com", &none, None, &v));
        assert!(matches("VE101.example.com.", &none, None, &v));
        assert!(matches("ve101", &none, None, &v));
        assert!(!matches("ve10", &none, None, &v));
        assert!(!matches("ve101.other.org", &none, None, &v));
        let ip: BTreeSet<IpAddr> = ["10.0.0.101".parse().unwrap()].into_iter().collect();
        assert!(matches("whatever", &ip, None, &v));
        let ip6: BTreeSet<IpAddr> = ["fd00::1".parse().unwrap()].into_iter().collect();
        assert!(matches("whatever", &ip6, None, &v));
        assert!(matches("alias", &none, Some("101"), &v));
        assert!(!matches("ve101.example.com", &none, Some("102"), &v));
    }
}
