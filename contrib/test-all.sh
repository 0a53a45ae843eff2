#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests against simulated
# hardware nodes (real sshd, real rsync, real ext4/xfs snapshots). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
./contrib/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "== simulated HN self-test"
bash tests/simhn/selftest.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast -- --test-threads="${BPC_OVZ_TEST_THREADS:-4}"
echo "== fuzz (brief: the argv/protect-args and HN-output parsers, BPC_OVZ_FUZZ_SECS per target)"
./fuzz/run.sh "${BPC_OVZ_FUZZ_SECS:-8}"
# The VM tier: two qemu guests with a real kernel and real LVM as hardware nodes (tests/vm, tests/vm.rs;
# ~5-8 min on 2 cores). Its tests are #[ignore]d above and run here, one at a time.
if [ "${BPC_OVZ_SKIP_VM:-}" = 1 ]; then
  for fd in 1 2; do
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n%s\n%s\n\n' \
      '!!! VM TIER SKIPPED (BPC_OVZ_SKIP_VM=1): real LVM, XFS/ext4 snapshots, overflow,' \
      '!!! busy lvremove and SIGKILL cleanup on a real kernel were NOT tested.' >&$fd
  done
else
  echo "== VM tier (real LVM in qemu guests)"
  vm_t0=$SECONDS
  cargo test --test vm -- --ignored --test-threads=1 --nocapture
  echo "== VM tier took $((SECONDS - vm_t0)) s"
fi
