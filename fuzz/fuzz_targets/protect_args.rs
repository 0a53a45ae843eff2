//! The protect-args block rsync writes on the server's stdin (`argv0 \0 options \0 . \0 paths \0
//! \0`), as bpc-ovz reads it from BackupPC: arbitrary bytes, possibly truncated or oversized.
//!
//! Properties: no panic; a block is accepted only when its re-encoding is byte for byte what was
//! read (nothing is dropped or invented), the bytes past it are passed on unchanged, the block
//! stays within the size limit, and its accepted paths map inside the snapshot root.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/quote.rs"]
mod quote;
#[allow(dead_code)]
#[path = "../../src/rsync_args.rs"]
mod rsync_args;

const ROOT: &str = "/run/bpc-ovz/mnt/bpcovz-101-0a1b2c3d";

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Ok((p, rest)) = rsync_args::read_protected(&mut input) else {
        return;
    };
    let enc = p.encode();
    assert!(data.starts_with(&enc), "block re-encodes differently");
    assert!(enc.len() <= rsync_args::MAX_PROTECTED_ARGS + 4096);
    assert!(
        data[enc.len()..].starts_with(&rest),
        "bytes past the block are not passed on unchanged"
    );
    let (again, left) = rsync_args::read_protected(&mut &enc[..]).expect("re-read");
    assert_eq!(again, p);
    assert!(left.is_empty());
    let relative = rsync_args::is_relative(&p.options);
    for path in &p.paths {
        if let Ok(m) = rsync_args::map_path(path, ROOT, relative) {
            let m = m.trim_end_matches('/');
            assert!(m == ROOT || m.starts_with(&format!("{ROOT}/")), "{m:?}");
            assert!(!m.split('/').any(|c| c == ".."), "{m:?}");
        }
    }
});
