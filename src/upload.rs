//! An upload (a restore: BackupPC → HN) spread over several SSH channels of one connection.
//!
//! OpenSSH's sshd gives every session channel a fixed 2 MiB receive window
//! (`CHAN_SES_WINDOW_DEFAULT`) and never grows it, so whatever the client does, one channel has at
//! most 2 MiB in flight per round trip: about 100 MiB/s at 20 ms. Downloads are not affected (the
//! window that counts there is ours, [`crate::ssh::DEFAULT_WINDOW_SIZE`]). N channels carry N
//! windows. Nothing is installed on the HN: the receiving side is the POSIX sh of [`SCRIPT`]
//! (`mktemp`, `mkfifo`, `head`, `rm`, `sleep`), run by `sh -c`.
//!
//! The protocol, all of it in this module and in [`crate::relay`]:
//! 1. Channel 0 runs [`wrap`]`(command, n)`. Its first stdout line is the handshake:
//!    `bpc-ovz-upload -` (mktemp or mkfifo failed: the command runs on channel 0 alone, its stdin
//!    is the plain stream), or `bpc-ovz-upload DIR`: DIR (made by `mktemp -d`, mode 0700) holds
//!    the fifos `1` … `n-1`. Everything after that line is the command's own stdout.
//! 2. The client opens channels 1 … n-1, each running [`writer_command`] (`exec cat > DIR/k`).
//!    The HN side opens every fifo for reading (blocking until its writer is there), then removes
//!    DIR at once: nothing stays on the HN's disk past this point, whatever happens later. If a
//!    writer never comes, a watchdog holds every fifo open itself for 5 s after 30 s, so the
//!    script ends (the stream then lacks its end mark: exit 255) instead of waiting for ever.
//! 3. The stream goes in frames, frame i on channel i mod n: [`header`] (`LEN\n`), LEN bytes,
//!    [`TRAILER`] (`.\n`); after the last one, [`END`] (`0\n`) on the channel of the next frame.
//!    The HN side reads the frames back in the same order into the command's stdin (`head -c`
//!    never reads past LEN). A channel that ends inside a frame or without the end mark stops the
//!    stream at once, so the command sees a plain early EOF, never data out of order; the script
//!    then exits 255 (as ssh does for a broken transport) with one line on stderr, unless the
//!    command already failed on its own (its exit code wins).
//! 4. Otherwise the script exits with the command's exit code; stderr is the command's.

use bytes::Bytes;

use crate::quote::quote;

/// Most channels an upload may use (the HN side reads channel 0 on fd 6, 1..5 on fds 3-5, 7, 8).
pub const MAX_CHANNELS: u8 = 6;
/// Default `ssh.upload_channels`.
pub const DEFAULT_CHANNELS: u8 = 4;
/// Round trips from which an upload is spread: one channel's bound is 2 MiB per round trip,
/// 500 MiB/s at 4 ms, so a LAN gains nothing from more channels (they cost the HN two copies).
pub const STRIPE_RTT: std::time::Duration = std::time::Duration::from_millis(4);
/// Largest frame: one 2 MiB sshd window. Each frame costs the HN side a `head` (fork + exec), so
/// 1 MiB frames cost twice as many; a channel's next frame is on its way while the other channels'
/// frames are read. Measured (contrib/bench.sh, 4 channels): 139-144 → 161 MiB/s at 20 ms, where
/// the HN's CPU is the bound, and 53.5 → 56.6 MiB/s at 100 ms. Larger frames would stall: a
/// channel holds at most one window in flight.
pub const FRAME_MAX: usize = 2 << 20;
/// Ends every frame.
pub const TRAILER: &[u8] = b".\n";
/// The end of the stream.
pub const END: &[u8] = b"0\n";
/// First word of the handshake line.
const HELLO: &str = "bpc-ovz-upload";
/// The name `mktemp` gives DIR.
const DIR_PREFIX: &str = "/tmp/bpcovz-up.";

/// The HN side. `$1` is the number of channels (2..=6), `$2` the command (run by `sh -c`), `$3`
/// the watchdog's wait in seconds (default 30; the tests use 1).
/// The reader `r` runs in the background, feeding the command's stdin through the fifo `0`, so
/// that a command that exits without reading everything ends the script at once (`r` is then
/// killed) as it would end a plain ssh session. Its subshell holds the fifo from `exec` to its
/// exit: a redirection of the call itself (`r >"$d/0" &`) is undone by dash when `r` returns, so
/// the command saw EOF, the script's `kill` could land before the subshell's `exit 3`, and a cut
/// stream ended 0 instead of 255 (about 1 run in 5 under dash).
pub const SCRIPT: &str = r#"n=$1 c=$2 t=${3:-30}
d=$(mktemp -d /tmp/bpcovz-up.XXXXXXXX 2>/dev/null) || d=
i=0
while [ -n "$d" ] && [ "$i" -lt "$n" ]; do
	mkfifo -m 600 "$d/$i" 2>/dev/null || { rm -rf "$d"; d=; }
	i=$((i + 1))
done
if [ -z "$d" ]; then
	echo 'bpc-ovz-upload -'
	exec sh -c "$c"
fi
echo "bpc-ovz-upload $d"
(
	sleep $t &
	s=$!
	trap 'kill $s 2>/dev/null; wait $s; exit 0' TERM
	wait $s
	i=1
	while [ "$i" -lt "$n" ]; do
		sleep 5 <>"$d/$i" &
		i=$((i + 1))
	done
	wait
) </dev/null >/dev/null 2>&1 &
w=$!
exec 6<&0
case $n in
2) exec 3<"$d/1" ;;
3) exec 3<"$d/1" 4<"$d/2" ;;
4) exec 3<"$d/1" 4<"$d/2" 5<"$d/3" ;;
5) exec 3<"$d/1" 4<"$d/2" 5<"$d/3" 7<"$d/4" ;;
*) exec 3<"$d/1" 4<"$d/2" 5<"$d/3" 7<"$d/4" 8<"$d/5" ;;
esac
r() {
	k=0
	while :; do
		case $k in 0) f=6 ;; 1 | 2 | 3) f=$((k + 2)) ;; *) f=$((k + 3)) ;; esac
		IFS= read -r h <&"$f" || { echo "bpc-ovz: upload channel $k ended early" >&2; return 3; }
		case $h in '' | *[!0-9]*) echo "bpc-ovz: upload channel $k: bad frame" >&2; return 3 ;; esac
		[ "$h" = 0 ] && return 0
		head -c "$h" <&"$f" 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- 2>/dev/null || return 4
		IFS= read -r t <&"$f" && [ "$t" = . ] || { echo "bpc-ovz: upload channel $k ended inside a frame" >&2; return 3; }
		k=$(((k + 1) % n))
	done
}
(
	exec </dev/null >"$d/0"
	r
) &
p=$!
exec 0<"$d/0"
rm -rf "$d"
kill $w 2>/dev/null
wait $w 2>/dev/null
sh -c "$c" 3<&- 4<&- 5<&- 6<&- 7<&- 8<&-
rc=$?
exec 0</dev/null 3<&- 4<&- 5<&- 6<&- 7<&- 8<&-
kill $p 2>/dev/null
wait $p 2>/dev/null
if [ $? = 3 ]; then
	echo "bpc-ovz: the upload was cut short: the command got only part of it" >&2
	exit 255
fi
exit $rc
"#;

/// The command line for channel 0: `command` behind the HN side of an `n`-channel upload.
pub fn wrap(command: &str, n: u8) -> String {
    let n = n.clamp(2, MAX_CHANNELS);
    format!("sh -c {} {HELLO} {n} {}", quote(SCRIPT), quote(command))
}

/// What channel 0's first stdout line said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// No fifos on the HN: send the plain stream on channel 0.
    Plain,
    /// The fifo directory: open the other channels with [`writer_command`] and send frames.
    Fifos(String),
}

/// Parses the handshake line (without its newline). The directory is the HN's word: it is
/// accepted only in the exact form `mktemp` gives it, and quoted again where it is used.
pub fn parse_handshake(line: &[u8]) -> Result<Handshake, String> {
    let shown = || {
        let s: String = String::from_utf8_lossy(line).escape_debug().collect();
        s.chars().take(80).collect::<String>()
    };
    let text = std::str::from_utf8(line).map_err(|_| format!("not text: {}", shown()))?;
    let Some(rest) = text.strip_prefix(HELLO).and_then(|r| r.strip_prefix(' ')) else {
        return Err(format!("expected `{HELLO} ...`, got: {}", shown()));
    };
    if rest == "-" {
        return Ok(Handshake::Plain);
    }
    let name = rest.strip_prefix(DIR_PREFIX).unwrap_or("");
    if name.len() < 6 || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("not a directory mktemp makes: {}", shown()));
    }
    Ok(Handshake::Fifos(rest.to_string()))
}

/// The command for channel `k` (1..n) of an upload into `dir`.
pub fn writer_command(dir: &str, k: u8) -> String {
    format!("exec cat > {}", quote(&format!("{dir}/{k}")))
}

/// The header of a frame of `len` bytes (`len` > 0).
pub fn header(len: usize) -> Bytes {
    Bytes::from(format!("{len}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{ChildStdout, Command, Stdio};

    #[test]
    fn handshake_lines() {
        assert_eq!(parse_handshake(b"bpc-ovz-upload -"), Ok(Handshake::Plain));
        assert_eq!(
            parse_handshake(b"bpc-ovz-upload /tmp/bpcovz-up.Ab3dEf9H"),
            Ok(Handshake::Fifos("/tmp/bpcovz-up.Ab3dEf9H".into()))
        );
        for bad in [
            &b"bpc-ovz-upload"[..],
            b"bpc-ovz-upload /tmp/x",
            b"bpc-ovz-upload /tmp/bpcovz-up.ab/../../etc",
            b"bpc-ovz-upload /tmp/bpcovz-up.abc$(id)",
            b"bpc-ovz-upload /tmp/bpcovz-up.",
            b"rsync: protocol version mismatch",
            b"bpc-ovz-upload \xff",
        ] {
            assert!(parse_handshake(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            writer_command("/tmp/bpcovz-up.Ab3dEf9H", 3),
            "exec cat > /tmp/bpcovz-up.Ab3dEf9H/3"
        );
    }

    /// How a local run of the HN side ended.
    struct Ran {
        out: Vec<u8>,
        err: String,
        code: Option<i32>,
    }

    /// How the writer side misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Cut {
        None,
        /// Channel 1 ends in the middle of frame n+1, its second.
        InFrame,
        /// Channel 1 ends before frame n+1 (no end mark).
        Between,
    }

    /// The HN side running locally under one shell, in its own process group, killed with all
    /// its processes when dropped (a failing test leaves nothing running).
    struct Local {
        child: std::process::Child,
        dir: String,
    }

    impl Drop for Local {
        fn drop(&mut self) {
            // SAFETY: plain kill(2) of the process group this test started.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Starts [`SCRIPT`] under `shell` with `args` as `$1`... (channel 0's view) and reads its
    /// handshake; `dir` is empty for `bpc-ovz-upload -`. Returns the script and its stdout.
    fn start(shell: &str, args: &[&str], env: &[(&str, &str)]) -> (Local, ChildStdout) {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(shell)
            .args(["-c", SCRIPT, HELLO])
            .args(args)
            .envs(env.iter().copied())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the shell");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while stdout.read(&mut b).expect("handshake") == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let dir = match parse_handshake(&line) {
            Ok(Handshake::Fifos(dir)) => dir,
            Ok(Handshake::Plain) => String::new(),
            Err(e) => panic!("{shell}: {e}"),
        };
        (Local { child, dir }, stdout)
    }

    /// Waits (up to 10 s) for the script to end; its exit status and stderr.
    fn finish(l: &mut Local, what: &str) -> (std::process::ExitStatus, String) {
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = l.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = l.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (s, err);
            }
            assert!(
                t.elapsed().as_secs() < 10,
                "{what}: the HN side does not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs [`SCRIPT`] under `shell` with `command`, as channel 0 would, and plays the client
    /// with local fifo writers: `frames` frames of `frame` bytes (byte j of the stream is j % 251).
    fn run(shell: &str, n: u8, command: &str, frames: usize, frame: usize, cut: Cut) -> Ran {
        let (mut l, mut stdout) = start(shell, &[&n.to_string(), command], &[]);
        let dir = l.dir.clone();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let mut chans: Vec<Box<dyn Write>> = vec![Box::new(l.child.stdin.take().expect("stdin"))];
        for k in 1..n {
            chans.push(Box::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(format!("{dir}/{k}"))
                    .expect("open a fifo"),
            ));
        }
        // Every fifo is open: the HN side removes the directory.
        let mut pos = 0usize;
        let mut send = || -> std::io::Result<()> {
            for i in 0..frames {
                let k = i % n as usize;
                let data: Vec<u8> = (pos..pos + frame).map(|j| (j % 251) as u8).collect();
                if k == 1 && i > n as usize && cut != Cut::None {
                    if cut == Cut::InFrame {
                        chans[k].write_all(&header(frame))?;
                        chans[k].write_all(&data[..frame / 2])?;
                    }
                    chans.remove(k);
                    return Ok(());
                }
                chans[k].write_all(&header(frame))?;
                chans[k].write_all(&data)?;
                chans[k].write_all(TRAILER)?;
                pos += frame;
            }
            chans[frames % n as usize].write_all(END)
        };
        let _ = send();
        drop(chans);
        let out = reader.join().expect("reader");
        let (status, err) = finish(&mut l, shell);
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left on the HN");
        Ran {
            out,
            err,
            code: status.code(),
        }
    }

    fn expected(len: usize) -> Vec<u8> {
        (0..len).map(|j| (j % 251) as u8).collect()
    }

    fn shells() -> Vec<&'static str> {
        ["dash", "bash"]
            .into_iter()
            .filter(|s| Command::new(s).arg("-c").arg(":").status().is_ok())
            .collect()
    }

    #[test]
    fn the_hn_side_puts_the_frames_back_in_order() {
        for sh in shells() {
            for n in [2u8, 4, 6] {
                let r = run(sh, n, "cat", 23, 70_001, Cut::None);
                assert_eq!(r.code, Some(0), "{sh} n={n}: {}", r.err);
                assert!(r.out == expected(23 * 70_001), "{sh} n={n}: stream differs");
                assert_eq!(r.err, "", "{sh}");
            }
            // The command's exit code and stderr come through; an early exit is not an error.
            let r = run(
                sh,
                3,
                "head -c 5 >/dev/null; echo oops >&2; exit 23",
                9,
                4096,
                Cut::None,
            );
            assert_eq!((r.code, r.err.as_str()), (Some(23), "oops\n"), "{sh}");
        }
    }

    #[test]
    fn a_channel_that_ends_early_stops_the_stream_and_fails() {
        for sh in shells() {
            for cut in [Cut::InFrame, Cut::Between] {
                let r = run(sh, 3, "cat", 12, 10_000, cut);
                assert_eq!(r.code, Some(255), "{sh}: {}", r.err);
                // Frames 0..=3 (and what came of frame 4), in order, and not one byte of frame 5
                // (channel 2): the command saw a plain early EOF.
                let whole = 4 * 10_000 + if cut == Cut::InFrame { 5_000 } else { 0 };
                assert!(r.out == expected(whole), "{sh}: {} bytes", r.out.len());
                assert!(
                    r.err.contains("bpc-ovz: upload channel 1 ended")
                        && r.err.contains("the upload was cut short"),
                    "{sh}: {}",
                    r.err
                );
            }
        }
    }

    /// A command that exits without reading everything ends the HN side at once, while the
    /// client still holds every channel open (rsync's receiver failing on the HN: the client's
    /// rsync then waits for the remote to go, as with plain ssh).
    #[test]
    fn a_command_that_exits_early_ends_the_script_while_the_client_waits() {
        for sh in shells() {
            let (mut l, mut stdout) = start(sh, &["3", "head -c 3; exit 12"], &[]);
            let mut stdin = l.child.stdin.take().expect("stdin");
            let _fifos: Vec<_> = (1..3)
                .map(|k| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(format!("{}/{k}", l.dir))
                        .expect("fifo")
                })
                .collect();
            stdin.write_all(b"5\nhello.\n").expect("frame 0");
            let (status, _) = finish(&mut l, sh);
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            assert_eq!((status.code(), out), (Some(12), b"hel".to_vec()), "{sh}");
        }
    }

    /// No fifos on the HN (mktemp fails): the handshake says so and the command reads the plain
    /// stream from channel 0.
    #[test]
    fn without_fifos_the_command_reads_channel_0_as_is() {
        let bin = tempfile::tempdir().expect("tempdir");
        let fake = bin.path().join("mktemp");
        std::fs::write(&fake, "#!/bin/sh\nexit 1\n").expect("fake mktemp");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for sh in shells() {
            let (mut l, mut stdout) = start(sh, &["4", "wc -c"], &[("PATH", &path)]);
            assert_eq!(l.dir, "", "{sh}: the plain handshake");
            let mut stdin = l.child.stdin.take().expect("stdin");
            stdin.write_all(&[7u8; 100_000]).expect("write");
            drop(stdin);
            let (status, _) = finish(&mut l, sh);
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            assert_eq!((status.code(), out.trim()), (Some(0), "100000"), "{sh}");
        }
    }

    /// The client never opens the other channels (it died after the handshake): the watchdog
    /// holds the fifos open itself, the script ends with 255 and leaves nothing behind.
    #[test]
    fn a_client_that_never_opens_the_other_channels_does_not_leave_the_script_waiting() {
        for sh in shells() {
            let (mut l, _stdout) = start(sh, &["4", "cat", "1"], &[]);
            drop(l.child.stdin.take());
            let (status, err) = finish(&mut l, sh);
            assert_eq!(status.code(), Some(255), "{sh}: {err}");
            assert!(err.contains("upload channel 0 ended early"), "{sh}: {err}");
            assert!(
                !std::path::Path::new(&l.dir).exists(),
                "{sh}: {} left",
                l.dir
            );
        }
    }
}
