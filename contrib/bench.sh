#!/usr/bin/env bash
# bpc-ovz benchmarks, side by side with a reference run in the same invocation (issue #7).
#
#   ./contrib/bench.sh            (as root; ~9-14 min; prints one table)
#
# What it starts, all on 127.0.0.1 on ports it picks, and stops by PID at the end:
#   - a plain OpenSSH sshd (relay throughput, startup, peak RSS);
#   - examples/delay_proxy.rs in front of that sshd, delaying each direction by 10 ms (an emulated
#     20 ms round trip; netem is not available here);
#   - one simulated HN (tests/simhn: real sshd, real ext4 on a loop device, stand-in vzctl/lvm2)
#     with VE 101, for the downtime and whole-backup rows;
#   - one VM hardware node (tests/vm, qemu TCG; its sshd forwarded to a 127.0.0.1 port) with VE 101,
#     for the "(real LVM, TCG VM)" rows, stopped by its qemu PID.
#
# Rows (medians of BENCH_RUNS runs, BENCH_LO_RUNS for the loopback relay, BENCH_BACKUP_RUNS for the
# whole backup, the two sides interleaved
# run by run):
#   relay        1 GiB through `bpc-ovz bench-exec` vs OpenSSH `ssh` to the same sshd, download
#                (remote `head -c N /dev/zero` -> local /dev/null) and upload (local -> remote
#                `wc -c`, which also checks the byte count), on loopback and through the proxy.
#                Uploads run `bench-exec --upload`: spread over ssh.upload_channels channels when
#                the round trip is >= 4 ms, as a restore's upload is (src/upload.rs).
#                `bench-exec` is a hidden bpc-ovz subcommand for this only: it connects to a
#                configured HN and runs COMMAND through the same transport and relay code a
#                transfer uses (src/bench_exec.rs). `bpc-ovz ssh` itself only runs rsync/tar
#                servers on VEs it locates.
#   startup      connect + auth + exec `true`, median of BENCH_STARTUP_RUNS.
#   peak RSS     /usr/bin/time's maximum RSS of the client over the 1 GiB relay runs.
#   downtime     per quiesce mode (BENCH_MODES, config `snapshot.modes: [MODE]`), bpc-ovz backups of
#                ve101:/etc/ interleaved with the same HN commands run back to back with nothing
#                in between (the bare reference):
#                  stop     VE 101's own down time (its ve-101.log: "stopped ... at T" to "started
#                           ... at T") vs `vzctl stop; lvcreate --snapshot; vzctl start`;
#                  suspend  the same log's "suspended ... at T" to "resumed at T" vs `vzctl chkpnt
#                           --suspend; lvcreate --snapshot; vzctl chkpnt --resume` (the stand-in
#                           SIGSTOPs/SIGCONTs the VE's init);
#                  live     no downtime by definition (checked: the VE's log shows no stop or
#                           suspend); the row shows the snapshot instead: bpc-ovz's snapshot step
#                           (its debug log, "step N downtime" to "step M mount": the HN-side
#                           running check + lvcreate + one round trip) vs a bare `lvcreate
#                           --snapshot` timed on the HN.
#                The difference is what bpc-ovz adds. contrib/bench-lib.sh reads the logs.
#   backup       a tree of BENCH_FILES files (~BENCH_TREE_MIB MiB, mixed sizes) in VE 101:
#                `rsync -a -e 'bpc-ovz ssh ...' ve:/ dest/` vs `rsync -a -e ssh
#                root@HN:/vz/private/101/ dest/` reading the live tree from the same HN's sshd,
#                with OpenSSH's default cipher and with aes128-gcm (the one bpc-ovz negotiates).
#                bpc-ovz runs with its VE -> HN cache filled by `bpc-ovz refresh` first (as a cron
#                job keeps it), so it asks the cached HN and probes the VE next to its vzlist.
#                Also: the client side's CPU (rsync receiver + transport, from /usr/bin/time, far
#                less sensitive to other load than wall time), the backup's transfer step alone
#                (from bpc-ovz's debug log), the same rsync of the live tree with bench-exec as the
#                -e transport (relay only, no snapshot), the reference rsync reading a snapshot of
#                the same LV that the bench makes and mounts by hand (live; set-up and removal not
#                timed: what reading any fresh snapshot costs), and where a backup's time goes. Each row
#                twice (BENCH_CACHE): cold, the page cache dropped before every run (a snapshot
#                is always read cold, and so is a nightly backup's tree among many VEs), and hot
#                (the reference reads its live tree from the page cache, the snapshot is cold).
#                The simulated lvcreate clones the LV image on a reflink XFS (metadata only, as
#                real LVM; BENCH_REFLINK=0 copies it) and lvremove deletes the clone.
#   (real LVM, TCG VM)  the whole backup again on one VM hardware node (tests/vm: qemu TCG guest,
#                real LVM thick snapshots, ext4, the stand-in vzctl), with a smaller tree
#                (BENCH_VM_FILES files, ~BENCH_VM_TREE_MIB MiB: a TCG guest moves 3-10 MB/s through
#                ssh, and each of its commands costs ~0.1-1 s; 3-5 min with the defaults): bpc-ovz
#                in stop mode and in live mode vs `rsync -a -e ssh root@VM:/vz/private/101/`
#                (OpenSSH defaults) and the same with `-c aes128-gcm@openssh.com` (the cipher
#                bpc-ovz negotiates; the guest's CPU is the bottleneck, so the cipher counts), all
#                interleaved, BENCH_VM_RUNS runs, each side with the guest's page cache dropped
#                first (a snapshot's cache starts cold); plus stop mode's VE downtime (the guest's
#                ve-101.log) vs the bare stop+lvcreate+start there. On by default when
#                qemu-system-x86_64 is installed and tests/vm/build-image yields the image (it
#                reuses target/vm-cache); BENCH_VM=0 skips it. The VM (tests/vm/vm-up, with
#                VM_OWNER_PID so its watchdog stops it if this script is killed) is stopped by its
#                PID with tests/vm/vm-down on any exit.
#
# Knobs (environment): BENCH_RUNS=3 BENCH_LO_RUNS=5 BENCH_BACKUP_RUNS=5 BENCH_RELAY_MIB=1024 BENCH_STARTUP_RUNS=10
# BENCH_DOWNTIME_RUNS=5 BENCH_MODES=stop,suspend,live BENCH_FILES=20000 BENCH_TREE_MIB=1024
# BENCH_CACHE=cold,hot (whole-backup rows with the page cache dropped before every run, and without)
# BENCH_DELAY_MS=10 BENCH_VM=1 BENCH_VM_RUNS=3 BENCH_VM_FILES=1000 BENCH_VM_TREE_MIB=40
# BENCH_ONLY=relay,wan,startup,downtime,backup,vm  BENCH_KEEP=1 (keep the work dir)
# BENCH_BUILD=0 (use target/release as it is instead of building it). BENCH_REFLINK=0 (keep the
# simulated HN on the work directory's filesystem instead of a reflink XFS on a loop device).
# BENCH_DIO=0 (buffered loop devices: reads through the simulated LVs fill two extra page caches).
# BENCH_DEST=disk (the received trees on the work directory's filesystem instead of a tmpfs).
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
BACKUP_RUNS=${BENCH_BACKUP_RUNS:-5}
RELAY_MIB=${BENCH_RELAY_MIB:-1024}
STARTUP_RUNS=${BENCH_STARTUP_RUNS:-10}
DOWNTIME_RUNS=${BENCH_DOWNTIME_RUNS:-5}
FILES=${BENCH_FILES:-20000}
TREE_MIB=${BENCH_TREE_MIB:-1024}
DELAY_MS=${BENCH_DELAY_MS:-10}
MODES=${BENCH_MODES:-stop,suspend,live}
CACHES=${BENCH_CACHE:-cold,hot}
VM_RUNS=${BENCH_VM_RUNS:-3}
VM_FILES=${BENCH_VM_FILES:-1000}
VM_TREE_MIB=${BENCH_VM_TREE_MIB:-40}
ONLY=${BENCH_ONLY:-relay,wan,startup,downtime,backup,vm}
[ "${BENCH_VM:-1}" = 0 ] && ONLY=${ONLY//vm/}
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
T0=$EPOCHREALTIME

if [ "${BENCH_BUILD:-1}" = 0 ] && [ -x target/release/bpc-ovz ] && [ -x target/release/examples/delay_proxy ]; then
	echo "== BENCH_BUILD=0: using the release binaries as built ($(date -r target/release/bpc-ovz -u '+%F %T UTC'))"
else
	echo "== building bpc-ovz and the delay proxy (release)"
	cargo build --release --quiet --bin bpc-ovz --example delay_proxy
fi
BIN=$top/target/release/bpc-ovz
PROXY=$top/target/release/examples/delay_proxy
SIMHN=$top/tests/simhn
VMS=$top/tests/vm
. "$top/contrib/bench-lib.sh"

work=$(mktemp -d /var/tmp/bpc-ovz-bench.XXXXXX)
sshd_pid='' proxy_pid='' hn='' vm_pid='' vm_master_pid='' store_mounted='' store_loop='' dest_mounted=''
cleanup() {
	set +e
	[ -n "$vm_master_pid" ] && { kill "$vm_master_pid"; wait "$vm_master_pid"; } 2>/dev/null
	[ -n "${vm_ctl:-}" ] && rm -rf "$vm_ctl"
	# The VM this script started, by its PID (vm-down checks that PID is the qemu with our pidfile);
	# if vm-up was interrupted before printing it, the PID from its pidfile.
	[ -z "$vm_pid" ] && [ -s "$work/vm/qemu.pid" ] && read -r vm_pid <"$work/vm/qemu.pid"
	[ -n "$vm_pid" ] && { "$VMS/vm-down" "$vm_pid" >/dev/null || echo "bench: could not stop VM qemu $vm_pid" >&2; }
	[ -n "$proxy_pid" ] && { kill "$proxy_pid"; wait "$proxy_pid"; } 2>/dev/null
	[ -n "$sshd_pid" ] && { kill "$sshd_pid"; wait "$sshd_pid"; } 2>/dev/null
	[ -n "$hn" ] && "$SIMHN/hn-down" "$hn" >/dev/null 2>&1
	[ -n "$dest_mounted" ] && umount "$work/destfs" 2>/dev/null
	[ -n "$store_mounted" ] && umount "$work/store" 2>/dev/null
	[ -n "$store_loop" ] && losetup -d "$store_loop" 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Where every run's received tree goes (both sides of every row write the same tree there).
# BENCH_DEST=tmpfs (default): a tmpfs, so the rows measure the transports and the HN side; on an
# ext4 the receiving side's own cost swings by seconds from one run to the next (perf: ext4's
# inode allocator scanning for recently deleted inodes after the previous run's rm -rf).
# BENCH_DEST=disk: the work directory's filesystem.
dest=$work/dest
if [ "${BENCH_DEST:-tmpfs}" = tmpfs ]; then
	mkdir -p "$work/destfs" && mount -t tmpfs -o size=75% tmpfs "$work/destfs" ||
		{ echo "bench: cannot mount a tmpfs for the received trees (BENCH_DEST=disk avoids it)" >&2; exit 1; }
	dest_mounted=1 dest=$work/destfs/dest
fi

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
# CPU time stolen by the hypervisor over the whole bench (field 8 of /proc/stat's cpu line): on a
# shared VM host, runs during high steal are slow on both sides and noisy.
cpu_ticks() { awk '/^cpu /{ print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
read -r steal_start ticks_start <<<"$(cpu_ticks)"
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
			# --upload: spread over ssh.upload_channels when the round trip calls for it, as a restore
			out=$(head -c "$bytes" /dev/zero | /usr/bin/time -f '%e %M %U %S' -o "$tf" "$BIN" bench-exec --config "$work/relay.yaml" --upload "$net" "$up")
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
	# The simulated HN lives on an XFS with reflink (a sparse image on a loop device) when this
	# machine can make one: the stand-in lvcreate then clones the origin image (cp --reflink) in
	# O(metadata), as real LVM creates a snapshot, instead of copying every byte of it inside the
	# downtime. BENCH_REFLINK=0 keeps it on the work directory's own filesystem.
	hn=$work/hn1 store_note="the work directory's filesystem (LV images copied byte by byte)"
	# BENCH_DIO=1 (default): the store's loop device and the simulated LVs' read their images with
	# O_DIRECT, so reading a VE's tree fills one page cache (its filesystem's), as on real LVM,
	# instead of three (filesystem, LV image, store image).
	dio=()
	[ "${BENCH_DIO:-1}" = 1 ] && dio=(--direct-io=on)
	if [ "${BENCH_REFLINK:-1}" = 1 ] && mkdir -p "$work/store" && truncate -s 16G "$work/store.img" &&
		mkfs.xfs -q -f -m reflink=1 "$work/store.img" >/dev/null 2>&1 &&
		store_loop=$(losetup "${dio[@]}" -f --show "$work/store.img") &&
		mount "$store_loop" "$work/store" 2>/dev/null; then
		store_mounted=1 hn=$work/store/hn1
		store_note="an XFS with reflink (snapshots cloned, not copied)"
	fi
	[ "${BENCH_DIO:-1}" = 1 ] && store_note="$store_note; loop devices with direct I/O (one page cache, as LVM)"
	echo "== simulated HN storage: $store_note"
	hport=$(free_port)
	echo "== simulated HN hn1 on 127.0.0.1:$hport"
	# (tests/simhn/SPEC.md: /etc/vzsim/loop_direct_io; hn-up keeps what it finds)
	if [ "${BENCH_DIO:-1}" = 1 ]; then mkdir -p "$hn/fs/etc-vzsim" && : >"$hn/fs/etc-vzsim/loop_direct_io"; fi
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
	# The VE -> HN cache, as an admin's cron job keeps it (README: refresh): backups ask the cached
	# HN, its probe next to its vzlist.
	"$BIN" --config "$work/backup.yaml" refresh >/dev/null ||
		{ echo "bench: bpc-ovz refresh failed" >&2; exit 1; }
	velog=$hn/fs/var-log-vzsim/ve-101.log # the VE's own log (ve_downtime reads it)
	last_down_line() { grep -o 'was down for [0-9]* ms.*' "$work/bpc-ovz.log" | tail -n 1; }
fi

if want downtime; then
	IFS=, read -r -a modes <<<"$MODES"
	for m in "${modes[@]}"; do
		case $m in stop | suspend | live) ;; *) echo "bench: BENCH_MODES: $m is not stop, suspend or live" >&2; exit 1 ;; esac
		sed "s/^  size: 256M\$/&\n  modes: [$m]/" "$work/backup.yaml" >"$work/backup-$m.yaml"
		grep -q "^  modes: \[$m\]\$" "$work/backup-$m.yaml" || { echo "bench: could not write backup-$m.yaml" >&2; exit 1; }
	done
	# The bare reference of each mode: the HN commands back to back. Live prints the lvcreate's ms.
	bare_ref() {
		case $1 in
		stop) "$SIMHN/hn-exec" "$hn" sh -c 'vzctl --skiplock stop 101 >/dev/null 2>&1; lvcreate --size 256m --snapshot --name benchref vg-data/vz >/dev/null; vzctl --skiplock start 101 >/dev/null 2>&1' ;;
		suspend) "$SIMHN/hn-exec" "$hn" sh -c 'vzctl --skiplock chkpnt 101 --suspend >/dev/null 2>&1; lvcreate --size 256m --snapshot --name benchref vg-data/vz >/dev/null; vzctl --skiplock chkpnt 101 --resume >/dev/null 2>&1' ;;
		live) "$SIMHN/hn-exec" "$hn" bash -c 'a=$EPOCHREALTIME; lvcreate --size 256m --snapshot --name benchref vg-data/vz >/dev/null; b=$EPOCHREALTIME; echo $(( (10#${b//[!0-9]/} - 10#${a//[!0-9]/}) / 1000 ))' ;;
		esac
	}
	# What a mode must leave in the VE's log: stop and suspend their own kind, live nothing.
	want_kind() { case $1 in live) echo none ;; *) echo "$1" ;; esac; }
	echo "== downtime: $DOWNTIME_RUNS runs of each mode ($MODES): bpc-ovz backups of ve101:/etc/ vs the bare commands, interleaved"
	for i in $(seq "$DOWNTIME_RUNS"); do
		for m in "${modes[@]}"; do
			from=$(wc -l <"$velog")
			lv_ms=$(bare_ref "$m")
			read -r ms kind <<<"$(ve_downtime "$velog" "$from")"
			[ "$kind" = "$(want_kind "$m")" ] || { echo "bench: bare $m: the VE's log shows ${kind:-nothing} ($ms ms)" >&2; exit 1; }
			sample "down_ref_$m" "$ms"
			[ "$m" = live ] && sample snap_ref_live "$lv_ms"
			"$SIMHN/hn-exec" "$hn" lvremove -f vg-data/benchref >/dev/null
			rm -rf "$dest"
			touch "$work/bpc-ovz.log"
			from=$(wc -l <"$velog") lfrom=$(wc -l <"$work/bpc-ovz.log")
			rsync -a -e "$BIN ssh --config $work/backup-$m.yaml -l root" ve101.bench:/etc/ "$dest/" 2>>"$work/rsync.err" ||
				{ echo "bench: bpc-ovz backup ($m mode) failed: $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
			read -r bms bkind <<<"$(ve_downtime "$velog" "$from")"
			[ "$bkind" = "$(want_kind "$m")" ] || { echo "bench: bpc-ovz in $m mode: the VE's log shows ${bkind:-nothing} ($bms ms)" >&2; exit 1; }
			sample "down_bpc_$m" "$bms"
			rep=$(reported_downtime "$work/bpc-ovz.log" "$lfrom")
			[ -n "$rep" ] && sample "down_bpc_reported_$m" "${rep%% *}"
			if [ "$m" = live ]; then
				sms=$(step_gap_ms "$work/bpc-ovz.log" "$lfrom" downtime mount)
				sample snap_bpc_live "$sms"
				echo "   run $i, live: VE not down (its log: $kind / $bkind); snapshot: bare lvcreate $lv_ms ms, bpc-ovz's snapshot step $sms ms"
			else
				echo "   run $i, $m: bare commands $ms ms; bpc-ovz $bms ms (bpc-ovz's own log: ${rep:-nothing})"
			fi
		done
	done
fi

# gen.pl DIR FILES MIB: the test tree (generated on the simulated HN for the backup rows, on this
# machine for the VM rows).
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

# Step times of one bpc-ovz run from its debug log, in seconds: connect+locate+probe, lock..preflight,
# downtime step (stop+snapshot; the VE's start runs on in the background), mount+checks, transfer,
# verify+started+umount+lvremove (step `started` waits for that start; the log's clock is UTC; the start is
# the epoch time the rsync was started; the end is the summary line "was down for" or, in live
# mode, "live mode: VE ..."). Prints nothing if the steps are not in the log.
steps() { # START_EPOCH LOG_FROM_LINE [LOG]
	tail -n +"$2" "${3:-$work/bpc-ovz.log}" | awk -v t0="$1" '
		function ts(s,  x) { split(substr(s, 12, 15), x, ":"); return x[1] * 3600 + x[2] * 60 + x[3] }
		/ step 1 / { lock = ts($1) } / step 4 downtime/ { dt = ts($1) } / step 5 mount/ { mt = ts($1) }
		/ step 7 / { tr = ts($1) } / step 9 verify/ { ve = ts($1) } / was down for | live mode: VE / { end = ts($1) }
		END { if (lock && dt && mt && tr && ve && end) printf "%.2f %.2f %.2f %.2f %.2f %.2f\n", lock - (t0 % 86400), dt - lock, mt - dt, tr - mt, ve - tr, end - ve }'
}
step_names=(connect+locate+probe lock..preflight downtime-step mount+checks transfer verify+started+umount+lvremove)

if want backup; then
	echo "== backup: generating $FILES files, ~$TREE_MIB MiB in VE 101 (/bench)"
	tree_desc=$("$SIMHN/hn-exec" "$hn" perl /dev/stdin /vz/private/101/bench "$FILES" "$TREE_MIB" <"$work/gen.pl")
	echo "   $tree_desc; LV: $("$SIMHN/hn-exec" "$hn" df -h --output=size,used /vz | tail -n 1 | awk '{ print $1 " (" $2 " used)" }')"
	sync
	# drop: before a cold run, the page cache goes (a snapshot is always read cold; a nightly backup of
	# one of many VEs reads its tree cold too; hot runs leave the reference's live tree cached).
	# Every run starts with the previous run's output written back (sync), else it pays for it.
	drop() { sync; if [ "$1" = cold ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }
	IFS=, read -r -a caches <<<"$CACHES"
	touch "$work/bpc-ovz.log" # (the downtime rows, when run, have written it already)
	for c in "${caches[@]}"; do
		case $c in hot | cold) ;; *) echo "bench: BENCH_CACHE: $c is not hot or cold" >&2; exit 1 ;; esac
		echo "== backup ($c page cache): $BACKUP_RUNS runs each of rsync -e ssh (reference, OpenSSH's default cipher and aes128-gcm), rsync -e 'bpc-ovz ssh', rsync -e 'bpc-ovz bench-exec', interleaved"
		for i in $(seq "$BACKUP_RUNS"); do
			rm -rf "$dest"; drop "$c"
			a=$(now); rc=0
			/usr/bin/time -f '%U %S' -o "$work/cpu.out" rsync -a -e "${HNSSH[*]}" root@127.0.0.1:/vz/private/101/ "$dest/" 2>>"$work/rsync.err" || rc=$?
			b=$(now)
			# 24: a file of the live tree vanished during the transfer (the running VE's ticker)
			case $rc in 0 | 24) ;; *) echo "bench: reference rsync failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
			sample "backup_ref_$c" "$(elapsed "$a" "$b")"
			sample "backup_ref_cpu_$c" "$(awk 'END { printf "%.2f", $1 + $2 }' "$work/cpu.out")"

			# The same with bpc-ovz's cipher (OpenSSH's default, chacha20-poly1305, costs more CPU).
			rm -rf "$dest"; drop "$c"
			a=$(now); rc=0
			rsync -a -e "${HNSSH[*]} -c aes128-gcm@openssh.com" root@127.0.0.1:/vz/private/101/ "$dest/" 2>>"$work/rsync.err" || rc=$?
			b=$(now)
			case $rc in 0 | 24) ;; *) echo "bench: reference rsync (aes128-gcm) failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
			sample "backup_refgcm_$c" "$(elapsed "$a" "$b")"

			rm -rf "$dest"; drop "$c"
			from=$(($(wc -l <"$work/bpc-ovz.log") + 1))
			a=$(now)
			/usr/bin/time -f '%U %S' -o "$work/cpu.out" rsync -a -e "$E_BPC" ve101.bench:/ "$dest/" 2>>"$work/rsync.err" ||
				{ echo "bench: bpc-ovz backup failed: $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
			b=$(now)
			sample "backup_bpc_cpu_$c" "$(awk 'END { printf "%.2f", $1 + $2 }' "$work/cpu.out")"
			[ -d "$dest/bench/d000" ] && [ "$(find "$dest/bench" -type f | wc -l)" = "$FILES" ] ||
				{ echo "bench: the bpc-ovz backup lacks files of the tree" >&2; exit 1; }
			sample "backup_bpc_$c" "$(elapsed "$a" "$b")"
			snap_ms=$(last_down_line | sed -n 's/.*snapshot=\([0-9]*\)ms.*/\1/p')
			read -r -a st <<<"$(steps "$a" "$from")"
			bd="(step times not found in the log)"
			if [ "${#st[@]}" = 6 ]; then
				bd=''
				for k in 0 1 2 3 4 5; do
					sample "step_${k}_$c" "${st[$k]}"
					bd+="${bd:+, }${step_names[$k]} ${st[$k]}s"
				done
			fi

			rm -rf "$dest"; drop "$c"
			a=$(now); rc=0
			rsync -a -e "$BIN bench-exec --config $work/backup.yaml" hn1:/vz/private/101/ "$dest/" 2>>"$work/rsync.err" || rc=$?
			b=$(now)
			case $rc in 0 | 24) ;; *) echo "bench: rsync over bench-exec failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
			sample "backup_relay_$c" "$(elapsed "$a" "$b")"

			# The reference again, reading a snapshot of the same LV made and mounted by hand (live,
			# as an admin would; not timed), so that it too reads a fresh snapshot's cold page cache.
			rm -rf "$dest"
			"$SIMHN/hn-exec" "$hn" sh -c 'lvcreate --size 256m --snapshot --name benchsnap vg-data/vz >/dev/null &&
				mkdir -p /run/bench-snap && mount -t ext4 -o noatime /dev/vg-data/benchsnap /run/bench-snap' ||
				{ echo "bench: cannot make and mount a snapshot by hand" >&2; exit 1; }
			drop "$c"
			a=$(now); rc=0
			rsync -a -e "${HNSSH[*]}" root@127.0.0.1:/run/bench-snap/private/101/ "$dest/" 2>>"$work/rsync.err" || rc=$?
			b=$(now)
			"$SIMHN/hn-exec" "$hn" sh -c 'umount /run/bench-snap && lvremove -f vg-data/benchsnap >/dev/null' ||
				{ echo "bench: cannot remove the snapshot made by hand" >&2; exit 1; }
			[ "$rc" = 0 ] || { echo "bench: rsync of the snapshot made by hand failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
			sample "backup_refsnap_$c" "$(elapsed "$a" "$b")"
			echo "   run $i: rsync -e ssh $(tail -n 1 "$work/s/backup_ref_$c")s (client CPU $(tail -n 1 "$work/s/backup_ref_cpu_$c")s; aes128-gcm $(tail -n 1 "$work/s/backup_refgcm_$c")s; of a snapshot made by hand $(tail -n 1 "$work/s/backup_refsnap_$c")s); bpc-ovz ssh $(tail -n 1 "$work/s/backup_bpc_$c")s (client CPU $(tail -n 1 "$work/s/backup_bpc_cpu_$c")s; its snapshot command ${snap_ms:-?} ms); bench-exec $(tail -n 1 "$work/s/backup_relay_$c")s"
			echo "      bpc-ovz: $bd"
		done
	done
fi

# ---------------------------------------------------------------------------- VM hardware node
# One qemu (TCG) guest with real LVM; see the header. vm_skip says why the rows are missing.
vm_skip=''
if want vm; then
	if ! command -v qemu-system-x86_64 >/dev/null; then
		vm_skip="qemu-system-x86_64 is not installed (contrib/install-deps.sh installs it)"
	elif ! img=$("$VMS/build-image" "$top/target/vm-cache" 2>"$work/build-image.err"); then
		vm_skip="tests/vm/build-image failed: $(tail -n 2 "$work/build-image.err" | tr '\n' ' ')"
	fi
	[ -n "$vm_skip" ] && echo "== VM rows skipped: $vm_skip"
fi
if want vm && [ -z "$vm_skip" ]; then
	echo "== VM hardware node (qemu TCG, real LVM): booting"
	a=$(now)
	# VM_OWNER_PID: vm-up's watchdog stops the VM if this script dies without running cleanup.
	if VM_OWNER_PID=$$ "$VMS/vm-up" "$img" "$work/vm" vm1 vg-data ext4 >"$work/vm-up.out" 2>"$work/vm-up.err"; then
		read -r vm_pid vm_port <"$work/vm-up.out"
	else
		vm_skip="tests/vm/vm-up failed: $(grep -m 1 vm-up: "$work/vm-up.err")"
		echo "== VM rows skipped: $vm_skip"
		tail -n 15 "$work/vm-up.err" | sed 's/^/   /'
	fi
fi
if want vm && [ -z "$vm_skip" ]; then
	echo "   qemu pid $vm_pid, sshd on 127.0.0.1:$vm_port, up in $(elapsed "$a" "$(now)") s"
	VMKEY=$img/id_ed25519 VMKH=$work/vm/known_hosts
	VMSSH=(ssh -F /dev/null -p "$vm_port" -i "$VMKEY" -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes
		-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile="$VMKH"
		-o UpdateHostKeys=no -o LogLevel=ERROR -l root)
	# The bench's own commands share one login (~0.1 s each instead of ~1 s under TCG) and are kept
	# out of the guest's exec.log; the measured rsyncs log in afresh, as bpc-ovz does.
	vm_ctl=$(mktemp -d /tmp/bpcovz-bench.XXXXXX)
	VMH=("${VMSSH[@]}" -c aes128-gcm@openssh.com -o SetEnv=VZSIM_HARNESS=1 -o ControlPath="$vm_ctl/m")
	"${VMH[@]}" -M -N -o ControlPersist=no 127.0.0.1 </dev/null >/dev/null 2>"$work/vm-master.err" &
	vm_master_pid=$!
	for _ in $(seq 600); do [ -S "$vm_ctl/m" ] && break; kill -0 "$vm_master_pid" 2>/dev/null || break; sleep 0.1; done
	[ -S "$vm_ctl/m" ] || { echo "bench: no ssh master to the VM: $(cat "$work/vm-master.err")" >&2; exit 1; }
	vmx() { "${VMH[@]}" -o ControlMaster=no 127.0.0.1 -- "$1"; }
	vm_velog() { vmx 'cat /var/log/vzsim/ve-101.log' >"$work/vm-ve.log"; wc -l <"$work/vm-ve.log"; }
	vmx 've-create-local 101 ve101.bench 10.77.0.101 yes && vzctl start 101 >/dev/null'
	perl "$work/gen.pl" "$work/vmtree" "$VM_FILES" "$VM_TREE_MIB" >"$work/vmtree.desc"
	vm_tree_desc=$(cat "$work/vmtree.desc")
	echo "   copying $vm_tree_desc into VE 101 (/bench)"
	a=$(now)
	rsync -a -e "${VMH[*]} -o ControlMaster=no" "$work/vmtree/" 127.0.0.1:/vz/private/101/bench/
	vmx sync
	rm -rf "$work/vmtree"
	echo "   copied in $(elapsed "$a" "$(now)") s; /vz: $(vmx 'df -h /vz | tail -n 1' | awk '{ print $3 " used of " $2 }')"
	for m in stop live; do
		cat >"$work/vm-$m.yaml" <<-EOF
			hns:
			  - host: 127.0.0.1
			    port: $vm_port
			    name: vm1
			ssh:
			  identity_files: [$VMKEY]
			  known_hosts: [$VMKH]
			  agent: false
			  connect_timeout: 60s
			locate_timeout: 120s
			snapshot:
			  size: 128M
			  modes: [$m]
			log:
			  file: $work/vm-bpc-ovz.log
			  level: debug
			cache: $work/vm-cache.json
		EOF
	done
	touch "$work/vm-bpc-ovz.log"
	"$BIN" --config "$work/vm-stop.yaml" refresh >/dev/null ||
		{ echo "bench: bpc-ovz refresh (VM) failed" >&2; exit 1; }
	vm_ref() { # NAME [SSH OPTION...]: rsync -e ssh of the live tree straight from the VM's sshd
		local name=$1 a b rc=0
		shift
		rm -rf "$dest"
		a=$(now)
		rsync -a -e "${VMSSH[*]} $*" root@127.0.0.1:/vz/private/101/ "$dest/" 2>>"$work/rsync.err" || rc=$?
		b=$(now)
		case $rc in 0 | 24) ;; *) echo "bench: rsync -e ssh from the VM failed ($rc): $(tail -n 3 "$work/rsync.err")" >&2; exit 1 ;; esac
		sample "$name" "$(elapsed "$a" "$b")"
	}
	vm_bpc() { # MODE: a whole bpc-ovz backup from the VM
		local m=$1 a b from lfrom n bms bkind st k
		rm -rf "$dest"
		from=$(vm_velog) lfrom=$(wc -l <"$work/vm-bpc-ovz.log")
		a=$(now)
		rsync -a -e "$BIN ssh --config $work/vm-$m.yaml -l root" ve101.bench:/ "$dest/" 2>>"$work/rsync.err" ||
			{ echo "bench: bpc-ovz backup from the VM ($m mode) failed: $(tail -n 3 "$work/rsync.err")" >&2; exit 1; }
		b=$(now)
		n=$(find "$dest/bench" -type f 2>/dev/null | wc -l)
		[ "$n" = "$VM_FILES" ] || { echo "bench: the bpc-ovz backup from the VM has $n of the tree's $VM_FILES files" >&2; exit 1; }
		sample "vm_bpc_$m" "$(elapsed "$a" "$b")"
		read -r -a st <<<"$(steps "$a" "$((lfrom + 1))" "$work/vm-bpc-ovz.log")"
		if [ "${#st[@]}" = 6 ]; then
			for k in 0 1 2 3 4 5; do sample "vm_step_${m}_$k" "${st[$k]}"; done
		fi
		vm_velog >/dev/null
		read -r bms bkind <<<"$(ve_downtime "$work/vm-ve.log" "$from")"
		[ "$bkind" = "$(case $m in live) echo none ;; *) echo "$m" ;; esac)" ] ||
			{ echo "bench: bpc-ovz in $m mode on the VM: the VE's log shows ${bkind:-nothing} ($bms ms)" >&2; exit 1; }
		sample "vm_down_bpc_$m" "$bms"
		if [ "$m" = live ]; then
			sample vm_snap_bpc_live "$(step_gap_ms "$work/vm-bpc-ovz.log" "$lfrom" downtime mount)"
		else
			vm_rep=$(reported_downtime "$work/vm-bpc-ovz.log" "$lfrom")
			[ -n "$vm_rep" ] && sample "vm_down_bpc_reported_$m" "${vm_rep%% *}"
		fi
	}
	# Every measured side starts with the guest's page cache dropped: a snapshot is a block device
	# of its own whose cache starts cold, where the live tree would be cached from the run before.
	cold() { vmx 'sync; echo 3 >/proc/sys/vm/drop_caches'; }
	echo "== VM backup: $VM_RUNS runs each of rsync -e ssh (OpenSSH defaults; aes128-gcm), bpc-ovz stop mode, bpc-ovz live mode, bare stop+lvcreate+start, interleaved, the guest's page cache dropped before each"
	for i in $(seq "$VM_RUNS"); do
		cold; vm_ref vm_ref
		cold; vm_ref vm_ref_gcm -c aes128-gcm@openssh.com
		cold; vm_bpc stop
		cold; vm_bpc live
		from=$(vm_velog)
		vmx 'vzctl --skiplock stop 101 >/dev/null 2>&1; lvcreate -q -s -L 128M -n benchref vg-data/vz >/dev/null; vzctl --skiplock start 101 >/dev/null 2>&1; lvremove -q -f vg-data/benchref >/dev/null'
		vm_velog >/dev/null
		read -r ms kind <<<"$(ve_downtime "$work/vm-ve.log" "$from")"
		[ "$kind" = stop ] || { echo "bench: bare stop on the VM: the VE's log shows ${kind:-nothing}" >&2; exit 1; }
		sample vm_down_ref_stop "$ms"
		echo "   run $i: rsync -e ssh $(tail -n 1 "$work/s/vm_ref")s, with aes128-gcm $(tail -n 1 "$work/s/vm_ref_gcm")s; bpc-ovz stop $(tail -n 1 "$work/s/vm_bpc_stop")s (VE down $(tail -n 1 "$work/s/vm_down_bpc_stop") ms; its log: ${vm_rep:-nothing}), live $(tail -n 1 "$work/s/vm_bpc_live")s (snapshot step $(tail -n 1 "$work/s/vm_snap_bpc_live") ms); bare stop+lvcreate+start: VE down $ms ms"
		for m in stop live; do
			[ -s "$work/s/vm_step_${m}_0" ] || continue
			line=''
			for k in 0 1 2 3 4 5; do line+="${line:+, }${step_names[$k]} $(tail -n 1 "$work/s/vm_step_${m}_$k")s"; done
			echo "      bpc-ovz $m: $line"
		done
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
	diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else printf "%+.0f", a - b }'; }
	for m in "${modes[@]}"; do
		case $m in
		stop | suspend)
			db=$(med "down_bpc_$m") dr=$(med "down_ref_$m") over=$(diff_ms "$(med "down_bpc_$m")" "$(med "down_ref_$m")")
			[ "$m" = stop ] && bare="stop+snapshot+start" || bare="suspend+snapshot+resume"
			row "VE downtime, $m mode (ms), vs the bare $bare" "$db" "$dr" "$(ratio "$db" "$dr")× (${over} ms)" "overhead < 100 ms" "$(yes_no lt "$over" 100)"
			;;
		live)
			# Every live sample was checked to be "0 none" in the VE's log (the run stops otherwise).
			sb=$(med snap_bpc_live) sr=$(med snap_ref_live) over=$(diff_ms "$(med snap_bpc_live)" "$(med snap_ref_live)")
			row "live mode: VE downtime $(med down_bpc_live) ms (its log); snapshot step (ms), vs a bare lvcreate --snapshot" "$sb" "$sr" "$(ratio "$sb" "$sr")× (${over} ms)" "VE not down" "$(yes_no test "$(sort -u "$work/s/down_bpc_live")" = 0)"
			;;
		esac
	done
fi
if want backup; then
	for c in "${caches[@]}"; do
		[ "$c" = cold ] && how="cold page cache (both read from disk)" || how="hot page cache (the reference's live tree cached, the snapshot cold)"
		rb=$(med "backup_bpc_$c") rr=$(med "backup_ref_$c") rt=$(med "step_4_$c") rl=$(med "backup_relay_$c")
		row "whole backup, $tree_desc, $how (s)" "$rb" "$rr" "$(ratio "$rb" "$rr")×" "≤ 1.05×" "$(yes_no le "$(ratio "$rb" "$rr")" 1.05)"
		rg=$(med "backup_refgcm_$c")
		row "… the same vs rsync -e 'ssh -c aes128-gcm@openssh.com' (s)" "$rb" "$rg" "$(ratio "$rb" "$rg")×" "≤ 1.05×" "$(yes_no le "$(ratio "$rb" "$rg")" 1.05)"
		cb=$(med "backup_bpc_cpu_$c") cr=$(med "backup_ref_cpu_$c")
		row "… client-side CPU, rsync receiver + transport (s)" "$cb" "$cr" "$(ratio "$cb" "$cr")×" "—" "—"
		row "… its transfer step only (rsync from the snapshot) (s)" "$rt" "$rr" "$(ratio "$rt" "$rr")×" "—" "—"
		row "… same rsync of the live tree, bench-exec as -e (s)" "$rl" "$rr" "$(ratio "$rl" "$rr")×" "—" "—"
		rs=$(med "backup_refsnap_$c")
		row "… vs rsync -e ssh of a snapshot of the same LV made and mounted by hand (its lvcreate, mount, umount, lvremove not timed) (s)" "$rb" "$rs" "$(ratio "$rb" "$rs")×" "—" "—"
		row "… its transfer step only, vs that (s)" "$rt" "$rs" "$(ratio "$rt" "$rs")×" "—" "—"
	done
fi
if want vm && [ -z "$vm_skip" ]; then
	rr=$(med vm_ref) rg=$(med vm_ref_gcm)
	for m in stop live; do
		rb=$(med "vm_bpc_$m")
		row "whole backup, $m mode, $vm_tree_desc (s) (real LVM, TCG VM)" "$rb" "$rr" "$(ratio "$rb" "$rr")×" "≤ 1.05×" "$(yes_no le "$(ratio "$rb" "$rr")" 1.05)"
		row "… the same vs rsync -e 'ssh -c aes128-gcm@openssh.com' (s) (real LVM, TCG VM)" "$rb" "$rg" "$(ratio "$rb" "$rg")×" "≤ 1.05×" "$(yes_no le "$(ratio "$rb" "$rg")" 1.05)"
	done
	db=$(med vm_down_bpc_stop) dr=$(med vm_down_ref_stop)
	over=$(awk -v a="$db" -v b="$dr" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else printf "%+.0f", a - b }')
	row "VE downtime, stop mode (ms), vs the bare stop+snapshot+start (real LVM, TCG VM)" "$db" "$dr" "$(ratio "$db" "$dr")× (${over} ms)" "—" "—"
	row "live mode: VE downtime $(med vm_down_bpc_live) ms (its log); snapshot step (ms) (real LVM, TCG VM)" "$(med vm_snap_bpc_live)" "—" "—" "VE not down" "$(yes_no test "$(sort -u "$work/s/vm_down_bpc_live")" = 0)"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
read -r steal_end ticks_end <<<"$(cpu_ticks)"
steal_pct=$(awk -v a="$steal_start" -v b="$steal_end" -v t0="$ticks_start" -v t1="$ticks_end" 'BEGIN { printf "%.1f", (t1 > t0) ? (b - a) * 100 / (t1 - t0) : 0 }')
total=$(elapsed "$T0" "$(now)")
mkdir -p target/bench
{
	echo "| metric | bpc-ovz | reference | ratio | goal | met? |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "Machine: $machine. Load average at start $load_start, at the end $load_end; CPU steal (hypervisor) over the bench: $steal_pct %."
	echo "Medians of $RUNS interleaved runs (loopback relay: $LO_RUNS, whole backup: $BACKUP_RUNS, startup: $STARTUP_RUNS, downtime: $DOWNTIME_RUNS per mode, VM: $VM_RUNS); the bench took ${total%.*} s (build included) on $(date -u +%Y-%m-%d)."
	if [ "${#nets[@]}" -gt 0 ]; then
		line="Client CPU (user+sys) per GiB relayed, medians, bpc-ovz / OpenSSH:"
		for net in "${nets[@]}"; do for dir in down up; do
			line+=" $net $dir $(med "cpu_bpc_${net}_$dir") / $(med "cpu_ssh_${net}_$dir") s;"
		done; done
		echo "${line%;}."
	fi
	[ -n "${ciphers:-}" ] && echo "Ciphers negotiated with the relay sshd: $ciphers."
	[ -n "${store_note:-}" ] && echo "Simulated HN storage: $store_note."
	if [ -n "$dest_mounted" ]; then echo "Received trees: on a tmpfs (BENCH_DEST=tmpfs)."; else echo "Received trees: on the work directory's filesystem (BENCH_DEST=disk)."; fi
	if want wan; then
		echo "Upload over the emulated RTT: OpenSSH's sshd gives a session channel a fixed 2 MiB window (CHAN_SES_WINDOW_DEFAULT in its channels.h), so one channel has at most 2 MiB in flight per round trip, about $((2048 / (2 * DELAY_MS))) MiB/s at $((2 * DELAY_MS)) ms, whatever the client; bpc-ovz spreads an upload (a restore) over ssh.upload_channels channels (default 4) when the round trip is >= 4 ms. Download is where the client's own window (bpc-ovz: 16 MiB) counts, and it is the direction of a backup."
	fi
	if want backup && [ -s "$work/s/step_0_${caches[0]}" ]; then
		line="Where a bpc-ovz backup's time goes (medians, s):"
		for c in "${caches[@]}"; do
			line+=" $c:"
			for k in 0 1 2 3 4 5; do line+=" ${step_names[$k]} $(med "step_${k}_$c")"; [ $k = 5 ] || line+=","; done
			line+=";"
		done
		line=${line%;}
		if [ -n "$store_mounted" ]; then
			echo "$line. The simulated HN's snapshot is a reflink clone of the LV image (metadata only, like real LVM's); lvremove deletes the clone."
		else
			echo "$line. On the simulated HN the snapshot is a copy of the whole LV image and lvremove deletes that copy; real LVM only writes metadata."
		fi
	fi
	if want downtime; then
		line=''
		for m in stop suspend; do
			[ -s "$work/s/down_bpc_reported_$m" ] && line+="${line:+, }$m $(med "down_bpc_reported_$m") ms"
		done
		[ -n "$line" ] && echo "bpc-ovz's own downtime log (its HN-side script, from quiescing the VE to the start or resume returning), medians: $line."
	fi
	if want vm; then
		if [ -n "$vm_skip" ]; then
			echo "Real-LVM VM rows: not measured: $vm_skip."
		else
			for m in stop live; do
				[ -s "$work/s/vm_step_${m}_0" ] || continue
				line="Where a bpc-ovz backup's time goes on the VM, $m mode (medians, s):"
				for k in 0 1 2 3 4 5; do line+=" ${step_names[$k]} $(med "vm_step_${m}_$k")"; [ $k = 5 ] || line+=","; done
				echo "$line."
			done
			echo "Real-LVM VM rows: one qemu TCG guest (tests/vm, 1 vCPU emulated in software: every guest-side cost, ssh crypto and rsync included, is ~10x a native one), VE 101 on a real LVM thick volume (ext4), medians of $VM_RUNS interleaved runs; bpc-ovz negotiates aes128-gcm, OpenSSH's default is chacha20-poly1305, hence the second reference. bpc-ovz's own downtime log in stop mode: median $(med vm_down_bpc_reported_stop) ms."
		fi
	fi
	true
} >target/bench/latest.md
echo
echo "== results"
cat target/bench/latest.md
