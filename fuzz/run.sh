#!/usr/bin/env bash
# Brief fuzz run of every target (CI: contrib/test-all.sh). Usage: fuzz/run.sh [SECONDS-PER-TARGET]
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags cargo-fuzz passes
# (sanitizer, coverage instrumentation). Each target starts from its committed seeds
# (fuzz/seeds/TARGET) plus what earlier runs found (fuzz/corpus/TARGET, not committed); a crash
# leaves its input in fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-${BPC_OVZ_FUZZ_SECS:-8}}
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in $(cargo fuzz list); do
	mkdir -p "corpus/$t"
	echo "-- fuzz $t (${secs}s)"
	# -O: optimised; -s none would skip ASan, but the parsers are safe Rust and ASan also
	# catches stack overflows from deep recursion, so it stays on.
	log="target/fuzz-$t.log"
	rc=0
	cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
		-max_total_time="$secs" -max_len=8192 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
	grep -E '^(Done |stat::number_of_executed_units)' "$log" || true
	if [ "$rc" != 0 ]; then
		tail -n 40 "$log" >&2
		echo "fuzz: target $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
		exit 1
	fi
done
