#!/usr/bin/env bash
# Self-contained demo of bpc-ovz: boots one simulated hardware node (real sshd on 127.0.0.1, real
# ext4 LV image on a loop device, stand-in vzctl/vzlist/lvm2 tools; see tests/simhn/SPEC.md) with
# three VEs, prints the backup plan for one of them, backs it up with a real rsync through
# `bpc-ovz ssh` (as BackupPC 4 would), and prints the downtime and the result.
# Everything it starts is stopped by PID at the end. Run as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
if [ -n "${DEMO_BIN:-}" ]; then
  # tests/demo.rs runs the demo with the binary under test (dependencies already installed).
  BIN=$DEMO_BIN
else
  ./contrib/install-deps.sh
  [ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
  echo "== building bpc-ovz (release)"
  cargo build --release --quiet
  BIN=$top/target/release/bpc-ovz
fi

work=$(mktemp -d /var/tmp/bpc-ovz-demo.XXXXXX)
hn=$work/hn1
cleanup() {
  tests/simhn/hn-down "$hn" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
       || shuf -i 20000-60000 -n 1)
echo "== booting simulated HN hn1 on 127.0.0.1:$port"
tests/simhn/hn-up "$hn" hn1 "$port" vg-data ext4 >/dev/null
tests/simhn/ve-create "$hn" 101 ve101.example.com 10.10.0.101 running
tests/simhn/ve-create "$hn" 102 ve102.example.com 10.10.0.102 running
tests/simhn/ve-create "$hn" 103 ve103.example.com 10.10.0.103 stopped
tests/simhn/hn-exec "$hn" sh -c 'head -c 2000000 /dev/urandom > /vz/private/101/var/www/blob.bin'

ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
cat "$work/id_ed25519.pub" >> "$hn/ssh/authorized_keys"
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$hn/ssh/ssh_host_ed25519_key.pub")" > "$work/known_hosts"
cat > "$work/config.yaml" <<EOF
hns:
  - host: 127.0.0.1
    port: $port
    name: hn1
ssh:
  identity_files: [$work/id_ed25519]
  known_hosts: [$work/known_hosts]
  agent: false
snapshot:
  size: 256M
EOF

echo "== the HN's VEs (vzlist on hn1)"
tests/simhn/hn-exec "$hn" vzlist -a

echo
echo "== bpc-ovz plan ve101.example.com"
"$BIN" --config "$work/config.yaml" plan ve101.example.com

echo
echo "== backup: rsync -e '$BIN ssh --config ... -l root' ve101.example.com:/ (what BackupPC 4 runs)"
dest=$work/backup-ve101
mkdir -p "$dest"
start=$(date +%s.%N)
rsync -a -H --numeric-ids --protect-args --stats \
  -e "$BIN ssh --config $work/config.yaml -l root" ve101.example.com:/ "$dest/" 2>&1 | sed 's/^/   /'
end=$(date +%s.%N)
echo
echo "== result"
printf '   wall time: %.2f s\n' "$(echo "$end - $start" | bc 2>/dev/null || echo 0)"
echo "   files received: $(find "$dest" -type f | wc -l), bytes: $(du -sb "$dest" | cut -f1)"
echo "   etc/vzdump in the backup: $(ls "$dest/etc/vzdump" | tr '\n' ' ')"
echo "   VE 101 now: $(tests/simhn/hn-exec "$hn" vzctl status 101)"
left=$(tests/simhn/hn-exec "$hn" sh -c 'lvs --noheadings -o lv_name | grep -c bpcovz- ; grep -c /run/bpc-ovz/ /proc/mounts; true' | tr '\n' ' ')
echo "   snapshots / mounts left on the HN: $left"
echo "== demo done"
