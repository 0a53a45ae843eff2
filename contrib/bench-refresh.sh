#!/usr/bin/env bash
# Benchmark: `bpc-ovz refresh` against 1, 10 and 100 lightweight HNs (tests/scale.rs), release
# build, median of 5 runs; with HNs that answer at once and HNs that take 0.5 s to answer.
#   contrib/bench-refresh.sh               in-process SSH servers (russh) running a real /bin/sh
#   BENCH_KIND=both contrib/bench-refresh.sh   ... and one OpenSSH sshd per HN
# Goal: 100 HNs in at most 2x the time of one. Run it on an otherwise idle machine: the HN side
# shares the cores with bpc-ovz here.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
exec cargo test --release --test scale -- --ignored --nocapture --test-threads=1 bench_refresh
