//! LVM and mount-table knowledge: parse `lvs`, `vgs` and `/proc/self/mountinfo`, and find the
//! logical volume that holds a directory.
//!
//! Input comes from an HN and is untrusted. This module knows nothing about OpenVZ or SSH.

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    pub size: u64,
    pub attr: String,
    pub origin: String,
    pub snap_percent: Option<f64>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Vg {
    pub name: String,
    pub size: u64,
    pub free: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    pub major: u32,
    pub minor: u32,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// Field list for [`parse_lvs`]; keep the two in step.
pub const LVS_FIELDS: &str =
    "vg_name,lv_name,lv_size,lv_attr,origin,snap_percent,lv_kernel_major,lv_kernel_minor";
pub const VGS_FIELDS: &str = "vg_name,vg_size,vg_free";

pub fn lvs_args() -> Vec<&'static str> {
    vec![
        "lvs",
        "--units",
        "b",
        "--nosuffix",
        "--noheadings",
        "--separator",
        ":",
        "-o",
        LVS_FIELDS,
    ]
}

pub fn vgs_args() -> Vec<&'static str> {
    vec![
        "vgs",
        "--units",
        "b",
        "--nosuffix",
        "--noheadings",
        "--separator",
        ":",
        "-o",
        VGS_FIELDS,
    ]
}

pub fn parse_lvs(text: &str) -> (Vec<Lv>, Vec<String>) {
    let mut out = Vec::new();
    let mut warn = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let f: Vec<&str> = t.split(':').collect();
        if f.len() != 8 {
            warn.push(format!("skipped lvs line {t:?}"));
            continue;
        }
        let size = f[2]
            .trim()
            .split(['.', ','])
            .next()
            .unwrap_or("")
            .parse::<u64>();
        let Ok(size) = size else {
            warn.push(format!("skipped lvs line {t:?}"));
            continue;
        };
        let num = |s: &str| {
            s.trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .map(|v| v as u32)
        };
        out.push(Lv {
            vg: f[0].trim().to_string(),
            name: f[1].trim().to_string(),
            size,
            attr: f[3].trim().to_string(),
            origin: f[4].trim().to_string(),
            snap_percent: f[5].trim().replace(',', ".").parse::<f64>().ok(),
            major: num(f[6]),
            minor: num(f[7]),
        });
    }
    (out, warn)
}

pub fn parse_vgs(text: &str) -> Vec<Vg> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() != 3 {
                return None;
            }
            let n = |s: &str| {
                s.trim()
                    .split(['.', ','])
                    .next()
                    .unwrap_or("")
                    .parse::<u64>()
                    .ok()
            };
            Some(Vg {
                name: f[0].trim().to_string(),
                size: n(f[1])?,
                free: n(f[2])?,
            })
        })
        .collect()
}

/// Undo the octal escapes the kernel uses in mountinfo (`\040` for space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|w| *w == "-") else {
            continue;
        };
        if dash < 6 || f.len() < dash + 3 {
            continue;
        }
        let Some((maj, min)) = f[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        out.push(Mount {
            major,
            minor,
            mount_point: unescape(f[4]),
            fstype: f[dash + 1].to_string(),
            source: unescape(f[dash + 2]),
        });
    }
    out
}

/// The mount that holds `path` (an absolute, already resolved path): the longest mount point
/// that is a path prefix. Later mounts on the same point win, as in the kernel.
pub fn mount_for<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        let mp = m.mount_point.trim_end_matches('/');
        let inside = path == m.mount_point
            || mp.is_empty()
            || path.starts_with(&format!("{mp}/"))
            || path == mp;
        if inside && best.is_none_or(|b| m.mount_point.len() >= b.mount_point.len()) {
            best = Some(m);
        }
    }
    best
}

/// `/dev/mapper/` spelling of an LV: dashes inside VG and LV names are doubled.
pub fn mapper_path(vg: &str, lv: &str) -> String {
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

/// Find the LV mounted as `m`: by device path spelling (`/dev/VG/LV`, `/dev/mapper/VG-LV`), then
/// by kernel major:minor.
pub fn lv_for_mount<'a>(lvs: &'a [Lv], m: &Mount) -> Option<&'a Lv> {
    lvs.iter()
        .find(|lv| {
            m.source == format!("/dev/{}/{}", lv.vg, lv.name)
                || m.source == mapper_path(&lv.vg, &lv.name)
        })
        .or_else(|| {
            lvs.iter()
                .find(|lv| lv.major == Some(m.major) && lv.minor == Some(m.minor))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "22 1 253:0 / / rw,relatime - ext4 /dev/mapper/vg0-root rw\n\
        40 22 253:3 / /vz rw,relatime shared:5 - ext4 /dev/mapper/vg--data-vz rw\n\
        41 40 253:3 /private/101 /vz/root/101 rw - ext4 /dev/mapper/vg--data-vz rw\n\
        42 22 7:3 / /srv/with\\040space rw - xfs /dev/loop3 rw\n";

    #[test]
    fn mountinfo_and_lookup() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].mount_point, "/srv/with space");
        let vz = mount_for(&m, "/vz/private/101").unwrap();
        assert_eq!(vz.mount_point, "/vz");
        assert_eq!(vz.fstype, "ext4");
        assert_eq!(mount_for(&m, "/vzfoo").unwrap().mount_point, "/");
        assert_eq!(mount_for(&m, "/srv/with space/x").unwrap().fstype, "xfs");
    }

    #[test]
    fn lvs_and_matching() {
        let (lvs, warn) = parse_lvs(
            "  vg-data:vz:536870912:owi-aos---:::253:3\n  vg-data:bpcovz-101-ab:1073741824:swi-a-s---:vz:0.42:253:4\n  junk\n",
        );
        assert_eq!(warn.len(), 1);
        assert_eq!(lvs.len(), 2);
        assert_eq!(lvs[1].snap_percent, Some(0.42));
        assert_eq!(lvs[0].snap_percent, None);
        let m = parse_mountinfo(MI);
        let vz = mount_for(&m, "/vz/private/101").unwrap();
        assert_eq!(lv_for_mount(&lvs, vz).unwrap().name, "vz");
        // major:minor fallback (e.g. /dev/dm-3 in the mount table)
        let dm = Mount {
            major: 253,
            minor: 3,
            mount_point: "/vz".into(),
            fstype: "ext4".into(),
            source: "/dev/dm-3".into(),
        };
        assert_eq!(lv_for_mount(&lvs, &dm).unwrap().name, "vz");
        assert_eq!(mapper_path("vg-data", "vz"), "/dev/mapper/vg--data-vz");
    }

    #[test]
    fn vgs_and_attr() {
        let v = parse_vgs("  vg0:2147483648:1073741824\n  bad\n");
        assert_eq!(
            v,
            vec![Vg {
                name: "vg0".into(),
                size: 2147483648,
                free: 1073741824
            }]
        );
    }
}
