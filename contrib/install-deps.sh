#!/usr/bin/env bash
# Installs what the demo and the test suite need on a Debian/Ubuntu machine (run as root).
# Idempotent: only missing packages are installed.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have rsync      || need_pkgs+=(rsync)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
have ssh-keygen || need_pkgs+=(openssh-client)
have mkfs.ext4  || need_pkgs+=(e2fsprogs)
have mkfs.xfs   || need_pkgs+=(xfsprogs)
have losetup    || need_pkgs+=(mount)
have unshare    || need_pkgs+=(util-linux)
have nsenter    || need_pkgs+=(util-linux)
have flock      || need_pkgs+=(util-linux)
have perl       || need_pkgs+=(perl)
have gcc        || need_pkgs+=(gcc)
have cc         || need_pkgs+=(gcc)
have g++        || need_pkgs+=(g++)   # libFuzzer (cargo-fuzz, fuzz/run.sh)
# A real BackupPC 4 for tests/backuppc4.rs (Debian's 4.4 and its rsync_bpc). Its postinst would start
# backuppc, apache2 and exim4: the policy-rc.d below denies that. The tests run a relocated copy.
[ -d /usr/share/backuppc/lib ] && [ -x /usr/libexec/backuppc-rsync/rsync_bpc ] || need_pkgs+=(backuppc backuppc-rsync)
# The VM tier (tests/vm): qemu (TCG), the guest's initramfs tools, and the host packages whose binaries
# the guest image carries (lvm2, thin-provisioning-tools, procps, psmisc; the rest is listed above).
have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
have cpio       || need_pkgs+=(cpio)
have lz4        || need_pkgs+=(lz4)
have depmod     || need_pkgs+=(kmod)
[ -x /usr/sbin/lvm ] || need_pkgs+=(lvm2)
[ -x /usr/sbin/pdata_tools ] || need_pkgs+=(thin-provisioning-tools)
have pgrep      || need_pkgs+=(procps)
have fuser      || need_pkgs+=(psmisc)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to install: ${need_pkgs[*]}" >&2; exit 1; fi
  # Never start services while installing (openssh-server's postinst would start sshd).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Rust >= 1.89 (edition 2024). Use the machine's rustup toolchain if there is one.
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! have cargo; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cargo rustc >/dev/null || true
  fi
fi
if ! have cargo; then echo "install-deps: no cargo; install Rust >= 1.89 (https://rustup.rs)" >&2; exit 1; fi
ver=$(rustc --version | awk '{print $2}')
case "$ver" in
  1.[0-9].*|1.[0-7][0-9].*|1.8[0-8].*) echo "install-deps: rustc $ver is too old: bpc-ovz needs Rust >= 1.89 (edition 2024); use rustup" >&2; exit 1 ;;
esac
# cargo-fuzz for the brief fuzz run of test-all.sh (fuzz/run.sh; stable Rust with RUSTC_BOOTSTRAP=1).
have cargo-fuzz || cargo install --locked cargo-fuzz
mkdir -p /run/sshd
