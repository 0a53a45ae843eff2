//! What an HN answers, which bpc-ovz treats as untrusted text: `vzlist` (the two-section output
//! of `vzlist_command`), `vzctl status`, a VE config file, `lvs`, `vgs` and
//! `/proc/self/mountinfo`. The same input is fed to every parser.
//!
//! Properties: no panic; a listed VE has a valid VEID and a host name and IPs that cannot carry a
//! line break or (IPs) a blank; config keys are identifiers; the mount found for a path holds it,
//! and the LV found for a mount is one of those listed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/lvm.rs"]
mod lvm;
#[allow(dead_code)]
#[path = "../../src/openvz.rs"]
mod openvz;
#[allow(dead_code)]
#[path = "../../src/quote.rs"]
mod quote;

const MARKER: &str = "@@m";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((ves, _warnings)) = openvz::parse_vzlist(&text, MARKER) {
        for ve in &ves {
            assert!(openvz::VeId::parse(ve.veid.as_str()).is_ok());
            if let Some(h) = &ve.hostname {
                assert!(!h.is_empty() && !h.contains('\n') && h != "-", "{h:?}");
            }
            for ip in &ve.ips {
                assert!(
                    !ip.is_empty() && !ip.contains(char::is_whitespace),
                    "{ip:?}"
                );
            }
        }
    }
    let _ = openvz::parse_vzctl_status(&text);
    if let Ok(veid) = openvz::VeId::parse("101") {
        for (k, v) in openvz::parse_conf(&text, &veid) {
            assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            assert!(!v.contains('\n'));
        }
    }
    let (lvs, _) = lvm::parse_lvs(&text);
    for lv in &lvs {
        assert!(!lv.vg.contains(':') && !lv.name.contains('\n'));
    }
    let _ = lvm::parse_vgs(&text);
    let mounts = lvm::parse_mountinfo(&text);
    for path in ["/vz/private/101", "/", "/var/lib/vz/private/101"] {
        if let Some(m) = lvm::mount_for(&mounts, path) {
            let mp = m.mount_point.trim_end_matches('/');
            assert!(
                mp.is_empty()
                    || path == m.mount_point
                    || path == mp
                    || path.starts_with(&format!("{mp}/")),
                "{path} is not under {:?}",
                m.mount_point
            );
            if let Some(lv) = lvm::lv_for_mount(&lvs, m) {
                assert!(lvs.contains(lv));
            }
        }
    }
});
