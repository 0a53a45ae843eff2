//! `bpc-ovz refresh [HOST]`: ask every HN which VEs it holds, in parallel, and write the VE → HN
//! cache atomically; with HOST, also say where HOST is (for `$Conf{DumpPreUserCmd}`).
//!
//! Exit codes (for `$Conf{UserCmdCheckStatus}`):
//! - 0: the cache is written (unreachable HNs are reported, not fatal); HOST, if given, was found
//!   on exactly one HN;
//! - 1: usage or config error, or the cache cannot be written;
//! - 70: HOST is on none of the HNs that may hold it (all of them answered), or on more than one;
//! - 71: HOST is one VE, but its HN lists a value for it that bpc-ovz refuses (a host name that is
//!   not a DNS name, an IP that is not an address): its backups are refused;
//! - 255: HOST was not found and an HN that may hold it did not answer; or no HN answered at all.
//!
//! Output: one summary line on stdout; one line per unreachable HN on stderr.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::admin::{Limits, Progress, for_each_hn, show_duration};
use crate::cache::{self, VeCache};
use crate::config::Config;
use crate::locate;
use crate::openvz::ListedVe;
use crate::{EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_REFUSED, EXIT_TRANSPORT};

pub struct Args {
    pub host: Option<String>,
    pub jobs: Option<u32>,
    pub timeout: Option<Duration>,
}

pub async fn run(cfg: &Config, args: Args) -> i32 {
    let start = Instant::now();
    let hns = match crate::admin::select_hns(cfg, &[]) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bpc-ovz refresh: {e}");
            return EXIT_REFUSED;
        }
    };
    let opts = match locate::ssh_options(cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bpc-ovz refresh: {}: {e}", cfg.source);
            return EXIT_REFUSED;
        }
    };
    let limits = Limits::new(cfg, args.jobs, args.timeout, cfg.locate_timeout);
    let progress = Progress::new(hns.len(), "refresh", false);
    let results = for_each_hn(&hns, limits, &progress, move |hn| {
        let opts = opts.clone();
        async move {
            let (session, ves, warns) = locate::list_one(&hn, &opts).await?;
            session.close().await;
            Ok((ves, warns))
        }
    })
    .await;
    progress.finish();

    let mut answered: BTreeMap<String, Vec<ListedVe>> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for (hn, r) in results {
        match r {
            Ok((ves, warns)) => {
                for w in warns {
                    eprintln!("bpc-ovz refresh: {}: {w}", hn.name);
                }
                for v in &ves {
                    if let Some(why) = &v.unusable {
                        eprintln!(
                            "bpc-ovz refresh: {}: VE {} is not cached and its backups are refused: {why}",
                            hn.name, v.veid
                        );
                    }
                }
                answered.insert(hn.name.clone(), ves);
            }
            Err(e) => {
                eprintln!("bpc-ovz refresh: {}: unreachable: {e}", hn.name);
                tracing::warn!("refresh: {}: {e}", hn.name);
                failed.insert(hn.name.clone(), e);
            }
        }
    }
    let ve_count: usize = answered.values().map(Vec::len).sum();

    // The cache.
    let mut code = 0;
    let cache_note = match &cfg.cache {
        None => "no cache configured (cache: \"\")".to_string(),
        Some(path) if answered.is_empty() => {
            format!("{} left as it was", path.display())
        }
        Some(path) => {
            let mut c = match VeCache::load(path) {
                Ok(Some(c)) => c,
                Ok(None) => VeCache::default(),
                Err(e) => {
                    eprintln!("bpc-ovz refresh: {e}; writing a new one");
                    VeCache::default()
                }
            };
            let names: Vec<String> = cfg.hns.iter().map(|h| h.name.clone()).collect();
            c.merge(&names, &answered, &failed, cache::now());
            match c.save(path) {
                Ok(()) => format!("{} VEs cached in {}", c.ves.len(), path.display()),
                Err(e) => {
                    eprintln!("bpc-ovz refresh: {e}");
                    code = EXIT_REFUSED;
                    format!("cache NOT written ({e})")
                }
            }
        }
    };

    // HOST, if asked.
    let mut host_note = String::new();
    if let Some(host) = &args.host {
        let (alias, may_hold) = locate::alias_and_hns(cfg, host);
        let alias_veid = alias.as_ref().and_then(|a| a.veid.clone());
        let ips = if alias_veid.is_some() {
            Default::default()
        } else {
            locate::resolve(host).await
        };
        let mut found: Vec<String> = Vec::new();
        let mut refused: Option<String> = None;
        for hn in &may_hold {
            if let Some(ves) = answered.get(&hn.name) {
                for v in ves {
                    if locate::matches(host, &ips, alias_veid.as_deref(), v) {
                        found.push(format!("VE {} on {} ({})", v.veid, hn.name, v.status));
                        refused = v.unusable.clone();
                    }
                }
            }
        }
        let silent: Vec<&str> = may_hold
            .iter()
            .filter(|h| failed.contains_key(&h.name))
            .map(|h| h.name.as_str())
            .collect();
        host_note = match (found.len(), silent.is_empty()) {
            (1, _) => match &refused {
                None => format!("; {host} is {}", found[0]),
                Some(why) => {
                    code = code.max(EXIT_PRECONDITION);
                    format!("; {host} is {}, REFUSED: {why}", found[0])
                }
            },
            (0, true) => {
                code = code.max(EXIT_NOT_FOUND);
                format!(
                    "; {host} NOT FOUND on {}",
                    if may_hold.len() == cfg.hns.len() {
                        "any HN".to_string()
                    } else {
                        may_hold
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            }
            (0, false) => {
                code = EXIT_TRANSPORT;
                format!(
                    "; {host} not found on the HNs that answered, and {} that may hold it did not answer",
                    silent.join(", ")
                )
            }
            _ => {
                code = code.max(EXIT_NOT_FOUND);
                format!("; {host} is ambiguous: {}", found.join(", "))
            }
        };
    }
    if answered.is_empty() {
        code = EXIT_TRANSPORT;
    }
    let unreachable = if failed.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = failed.keys().map(String::as_str).collect();
        let shown = if names.len() > 8 {
            format!("{}, ...", names[..8].join(", "))
        } else {
            names.join(", ")
        };
        format!(", {} unreachable ({shown})", failed.len())
    };
    let line = format!(
        "bpc-ovz refresh: {} HNs asked, {} answered{unreachable}; {ve_count} VEs listed; {cache_note}; {}{host_note}",
        hns.len(),
        answered.len(),
        show_duration(Duration::from_millis(start.elapsed().as_millis() as u64)),
    );
    tracing::info!("{line}");
    println!("{line}");
    code
}
