# hn-lib.sh -- host-side helpers for hn-up, hn-down, hn-exec, ve-create.
# Sourced, bash only.  Runs on the host (outside any HN namespace).
export LC_ALL=C
SIMHN=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# hn_dir PATH -> absolute path of an existing HN directory in HN_DIR
hn_dir() {
	[ -n "$1" ] || die "missing DIR"
	[ -d "$1" ] || die "$1: no such directory"
	HN_DIR=$(cd "$1" && pwd -P)
}

# hn_conf: load DIR/hn.conf (NAME PORT VG FSTYPE)
hn_conf() {
	[ -r "$HN_DIR/hn.conf" ] || die "$HN_DIR is not a simulated HN (no hn.conf)"
	NAME='' PORT='' VG='' FSTYPE=''
	# shellcheck disable=SC1091
	. "$HN_DIR/hn.conf"
}

# hn_pid: sets HN_PID and HN_NS from DIR/state; true if that sshd is alive
# and still in the recorded mount namespace
hn_pid() {
	HN_PID='' HN_NS=''
	[ -r "$HN_DIR/state/sshd.pid" ] && read -r HN_PID <"$HN_DIR/state/sshd.pid"
	[ -r "$HN_DIR/state/mntns" ] && read -r HN_NS <"$HN_DIR/state/mntns"
	[[ $HN_PID =~ ^[0-9]+$ ]] || return 1
	[ -n "$HN_NS" ] || return 1
	[ "$(readlink "/proc/$HN_PID/ns/mnt" 2>/dev/null)" = "$HN_NS" ]
}

# ns_pids NS: every pid whose mount namespace is NS (one ls, no fork per pid;
# zombies have no namespace any more and are not listed)
ns_pids() {
	ls -l /proc/[0-9]*/ns/mnt 2>/dev/null |
		awk -v ns="$1" '$NF == ns { split($(NF - 2), a, "/"); print a[3] }'
}

# port_owner PORT -> pid(s) listening on 127.0.0.1:PORT (tcp)
port_listeners() {
	ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# pid_alive PID: exists and is not a zombie
pid_alive() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ -n "$st" ] && [ "${st:0:1}" != Z ] && [ "${st:0:1}" != X ]
}
