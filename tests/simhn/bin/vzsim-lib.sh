# vzsim-lib.sh -- helpers shared by the simulated-HN stand-ins (vzctl, vzlist,
# lvs, vgs, lvcreate, lvremove, ve-init, vzsim-activate).  Sourced with ".",
# never executed.  Bash only.  Everything here runs INSIDE an HN mount
# namespace and only touches HN-local paths:
#   /etc/vz        OpenVZ configuration        (bind of DIR/fs/etc-vz)
#   /etc/vzsim     simulator configuration     (bind of DIR/fs/etc-vzsim)
#                  hn.conf (NAME VG FSTYPE), vg_size, faults/
#   /var/lib/vzsim simulator state             (bind of DIR/fs/var-lib-vzsim)
#                  lvm/<VG>/<LV>.lv  metadata,  lvm/<VG>/<LV>.img  images,
#                  loops  (registry of attached loop devices, read by hn-down),
#                  ve/<id>/{init.pid,boot}
#   /var/log/vzsim logs                        (bind of DIR/fs/var-log-vzsim)

export LC_ALL=C
VZSIM_ETC=${VZSIM_ETC:-/etc/vzsim}
VZSIM_STATE=${VZSIM_STATE:-/var/lib/vzsim}
VZSIM_LOGDIR=${VZSIM_LOGDIR:-/var/log/vzsim}
VZ_ETC=${VZ_ETC:-/etc/vz}
EXTENT_BYTES=4194304            # lvm2 default physical extent: 4 MiB
SECTOR=512

# ---------------------------------------------------------------- generic

now_ms() {                      # epoch milliseconds, no fork
	local t=${EPOCHREALTIME//[!0-9]/}
	REPLY=$(( 10#$t / 1000 ))
}

# log_cmd TOOL ARGS...  -> "<epoch-ms> <tool> <args...>" in commands.log
log_cmd() {
	local tool=$1 line
	shift
	now_ms
	line="$REPLY $tool${*:+ $*}"
	line=${line//$'\n'/\\n}
	printf '%s\n' "$line" >>"$VZSIM_LOGDIR/commands.log" 2>/dev/null
	return 0
}

sleep_ms() {
	local ms=$1
	[[ $ms =~ ^[0-9]+$ ]] || return 0
	(( ms > 0 )) || return 0
	sleep "$(( ms / 1000 )).$(printf '%03d' $(( ms % 1000 )))"
}

# fault_fire NAME: true if /etc/vzsim/faults/NAME fires for this call.
# File content = how many more times it fires (decremented, removed at 0);
# empty file = fires every time.
fault_fire() {
	local f=$VZSIM_ETC/faults/$1 n lk rc=1
	[ -e "$f" ] || return 1
	exec {lk}>>"$VZSIM_ETC/faults/.lock" || return 1
	flock "$lk"
	if [ -e "$f" ]; then
		n=$(tr -d ' \t\r\n' <"$f" 2>/dev/null)
		if [ -z "$n" ]; then
			rc=0
		elif [[ $n =~ ^[0-9]+$ ]]; then
			if (( 10#$n <= 1 )); then
				rm -f "$f"
				(( 10#$n == 1 )) && rc=0
			else
				printf '%d\n' $(( 10#$n - 1 )) >"$f"
				rc=0
			fi
		else
			rc=0
		fi
	fi
	exec {lk}>&-
	return $rc
}

# fault_value NAME: number stored in a parameter fault file (0 if none).
fault_value() {
	local f=$VZSIM_ETC/faults/$1 n
	REPLY=0
	[ -r "$f" ] || return 0
	n=$(tr -d ' \t\r\n' <"$f")
	[[ $n =~ ^[0-9]+$ ]] && REPLY=$(( 10#$n ))
	return 0
}

load_hn_conf() {
	NAME='' VG='' FSTYPE=''
	# shellcheck disable=SC1091
	. "$VZSIM_ETC/hn.conf"
}

# ---------------------------------------------------------------- LVM

vg_size_bytes() {
	local s
	REPLY=2147483648
	if [ -r "$VZSIM_ETC/vg_size" ]; then
		s=$(tr -d ' \t\r\n' <"$VZSIM_ETC/vg_size")
		[[ $s =~ ^[0-9]+$ ]] && REPLY=$(( 10#$s ))
	fi
}

vg_total_ext() { vg_size_bytes; REPLY=$(( REPLY / EXTENT_BYTES )); }

lvm_dir() { REPLY=$VZSIM_STATE/lvm/$VG; }

# dm_name VG LV -> VG-LV with every '-' inside a name doubled
dm_name() { REPLY="${1//-/--}-${2//-/--}"; }

lv_list() {                     # prints LV names, C-sorted
	local f
	for f in "$VZSIM_STATE/lvm/$VG"/*.lv; do
		[ -e "$f" ] || continue
		f=${f##*/}
		printf '%s\n' "${f%.lv}"
	done | sort
}

lv_exists() { [ -e "$VZSIM_STATE/lvm/$VG/$1.lv" ]; }

# lv_load NAME: sets LV_* variables from the metadata file
lv_load() {
	LV_NAME='' LV_EXT=0 LV_ORIGIN='' LV_IMAGE='' LV_LOOP='' LV_INO=''
	LV_MAJ='' LV_MIN='' LV_INVALID=0 LV_COW_BASE=0 LV_COW_LAST=0
	LV_OBASE=0 LV_SBASE=0 LV_CTIME=0
	local k v
	while IFS='=' read -r k v; do
		case $k in
		NAME) LV_NAME=$v ;; EXT) LV_EXT=$v ;; ORIGIN) LV_ORIGIN=$v ;;
		IMAGE) LV_IMAGE=$v ;; LOOP) LV_LOOP=$v ;; INO) LV_INO=$v ;;
		MAJ) LV_MAJ=$v ;; MIN) LV_MIN=$v ;; INVALID) LV_INVALID=$v ;;
		COW_BASE) LV_COW_BASE=$v ;; COW_LAST) LV_COW_LAST=$v ;;
		OBASE) LV_OBASE=$v ;; SBASE) LV_SBASE=$v ;; CTIME) LV_CTIME=$v ;;
		esac
	done <"$VZSIM_STATE/lvm/$VG/$1.lv"
	[ -n "$LV_NAME" ]
}

lv_save() {
	local f=$VZSIM_STATE/lvm/$VG/$LV_NAME.lv
	cat >"$f.tmp" <<EOF
NAME=$LV_NAME
EXT=$LV_EXT
ORIGIN=$LV_ORIGIN
IMAGE=$LV_IMAGE
LOOP=$LV_LOOP
INO=$LV_INO
MAJ=$LV_MAJ
MIN=$LV_MIN
INVALID=$LV_INVALID
COW_BASE=$LV_COW_BASE
COW_LAST=$LV_COW_LAST
OBASE=$LV_OBASE
SBASE=$LV_SBASE
CTIME=$LV_CTIME
EOF
	mv -f "$f.tmp" "$f"
}

# loop_wsect /dev/loopN -> sectors written (field 7 of /sys/block/loopN/stat)
loop_wsect() {
	local a
	REPLY=0
	[ -n "$1" ] && [ -r "/sys/block/${1#/dev/}/stat" ] || return 1
	read -r -a a <"/sys/block/${1#/dev/}/stat" || return 1
	REPLY=${a[6]:-0}
}

# loop_is_ours DEV IMAGE: DEV is attached to IMAGE (same inode and fs).
# Memoised for the life of the command (lv_attach/lv_detach forget).
declare -A LOOP_OURS_MEMO=()
loop_is_ours() {
	local dev=$1 img=$2 ino bdev want_ino want_dev key="$1|$2"
	if [ -n "${LOOP_OURS_MEMO[$key]+x}" ]; then return "${LOOP_OURS_MEMO[$key]}"; fi
	LOOP_OURS_MEMO[$key]=1
	[ -b "$dev" ] && [ -e "$img" ] || return 1
	read -r ino bdev < <(losetup -n -O BACK-INO,BACK-MAJ:MIN "$dev" 2>/dev/null)
	[ -n "$ino" ] || return 1
	read -r want_ino want_dev < <(stat -c '%i %Hd:%Ld' "$img")
	[ "$ino" = "$want_ino" ] && [ "$bdev" = "$want_dev" ] || return 1
	LOOP_OURS_MEMO[$key]=0
	return 0
}

registry_add() {                # registry_add DEV IMAGE INODE
	local lk
	exec {lk}>>"$VZSIM_STATE/loops.lock"
	flock "$lk"
	printf '%s %s %s\n' "$1" "$2" "$3" >>"$VZSIM_STATE/loops"
	exec {lk}>&-
}

registry_del() {                # registry_del DEV
	local lk
	exec {lk}>>"$VZSIM_STATE/loops.lock"
	flock "$lk"
	if [ -e "$VZSIM_STATE/loops" ]; then
		awk -v d="$1" '$1 != d' "$VZSIM_STATE/loops" >"$VZSIM_STATE/loops.tmp"
		mv -f "$VZSIM_STATE/loops.tmp" "$VZSIM_STATE/loops"
	fi
	exec {lk}>&-
}

# lv_attach: attach LV_IMAGE to a free loop device, create /dev/VG/LV and
# /dev/mapper/VG-LV nodes, record the device.  Sets LV_LOOP/LV_MAJ/LV_MIN/LV_INO.
lv_attach() {
	local dev mm dio
	# /dev/loop-control is global: serialise with other HNs doing the same
	# /etc/vzsim/loop_direct_io: the loop device reads its image with O_DIRECT, so a read through the
	# "LV" fills one page cache (the filesystem's), as on real LVM, not a second one for the image
	dio=()
	[ -e "$VZSIM_ETC/loop_direct_io" ] && dio=(--direct-io=on)
	dev=$(flock /dev/loop-control losetup "${dio[@]}" -f --show "$LV_IMAGE") || return 1
	LOOP_OURS_MEMO=()
	LV_LOOP=$dev
	LV_INO=$(stat -c %i "$LV_IMAGE")
	registry_add "$dev" "$LV_IMAGE" "$LV_INO"
	read -r -a mm < <(stat -c '%t %T' "$dev")
	LV_MAJ=$(( 16#${mm[0]} )) LV_MIN=$(( 16#${mm[1]} ))
	lv_mknodes
}

lv_mknodes() {
	dm_name "$VG" "$LV_NAME"
	mkdir -p "/dev/$VG" /dev/mapper
	rm -f "/dev/$VG/$LV_NAME" "/dev/mapper/$REPLY"
	mknod -m 660 "/dev/mapper/$REPLY" b "$LV_MAJ" "$LV_MIN"
	mknod -m 660 "/dev/$VG/$LV_NAME" b "$LV_MAJ" "$LV_MIN"
}

lv_detach() {
	dm_name "$VG" "$LV_NAME"
	rm -f "/dev/$VG/$LV_NAME" "/dev/mapper/$REPLY"
	if [ -n "$LV_LOOP" ] && loop_is_ours "$LV_LOOP" "$LV_IMAGE"; then
		losetup -d "$LV_LOOP" 2>/dev/null
	fi
	LOOP_OURS_MEMO=()
	[ -n "$LV_LOOP" ] && registry_del "$LV_LOOP"
	LV_LOOP=''
}

lv_active() { [ -n "$LV_LOOP" ] && loop_is_ours "$LV_LOOP" "$LV_IMAGE"; }

# lv_mountpoint MAJ MIN: first mount point of that device in this namespace
lv_mountpoint() {
	REPLY=$(awk -v d="$1:$2" '$3 == d { print $5; exit }' /proc/self/mountinfo)
	[ -n "$REPLY" ]
}

lv_is_mounted() { [ -n "$LV_MAJ" ] && lv_mountpoint "$LV_MAJ" "$LV_MIN"; }

lv_has_snapshots() {            # lv_has_snapshots NAME -> count in REPLY
	local n c=0 f
	for f in "$VZSIM_STATE/lvm/$VG"/*.lv; do
		[ -e "$f" ] || continue
		grep -qx "ORIGIN=$1" "$f" && c=$((c + 1))
	done
	REPLY=$c
	(( c > 0 ))
}

# cow_used: bytes of COW consumed by the loaded snapshot LV (LV_* vars):
# bytes written to the origin's loop device plus bytes written to the
# snapshot's own loop device since creation.  Sets REPLY.
cow_used() {
	local used=$LV_COW_BASE of oloop='' oimg='' k v
	if lv_active && loop_wsect "$LV_LOOP"; then
		used=$(( used + (REPLY - LV_SBASE) * SECTOR ))
	fi
	of=$VZSIM_STATE/lvm/$VG/$LV_ORIGIN.lv
	if [ -r "$of" ]; then
		while IFS='=' read -r k v; do
			case $k in LOOP) oloop=$v ;; IMAGE) oimg=$v ;; esac
		done <"$of"
		if [ -n "$oloop" ] && loop_is_ours "$oloop" "$oimg" && loop_wsect "$oloop"; then
			used=$(( used + (REPLY - LV_OBASE) * SECTOR ))
		fi
	fi
	(( used < 0 )) && used=0
	REPLY=$used
}

# lv_refresh NAME: recompute COW usage of a snapshot, make it invalid for
# good at >= 100 %.  Leaves the LV loaded.
lv_refresh() {
	lv_load "$1" || return 1
	[ -n "$LV_ORIGIN" ] || return 0
	cow_used
	LV_COW_LAST=$REPLY
	if (( LV_INVALID == 0 && REPLY >= LV_EXT * EXTENT_BYTES )); then
		LV_INVALID=1
	fi
	lv_save
}

# snap_percent: "%.2f" of the loaded snapshot's usage, lvm2 rounding rules
snap_percent() {
	if (( LV_INVALID )); then REPLY=100.00; return; fi
	REPLY=$(awk -v u="$LV_COW_LAST" -v s="$(( LV_EXT * EXTENT_BYTES ))" 'BEGIN {
		p = u * 100 / s
		if (p > 0 && p < 0.01) p = 0.01
		if (p > 99.99 && p < 100) p = 99.99
		if (p > 100) p = 100
		printf "%.2f", p }')
}

lv_attr() {                     # attr of the loaded LV
	local t='-' st=a op='-' tg='-'
	if [ -n "$LV_ORIGIN" ]; then
		t=s tg=s
		(( LV_INVALID )) && st=I
	elif lv_has_snapshots "$LV_NAME"; then
		t=o tg=s
	fi
	lv_active || st='-'
	lv_is_mounted && op=o
	REPLY="${t}wi-${st}${op}${tg}---"
}

# fmt_size BYTES UNIT SUFFIX(0/1) STYLE(unit|short) -> REPLY
# lvm2 dm_size_to_string() with si_unit_consistency=1, in integer arithmetic
# ("%.2f" rounds half up here, glibc rounds the binary value: same result for
# every size lvm can hold)
fmt_size() {
	local b=$1 u=$2 suf=$3 st=$4 base byte s pre='' L=EPTGMK letter sfx q prec n
	_fix2() {               # _fix2 NUM DEN -> "%.2f" of NUM/DEN in q
		local v=$(( (200 * $1 / $2 + 1) / 2 ))
		q="$(( v / 100 )).$(printf '%02d' $(( v % 100 )))"
	}
	case $u in
	r | R | h | H)
		base=1024
		case $u in R | H) base=1000 ;; esac
		if (( b == 0 )); then
			if [ "$st" = short ]; then REPLY='0   '; else REPLY='0 '; fi
			return 0
		fi
		byte=$(( base ** 6 )) s=0
		while (( s < 6 && b < byte )); do byte=$(( byte / base )); s=$(( s + 1 )); done
		if (( s == 6 )); then
			if [ "$st" = short ]; then REPLY="$b B"; else REPLY="${b}b"; fi
			return 0
		fi
		case $u in r | R) (( 2 * ((100 * b) % byte) >= byte )) && pre='<' ;; esac
		letter=${L:s:1}
		if (( base == 1024 )); then
			if [ "$st" = short ]; then sfx=" ${letter}iB"; else sfx=${letter,,}; fi
		else
			if [ "$st" = short ]; then
				if [ "$letter" = K ]; then sfx=' kB'; else sfx=" ${letter}B"; fi
			else sfx=$letter; fi
		fi
		_fix2 "$b" "$byte"
		REPLY=$pre$q$sfx
		return 0
		;;
	b | B) byte=1 prec=0 letter=B sfx=' B ' ;;
	s | S) byte=512 prec=0 letter=S sfx=' Se' ;;
	k | m | g | t | p | e)
		n=kmgtpe; n=${n%%"$u"*}; n=$(( ${#n} + 1 ))
		byte=$(( 1024 ** n )) prec=2 letter=$u sfx=" ${u^^}iB"
		;;
	K | M | G | T | P | E)
		n=KMGTPE; n=${n%%"$u"*}; n=$(( ${#n} + 1 ))
		byte=$(( 1000 ** n )) prec=2 letter=$u sfx=" ${u}B"
		[ "$u" = K ] && sfx=' kB'
		;;
	*) byte=1 prec=0 letter=B sfx=' B ' ;;
	esac
	[ "$st" = short ] || sfx=$letter
	(( suf )) || sfx=''
	if (( b == 0 )); then REPLY=0$sfx; return 0; fi
	if (( prec == 0 )); then
		REPLY=$(( (2 * b / byte + 1) / 2 ))$sfx
	else
		_fix2 "$b" "$byte"
		REPLY=$q$sfx
	fi
}

# parse_lvm_size STRING -> bytes in REPLY (lvm2 input units: 1024-based,
# case-insensitive, default MiB).  Returns 1 on a bad size.
parse_lvm_size() {
	local s=$1 num unit
	[[ $s =~ ^([0-9]+(\.[0-9]+)?)([bBsSkKmMgGtTpPeE]?)$ ]] || return 1
	num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]:-m}
	REPLY=$(awk -v n="$num" -v u="$unit" 'BEGIN {
		u = tolower(u)
		if (u == "b") f = 1; else if (u == "s") f = 512;
		else f = 1024 ^ index("kmgtpe", u)
		v = n * f
		# round up to whole sectors like lvm2
		s = int(v / 512); if (s * 512 < v) s++
		printf "%.0f", s * 512 }')
}

# cow_max_ext ORIGIN_EXT: lvm2 cow_max_extents() for the default 4 KiB chunk
cow_max_ext() {
	local origin_sect=$(( $1 * EXTENT_BYTES / SECTOR )) chunk=8
	local origin_chunks=$(( (origin_sect + chunk - 1) / chunk ))
	local per_area=$(( chunk << (9 - 4) ))
	local meta=$(( (origin_chunks + per_area) / per_area ))
	local bytes=$(( (1 + origin_chunks + meta) * chunk * SECTOR ))
	REPLY=$(( (bytes + EXTENT_BYTES - 1) / EXTENT_BYTES ))
}

vg_used_ext() {
	local n used=0
	for n in $(lv_list); do
		lv_load "$n" && used=$(( used + LV_EXT ))
	done
	REPLY=$used
}

# resolve_lv_arg ARG -> sets ARG_VG ARG_LV (ARG_LV empty for a bare VG)
resolve_lv_arg() {
	local a=$1 dm i c
	ARG_VG='' ARG_LV=''
	case $a in
	/dev/mapper/*)
		dm=${a#/dev/mapper/}
		# split at the first single '-' (doubled dashes are escapes)
		i=0
		while (( i < ${#dm} )); do
			c=${dm:i:1}
			if [ "$c" = - ]; then
				if [ "${dm:i+1:1}" = - ]; then i=$((i + 2)); continue; fi
				ARG_VG=${dm:0:i} ARG_LV=${dm:i+1}
				ARG_VG=${ARG_VG//--/-} ARG_LV=${ARG_LV//--/-}
				return 0
			fi
			i=$((i + 1))
		done
		ARG_VG=${dm//--/-}
		;;
	/dev/*/*)
		a=${a#/dev/}
		ARG_VG=${a%%/*} ARG_LV=${a#*/}
		;;
	*/*)
		ARG_VG=${a%%/*} ARG_LV=${a#*/}
		;;
	*)
		ARG_VG=$a
		;;
	esac
}

# ---------------------------------------------------------------- OpenVZ

# ve_load ID: read vz.conf then <ID>.conf (later wins), substitute $VEID.
# Sets VE_PRIVATE VE_ROOT HOSTNAME IP_ADDRESS ONBOOT NAME DESCRIPTION
# OSTEMPLATE LOCKDIR DUMPDIR VE_CONF_EXISTS.
ve_load() {
	local id=$1 f k v
	VE_PRIVATE='' VE_ROOT='' HOSTNAME='' IP_ADDRESS='' ONBOOT='' NAME_=''
	DESCRIPTION='' OSTEMPLATE='' LOCKDIR=/var/lib/vz/lock DUMPDIR=/vz/dump
	NAMESERVER='' SEARCHDOMAIN='' MOUNT_OPTS='' BOOTORDER='' LAYOUT=simfs
	VE_CONF_EXISTS=0
	[ -e "$VZ_ETC/conf/$id.conf" ] && VE_CONF_EXISTS=1
	for f in "$VZ_ETC/vz.conf" "$VZ_ETC/conf/$id.conf"; do
		[ -r "$f" ] || continue
		while IFS= read -r line || [ -n "$line" ]; do
			[[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
			k=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
			v=${v%%[[:space:]]#*}
			if [[ $v =~ ^\"(.*)\"[[:space:]]*$ ]] || [[ $v =~ ^\'(.*)\'[[:space:]]*$ ]]; then
				v=${BASH_REMATCH[1]}
			fi
			v=${v//'${VEID}'/$id}
			v=${v//'$VEID'/$id}
			case $k in
			VE_PRIVATE) VE_PRIVATE=$v ;; VE_ROOT) VE_ROOT=$v ;;
			HOSTNAME) HOSTNAME=$v ;; IP_ADDRESS) IP_ADDRESS=$v ;;
			ONBOOT) ONBOOT=$v ;; NAME) NAME_=$v ;;
			DESCRIPTION) DESCRIPTION=$v ;; OSTEMPLATE) OSTEMPLATE=$v ;;
			LOCKDIR) LOCKDIR=$v ;; DUMPDIR) DUMPDIR=$v ;;
			NAMESERVER) NAMESERVER=$v ;; SEARCHDOMAIN) SEARCHDOMAIN=$v ;;
			MOUNT_OPTS) MOUNT_OPTS=$v ;; BOOTORDER) BOOTORDER=$v ;;
			VE_LAYOUT) LAYOUT=$v ;;
			esac
		done <"$f"
	done
	# squeeze the IP list to single spaces
	IP_ADDRESS=$(printf '%s' "$IP_ADDRESS" | tr -s ' \t' '  ')
	IP_ADDRESS=${IP_ADDRESS# }
	IP_ADDRESS=${IP_ADDRESS% }
}

ve_statedir() { REPLY=$VZSIM_STATE/ve/$1; }

# ve_init_pid ID -> REPLY = pid of the live VE init, or fails
ve_init_pid() {
	local id=$1 pid cmd myns ns
	REPLY=''
	[ -r "$VZSIM_STATE/ve/$id/init.pid" ] || return 1
	read -r pid <"$VZSIM_STATE/ve/$id/init.pid" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	pid_alive "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
	[[ $cmd == *ve-init\ $id\ * ]] || return 1
	myns=$(readlink /proc/self/ns/mnt) ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)
	[ "$myns" = "$ns" ] || return 1
	REPLY=$pid
}

ve_is_running() { ve_init_pid "$1"; }

# pid_alive PID: exists and is not a zombie (an exited VE init may stay a
# zombie until the host's pid 1 reaps it)
pid_alive() {
	local st
	[ -r "/proc/$1/stat" ] || return 1
	{ st=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
	st=${st##*) }
	[ "${st:0:1}" != Z ] && [ "${st:0:1}" != X ]
}

ve_is_mounted() { [ -n "$VE_ROOT" ] && mountpoint -q "$VE_ROOT" 2>/dev/null; }

ve_log() {                      # ve_log ID MESSAGE
	printf '%s\n' "$2" >>"$VZSIM_LOGDIR/ve-$1.log"
}

# ---------------------------------------------------------------- reports

# report_print: print an lvm2-style report (libdm-report.c _output_field /
# _report_headings).  Inputs (globals):
#   R_HDR[]   headings            R_ALIGN[] L or R       R_MINW[] min width
#   R_ROWS[]  rows, fields separated by $'\x1f'
#   R_ALIGNED 1/0   R_SEP separator   R_HEADINGS 1/0
# Every line starts with two spaces (lvm2's message indent).  Aligned output
# pads every column, the last one included.
report_print() {
	local nf=${#R_HDR[@]} k w row line
	local -a width cells
	for (( k = 0; k < nf; k++ )); do
		w=${R_MINW[k]}
		(( w == 0 )) && w=${#R_HDR[k]}
		width[k]=$w
	done
	for row in "${R_ROWS[@]}"; do
		IFS=$'\x1f' read -r -a cells <<<"$row"
		for (( k = 0; k < nf; k++ )); do
			(( ${#cells[k]} > width[k] )) && width[k]=${#cells[k]}
		done
	done
	if (( R_HEADINGS )); then
		line='  '
		for (( k = 0; k < nf; k++ )); do
			if (( R_ALIGNED )); then
				printf -v w '%-*.*s' "${width[k]}" "${width[k]}" "${R_HDR[k]}"
				line+=$w
			else
				line+=${R_HDR[k]}
			fi
			(( k < nf - 1 )) && line+=$R_SEP
		done
		printf '%s\n' "$line"
	fi
	for row in "${R_ROWS[@]}"; do
		IFS=$'\x1f' read -r -a cells <<<"$row"
		line='  '
		for (( k = 0; k < nf; k++ )); do
			if (( R_ALIGNED )); then
				if [ "${R_ALIGN[k]}" = R ]; then
					printf -v w '%*.*s' "${width[k]}" "${width[k]}" "${cells[k]}"
				else
					printf -v w '%-*.*s' "${width[k]}" "${width[k]}" "${cells[k]}"
				fi
				line+=$w
			else
				line+=${cells[k]}
			fi
			(( k < nf - 1 )) && line+=$R_SEP
		done
		printf '%s\n' "$line"
	done
}

# lvm_optparse_error OPTION: what lvm2 prints for an unknown option
lvm_bad_option() {
	printf "%s: unrecognized option '%s'\n" "$1" "$2" >&2
	printf '  Error during parsing of command line.\n' >&2
	exit 3
}

vg_not_found() {
	printf '  Volume group "%s" not found\n' "$1" >&2
	printf '  Cannot process volume group %s\n' "$1" >&2
}

# vg_lock: exclusive lock on the VG for the rest of the command, like lvm2's
# VG lock (/run/lock/lvm/V_<vg>); serialises lvs/vgs (they update the COW
# accounting) with lvcreate/lvremove
vg_lock() {
	mkdir -p /run/lock/lvm 2>/dev/null
	exec {VG_LOCK_FD}>>"/run/lock/lvm/V_$VG" || return 0
	flock "$VG_LOCK_FD"
}
