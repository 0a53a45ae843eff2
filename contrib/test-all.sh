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
cargo test --all-targets -- --test-threads="${BPC_OVZ_TEST_THREADS:-4}"
