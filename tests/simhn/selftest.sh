#!/bin/bash
# selftest.sh -- boots two simulated HNs (ext4 + VG "vg-data", xfs + VG
# "vg0"), creates VEs, and checks over real ssh (127.0.0.1 only) the formats,
# exit codes and side effects of every stand-in, the fault injection files,
# and that hn-down leaves no loop device, mount or process behind.
#
#   tests/simhn/selftest.sh [-v]       (root; -v prints every check)
#
# Prints "N passed, M failed" last; exit status 0 only if M = 0.
# Work files go to a fresh /tmp/simhn-selftest.XXXXXX, removed at the end
# unless SIMHN_KEEP=1.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
VERBOSE=0
[ "${1:-}" = -v ] && VERBOSE=1
START=$EPOCHREALTIME

WORK=$(mktemp -d /tmp/simhn-selftest.XXXXXX) || exit 1
D1=$WORK/hn1 D2=$WORK/hn2
pass=0 fail=0

ok() { pass=$((pass + 1)); (( VERBOSE )) && printf "ok   %6.2f %s\n" "$(awk -v s="$START" -v e="$EPOCHREALTIME" "BEGIN{print e-s}")" "$1"; return 0; }
bad() {
	fail=$((fail + 1))
	printf 'FAIL %s\n' "$1"
	shift
	local l
	for l in "$@"; do printf '%s\n' "$l" | sed 's/^/     | /'; done
	return 0
}

cleanup() {
	local d
	for d in 1 2; do
		ssh -o ControlPath="$WORK/cm.$d" -O exit x >/dev/null 2>&1
	done
	for d in "$D1" "$D2"; do
		[ -e "$d/state/sshd.pid" ] && "$HERE/hn-down" "$d" >/dev/null 2>&1
	done
	if [ "${SIMHN_KEEP:-0}" = 1 ]; then
		echo "work dir kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	local p
	while :; do
		p=$(( 20000 + RANDOM % 40000 ))
		[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
	done
}
P1=$(free_port)
P2=$(free_port)
while [ "$P2" = "$P1" ]; do P2=$(free_port); done

ssh-keygen -q -t ed25519 -N '' -f "$WORK/key" || exit 1

# r N CMD: run CMD on HN N over ssh; sets OUT ERR RC
r() {
	local n=$1 port
	shift
	if [ "$n" = 1 ]; then port=$P1; else port=$P2; fi
	OUT=$(ssh -i "$WORK/key" -o UserKnownHostsFile="$WORK/kh.$n" \
		-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR \
		-o ControlMaster=auto -o ControlPath="$WORK/cm.$n" -o ControlPersist=120 \
		-p "$port" root@127.0.0.1 "$*" 2>"$WORK/err")
	RC=$?
	ERR=$(<"$WORK/err")
}
# plain, non-multiplexed ssh (a fresh login every time)
r_plain() {
	local n=$1 port
	shift
	if [ "$n" = 1 ]; then port=$P1; else port=$P2; fi
	OUT=$(ssh -i "$WORK/key" -o UserKnownHostsFile="$WORK/kh.$n" \
		-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR \
		-p "$port" root@127.0.0.1 "$*" 2>"$WORK/err")
	RC=$?
	ERR=$(<"$WORK/err")
}
hx() { "$HERE/hn-exec" "$@"; }      # hx DIR CMD...

# expectations on the last r()
want_rc() {
	if [ "$RC" = "$2" ]; then ok "$1"; else bad "$1: rc $RC, want $2" "stdout: $OUT" "stderr: $ERR"; fi
}
want_out() {
	if [ "$OUT" = "$2" ]; then ok "$1"; else
		bad "$1: stdout differs (rc $RC)" "$(diff <(printf '%s\n' "$2") <(printf '%s\n' "$OUT") | sed 's/ /·/g')" "stderr: $ERR"
	fi
}
want_err() {
	if [ "$ERR" = "$2" ]; then ok "$1"; else
		bad "$1: stderr differs (rc $RC)" "want: $2" "got:  $ERR"
	fi
}
want_out_has() {
	if [[ $OUT == *"$2"* ]]; then ok "$1"; else bad "$1: stdout lacks '$2'" "stdout: $OUT" "stderr: $ERR"; fi
}
want_err_has() {
	if [[ $ERR == *"$2"* ]]; then ok "$1"; else bad "$1: stderr lacks '$2'" "stderr: $ERR"; fi
}
want_out_re() {
	if [[ $OUT =~ $2 ]]; then ok "$1"; else bad "$1: stdout does not match /$2/" "stdout: $OUT"; fi
}
check() {                           # check NAME CMD... (host-side test)
	local name=$1
	shift
	if "$@"; then ok "$name"; else bad "$name"; fi
}

# ===================================================================== boot
(( VERBOSE )) && echo "# booting hn1 (ext4, vg-data, port $P1) and hn2 (xfs, vg0, port $P2)"
"$HERE/hn-up" "$D1" hn1 "$P1" vg-data ext4 >"$WORK/up1" 2>&1 &
u1=$!
"$HERE/hn-up" "$D2" hn2 "$P2" vg0 xfs >"$WORK/up2" 2>&1 &
u2=$!
wait $u1; rc1=$?
wait $u2; rc2=$?
if (( rc1 || rc2 )); then
	bad "hn-up" "hn1 rc $rc1: $(cat "$WORK/up1")" "hn2 rc $rc2: $(cat "$WORK/up2")"
	echo "$pass passed, $fail failed"
	exit 1
fi
PID1=$(tail -n1 "$WORK/up1") PID2=$(tail -n1 "$WORK/up2")
NS1=$(cat "$D1/state/mntns") NS2=$(cat "$D2/state/mntns")
check "hn-up prints the sshd pid (hn1)" [ "$(cat "/proc/$PID1/comm" 2>/dev/null)" = sshd ]
check "hn-up prints the sshd pid (hn2)" [ "$(cat "/proc/$PID2/comm" 2>/dev/null)" = sshd ]
check "sshd listens on 127.0.0.1 only" \
	[ "$(ss -Hltn "sport = :$P1" | awk '{print $4}')" = "127.0.0.1:$P1" ]
for n in 1 2; do
	d=$WORK/hn$n
	cat "$WORK/key.pub" >>"$d/ssh/authorized_keys"
	port=$P1
	[ $n = 2 ] && port=$P2
	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/ssh/ssh_host_ed25519_key.pub")" >"$WORK/kh.$n"
done

# ===================================================================== ssh
r_plain 1 'exit 7'
want_rc "ssh: remote exit status is returned (plain ssh)" 7
r 1 'echo "$PATH"; id -u; cd; pwd'
want_out "ssh: root login, /usr/local/sbin first in PATH, HOME=/root" \
	"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
0
/root"
r 1 $'echo one\necho two'
want_out "ssh: multi-line command runs" $'one\ntwo'
if grep -qF ' echo one\necho two' "$D1/fs/var-log-vzsim/exec.log"; then
	ok "exec.log: one line per exec request, newline escaped as \\n"
else bad "exec.log: newline-escaped command missing" "$(tail -3 "$D1/fs/var-log-vzsim/exec.log")"; fi
check "exec.log: lines are '<epoch-ms> <command>'" \
	grep -Eq '^[0-9]{13} exit 7$' "$D1/fs/var-log-vzsim/exec.log"

# ===================================================================== HN layout
r 1 'grep " /vz " /proc/mounts | cut -d" " -f1-3; stat -c %t:%T /dev/vg-data/vz /dev/mapper/vg--data-vz | sort -u | wc -l; df -P /vz | tail -n1 | cut -d" " -f1'
want_out "hn1: /dev/mapper/vg--data-vz mounted on /vz (ext4), one device behind both nodes" \
	$'/dev/mapper/vg--data-vz /vz ext4\n1\n/dev/mapper/vg--data-vz'
r 2 'grep " /vz " /proc/mounts'
want_out_re "hn2: /dev/mapper/vg0-vz mounted on /vz (xfs)" '^/dev/mapper/vg0-vz /vz xfs '
r 1 'grep -c vg0 /proc/mounts; ls /dev/mapper'
want_out "hn1 does not see hn2's devices or mounts" $'0\nvg--data-vz'
r 1 'for d in /etc/vz /vz /var/lib/vz /run /tmp /mnt /var/log/vzsim /etc/vzsim /var/lib/vzsim /usr/local/sbin /dev/mapper /dev/vg-data; do mountpoint -q $d || echo "not a mount: $d"; done; grep -E "^(LOCKDIR|VE_PRIVATE|VE_ROOT)=" /etc/vz/vz.conf'
want_out "hn1: private mounts and vz.conf" 'LOCKDIR=/var/lib/vz/lock
VE_ROOT=/vz/root/$VEID
VE_PRIVATE=/vz/private/$VEID'
check "host /etc and /var untouched (no /etc/vz, /var/lib/vzsim on the host)" \
	[ ! -e /etc/vzsim -a ! -e /var/lib/vzsim -a ! -e /var/log/vzsim ]

# ===================================================================== VEs
LONGHOST=a-very-long-hostname-that-exceeds-32-chars.example.org
IP6=2001:db8:1234:5678:9abc:def0:1234:5678
mk() { "$HERE/ve-create" "$@" || bad "ve-create $*"; }
mk "$D1" 101 ve101.example.com 10.0.0.101 running
mk "$D1" 102 "$LONGHOST" "10.0.0.102 10.0.0.112 $IP6" stopped
mk "$D1" 103 ve103 "10.0.0.103 10.0.0.203" running
mk "$D2" 201 ve201 10.1.0.1 running
mk "$D2" 202 ve202 10.1.0.2 stopped
"$HERE/ve-create" "$D1" 101 dup 10.9.9.9 stopped 2>/dev/null
check "ve-create refuses an existing VEID" [ $? -ne 0 ]
r 1 'cd /vz/private/101 && stat -c "%h %u" home/u/file && readlink var/www/current etc/localtime && cat "home/u/my file.txt" && test -e "home/u/naïve résumé.txt" && test -d var/empty && du -k var/lib/sparse.img | cut -f1'
want_out "ve-create: tree with hard link, symlinks, space and UTF-8 names, sparse file" \
	'2 1000
index.html
/usr/share/zoneinfo/UTC
a file with a space in its name
4'

# ===================================================================== vzlist
r 1 vzlist
want_out "vzlist: default fields, running only" \
	'      CTID      NPROC STATUS    IP_ADDR         HOSTNAME
       101          1 running   10.0.0.101      ve101.example.com
       103          1 running   10.0.0.103      ve103'
r 1 'vzlist -a -H -o ctid,hostname,ip,status'
want_out "vzlist: hostname and ip not last are cut, ip keeps its first address" \
	"       101 ve101.example.com                10.0.0.101      running
       102 a-very-long-hostname-that-exceed 10.0.0.102      stopped
       103 ve103                            10.0.0.103      running"
r 1 'vzlist -a -o ctid,status,hostname,ip'
want_out "vzlist: ip last lists every address" \
	"      CTID STATUS    HOSTNAME                         IP_ADDR
       101 running   ve101.example.com                10.0.0.101
       102 stopped   a-very-long-hostname-that-exceed 10.0.0.102 10.0.0.112 $IP6
       103 running   ve103                            10.0.0.103 10.0.0.203"
r 1 'vzlist -a -H -o ctid,ip,hostname'
want_out "vzlist: hostname last is whole" \
	"       101 10.0.0.101      ve101.example.com
       102 10.0.0.102      $LONGHOST
       103 10.0.0.103      ve103"
r 1 'vzlist -a -H -t -o hostname,ip,ctid'
want_out "vzlist -t: nothing cut" \
	"ve101.example.com                10.0.0.101             101
$LONGHOST 10.0.0.102 10.0.0.112 $IP6        102
ve103                            10.0.0.103 10.0.0.203        103"
r 1 'vzlist -1'
want_out "vzlist -1" $'       101\n       103'
r 1 'vzlist -S -H -o ctid,status'
want_out "vzlist -S: stopped only" '       102 stopped'
r 1 'vzlist 102'
want_out "vzlist CTID lists a stopped CT without -a" \
	"      CTID      NPROC STATUS    IP_ADDR         HOSTNAME
       102          - stopped   10.0.0.102      $LONGHOST"
r 1 'vzlist -a -j -o ctid,ip,status'
if [ "$RC" = 0 ] && [ "$(printf '%s' "$OUT" | jq -c '[.[] | [.ctid, .ip, .status]]' 2>&1)" = \
	"[[101,[\"10.0.0.101\"],\"running\"],[102,[\"10.0.0.102\",\"10.0.0.112\",\"$IP6\"],\"stopped\"],[103,[\"10.0.0.103\",\"10.0.0.203\"],\"running\"]]" ]; then
	ok "vzlist -j: valid JSON, ip as a list"
else bad "vzlist -j" "$OUT"; fi
r 1 'vzlist 999'
want_rc "vzlist CTID not found: rc 1" 1
want_err "vzlist CTID not found: stderr" "Container(s) not found"
want_out "vzlist CTID not found: no stdout" ""
r 1 'vzlist -o ctid,bogus'
want_rc "vzlist unknown field: rc 1" 1
want_err "vzlist unknown field: message" "Unknown field: bogus"

# ===================================================================== vzctl status / stop / start
r 1 'vzctl status 101; vzctl status 102; vzctl status 999'
want_out "vzctl status: running, stopped, unknown" \
	'CTID 101 exist mounted running
CTID 102 exist unmounted down
CTID 999 deleted unmounted down'
want_rc "vzctl status: rc 0" 0
r 1 'vzctl stop 101'
want_rc "vzctl stop running: rc 0" 0
want_out "vzctl stop running: messages" $'Stopping container ...\nContainer was stopped\nContainer is unmounted'
r 1 'vzctl stop 101'
want_rc "vzctl stop stopped: rc 0 (idempotent)" 0
want_err "vzctl stop stopped: message on stderr" "Unable to stop: container is not running"
r 1 'vzctl status 101; tail -n1 /var/log/vzsim/ve-101.log; cat /vz/private/101/var/lib/ticker/counter'
if [[ $OUT =~ ^CTID\ 101\ exist\ unmounted\ down$'\n'stopped\ counter=([0-9]+)\ at\ [0-9]{13}$'\n'([0-9]+)$ ]] &&
	[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] && (( BASH_REMATCH[1] > 0 )); then
	ok "vzctl stop: ve log 'stopped counter=N' equals the frozen counter file"
else bad "vzctl stop: counter log" "$OUT"; fi
r 1 'vzctl start 101'
want_rc "vzctl start stopped: rc 0" 0
want_out "vzctl start stopped: messages" 'Starting container...
Container is mounted
Adding IP address(es): 10.0.0.101
Setting CPU units: 1000
Container start in progress...'
r 1 'vzctl start 101'
want_rc "vzctl start running: rc 32" 32
want_err "vzctl start running: message" "Container is already running"
r 1 'tail -n1 /var/log/vzsim/ve-101.log; ls /vz/private/101/var/lib/ticker | grep boot-'
want_out_re "vzctl start: 'started boot=2' logged and boot-2 created" \
	'^started boot=2 at [0-9]{13}'$'\n''boot-1'$'\n''boot-2$'
r 1 'c1=$(cat /vz/root/101/var/lib/ticker/counter); sleep 0.5; c2=$(cat /vz/root/101/var/lib/ticker/counter); [ $c2 -gt $c1 ] && echo ticking'
want_out "ve-init: counter keeps increasing while running" ticking
s=$EPOCHREALTIME
r_plain 1 'vzctl restart 103 >/dev/null'
e=$EPOCHREALTIME
check "vzctl start over ssh returns at once (no channel held by the VE)" \
	awk -v s="$s" -v e="$e" 'BEGIN { exit !(e - s < 6) }'
r 1 'vzctl start 999'
want_rc "vzctl unknown CT: rc 14" 14
want_err "vzctl unknown CT: message" "Container config file does not exist"
r 1 'echo "VE_PRIVATE=/vz/private/\$VEID" > /etc/vz/conf/104.conf; vzctl start 104; rc=$?; rm /etc/vz/conf/104.conf; exit $rc'
want_rc "vzctl start without private area: rc 43" 43
want_err "vzctl start without private area: message" "Container private area /vz/private/104 does not exist"
r 1 'vzctl frobnicate 101'
want_rc "vzctl bad command: rc 20" 20

# ===================================================================== vzctl locks
hx "$D1" sh -c 'sleep 60 </dev/null >/dev/null 2>&1 & echo $! > /var/lib/vz/lock/103.lck'
r 1 'vzctl stop 103'
want_rc "vzctl lock held by a live pid: rc 9" 9
want_err "vzctl lock held by a live pid: message" "Container already locked"
r 1 'vzctl status 103'
want_out "vzctl status ignores the lock, CT still running" "CTID 103 exist mounted running"
r 1 'vzctl --skiplock stop 103 >/dev/null && vzctl --skiplock start 103 >/dev/null && echo fine'
want_out "vzctl --skiplock ignores the lock" fine
r 1 'kill $(head -n1 /var/lib/vz/lock/103.lck); p=$(sh -c "echo \$\$"); printf "%s\n\n" $p > /var/lib/vz/lock/103.lck; vzctl stop 103; echo "rc=$?"; ls /var/lib/vz/lock; vzctl start 103 >/dev/null'
want_out "vzctl: stale lock (dead pid) replaced, own lock removed afterwards" \
	$'Removing stale lock file /var/lib/vz/lock/103.lck\nStopping container ...\nContainer was stopped\nContainer is unmounted\nrc=0'

# ===================================================================== lvs / vgs
r 1 lvs
want_out "lvs: default columns, two-space indent, every column padded" \
	'  LV   VG      Attr       LSize   Pool Origin Data%  Meta%  Move Log Cpy%Sync Convert
  vz   vg-data -wi-ao---- 512.00m                                                    '
r 1 'lvs --units b --nosuffix --noheadings --separator : -o vg_name,lv_name,lv_size'
want_out "lvs --units b --nosuffix: plain byte counts" "  vg-data:vz:536870912"
r 1 'lvs --units m --separator : --noheadings -o vg_name,lv_name,lv_size'
want_out_re "lvs: vzdump's parse regex matches" '^\s*(\S+):(\S+):([0-9]+(\.[0-9]+))[Mm]$'
r 1 'lvs --noheadings -o lv_path,lv_dm_path,lv_kernel_major'
want_out "lvs: lv_path, lv_dm_path (dashes doubled), kernel major" \
	"  /dev/vg-data/vz /dev/mapper/vg--data-vz    7"
r 1 vgs
want_out "vgs: default columns" \
	'  VG      #PV #LV #SN Attr   VSize VFree
  vg-data   1   1   0 wz--n- 2.00g 1.50g'
r 1 'vgs --units b --nosuffix --noheadings -o vg_size,vg_free'
want_out "vgs: VG 2 GiB, free = VG - origin" "  2147483648 1610612736"
r 1 'vgs nosuchvg'
want_rc "vgs unknown VG: rc 5" 5
want_err "vgs unknown VG: messages" $'  Volume group "nosuchvg" not found\n  Cannot process volume group nosuchvg'
r 1 'lvs vg-data/nope'
want_rc "lvs unknown LV: rc 5" 5
want_err "lvs unknown LV: message" '  Failed to find logical volume "vg-data/nope"'
r 1 'lvs --bogus'
want_rc "lvs bad option: rc 3" 3

# ===================================================================== snapshot freezes content (ext4, VE running)
r 1 'lvcreate --size 100M --snapshot --name vzsnap-ve101.example.com-0 /dev/vg-data/vz'
want_rc "lvcreate snapshot (ext4, VE running): rc 0" 0
want_out "lvcreate: message" '  Logical volume "vzsnap-ve101.example.com-0" created.'
SNAP=vzsnap-ve101.example.com-0
r 1 "echo after > /vz/private/101/after-snapshot; sync; ls -l /dev/vg-data/$SNAP /dev/mapper/vg--data-vzsnap--ve101.example.com--0 | cut -c1"
want_out "lvcreate: /dev/VG/NAME and /dev/mapper/VG-NAME block nodes" $'b\nb'
r 1 'lvs --noheadings -o lv_name,lv_attr,origin,lv_size'
want_out "lvs: origin owi-aos---, snapshot swi-a-s---" \
	"  vz                         owi-aos---        512.00m
  $SNAP swi-a-s--- vz     100.00m"
r 1 "mkdir -p /mnt/vzsnap0 && mount /dev/vg-data/$SNAP /mnt/vzsnap0 && ls /mnt/vzsnap0/private/101; cat /vz/private/101/after-snapshot"
want_out "snapshot: file written after lvcreate is absent from it, present on the origin" \
	$'etc\nhome\nroot\ntmp\nvar\nafter'
r 1 'a=$(cat /mnt/vzsnap0/private/101/var/lib/ticker/counter); sleep 0.2; b=$(cat /vz/private/101/var/lib/ticker/counter); [ "$a" -lt "$b" ] && echo frozen'
want_out "snapshot: counter frozen while the live one runs on" frozen
r 1 "grep ' /mnt/vzsnap0 ' /proc/mounts | cut -d' ' -f1-3; lvs --noheadings -o lv_attr vg-data/$SNAP"
want_out "snapshot mounted: /proc/mounts and attr swi-aos---" \
	"/dev/vg-data/$SNAP /mnt/vzsnap0 ext4
  swi-aos---"
r 1 "lvremove -f vg-data/$SNAP"
want_rc "lvremove while mounted: rc 5" 5
want_err "lvremove while mounted: message" "  Logical volume vg-data/$SNAP contains a filesystem in use."
r 1 "umount /mnt/vzsnap0 && lvremove vg-data/$SNAP </dev/null"
want_rc "lvremove without -f, no answer: rc 5" 5
want_out "lvremove without -f: lvm2 prompt, EOF = no" \
	"Do you really want to remove active logical volume vg-data/$SNAP? [y/n]: [n]"
want_err "lvremove without -f: not removed" "  Logical volume vg-data/$SNAP not removed."
r 1 "echo y | lvremove vg-data/$SNAP >/dev/null; lvs --noheadings -o lv_name"
want_out "lvremove: 'y' on stdin removes" "  vz  "
r 1 'lvcreate -L 8m -s -n again vg-data/vz'
want_out "lvcreate: size rounded up to 4 MiB extents" '  Logical volume "again" created.'
r 1 'lvremove -f vg-data/again'
want_rc "lvremove -f: rc 0" 0
want_out "lvremove -f: message" '  Logical volume "again" successfully removed.'
r 1 'ls /dev/vg-data; ls /dev/mapper; ls /var/lib/vzsim/lvm/vg-data; wc -l < /var/lib/vzsim/loops'
want_out "lvremove: nodes, image, metadata and loop device gone" \
	$'vz\nvg--data-vz\nvz.img\nvz.lv\n1'
r 1 'lvremove -f vg-data/again'
want_rc "lvremove unknown LV: rc 5" 5
want_err "lvremove unknown LV: message" '  Failed to find logical volume "vg-data/again"'

# ===================================================================== stop -> snapshot -> start on xfs, and rsync from it
r 2 'vzctl stop 201 >/dev/null && lvcreate -L 1G -s -n vzsnap-ve201-0 vg0/vz && vzctl start 201 >/dev/null; echo "rc=$?"'
want_out "lvcreate 1G on a 512M origin: COW reduced to 516 MiB" \
	'  Reducing COW size 1.00 GiB down to maximum usable size 516.00 MiB.
  Logical volume "vzsnap-ve201-0" created.
rc=0'
r 2 'mkdir -p /mnt/vzsnap0; mount /dev/vg0/vzsnap-ve201-0 /mnt/vzsnap0 2>/dev/null; echo "plain=$?"; mount -o nouuid /dev/vg0/vzsnap-ve201-0 /mnt/vzsnap0; echo "nouuid=$?"'
want_out "xfs snapshot: mount fails without -o nouuid, works with it" $'plain=32\nnouuid=0'
r 2 'grep "^stopped" /var/log/vzsim/ve-201.log | tail -n1 | sed "s/.*counter=\([0-9]*\) .*/\1/"; cat /mnt/vzsnap0/private/201/var/lib/ticker/counter'
if [ "$RC" = 0 ] && [[ $OUT =~ ^([0-9]+)$'\n'([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; then
	ok "stop->snapshot->start: snapshot counter == 'stopped counter=N'"
else bad "stop->snapshot->start counter" "$OUT"; fi
r 2 'lvs --noheadings -o lv_attr,lv_size,snap_percent vg0/vzsnap-ve201-0; vgs --noheadings -o vg_free --units m'
want_out_re "lvs on xfs HN: swi-aos---, 516.00m, a percentage" \
	'^  swi-aos--- 516.00m [0-9]+\.[0-9]{2} *'$'\n''  1020\.00m$'
mkdir -p "$WORK/rs"
if rsync -aH --numeric-ids -e "ssh -i $WORK/key -o UserKnownHostsFile=$WORK/kh.2 -o BatchMode=yes -o LogLevel=ERROR -p $P2" \
	root@127.0.0.1:/mnt/vzsnap0/private/201/ "$WORK/rs/" 2>"$WORK/err" &&
	[ "$(stat -c %h "$WORK/rs/home/u/file")" = 2 ] && [ -L "$WORK/rs/var/www/current" ] &&
	[ -e "$WORK/rs/home/u/my file.txt" ] && [ "$(stat -c %u "$WORK/rs/home/u/file")" = 1000 ]; then
	ok "rsync over ssh from the mounted snapshot (hard links, symlinks, owners)"
else bad "rsync from snapshot" "$(cat "$WORK/err")"; fi
grep -q 'rsync --server --sender' "$D2/fs/var-log-vzsim/exec.log" &&
	ok "exec.log records rsync's server command" || bad "exec.log lacks the rsync command"
r 2 'umount /mnt/vzsnap0 && lvremove -f /dev/vg0/vzsnap-ve201-0'
want_out "lvremove by /dev path" '  Logical volume "vzsnap-ve201-0" successfully removed.'

# ===================================================================== lvcreate errors
r 1 'lvcreate -L 8M -s -n s1 vg-data/vz >/dev/null; lvcreate -L 8M -s -n s1 vg-data/vz'
want_rc "lvcreate existing name: rc 5" 5
want_err "lvcreate existing name: message" '  Logical Volume "s1" already exists in volume group "vg-data"'
r 1 'lvcreate -L 8M -s -n s2 vg-data/s1'
want_err "lvcreate snapshot of a snapshot refused" '  Snapshots of snapshots are not supported.'
r 1 'lvcreate -L 8M -s -n s2 vg-data/nope'
want_rc "lvcreate unknown origin: rc 5" 5
want_err "lvcreate unknown origin: message" '  Snapshot origin LV nope not found in Volume group vg-data.'
r 1 'lvcreate -L 8M -s -n s2 nosuchvg/vz'
want_rc "lvcreate unknown VG: rc 5" 5
r 1 'echo 700000000 > /etc/vzsim/vg_size; lvcreate -L 200M -s -n s2 vg-data/vz; rc=$?; rm /etc/vzsim/vg_size; lvremove -f vg-data/s1 >/dev/null; exit $rc'
want_rc "lvcreate with a full VG: rc 5" 5
want_err "lvcreate with a full VG: message" '  Volume group "vg-data" has insufficient free space (36 extents): 50 required.'
r 1 'lvcreate -L 8M vg-data'
want_rc "lvcreate of a non-snapshot LV is refused as not simulated" 3

# ===================================================================== COW overflow
r 1 'lvcreate -L 4M -s -n tiny vg-data/vz >/dev/null; lvs --noheadings -o lv_attr vg-data/tiny; dd if=/dev/urandom of=/vz/private/101/blob8m bs=1M count=8 status=none; sync; lvs --noheadings -o lv_attr,snap_percent,data_percent vg-data/tiny; rm /vz/private/101/blob8m; sync; lvs --noheadings -o lv_attr vg-data/tiny'
want_out "COW overflow: swi-a-s--- -> swi-I-s--- with Snap% 100.00, for good" \
	'  swi-a-s---
  swi-I-s--- 100.00 100.00
  swi-I-s---'
r 1 'lvremove -f vg-data/tiny'
want_rc "lvremove of an invalid snapshot: rc 0" 0

# ===================================================================== fault injection
r 1 'echo 1 > /etc/vzsim/faults/vzctl-stop; vzctl stop 101; rc=$?; vzctl status 101; ls /etc/vzsim/faults; exit $rc'
want_rc "fault vzctl-stop: rc 33" 33
want_out "fault vzctl-stop: CT keeps running, fault used up" \
	$'Stopping container ...\nKilling container ...\nCTID 101 exist mounted running'
want_err "fault vzctl-stop: message" "Unable to stop container: operation timed out"
r 1 'echo 1 > /etc/vzsim/faults/vzctl-start; vzctl stop 101 >/dev/null; vzctl start 101 >/dev/null; echo "first=$?"; vzctl start 101 >/dev/null; echo "second=$?"'
want_out "fault vzctl-start (count 1): fails once (rc 3), then works" $'first=3\nsecond=0'
r 1 'touch /etc/vzsim/faults/vzlist; vzlist; rc=$?; rm /etc/vzsim/faults/vzlist; exit $rc'
want_rc "fault vzlist: rc 1" 1
want_err "fault vzlist: message" "Unable to open /proc/vz/veinfo: No such file or directory"
r 1 'lvcreate -L 8M -s -n busy vg-data/vz >/dev/null; echo 1 > /etc/vzsim/faults/lvremove-busy; lvremove -f vg-data/busy; echo "rc=$?"; lvremove -f vg-data/busy'
want_out "fault lvremove-busy: once 'in use' rc 5, then removed" \
	$'rc=5\n  Logical volume "busy" successfully removed.'
want_err "fault lvremove-busy: message" "  Logical volume vg-data/busy in use."
r 1 'touch /etc/vzsim/faults/lvcreate; lvcreate -L 8M -s -n x vg-data/vz; rc=$?; rm /etc/vzsim/faults/lvcreate; exit $rc'
want_rc "fault lvcreate: rc 5" 5
want_err "fault lvcreate: message" '  Volume group "vg-data" has insufficient free space (0 extents): 2 required.'
r 1 'lvcreate -L 8M -s -n ov vg-data/vz >/dev/null; echo 1 > /etc/vzsim/faults/overflow; lvs --noheadings -o lv_attr,snap_percent vg-data/ov; lvremove -f vg-data/ov >/dev/null'
want_out "fault overflow: snapshot reported invalid" "  swi-I-s--- 100.00"
r 1 'echo 400 > /etc/vzsim/faults/slow-stop-ms; s=$(date +%s%3N); vzctl stop 103 >/dev/null; e=$(date +%s%3N); rm /etc/vzsim/faults/slow-stop-ms; vzctl start 103 >/dev/null; echo $((e - s))'
if [ "$RC" = 0 ] && (( OUT >= 400 )); then ok "fault slow-stop-ms: stop takes >= 400 ms"; else bad "fault slow-stop-ms" "$OUT"; fi
r 1 'echo 300 > /etc/vzsim/faults/slow-lvcreate-ms; s=$(date +%s%3N); lvcreate -L 8M -s -n slow vg-data/vz >/dev/null; e=$(date +%s%3N); rm /etc/vzsim/faults/slow-lvcreate-ms; lvremove -f vg-data/slow >/dev/null; echo $((e - s))'
if [ "$RC" = 0 ] && (( OUT >= 300 )); then ok "fault slow-lvcreate-ms: lvcreate takes >= 300 ms"; else bad "fault slow-lvcreate-ms" "$OUT"; fi
r 1 'vzctl stop 103 >/dev/null; echo 400 > /etc/vzsim/faults/slow-start-ms; (vzctl start 103 >/dev/null &); sleep 0.2; m=$(vzctl status 103); s=$(date +%s%3N); while ! vzctl status 103 | grep -q " running"; do sleep 0.02; done; e=$(date +%s%3N); rm /etc/vzsim/faults/slow-start-ms; echo "$m|$((e - s))"'
if [ "$RC" = 0 ] && [ "${OUT%%|*}" = "CTID 103 exist mounted down" ] && (( ${OUT#*|} >= 100 )); then ok "fault slow-start-ms: mounted, not running, while start sleeps"; else bad "fault slow-start-ms" "$OUT"; fi
r 1 'vzctl stop 103 >/dev/null; echo 3500 > /etc/vzsim/faults/slow-init-ms; s=$(date +%s%3N); vzctl start 103 >/dev/null; rc=$?; e=$(date +%s%3N); rm /etc/vzsim/faults/slow-init-ms; umount /vz/root/103 2>/dev/null && echo unmounted; echo "$rc|$(vzctl status 103)|$((e - s))"'
if [ "$RC" = 0 ] && [ "${OUT%|*}" = "0|CTID 103 exist mounted running" ] && (( ${OUT##*|} < 3000 )); then ok "fault slow-init-ms: start returns at once, running, VE_ROOT busy"; else bad "fault slow-init-ms" "$OUT"; fi
hx "$D1" sh -c 'cd /vz/root/101 && echo $$ > /run/busy.pid && exec sleep 60 </dev/null >/dev/null 2>&1' >/dev/null 2>&1 &
busy=$!
for (( i = 0; i < 100; i++ )); do
	hx "$D1" test -s /run/busy.pid && break
	sleep 0.05
done
r 1 'vzctl stop 101; echo "rc=$?"; vzctl status 101'
want_out "busy VE_ROOT: stop kills the CT but cannot unmount (rc 51)" \
	$'Stopping container ...\nContainer was stopped\nrc=51\nCTID 101 exist mounted down'
want_err "busy VE_ROOT: message" "Can't umount /vz/root/101: Device or resource busy"
r 1 'kill $(cat /run/busy.pid); sleep 0.1; vzctl start 101 >/dev/null; vzctl status 101'
want_out "start after a busy stop remounts" "CTID 101 exist mounted running"
wait "$busy" 2>/dev/null

# ===================================================================== logs
if grep -Eq '^[0-9]{13} vzctl stop 101$' "$D1/fs/var-log-vzsim/commands.log" &&
	grep -Eq '^[0-9]{13} lvcreate --size 100M --snapshot --name vzsnap-ve101.example.com-0 /dev/vg-data/vz$' "$D1/fs/var-log-vzsim/commands.log"; then
	ok "commands.log: '<epoch-ms> <tool> <args>' per call"
else bad "commands.log" "$(tail -5 "$D1/fs/var-log-vzsim/commands.log")"; fi

# ===================================================================== hn2 with every CT stopped; reboot keeps state
r 2 'vzctl stop 201 >/dev/null; vzlist; echo "rc=$?"'
want_out "vzlist with no running CT and no CTID: empty, rc 0 (vzctl 4.x)" "rc=0"
want_err "vzlist with no running CT: message" "Container(s) not found"
r 2 'vzctl start 201 >/dev/null; echo kept > /vz/private/201/root/marker'
ssh -o ControlPath="$WORK/cm.2" -O exit x >/dev/null 2>&1
"$HERE/hn-down" "$D2" >"$WORK/down2" 2>&1
check "hn-down hn2 (for a reboot): rc 0" [ $? -eq 0 ]
"$HERE/hn-up" "$D2" hn2 "$P2" vg0 xfs >"$WORK/up2" 2>&1
check "hn-up hn2 again: rc 0" [ $? -eq 0 ]
PID2=$(tail -n1 "$WORK/up2")
NS2B=$(cat "$D2/state/mntns")
r 2 'cat /vz/private/201/root/marker; vzctl status 201; vzctl status 202; lvs --noheadings -o lv_name'
want_out "reboot: data kept, ONBOOT CT started, stopped CT stays down" \
	$'kept\nCTID 201 exist mounted running\nCTID 202 exist unmounted down\n  vz  '

# ===================================================================== hn-down leaves nothing behind
r 1 'lvcreate -L 8M -s -n leftover vg-data/vz >/dev/null; mkdir -p /mnt/x; mount /dev/vg-data/leftover /mnt/x; echo done'
want_out "hn1: snapshot left mounted before hn-down" done
hx "$D1" sh -c 'sleep 300 </dev/null >/dev/null 2>&1 &'
imgs=("$D1"/fs/var-lib-vzsim/lvm/*/*.img "$D2"/fs/var-lib-vzsim/lvm/*/*.img)
for n in 1 2; do ssh -o ControlPath="$WORK/cm.$n" -O exit x >/dev/null 2>&1; done
for d in "$D1" "$D2"; do
	"$HERE/hn-down" "$d" >"$WORK/down" 2>&1
	check "hn-down ${d##*/}: rc 0" [ $? -eq 0 ]
done
leak=''
for img in "${imgs[@]}"; do
	[ -e "$img" ] || continue
	[ -n "$(losetup -j "$img" 2>/dev/null)" ] && leak+="$img "
	ino=$(stat -c %i "$img")
	losetup -n -O BACK-INO 2>/dev/null | grep -qx " *$ino" && leak+="$img(ino) "
done
check "hn-down: no loop device left on any image" [ -z "$leak" ]
check "hn-down: no host mount under the work dir" bash -c "! grep -qF '$WORK' /proc/mounts"
nsleft=''
for p in /proc/[0-9]*; do
	ns=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
	case $ns in "$NS1" | "$NS2" | "$NS2B") nsleft+="${p#/proc/} " ;; esac
done
check "hn-down: no process left in either HN namespace" [ -z "$nsleft" ]
alive() {                           # exists and is not a zombie
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st:0:1}" != Z ] && [ "${st:0:1}" != X ]
}
check "hn-down: both sshd gone, ports closed" \
	eval "! alive $PID1 && ! alive $PID2 && [ -z \"\$(ss -Hltn 'sport = :$P1')\" ] && [ -z \"\$(ss -Hltn 'sport = :$P2')\" ]"
"$HERE/hn-down" "$D1" >/dev/null 2>&1
check "hn-down is idempotent" [ $? -eq 0 ]

END=$EPOCHREALTIME
(( VERBOSE )) && awk -v s="$START" -v e="$END" 'BEGIN { printf "# %.1f s\n", e - s }'
echo "$pass passed, $fail failed"
(( fail == 0 ))
