//! The bpc-ovz configuration: one YAML file (default `/etc/bpc-ovz/config.yaml`).
//!
//! Owns the file format and its validation. A bad config fails with the file, the key and what is
//! wrong, before anything touches an HN. Also reads the seed's `BackupPC_ovz.hnlist`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/bpc-ovz/config.yaml";
pub const SEED_HNLIST: &str = "/etc/backuppc/BackupPC_ovz.hnlist";
pub const DEFAULT_CACHE: &str = "/var/lib/bpc-ovz/ve-cache.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: key `{key}`: {msg}")]
    Invalid {
        file: String,
        key: String,
        msg: String,
    },
    #[error("{file}: cannot read: {msg}")]
    Read { file: String, msg: String },
}

/// One hardware node as written in the config: `host`, `host:port`, or a map.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawHn {
    Plain(String),
    Full {
        host: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    identity_files: Vec<PathBuf>,
    #[serde(default)]
    passphrase_file: Option<PathBuf>,
    #[serde(default)]
    passphrase_env: Option<String>,
    #[serde(default)]
    agent: Option<bool>,
    #[serde(default)]
    agent_socket: Option<PathBuf>,
    #[serde(default)]
    known_hosts: Vec<PathBuf>,
    #[serde(default)]
    host_key_policy: Option<String>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    keepalive: Option<String>,
    #[serde(default)]
    window_size: Option<String>,
    #[serde(default)]
    upload_channels: Option<u8>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    modes: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    syslog: Option<bool>,
    #[serde(default)]
    level: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    hns: Option<Vec<RawHn>>,
    #[serde(default)]
    hnlist: Option<PathBuf>,
    #[serde(default)]
    ssh: Option<RawSsh>,
    #[serde(default)]
    snapshot: Option<RawSnapshot>,
    #[serde(default)]
    concurrency: Option<RawConcurrency>,
    #[serde(default)]
    log: Option<RawLog>,
    #[serde(default)]
    ves: Option<BTreeMap<String, RawVe>>,
    #[serde(default)]
    locate_timeout: Option<String>,
    #[serde(default)]
    cache: Option<PathBuf>,
    #[serde(default)]
    lease: Option<RawLease>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLease {
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    #[serde(default)]
    per_hn: Option<u32>,
    #[serde(default)]
    queue_timeout: Option<String>,
    #[serde(default)]
    hn_queries: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVe {
    #[serde(default)]
    veid: Option<String>,
    #[serde(default)]
    hn: Option<String>,
    #[serde(default)]
    modes: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hn {
    /// Display name (the host unless `name:` is given).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    Strict,
    AcceptNew,
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub identity_files: Vec<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_env: Option<String>,
    pub agent: bool,
    pub agent_socket: Option<PathBuf>,
    pub known_hosts: Vec<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    pub window_size: u32,
    /// SSH channels a restore's upload is spread over (1..=6; see upload.rs).
    pub upload_channels: u8,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub file: Option<PathBuf>,
    pub syslog: bool,
    pub level: String,
}

/// A VE named in the config: an alias for the BackupPC host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeAlias {
    pub veid: Option<String>,
    pub hn: Option<String>,
    /// Quiesce modes for this VE (overrides `snapshot.modes`).
    pub modes: Option<Vec<crate::snapshot::Mode>>,
    /// Snapshot backend for this VE (overrides `snapshot.backend`).
    pub backend: Option<crate::snapshot::BackendChoice>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: String,
    pub hns: Vec<Hn>,
    pub ssh: SshConfig,
    /// Snapshot COW size in bytes.
    pub snapshot_size: u64,
    /// Quiesce modes, in fallback order (`snapshot.modes`, default `[stop]`).
    pub modes: Vec<crate::snapshot::Mode>,
    /// Snapshot backend (`snapshot.backend`, default `auto`: detected per VE).
    pub backend: crate::snapshot::BackendChoice,
    pub per_hn: u32,
    pub queue_timeout: Duration,
    pub locate_timeout: Duration,
    /// HNs asked at once by `refresh`, `check` and `sweep` (`concurrency.hn_queries`).
    pub hn_queries: u32,
    /// The VE → HN cache written by `refresh` (`cache`; `None` when set to an empty string).
    pub cache: Option<PathBuf>,
    /// Where `dump-begin` records the dump leases it holds (`lease.dir`).
    pub lease_dir: PathBuf,
    /// How long a dump lease lives on the HN without being renewed (`lease.ttl`).
    pub lease_ttl: Duration,
    pub log: LogConfig,
    pub ves: BTreeMap<String, VeAlias>,
}

impl Config {
    /// Load from `--config`, `BPC_OVZ_CONFIG`, or the default path. When no config file exists at
    /// the default path, the seed's hnlist alone is accepted.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match std::env::var_os("BPC_OVZ_CONFIG") {
                Some(p) if !p.is_empty() => (PathBuf::from(p), true),
                _ => (PathBuf::from(DEFAULT_CONFIG), false),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                let seed = Path::new(SEED_HNLIST);
                if seed.exists() {
                    let mut cfg = Config::parse("{}", &format!("{} (absent)", path.display()))?;
                    cfg.hns = read_hnlist(seed)?;
                    cfg.source = SEED_HNLIST.to_string();
                    Ok(cfg)
                } else {
                    Err(ConfigError::Read {
                        file: path.display().to_string(),
                        msg: format!("{e} (and no {SEED_HNLIST} either)"),
                    })
                }
            }
            Err(e) => Err(ConfigError::Read {
                file: path.display().to_string(),
                msg: e.to_string(),
            }),
        }
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| yaml_error(text, file, &e))?
        };
        let invalid = |key: &str, msg: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            msg,
        };
        let ssh_raw = raw.ssh.clone().unwrap_or_default();
        let default_user = ssh_raw.user.clone().unwrap_or_else(|| "root".to_string());

        let mut hns = Vec::new();
        if let Some(list) = &raw.hns {
            for (i, h) in list.iter().enumerate() {
                hns.push(
                    hn_from_raw(h, &default_user).map_err(|m| invalid(&format!("hns[{i}]"), m))?,
                );
            }
        }
        if let Some(hnlist) = &raw.hnlist {
            let extra = read_hnlist(hnlist).map_err(|e| invalid("hnlist", e.to_string()))?;
            hns.extend(extra.into_iter().map(|mut h| {
                h.user = default_user.clone();
                h
            }));
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &hns {
            if !seen.insert(h.name.clone()) {
                return Err(invalid("hns", format!("HN {:?} is listed twice", h.name)));
            }
        }

        let policy = match ssh_raw.host_key_policy.as_deref() {
            None | Some("strict") | Some("yes") => HostKeyPolicy::Strict,
            Some("accept-new") => HostKeyPolicy::AcceptNew,
            Some(o) => {
                return Err(invalid(
                    "ssh.host_key_policy",
                    format!("{o:?}: use `strict` or `accept-new`"),
                ));
            }
        };
        let dur =
            |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) => parse_duration(s).map_err(|m| invalid(key, m)),
                }
            };
        let window = match &ssh_raw.window_size {
            None => 16 << 20,
            Some(s) => {
                let b = parse_size(s).map_err(|m| invalid("ssh.window_size", m))?;
                if !(64 * 1024..=1 << 30).contains(&b) {
                    return Err(invalid(
                        "ssh.window_size",
                        "must be between 64K and 1G".into(),
                    ));
                }
                b as u32
            }
        };
        let upload_channels = ssh_raw
            .upload_channels
            .unwrap_or(crate::upload::DEFAULT_CHANNELS);
        if !(1..=crate::upload::MAX_CHANNELS).contains(&upload_channels) {
            return Err(invalid(
                "ssh.upload_channels",
                format!(
                    "{upload_channels}: must be between 1 (one channel) and {}",
                    crate::upload::MAX_CHANNELS
                ),
            ));
        }
        if let Some(env) = &ssh_raw.passphrase_env
            && env.is_empty()
        {
            return Err(invalid("ssh.passphrase_env", "empty variable name".into()));
        }
        let ssh = SshConfig {
            identity_files: ssh_raw.identity_files.clone(),
            passphrase_file: ssh_raw.passphrase_file.clone(),
            passphrase_env: ssh_raw.passphrase_env.clone(),
            agent: ssh_raw.agent.unwrap_or(true),
            agent_socket: ssh_raw.agent_socket.clone(),
            known_hosts: if ssh_raw.known_hosts.is_empty() {
                default_known_hosts()
            } else {
                ssh_raw.known_hosts.clone()
            },
            host_key_policy: policy,
            connect_timeout: dur(
                "ssh.connect_timeout",
                &ssh_raw.connect_timeout,
                Duration::from_secs(20),
            )?,
            keepalive: dur("ssh.keepalive", &ssh_raw.keepalive, Duration::from_secs(30))?,
            window_size: window,
            upload_channels,
        };

        let snapshot_size = match raw.snapshot.as_ref().and_then(|s| s.size.clone()) {
            None => 1 << 30,
            Some(s) => parse_size(&s).map_err(|m| invalid("snapshot.size", m))?,
        };
        if snapshot_size < 4 << 20 {
            return Err(invalid(
                "snapshot.size",
                "must be at least 4M (one LVM extent)".into(),
            ));
        }
        let parse_modes =
            |key: &str, v: &[String]| -> Result<Vec<crate::snapshot::Mode>, ConfigError> {
                if v.is_empty() {
                    return Err(invalid(
                        key,
                        "empty list: name at least one of stop, suspend, live".into(),
                    ));
                }
                v.iter()
                    .map(|m| crate::snapshot::Mode::parse(m).map_err(|e| invalid(key, e)))
                    .collect()
            };
        let modes = match raw.snapshot.as_ref().and_then(|s| s.modes.clone()) {
            None => vec![crate::snapshot::Mode::Stop],
            Some(v) => parse_modes("snapshot.modes", &v)?,
        };
        let parse_backend = |key: &str, v: &str| {
            crate::snapshot::BackendChoice::parse(v).map_err(|e| invalid(key, e))
        };
        let backend = match raw.snapshot.as_ref().and_then(|s| s.backend.as_deref()) {
            None => crate::snapshot::BackendChoice::Auto,
            Some(v) => parse_backend("snapshot.backend", v)?,
        };
        let conc = raw.concurrency.clone().unwrap_or_default();
        let per_hn = conc.per_hn.unwrap_or(2);
        if per_hn == 0 || per_hn > 64 {
            return Err(invalid(
                "concurrency.per_hn",
                format!("{per_hn}: must be 1..64"),
            ));
        }
        let queue_timeout = dur(
            "concurrency.queue_timeout",
            &conc.queue_timeout,
            Duration::from_secs(3600),
        )?;
        let locate_timeout = dur(
            "locate_timeout",
            &raw.locate_timeout,
            Duration::from_secs(30),
        )?;
        let hn_queries = conc.hn_queries.unwrap_or(128);
        if hn_queries == 0 || hn_queries > 4096 {
            return Err(invalid(
                "concurrency.hn_queries",
                format!("{hn_queries}: must be 1..4096"),
            ));
        }
        let cache = match &raw.cache {
            None => Some(PathBuf::from(DEFAULT_CACHE)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if p.is_absolute() => Some(p.clone()),
            Some(p) => {
                return Err(invalid(
                    "cache",
                    format!(
                        "{}: must be an absolute path (or \"\" for no cache)",
                        p.display()
                    ),
                ));
            }
        };
        let lease_raw = raw.lease.clone().unwrap_or_default();
        let lease_dir = lease_raw
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/bpc-ovz/leases"));
        if !lease_dir.is_absolute() {
            return Err(invalid(
                "lease.dir",
                format!("{}: must be an absolute path", lease_dir.display()),
            ));
        }
        let lease_ttl = dur("lease.ttl", &lease_raw.ttl, Duration::from_secs(900))?;
        if lease_ttl < Duration::from_secs(2) {
            return Err(invalid("lease.ttl", "must be at least 2s".into()));
        }
        let log_raw = raw.log.clone().unwrap_or_default();
        let level = log_raw.level.clone().unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(invalid(
                "log.level",
                format!("{level:?}: use error, warn, info, debug or trace"),
            ));
        }
        let log = LogConfig {
            file: log_raw.file.clone(),
            syslog: log_raw.syslog.unwrap_or(false),
            level,
        };
        let mut ves = BTreeMap::new();
        for (name, v) in raw.ves.clone().unwrap_or_default() {
            if let Some(id) = &v.veid
                && crate::openvz::VeId::parse(id).is_err()
            {
                return Err(invalid(
                    &format!("ves.{name}.veid"),
                    format!("{id:?} is not a valid VEID"),
                ));
            }
            if let Some(hn) = &v.hn
                && !hns.iter().any(|h| &h.name == hn || &h.host == hn)
            {
                return Err(invalid(
                    &format!("ves.{name}.hn"),
                    format!("{hn:?} is not one of the configured hns"),
                ));
            }
            let ve_modes = match &v.modes {
                None => None,
                Some(m) => Some(parse_modes(&format!("ves.{name}.modes"), m)?),
            };
            let ve_backend = match &v.backend {
                None => None,
                Some(b) => Some(parse_backend(&format!("ves.{name}.backend"), b)?),
            };
            ves.insert(
                name.to_lowercase(),
                VeAlias {
                    veid: v.veid.clone(),
                    hn: v.hn.clone(),
                    modes: ve_modes,
                    backend: ve_backend,
                },
            );
        }
        Ok(Config {
            source: file.to_string(),
            hns,
            ssh,
            snapshot_size,
            modes,
            backend,
            per_hn,
            queue_timeout,
            locate_timeout,
            hn_queries,
            cache,
            lease_dir,
            lease_ttl,
            log,
            ves,
        })
    }

    /// The quiesce modes for a VE: a `ves:` entry naming it (by host name or VEID), else
    /// `snapshot.modes`.
    pub fn modes_for(&self, hostname: Option<&str>, veid: &str) -> Vec<crate::snapshot::Mode> {
        let by_name = hostname.and_then(|h| self.ves.get(&h.to_ascii_lowercase()));
        let by_id = self.ves.values().find(|a| a.veid.as_deref() == Some(veid));
        by_name
            .or(by_id)
            .and_then(|a| a.modes.clone())
            .unwrap_or_else(|| self.modes.clone())
    }

    /// The snapshot backend for a VE and the config key that set it: a `ves:` entry naming it (by
    /// host name or VEID) with `backend:`, else `snapshot.backend`.
    pub fn backend_for(
        &self,
        hostname: Option<&str>,
        veid: &str,
    ) -> (crate::snapshot::BackendChoice, String) {
        let by_name = hostname.and_then(|h| {
            let k = h.to_ascii_lowercase();
            self.ves.get(&k).map(|a| (k, a))
        });
        let by_id = self
            .ves
            .iter()
            .find(|(_, a)| a.veid.as_deref() == Some(veid))
            .map(|(k, a)| (k.clone(), a));
        by_name
            .or(by_id)
            .and_then(|(k, a)| a.backend.map(|b| (b, format!("ves.{k}.backend"))))
            .unwrap_or_else(|| (self.backend, "snapshot.backend".into()))
    }

    /// Fail unless at least one HN is configured (commands that talk to HNs call this).
    pub fn require_hns(&self) -> Result<(), ConfigError> {
        if self.hns.is_empty() {
            return Err(ConfigError::Invalid {
                file: self.source.clone(),
                key: "hns".into(),
                msg: "no hardware nodes configured".into(),
            });
        }
        Ok(())
    }
}

fn default_known_hosts() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".ssh/known_hosts"));
    }
    v.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    v
}

fn hn_from_raw(h: &RawHn, default_user: &str) -> Result<Hn, String> {
    match h {
        RawHn::Plain(s) => parse_hn_word(s, default_user),
        RawHn::Full {
            host,
            port,
            user,
            name,
        } => {
            validate_host(host)?;
            let user = user.clone().unwrap_or_else(|| default_user.to_string());
            validate_user(&user)?;
            Ok(Hn {
                name: name.clone().unwrap_or_else(|| host.clone()),
                host: host.clone(),
                port: port.unwrap_or(22),
                user,
            })
        }
    }
}

/// `host`, `host:port`, `user@host[:port]`, `[v6]:port`.
pub fn parse_hn_word(s: &str, default_user: &str) -> Result<Hn, String> {
    let s = s.trim();
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (u.to_string(), r),
        None => (default_user.to_string(), s),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing `]`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("{s:?}: bad port"))?,
            None if after.is_empty() => 22,
            None => return Err(format!("{s:?}: junk after `]`")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            ),
            _ => (rest.to_string(), 22),
        }
    };
    validate_host(&host)?;
    validate_user(&user)?;
    if port == 0 {
        return Err(format!("{s:?}: port 0"));
    }
    Ok(Hn {
        name: host.clone(),
        host,
        port,
        user,
    })
}

fn validate_host(h: &str) -> Result<(), String> {
    if h.is_empty()
        || h.len() > 253
        || !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    {
        return Err(format!("{h:?} is not a valid host name or address"));
    }
    Ok(())
}

fn validate_user(u: &str) -> Result<(), String> {
    if u.is_empty()
        || u.len() > 32
        || !u
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("{u:?} is not a valid user name"));
    }
    Ok(())
}

/// The seed's HN list: one HN per line, `#` starts a comment.
pub fn read_hnlist(path: &Path) -> Result<Vec<Hn>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let hn = parse_hn_word(line, "root").map_err(|m| ConfigError::Invalid {
            file: path.display().to_string(),
            key: format!("line {}", n + 1),
            msg: m,
        })?;
        out.push(hn);
    }
    Ok(out)
}

/// `1G`, `512M`, `1024k`, `2048` (bytes), `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let m: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1G or 512M"))?;
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return Err(format!("{s:?} must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

/// `30s`, `5m`, `1h`, `500ms`, `90` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s or 5m"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} must not be negative"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A YAML error as one line: the key it is about (`concurrency.per_hn`, `hns[0]`) when the text
/// is well-formed YAML and the error has a position (serde's type errors only have a line and
/// a column), else serde-saphyr's first line.
fn yaml_error(text: &str, file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let first = e.to_string();
    let first = first.lines().next().unwrap_or("invalid YAML");
    let key = e
        .location()
        .and_then(|l| key_at::key_at(text, (l.line(), l.column())));
    match key {
        Some(key) => ConfigError::Invalid {
            file: file.to_string(),
            key,
            msg: first.strip_prefix("error: ").unwrap_or(first).to_string(),
        },
        None => ConfigError::Parse {
            file: file.to_string(),
            msg: first.to_string(),
        },
    }
}

/// Which key of a YAML text a position belongs to: the text is read a second time into a bare
/// tree of keys and sequence items with their positions (any YAML shape is accepted), and the
/// position is attributed to the last key or item starting at or before it.
mod key_at {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_saphyr::Spanned;

    enum Node {
        Map(Vec<(Spanned<Key>, Spanned<Node>)>),
        Seq(Vec<Spanned<Node>>),
        Scalar,
    }

    /// A mapping key as text (a scalar key), `?` for a complex one.
    struct Key(String);

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(Key(v.to_string()))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                    Ok(Key(v.to_string()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                    Ok(Key(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                    Ok(Key(v.to_string()))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                    Ok(Key(v.to_string()))
                }
                fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                    Ok(Key("~".into()))
                }
                fn visit_none<E: de::Error>(self) -> Result<Key, E> {
                    Ok(Key("~".into()))
                }
                fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Key, A::Error> {
                    Node::visit_any_map(a).map(|_| Key("?".into()))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Key, A::Error> {
                    Node::visit_any_seq(a).map(|_| Key("?".into()))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl Node {
        fn visit_any_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Node, A::Error> {
            let mut out = Vec::new();
            while let Some(kv) = a.next_entry::<Spanned<Key>, Spanned<Node>>()? {
                out.push(kv);
            }
            Ok(Node::Map(out))
        }
        fn visit_any_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Node, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = a.next_element::<Spanned<Node>>()? {
                out.push(v);
            }
            Ok(Node::Seq(out))
        }
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Node;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any YAML value")
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                    Ok(Node::Scalar)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                    Node::deserialize(d)
                }
                fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Node, A::Error> {
                    Node::visit_any_map(a)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Node, A::Error> {
                    Node::visit_any_seq(a)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// `(line, column, path)` of every key and sequence item, in document order.
    fn collect(node: &Node, path: &str, out: &mut Vec<(u64, u64, String)>) {
        match node {
            Node::Map(entries) => {
                for (k, v) in entries {
                    let p = if path.is_empty() {
                        k.value.0.clone()
                    } else {
                        format!("{path}.{}", k.value.0)
                    };
                    out.push((k.referenced.line(), k.referenced.column(), p.clone()));
                    collect(&v.value, &p, out);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push((v.referenced.line(), v.referenced.column(), p.clone()));
                    collect(&v.value, &p, out);
                }
            }
            Node::Scalar => {}
        }
    }

    /// The key (dotted, with `[i]` for sequence items) that position `at` (line, column) is in;
    /// `None` when the text is not well-formed YAML or the position is before every key.
    pub fn key_at(text: &str, at: (u64, u64)) -> Option<String> {
        let root: Node = serde_saphyr::from_str(text).ok()?;
        let mut all = Vec::new();
        collect(&root, "", &mut all);
        let best = all
            .iter()
            .filter(|(l, c, _)| (*l, *c) <= at && *l > 0)
            .map(|(l, c, _)| (*l, *c))
            .max()?;
        // A key and the sequence item holding it can start at the same place (`- host: x`):
        // the error is then about the item.
        all.into_iter()
            .filter(|(l, c, _)| (*l, *c) == best)
            .map(|(_, _, p)| p)
            .min_by_key(|p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_parses() {
        let c = Config::parse(
            "hns:\n  - hn1.example.com              # port 22, user root\n  - host: hn2.example.com\n    port: 2222\n    user: root\nssh:\n  identity_files: [/var/lib/backuppc/.ssh/id_ed25519]\n  known_hosts: [/var/lib/backuppc/.ssh/known_hosts]\nsnapshot:\n  size: 1G\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.hns.len(), 2);
        assert_eq!(
            c.hns[0],
            Hn {
                name: "hn1.example.com".into(),
                host: "hn1.example.com".into(),
                port: 22,
                user: "root".into()
            }
        );
        assert_eq!(c.hns[1].port, 2222);
        assert_eq!(c.snapshot_size, 1 << 30);
        assert_eq!(
            c.ssh.identity_files,
            vec![PathBuf::from("/var/lib/backuppc/.ssh/id_ed25519")]
        );
        assert_eq!(
            c.ssh.known_hosts,
            vec![PathBuf::from("/var/lib/backuppc/.ssh/known_hosts")]
        );
        assert_eq!(c.ssh.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(c.cache, Some(PathBuf::from(DEFAULT_CACHE)));
        assert_eq!(c.hn_queries, 128);
    }

    #[test]
    fn cache_and_hn_queries_keys() {
        let c = Config::parse("cache: /srv/c.json\nconcurrency:\n  hn_queries: 8\n", "f").unwrap();
        assert_eq!(c.cache, Some(PathBuf::from("/srv/c.json")));
        assert_eq!(c.hn_queries, 8);
        assert_eq!(Config::parse("cache: \"\"\n", "f").unwrap().cache, None);
        let e = Config::parse("cache: rel.json\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cache`") && e.contains("absolute"), "{e}");
        let e = Config::parse("concurrency:\n  hn_queries: 0\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurrency.hn_queries"), "{e}");
    }

    #[test]
    fn host_port_strings() {
        let c = Config::parse("hns: [\"hn1:2200\", \"admin@hn2\", \"[::1]:2201\"]\n", "t").unwrap();
        assert_eq!((c.hns[0].host.as_str(), c.hns[0].port), ("hn1", 2200));
        assert_eq!(c.hns[1].user, "admin");
        assert_eq!((c.hns[2].host.as_str(), c.hns[2].port), ("::1", 2201));
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = Config::parse("snapshot:\n  size: lots\n", "/etc/bpc-ovz/config.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/bpc-ovz/config.yaml") && e.contains("snapshot.size"),
            "{e}"
        );
        let e = Config::parse("hns:\n  - host: \"a;b\"\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hns[0]"), "{e}");
        let e = Config::parse("ssh:\n  host_key_policy: maybe\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssh.host_key_policy"), "{e}");
        let e = Config::parse("hns: [a, a]\n", "f").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        for bad in ["0", "7", "-1", "four"] {
            let e = Config::parse(&format!("ssh:\n  upload_channels: {bad}\n"), "f")
                .unwrap_err()
                .to_string();
            assert!(e.contains("ssh.upload_channels"), "{bad}: {e}");
        }
        let c = Config::parse("ssh:\n  upload_channels: 6\n", "f").expect("6 channels");
        assert_eq!(c.ssh.upload_channels, 6);
        let c = Config::parse("hns: [a]\n", "f").expect("default");
        assert_eq!(c.ssh.upload_channels, crate::upload::DEFAULT_CHANNELS);
        let e = Config::parse("snapshot:\n  sise: 1G\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:") && e.contains("sise"), "{e}");
        let e = Config::parse("hns: [\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key_not_only_the_line() {
        for (yaml, key, line) in [
            (
                "concurrency: {per_hn: \"lots\"}\n",
                "concurrency.per_hn",
                "line 1",
            ),
            (
                "hns: [a]\nconcurrency:\n  per_hn: many\n",
                "concurrency.per_hn",
                "line 3",
            ),
            ("snapshot: {size: [1]}\n", "snapshot.size", "line 1"),
            ("snapshot: [1]\n", "snapshot", "line 1"),
            ("ssh:\n  agent: maybe\n", "ssh.agent", "line 2"),
            (
                "ssh:\n  known_hosts: [a, {b: 1}]\n",
                "ssh.known_hosts[1]",
                "line 2",
            ),
            ("hns:\n  - host: a\n    port: x\n", "hns[0]", "line 2"),
            ("hns: [a, [b]]\n", "hns[1]", "line 1"),
            ("ves:\n  web: {veid: [1]}\n", "ves.web.veid", "line 2"),
            ("lease: {ttl: {a: 1}}\n", "lease.ttl", "line 1"),
            (
                "log:\n  level: info\n  syslog: [x]\n",
                "log.syslog",
                "line 3",
            ),
            ("nokey: 1\n", "nokey", "line 1"),
        ] {
            let e = Config::parse(yaml, "/etc/c.yaml").unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/etc/c.yaml: key `{key}`: {line} ")),
                "{yaml:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // Not well-formed YAML: the position only.
        let e = Config::parse("hns: [a\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f: ") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn snapshot_backend_global_and_per_ve() {
        use crate::snapshot::BackendChoice;
        let c = Config::parse("{}", "f").unwrap();
        assert_eq!(
            c.backend_for(Some("x"), "1"),
            (BackendChoice::Auto, "snapshot.backend".to_string())
        );
        let c = Config::parse(
            "snapshot:\n  backend: lvm-thick\nves:\n  ve1.example.com:\n    backend: ploop\n  other:\n    veid: \"7\"\n    backend: lvm-thin\n  modesonly:\n    modes: [live]\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            c.backend_for(Some("VE1.example.com"), "5"),
            (BackendChoice::Ploop, "ves.ve1.example.com.backend".into())
        );
        assert_eq!(
            c.backend_for(None, "7"),
            (BackendChoice::LvmThin, "ves.other.backend".into())
        );
        assert_eq!(
            c.backend_for(Some("modesonly"), "8"),
            (BackendChoice::LvmThick, "snapshot.backend".into())
        );
        let e = Config::parse("snapshot:\n  backend: zfs\n", "/etc/x.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/x.yaml") && e.contains("snapshot.backend") && e.contains("\"zfs\""),
            "{e}"
        );
        let e = Config::parse("ves:\n  a:\n    backend: thin\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ves.a.backend"), "{e}");
    }

    #[test]
    fn hnlist_seed_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("list");
        std::fs::write(&p, "# HNs\nhn1.example.com\n  hn2:2222  # second\n\n").unwrap();
        let l = read_hnlist(&p).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].port, 2222);
        let c = Config::parse(&format!("hnlist: {}\n", p.display()), "f").unwrap();
        assert_eq!(c.hns.len(), 2);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1X").is_err());
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
