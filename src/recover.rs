//! Bare-metal recovery of a VE's HN-side configuration.
//!
//! Every backup that covers `/etc` holds `etc/vzdump/VEID.conf` (and the VE's action scripts).
//! When the VE and its HN are gone, `bpc-ovz recover-config` puts that config back into
//! `/etc/vz/conf/` on a chosen HN, under the old or a new VEID, and creates the (empty) private
//! area; a BackupPC restore into the (stopped) VE then brings its files back. It refuses to touch
//! an existing VE: the VEID must be unknown to `vzlist`, its conf file absent, its private area
//! absent or empty — and the conf file is written with the shell's noclobber, so a race cannot
//! overwrite one either.

use std::path::Path;

use crate::config::Config;
use crate::locate;
use crate::openvz::{self, VeId};
use crate::quote::quote;
use crate::ssh::Session;
use crate::{EXIT_HN_STEP, EXIT_REFUSED};

pub struct Recovered {
    pub conf: String,
    pub scripts: Vec<(String, Vec<u8>)>,
    pub old: VeId,
    pub new: VeId,
}

/// Replace a literal old VEID path component in VE_PRIVATE / VE_ROOT with the new one.
pub fn rewrite_conf(text: &str, old: &VeId, new: &VeId) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let rewritten = if t.starts_with("VE_PRIVATE=") || t.starts_with("VE_ROOT=") {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let q = v.starts_with('"') || v.starts_with('\'');
            let inner = v.trim_matches(|c| c == '"' || c == '\'');
            let parts: Vec<String> = inner
                .split('/')
                .map(|c| {
                    if c == old.as_str() {
                        new.as_str().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let nv = parts.join("/");
            if q {
                format!("{k}=\"{nv}\"")
            } else {
                format!("{k}={nv}")
            }
        } else {
            line.to_string()
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

/// Read `etc/vzdump/` of a backup.
pub fn read_vzdump(dir: &Path, old: Option<&str>, new: Option<&str>) -> Result<Recovered, String> {
    let mut confs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".conf") {
            confs.push(id.to_string());
        }
    }
    let old = match old {
        Some(o) => o.to_string(),
        None if confs.len() == 1 => confs.remove(0),
        None if confs.is_empty() => {
            return Err(format!(
                "{}: no VEID.conf here (is it a backup's etc/vzdump?)",
                dir.display()
            ));
        }
        None => {
            return Err(format!(
                "{}: several VE configs ({}): name one with --old-veid",
                dir.display(),
                confs.join(", ")
            ));
        }
    };
    let old = VeId::parse(&old)?;
    let new = match new {
        Some(n) => VeId::parse(n)?,
        None => old.clone(),
    };
    let text = std::fs::read_to_string(dir.join(format!("{old}.conf")))
        .map_err(|e| format!("{}/{old}.conf: {e}", dir.display()))?;
    let conf = rewrite_conf(&text, &old, &new);
    let mut scripts = Vec::new();
    for x in ["start", "stop", "mount", "umount"] {
        let p = dir.join(format!("{old}.{x}"));
        if p.is_file() {
            scripts.push((
                x.to_string(),
                std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?,
            ));
        }
    }
    Ok(Recovered {
        conf,
        scripts,
        old,
        new,
    })
}

/// Write the config onto `hn_name`, refusing to touch an existing VE.
pub async fn run(
    cfg: &Config,
    from: &Path,
    hn_name: &str,
    old: Option<&str>,
    new: Option<&str>,
    dry_run: bool,
) -> Result<(), (i32, String)> {
    let rec = read_vzdump(from, old, new).map_err(|e| (EXIT_REFUSED, e))?;
    let hn = cfg
        .hns
        .iter()
        .find(|h| h.name == hn_name || h.host == hn_name)
        .ok_or_else(|| {
            (
                EXIT_REFUSED,
                format!("{hn_name} is not one of the configured hns"),
            )
        })?;
    let opts = locate::ssh_options(cfg).map_err(|e| (EXIT_REFUSED, e))?;
    let s = Session::connect(&locate::addr(hn), &opts)
        .await
        .map_err(|e| (255, e.to_string()))?;
    let r = apply(&s, &hn.name, &rec, dry_run).await;
    s.close().await;
    r
}

async fn apply(s: &Session, hn: &str, rec: &Recovered, dry_run: bool) -> Result<(), (i32, String)> {
    let new = &rec.new;
    let ssh = |e: crate::ssh::SshError| (255, format!("{hn}: {e}"));
    // The VEID must be unknown here.
    let out = s
        .exec("vzlist -a -H -o veid 2>&1; echo rc=$?", b"")
        .await
        .map_err(ssh)?;
    let listing = String::from_utf8_lossy(&out.stdout);
    if listing.lines().any(|l| l.trim() == new.as_str()) {
        return Err((
            EXIT_REFUSED,
            format!("{hn}: VE {new} exists already: refusing to overwrite it (use --veid NEW)"),
        ));
    }
    let vz = s
        .exec("cat /etc/vz/vz.conf 2>/dev/null", b"")
        .await
        .map_err(ssh)?;
    let global = openvz::parse_conf(&String::from_utf8_lossy(&vz.stdout), new);
    let own = openvz::parse_conf(&rec.conf, new);
    let private = own
        .get("VE_PRIVATE")
        .or_else(|| global.get("VE_PRIVATE"))
        .cloned()
        .unwrap_or_else(|| format!("/var/lib/vz/private/{new}"));
    let root = own
        .get("VE_ROOT")
        .or_else(|| global.get("VE_ROOT"))
        .cloned()
        .unwrap_or_else(|| format!("/var/lib/vz/root/{new}"));
    for (k, v) in [("VE_PRIVATE", &private), ("VE_ROOT", &root)] {
        // The same rule a backup applies to what an HN lists (a recovered config is untrusted too).
        if let Err(why) = openvz::check_ve_path(v) {
            return Err((
                EXIT_REFUSED,
                format!(
                    "recovered {k}={} is not a clean absolute path: {why}",
                    openvz::shown(v)
                ),
            ));
        }
    }
    let conf_path = format!("/etc/vz/conf/{new}.conf");
    let check = format!(
        "[ -e {c} ] && {{ echo \"{c} exists\"; exit 3; }}; if [ -e {p} ] && [ -n \"$(ls -A {p} 2>/dev/null)\" ]; then echo \"{pt} exists and is not empty\"; exit 3; fi; exit 0",
        c = quote(&conf_path),
        p = quote(&private),
        pt = private,
    );
    let o = s.exec(&check, b"").await.map_err(ssh)?;
    if o.outcome.code() != 0 {
        return Err((
            EXIT_REFUSED,
            format!(
                "{hn}: refusing to overwrite VE {new}: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            ),
        ));
    }
    println!(
        "recover VE {} as VE {new} on {hn}: {conf_path}, VE_PRIVATE {private}, VE_ROOT {root}",
        rec.old
    );
    if dry_run {
        println!("(dry run: nothing written)");
        return Ok(());
    }
    // noclobber: a file that appeared meanwhile is not overwritten.
    let write = |path: &str, mode: &str| {
        format!(
            "set -C; umask 022; cat > {p} && chmod {mode} {p}",
            p = quote(path)
        )
    };
    let o = s
        .exec(&write(&conf_path, "644"), rec.conf.as_bytes())
        .await
        .map_err(ssh)?;
    if o.outcome.code() != 0 {
        return Err((
            EXIT_HN_STEP,
            format!(
                "{hn}: writing {conf_path} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    for (x, body) in &rec.scripts {
        let p = format!("/etc/vz/conf/{new}.{x}");
        let o = s.exec(&write(&p, "755"), body).await.map_err(ssh)?;
        if o.outcome.code() != 0 {
            return Err((
                EXIT_HN_STEP,
                format!(
                    "{hn}: writing {p} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ));
        }
        println!("  wrote {p}");
    }
    let mk = format!(
        "mkdir -p {r} && mkdir -p -m 700 {p}",
        r = quote(&root),
        p = quote(&private)
    );
    let o = s.exec(&mk, b"").await.map_err(ssh)?;
    if o.outcome.code() != 0 {
        return Err((
            EXIT_HN_STEP,
            format!(
                "{hn}: creating {private}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    println!("  wrote {conf_path}; created {private} (empty) and {root}");
    println!(
        "next: restore the backup into this VE with BackupPC (it is stopped, so files go to {private}), then `vzctl start {new}` on {hn}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_veid_components_of_paths() {
        let old = VeId::parse("101").unwrap();
        let new = VeId::parse("205").unwrap();
        let t = "HOSTNAME=\"ve101\"\nVE_PRIVATE=\"/vz/private/101\"\nVE_ROOT=/vz/root/101\nIP_ADDRESS=\"10.0.0.101\"\nVE_PRIVATE2=/x/101\n";
        let r = rewrite_conf(t, &old, &new);
        assert!(r.contains("VE_PRIVATE=\"/vz/private/205\""), "{r}");
        assert!(r.contains("VE_ROOT=/vz/root/205"), "{r}");
        assert!(r.contains("HOSTNAME=\"ve101\""));
        assert!(r.contains("IP_ADDRESS=\"10.0.0.101\""));
        let same = rewrite_conf("VE_PRIVATE=\"/vz/private/$VEID\"\n", &old, &new);
        assert_eq!(same, "VE_PRIVATE=\"/vz/private/$VEID\"\n");
    }

    #[test]
    fn reads_a_vzdump_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("101.conf"), "VE_PRIVATE=/vz/private/101\n").unwrap();
        std::fs::write(d.path().join("101.mount"), "#!/bin/sh\n").unwrap();
        let r = read_vzdump(d.path(), None, Some("300")).unwrap();
        assert_eq!(r.new.as_str(), "300");
        assert_eq!(r.scripts.len(), 1);
        assert!(r.conf.contains("/vz/private/300"));
        std::fs::write(d.path().join("102.conf"), "").unwrap();
        assert!(read_vzdump(d.path(), None, None).is_err());
        assert!(read_vzdump(d.path(), Some("102"), None).is_ok());
    }
}
