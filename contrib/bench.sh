#!/usr/bin/env bash
# bpc-ovz benchmarks, side by side with a reference run in the same invocation (issue #7).
#
#   ./contrib/bench.sh            (as root; ~6-10 min; prints one table)
#
# What it starts, all on 127.0.0.1 on ports it picks, and stops by PID at the end:
#   - a plain OpenSSH sshd (relay throughput, startup, peak RSS);
#   - examples/delay_proxy.rs in front of that sshd, delaying each direction by 10 ms (an emulated
#     20 ms round trip; netem is not available here);
#   - one simulated HN (tests/simhn: real sshd, real ext4 on a loop device, stand-in vzctl/lvm2)
#     with VE 101, for the downtime and whole-backup rows.
#
# Rows (medians of BENCH_RUNS runs, BENCH_LO_RUNS for the loopback relay, the two sides interleaved
# run by run):
#   relay        1 GiB through `bpc-ovz bench-exec` vs OpenSSH `ssh` to the same sshd, download
#                (remote `head -c N /dev/zero` -> local /dev/null) and upload (local -> remote
#                `wc -c`, which also checks the byte count), on loopback and through the proxy.
#                `bench-exec` is a hidden bpc-ovz subcommand for this only: it connects to a
#                configured HN and runs COMMAND through the same transport and relay code a
#                transfer uses (src/bench_exec.rs). `bpc-ovz ssh` itself only runs rsync/tar
#                servers on VEs it locates.
#   startup      connect + auth + exec `true`, median of BENCH_STARTUP_RUNS.
#   peak RSS     /usr/bin/time's maximum RSS of the client over the 1 GiB relay runs.
#   downtime     VE 101's own down time (ve-101.log: "stopped ... at T" to "started ... at T") in
#                a bpc-ovz backup vs the same three commands (vzctl stop, lvcreate --snapshot, vzctl
#                start) run back to back on the HN with nothing in between: the difference is what
#                bpc-ovz adds to the downtime.
#   backup       a tree of BENCH_FILES files (~BENCH_TREE_MIB MiB, mixed sizes) in VE 101:
#                `rsync -a -e 'bpc-ovz ssh ...' ve:/ dest/` vs `rsync -a -e ssh
#                root@HN:/vz/private/101/ dest/` reading the live tree from the same HN's sshd.
#                Also: the client side's CPU (rsync receiver + transport, from /usr/bin/time, far
#                less sensitive to other load than wall time), the backup's transfer step alone
#                (from bpc-ovz's debug log), the same rsync of the live tree with bench-exec as the
#                -e transport (relay only, no snapshot), and where a backup's time goes. The
#                simulated lvcreate copies the whole LV image (seconds for 1 GiB) and lvremove
#                deletes it, where real LVM only writes metadata.
#
# Knobs (environment): BENCH_RUNS=3 BENCH_LO_RUNS=5 BENCH_RELAY_MIB=1024 BENCH_STARTUP_RUNS=10
# BENCH_DOWNTIME_RUNS=5 BENCH_FILES=20000 BENCH_TREE_MIB=1024 BENCH_DELAY_MS=10
# BENCH_ONLY=relay,wan,startup,downtime,backup  BENCH_KEEP=1 (keep the work dir).
# The markdown table is also written to target/bench/latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
[ "$(id -u)" = 0 ] || { echo "bench: run as root (the simulated HN needs namespaces and loop devices)" >&2; exit 1; }
./contrib/install-deps.sh
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

RUNS=${BENCH_RUNS:-3}
LO_RUNS=${BENCH_LO_RUNS:-5}
RELAY_MIB=${BENCH_RELAY_MIB:-1024}
STARTUP_RUNS=${BENCH_STARTUP_RUNS:-10}
DOWNTIME_RUNS=${BENCH_DOWNTIME_RUNS:-5}
FILES=${BENCH_FILES:-20000}
TREE_MIB=${BENCH_TREE_MIB:-1024}
DELAY_MS=${BENCH_DELAY_MS:-10}
ONLY=${BENCH_ONLY:-relay,wan,startup,downtime,backup}
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
T0=$EPOCHREALTIME

echo "== building bpc-ovz and the delay proxy (release)"
cargo build --release --quiet --bin bpc-ovz --example delay_proxy
BIN=$top/target/release/bpc-ovz
PROXY=$top/target/release/examples/delay_proxy
SIMHN=$top/tests/simhn

work=$(mktemp -d /var/tmp/bpc-ovz-bench.XXXXXX)
sshd_pid='' proxy_pid='' hn=''
cleanup() {
	set +e
	[ -n "$proxy_pid" ] && { kill "$proxy_pid"; wait "$proxy_pid"; } 2>/dev/null
	[ -n "$sshd_pid" ] && { kill "$sshd_pid"; wait "$sshd_pid"; } 2>/dev/null
	[ -n "$hn" ] && "$SIMHN/hn-down" "$hn" >/dev/null 2>&1
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		shuf -i 20000-60000 -n 1
}
wait_port() { # PORT PID
	for _ in $(seq 200); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
max() { sort -g | tail -n 1; }
# Files of samples, one number per line: $work/s/NAME
mkdir -p "$work/s"
sample() { echo "$2" >>"$work/s/$1"; }
med() { [ -s "$work/s/$1" ] && median <"$work/s/$1" || echo nan; }

# ---------------------------------------------------------------------------- machine
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
machine="$(nproc) cores, ${cpu:-unknown CPU}, kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); $(ssh -V 2>&1 | cut -d, -f1), rsync $(rsync --version | awk 'NR == 1 { print $3 }')"
echo "== machine: $machine; load average at start: $load_start"

# ---------------------------------------------------------------------------- keys, sshd, proxy
ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/id"
ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$work/host_ed25519"
cp "$work/id.pub" "$work/authorized_keys"
ssh_base=(ssh -F /dev/null -i "$work/id" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes
	-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o LogLevel=ERROR -l root)

if want relay || want wan || want startup; then
	mkdir -p /run/sshd
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		cat >"$work/sshd_config" <<-EOF
			Port $port
			ListenAddress 127.0.0.1
			HostKey $work/host_ed25519
			PidFile $work/sshd.pid
			AuthorizedKeysFile $work/authorized_keys
			PermitRootLogin prohibit-password
			PubkeyAuthentication yes
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			StrictModes no
			UseDNS no
			MaxStartups 100
			LogLevel DEBUG1
		EOF
		/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" </dev/null &
		sshd_pid=$!
		if wait_port "$port" "$sshd_pid"; then break; fi
		kill "$sshd_pid" 2>/dev/null; wait "$sshd_pid" 2>/dev/null || true
		sshd_pid=''
	done
	[ -n "$sshd_pid" ] || { echo "bench: sshd did not start: $(tail -n 3 "$work/sshd.log")" >&2; exit 1; }
	"$PROXY" --to "127.0.0.1:$port" --delay-ms "$DELAY_MS" >"$work/proxy.out" 2>"$work/proxy.err" &
	proxy_pid=$!
	for _ in $(seq 100); do grep -q listening "$work/proxy.out" && break; sleep 0.05; done
	pport=$(sed -n 's/^listening .*:\([0-9]*\)$/\1/p' "$work/proxy.out")
	[ -n "$pport" ] || { echo "bench: the delay proxy did not start: $(cat "$work/proxy.err")" >&2; exit 1; }
	hk=$(cut -d' ' -f1,2 "$work/host_ed25519.pub")
	printf '[127.0.0.1]:%s %s\n[127.0.0.1]:%s %s\n' "$port" "$hk" "$pport" "$hk" >"$work/known_hosts"
	cat >"$work/relay.yaml" <<-EOF
		hns:
		  - host: 127.0.0.1
		    port: $port
		    name: lo
		  - host: 127.0.0.1
		    port: $pport
		    name: wan
		ssh:
		  identity_files: [$work/id]
		  known_hosts: [$work/known_hosts]
		  agent: false
		log:
		  level: warn
		cache: $work/relay-cache.json
	EOF
	SSH=("${ssh_base[@]}" -o UserKnownHostsFile="$work/known_hosts")
	echo "== sshd pid $sshd_pid on 127.0.0.1:$port; delay proxy pid $proxy_pid on 127.0.0.1:$pport (+${DELAY_MS} ms each way)"
fi

# One client run. relay_run NAME CLIENT NET DIR: appends MiB/s and max RSS (KiB) samples.
relay_run() {
	local name=$1 client=$2 net=$3 dir=$4 p bytes=$((RELAY_MIB << 20)) tf=$work/time.out out
	[ "$net" = lo ] && p=$port || p=$pport
	local down="head -c $bytes /dev/zero" up="wc -c"
	if [ "$dir" = down ]; then
		if [ "$client" = bpc ]; then
			/usr/bin/time -f '%e %M %U %S' -o "$tf" "$BIN" bench-exec --config "$work/relay.yaml" "$net" "$down" >/dev/null
		else
			/usr/bin/time -f '%e %M %U %S' -o "$tf" "${SSH[@]}" -p "$p" 127.0.0.1 "$down" >/dev/null
		fi
	else
		if [ "$client" = bpc ]; then
			out=$(head -c "$bytes" /dev/zero | /usr/bin/time -f '%e %M %U %S' -o "$tf" "$BIN" bench-exec --config "$work/relay.yaml" "$net" "$up")
		else
			out=$(head -c "$bytes" /dev/zero | /usr/bin/time -f '%e %M %U %S' -o "$tf" "${SSH[@]}" -p "$p" 127.0.0.1 "$up")
		fi
		[ "$out" = "$bytes" ] || { echo "bench: $name: the remote received ${out:-nothing}, not $bytes bytes" >&2; exit 1; }
	fi
	read -r secs rss usr sys <"$tf"
	sample "$name" "$(awk -v m="$RELAY_MIB" -v s="$secs" 'BEGIN { printf "%.1f", m / s }')"
	sample "rss_$client" "$rss"
	sample "cpu_$name" "$(awk -v m="$RELAY_MIB" -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", (u + s) * 1024 / m }')"
	printf '   %-14s %7.1f MiB/s  (%ss, client CPU %s s/GiB, max RSS %d KiB)\n' "$name" "$(tail -n 1 "$work/s/$name")" "$secs" "$(tail -n 1 "$work/s/cpu_$name")" "$rss"
}

nets=()
want relay && nets+=(lo)
want wan && nets+=(wan)
if [ "${#nets[@]}" -gt 0 ]; then
	echo "== relay: $RELAY_MIB MiB per run, $LO_RUNS runs on loopback, $RUNS at $((2 * DELAY_MS)) ms, OpenSSH and bpc-ovz interleaved"
	for r in $(seq "$((LO_RUNS > RUNS ? LO_RUNS : RUNS))"); do
		for net in "${nets[@]}"; do
			[ "$net" = lo ] && [ "$r" -gt "$LO_RUNS" ] && continue
			[ "$net" = wan ] && [ "$r" -gt "$RUNS" ] && continue
			for dir in down up; do
				relay_run "ssh_${net}_$dir" ssh "$net" "$dir"
				relay_run "bpc_${net}_$dir" bpc "$net" "$dir"
			done
		done
	done
fi

if want startup; then
	echo "== startup: connect + auth + exec true, $STARTUP_RUNS runs each"
	for _ in $(seq "$STARTUP_RUNS"); do
		a=$(now); "${SSH[@]}" -p "$port" 127.0.0.1 true; b=$(now)
		sample startup_ssh "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) * 1000 }')"
		a=$(now); "$BIN" bench-exec --config "$work/relay.yaml" lo true; b=$(now)
		sample startup_bpc "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) * 1000 }')"
	done
	echo "   OpenSSH $(med startup_ssh) ms, bpc-ovz $(med startup_bpc) ms (medians)"
fi
if [ -s "$work/sshd.log" ]; then
	ciphers=$(grep -o 'kex: client->server cipher: [^ ]*' "$work/sshd.log" | awk '{ print $4 }' | sort | uniq -c | awk '{ printf "%s%s (%s connections)", (NR > 1 ? ", " : ""), $2, $1 }')
fi

# ---------------------------------------------------------------------------- simulated HN
if want downtime || want backup; then
	hn=$work/hn1
	hport=$(free_port)
	echo "== simulated HN hn1 on 127.0.0.1:$hport"
	"$SIMHN/hn-up" "$hn" hn1 "$hport" vg-data ext4 >/dev/null
	# The simulated LV is a 512 MiB image (tests/simhn/SPEC.md has no size option). Grow it while the
	# HN is down (this sandbox has no CAP_SYS_RESOURCE for an online resize2fs): enlarge the image,
	# resize the filesystem, record the new extent count; the reboot keeps LVs (SPEC "Shutdown").
	lv_mib=$(((TREE_MIB + 384 + 3) / 4 * 4))
	grown=0
	if want backup && [ "$lv_mib" -gt 512 ]; then
		img=$hn/fs/var-lib-vzsim/lvm/vg-data/vz.img lvf=$hn/fs/var-lib-vzsim/lvm/vg-data/vz.lv
		if "$SIMHN/hn-down" "$hn" >/dev/null && grep -q '^EXT=128$' "$lvf" &&
			truncate -s "${lv_mib}M" "$img" && e2fsck -f -p "$img" >/dev/null && resize2fs "$img" "${lv_mib}M" >/dev/null 2>&1 &&
			sed -i "s/^EXT=.*/EXT=$((lv_mib / 4))/" "$lvf"; then
			grown=1
		fi
		"$SIMHN/hn-up" "$hn" hn1 "$hport" vg-data ext4 >/dev/null
		if [ $grown = 1 ]; then
			echo $(((lv_mib + 1024) << 20)) >"$hn/fs/etc-vzsim/vg_size"
		else
			echo "bench: could not grow the simulated LV; using a 400 MiB tree on the 512 MiB LV"
			TREE_MIB=400
		fi
	fi
	"$SIMHN/ve-create" "$hn" 101 ve101.bench 10.77.0.101 running >/dev/null
	cat "$work/id.pub" >>"$hn/ssh/authorized_keys"
	printf '[127.0.0.1]:%s %s\n' "$hport" "$(cut -d' ' -f1,2 "$hn/ssh/ssh_host_ed25519_key.pub")" >"$work/hn_known_hosts"
	cat >"$work/backup.yaml" <<-EOF
		hns:
		  - host: 127.0.0.1
		    port: $hport
		    name: hn1
		ssh:
		  identity_files: [$work/id]
		  known_hosts: [$work/hn_known_hosts]
		  agent: false
		snapshot:
		  size: 256M
		log:
		  file: $work/bpc-ovz.log
		  level: debug
		cache: $work/ve-cache.json
	EOF
	HNSSH=("${ssh_base[@]}" -o UserKnownHostsFile="$work/hn_known_hosts" -p "$hport")
	E_BPC="$BIN ssh --config $work/backup.yaml -l root"
	velog=$hn/fs/var-log-vzsim/ve-101.log
	# The VE's own down time in its log: the last "stopped ... at T" to the last "started ... at T".
	ve_down_ms() { awk '/^stopped / { s = $NF } /^started / { t = $NF } END { if (s && t > s) print t - s; else print "nan" }' "$velog"; }
	last_down_line() { grep -o 'was down for [0-9]* ms.*' "$work/bpc-ovz.log" | tail -n 1; }
fi

if want downtime; then
	echo "== downtime: $DOWNTIME_RUNS bpc-ovz backups of ve101:/etc/ vs the bare commands, interleaved"
	for i in $(seq "$DOWNTIME_RUNS"); do
		"$SIMHN/hn-exec" "$hn" sh -c 'vzctl --skiplock stop 101 >/dev/null 2>&1; lvcreate --size 256m --snapshot --name benchref vg-data/vz >/dev/null; vzctl --skiplock start 101 >/dev/null 2>&1'
		sample down_ref "$(ve_down_ms)"
		"$SIMHN/hn-exec" "$hn" lvremove -f vg-data/benchref >/dev/null
		rm -rf "$work/dest"
		rsync -a -e "$E_BPC" ve101.bench:/etc/ "$work/dest/" 2>>"$work/rsync.err" ||
			{ echo "bench: bpc-ovz backup failed: $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
		sample down_bpc "$(ve_down_ms)"
		l=$(last_down_line)
		sample down_bpc_reported "$(echo "$l" | awk '{ print $4 }')"
		echo "   run $i: bare commands $(tail -n 1 "$work/s/down_ref") ms; bpc-ovz $(tail -n 1 "$work/s/down_bpc") ms (bpc-ovz: $l)"
	done
fi

if want backup; then
	echo "== backup: generating $FILES files, ~$TREE_MIB MiB in VE 101 (/bench)"
	cat >"$work/gen.pl" <<-'EOF'
		# gen.pl DIR FILES MIB: FILES files of random bytes, 100 per directory, about MIB MiB in all:
		# 80% small (0.5-8 KiB), 18% medium (16-256 KiB), 2% large (0.5-2 MiB); medium and large are
		# scaled so that the total comes out near MIB.
		use strict; use warnings;
		my ($dir, $files, $mib) = @ARGV;
		srand(7);
		open(my $rnd, '<:raw', '/dev/urandom') or die "urandom: $!";
		mkdir $dir or die "$dir: $!";
		my ($ns, $nm, $nl) = (0, 0, 0);
		for my $i (0 .. $files - 1) { my $c = $i % 50; if ($c < 40) { $ns++ } elsif ($c < 49) { $nm++ } else { $nl++ } }
		my $scale = ($mib * 1048576 - $ns * 4352) / ($nm * 139264 + $nl * 1310720);
		$scale = 0.01 if $scale < 0.01;
		my $total = 0;
		for my $i (0 .. $files - 1) {
		    my $d = sprintf('%s/d%03d', $dir, int($i / 100));
		    -d $d or mkdir $d or die "$d: $!";
		    my $c = $i % 50;
		    my $size = $c < 40 ? 512 + int(rand(7680))
		             : $c < 49 ? int((16384 + rand(245760)) * $scale)
		             :           int((524288 + rand(1572864)) * $scale);
		    my $buf = '';
		    read($rnd, $buf, $size) == $size or die "urandom: short read";
		    open(my $f, '>:raw', sprintf('%s/f%05d', $d, $i)) or die "$d: $!";
		    print $f $buf or die "write: $!";
		    close($f) or die "close: $!";
		    $total += $size;
		}
		printf "%d files, %.0f MiB\n", $files, $total / 1048576;
	EOF
	tree_desc=$("$SIMHN/hn-exec" "$hn" perl /dev/stdin /vz/private/101/bench "$FILES" "$TREE_MIB" <"$work/gen.pl")
	echo "   $tree_desc; LV: $("$SIMHN/hn-exec" "$hn" df -h --output=size,used /vz | tail -n 1 | awk '{ print $1 " (" $2 " used)" }')"
	sync
	# Step times of one bpc-ovz run from its debug log, in seconds: connect+locate+probe, lock..preflight,
	# downtime, mount+checks, transfer, verify+umount+lvremove (the log's clock is UTC; the start is
	# the epoch time the rsync was started). Prints nothing if the steps are not in the log.
	steps() { # START_EPOCH LOG_FROM_LINE
		tail -n +"$2" "$work/bpc-ovz.log" | awk -v t0="$1" '
			function ts(s,  x) { split(substr(s, 12, 15), x, ":"); return x[1] * 3600 + x[2] * 60 + x[3] }
			/ step 1 / { lock = ts($1) } / step 4 downtime/ { dt = ts($1) } / step 5 mount/ { mt = ts($1) }
			/ step 7 / { tr = ts($1) } / step 9 verify/ { ve = ts($1) } / was down for / { end = ts($1) }
			END { if (lock && dt && mt && tr && ve && end) printf "%.2f %.2f %.2f %.2f %.2f %.2f\n", lock - (t0 % 86400), dt - lock, mt - dt, tr - mt, ve - tr, end - ve }'
	}
	step_names=(connect+locate+probe lock..preflight downtime mount+checks transfer verify+umount+lvremove)
	echo "== backup: $RUNS runs each of rsync -e ssh (reference), rsync -e 'bpc-ovz ssh', rsync -e 'bpc-ovz bench-exec', interleaved"
	for i in $(seq "$RUNS"); do
		rm -rf "$work/dest"; sync
		a=$(now); rc=0
		/usr/bin/time -f '%U %S' -o "$work/cpu.out" rsync -a -e "${HNSSH[*]}" root@127.0.0.1:/vz/private/101/ "$work/dest/" 2>>"$work/rsync.err" || rc=$?
		b=$(now)
		# 24: a file of the live tree vanished during the transfer (the running VE's ticker)
		case $rc in 0 | 24) ;; *) echo "bench: reference rsync failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
		sample backup_ref "$(elapsed "$a" "$b")"
		sample backup_ref_cpu "$(awk '{ printf "%.2f", $1 + $2 }' "$work/cpu.out")"

		rm -rf "$work/dest"; sync
		from=$(($(wc -l <"$work/bpc-ovz.log") + 1))
		a=$(now)
		/usr/bin/time -f '%U %S' -o "$work/cpu.out" rsync -a -e "$E_BPC" ve101.bench:/ "$work/dest/" 2>>"$work/rsync.err" ||
			{ echo "bench: bpc-ovz backup failed: $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
		b=$(now)
		sample backup_bpc_cpu "$(awk '{ printf "%.2f", $1 + $2 }' "$work/cpu.out")"
		[ -d "$work/dest/bench/d000" ] && [ "$(find "$work/dest/bench" -type f | wc -l)" = "$FILES" ] ||
			{ echo "bench: the bpc-ovz backup lacks files of the tree" >&2; exit 1; }
		sample backup_bpc "$(elapsed "$a" "$b")"
		snap_ms=$(last_down_line | sed -n 's/.*snapshot=\([0-9]*\)ms.*/\1/p')
		read -r -a st <<<"$(steps "$a" "$from")"
		bd="(step times not found in the log)"
		if [ "${#st[@]}" = 6 ]; then
			bd=''
			for k in 0 1 2 3 4 5; do
				sample "step_$k" "${st[$k]}"
				bd+="${bd:+, }${step_names[$k]} ${st[$k]}s"
			done
		fi

		rm -rf "$work/dest"; sync
		a=$(now); rc=0
		rsync -a -e "$BIN bench-exec --config $work/backup.yaml" hn1:/vz/private/101/ "$work/dest/" 2>>"$work/rsync.err" || rc=$?
		b=$(now)
		case $rc in 0 | 24) ;; *) echo "bench: rsync over bench-exec failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
		sample backup_relay "$(elapsed "$a" "$b")"
		echo "   run $i: rsync -e ssh $(tail -n 1 "$work/s/backup_ref")s (client CPU $(tail -n 1 "$work/s/backup_ref_cpu")s); bpc-ovz ssh $(tail -n 1 "$work/s/backup_bpc")s (client CPU $(tail -n 1 "$work/s/backup_bpc_cpu")s; its snapshot command ${snap_ms:-?} ms); bench-exec $(tail -n 1 "$work/s/backup_relay")s"
		echo "      bpc-ovz: $bd"
	done
fi

# ---------------------------------------------------------------------------- table
rows=()
row() { rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$@")"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.2f", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a <= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a < b) }'; }
yes_no() { if "$@"; then echo yes; else echo "**no**"; fi; }
for net in "${nets[@]}"; do
	for dir in down up; do
		b=$(med "bpc_${net}_$dir") s=$(med "ssh_${net}_$dir") r=$(ratio "$(med "bpc_${net}_$dir")" "$(med "ssh_${net}_$dir")")
		if [ "$net" = lo ]; then label="loopback" goal=1.0; else label="$((2 * DELAY_MS)) ms RTT" goal=2.0; fi
		[ "$dir" = down ] && what="download" || what="upload"
		row "relay $what, $label (MiB/s)" "$b" "$s" "${r}×" "≥ ${goal}×" "$(yes_no ge "$r" "$goal")"
	done
done
if [ "${#nets[@]}" -gt 0 ]; then
	rb=$(max <"$work/s/rss_bpc") rs=$(max <"$work/s/rss_ssh")
	row "peak RSS during the $RELAY_MIB MiB relays (MiB)" "$(awk -v k="$rb" 'BEGIN { printf "%.1f", k / 1024 }')" \
		"$(awk -v k="$rs" 'BEGIN { printf "%.1f", k / 1024 }')" "$(ratio "$rb" "$rs")×" "< 32 MiB" "$(yes_no lt "$rb" 32768)"
fi
if want startup; then
	row "startup: connect + auth + exec true (ms)" "$(med startup_bpc)" "$(med startup_ssh)" "$(ratio "$(med startup_bpc)" "$(med startup_ssh)")×" "—" "—"
fi
if want downtime; then
	db=$(med down_bpc) dr=$(med down_ref)
	over=$(awk -v a="$db" -v b="$dr" 'BEGIN { printf "%+.0f", a - b }')
	row "VE downtime (ms), vs the bare stop+snapshot+start" "$db" "$dr" "$(ratio "$db" "$dr")× (${over} ms)" "overhead < 100 ms" "$(yes_no lt "$over" 100)"
fi
if want backup; then
	rb=$(med backup_bpc) rr=$(med backup_ref) rt=$(med step_4) rl=$(med backup_relay)
	row "whole backup, $tree_desc (s)" "$rb" "$rr" "$(ratio "$rb" "$rr")×" "≤ 1.05×" "$(yes_no le "$(ratio "$rb" "$rr")" 1.05)"
	cb=$(med backup_bpc_cpu) cr=$(med backup_ref_cpu)
	row "… client-side CPU, rsync receiver + transport (s)" "$cb" "$cr" "$(ratio "$cb" "$cr")×" "—" "—"
	row "… its transfer step only (rsync from the snapshot) (s)" "$rt" "$rr" "$(ratio "$rt" "$rr")×" "—" "—"
	row "… same rsync of the live tree, bench-exec as -e (s)" "$rl" "$rr" "$(ratio "$rl" "$rr")×" "—" "—"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
total=$(elapsed "$T0" "$(now)")
mkdir -p target/bench
{
	echo "| metric | bpc-ovz | reference | ratio | goal | met? |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "Machine: $machine. Load average at start $load_start, at the end $load_end."
	echo "Medians of $RUNS interleaved runs (loopback relay: $LO_RUNS, startup: $STARTUP_RUNS, downtime: ${DOWNTIME_RUNS}); the bench took ${total%.*} s (build included) on $(date -u +%Y-%m-%d)."
	if [ "${#nets[@]}" -gt 0 ]; then
		line="Client CPU (user+sys) per GiB relayed, medians, bpc-ovz / OpenSSH:"
		for net in "${nets[@]}"; do for dir in down up; do
			line+=" $net $dir $(med "cpu_bpc_${net}_$dir") / $(med "cpu_ssh_${net}_$dir") s;"
		done; done
		echo "${line%;}."
	fi
	[ -n "${ciphers:-}" ] && echo "Ciphers negotiated with the relay sshd: $ciphers."
	if want wan; then
		echo "Upload over the emulated RTT is bounded by the server, not the client: OpenSSH's sshd gives a session channel a fixed 2 MiB window (CHAN_SES_WINDOW_DEFAULT in its channels.h), so whatever the client does at most 2 MiB are in flight per round trip, about $((2048 / (2 * DELAY_MS))) MiB/s at $((2 * DELAY_MS)) ms. Download is where the client's own window (bpc-ovz: 16 MiB) counts, and it is the direction of a backup."
	fi
	if want backup && [ -s "$work/s/step_0" ]; then
		line="Where a bpc-ovz backup's time goes (medians, s):"
		for k in 0 1 2 3 4 5; do line+=" ${step_names[$k]} $(med "step_$k")"; [ $k = 5 ] || line+=","; done
		echo "$line. On the simulated HN the snapshot is a copy of the whole LV image and lvremove deletes that copy; real LVM only writes metadata."
	fi
	if want downtime && [ -s "$work/s/down_bpc_reported" ]; then
		echo "bpc-ovz's own downtime log (vzctl stop to vzctl start returning, measured by its HN-side script): median $(med down_bpc_reported) ms."
	fi
	true
} >target/bench/latest.md
echo
echo "== results"
cat target/bench/latest.md
