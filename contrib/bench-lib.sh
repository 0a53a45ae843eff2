# shellcheck shell=bash
# Log readers for contrib/bench.sh (sourced; tests/bench_tools.rs runs them against the logs of a
# real simulated HN and a real bpc-ovz backup). Plain awk, no state.

# ve_downtime VELOG [FROM_LINE]: the VE's own down time in ms, from its log (tests/simhn's
# ve-<id>.log, which the stand-in vzctl writes on the HN and in the VM image: "stopped counter=N at
# T", "started boot=N at T", "suspended counter=N at T", "resumed at T", T in epoch ms), over the
# lines after FROM_LINE (default 0: all). Prints "MS KIND": MS the sum of every stopped->started
# and suspended->resumed interval, KIND stop, suspend, both or none (MS 0: the VE was neither
# stopped nor suspended). "nan open" when an interval has no end (the VE is still down).
ve_downtime() {
	awk -v from="${2:-0}" '
		NR <= from { next }
		/^stopped .* at [0-9]+$/ { if (!down) { down = $NF; kinds["stop"] = 1 } next }
		/^suspended .* at [0-9]+$/ { if (!down) { down = $NF; kinds["suspend"] = 1 } next }
		/^(started .*|resumed) at [0-9]+$/ { if (down) { ms += $NF - down; down = 0 } next }
		END {
			if (down) { print "nan open"; exit }
			k = ("stop" in kinds) ? (("suspend" in kinds) ? "both" : "stop") : (("suspend" in kinds) ? "suspend" : "none")
			printf "%d %s\n", ms, k
		}' "$1"
}

# step_gap_ms LOG FROM_LINE A B: milliseconds from bpc-ovz's debug line "step N A" to the next
# "step M B" (or "undo ..." when B is "undo") in its log file after line FROM_LINE; the log's
# clock is UTC, one midnight crossing is allowed. bpc-ovz writes "step N NAME" when it sends the
# step to the HN-side guard, so the gap is that step on the HN plus one round trip. Prints nan
# when either line is missing.
step_gap_ms() {
	tail -n +"$(($2 + 1))" "$1" | awk -v a="$3" -v b="$4" '
		function ms(s,  x) { split(substr(s, 12, 15), x, ":"); return (x[1] * 3600 + x[2] * 60 + x[3]) * 1000 }
		!t0 && $3 ~ /:$/ && $4 == "step" && $6 == a { t0 = ms($1); next }
		t0 && $4 == "step" && $6 == b { t1 = ms($1); exit }
		t0 && b == "undo" && $4 == "undo" { t1 = ms($1); exit }
		END {
			if (!t0 || !t1) { print "nan"; exit }
			d = t1 - t0; if (d < 0) d += 86400000
			printf "%.0f\n", d
		}'
}

# reported_downtime LOG FROM_LINE: bpc-ovz's own "VE N was down for MS ms (PARTS)" after line
# FROM_LINE: prints "MS PARTS" (the HN-side script's measurement), or nothing.
reported_downtime() {
	tail -n +"$(($2 + 1))" "$1" | sed -n 's/.* was down for \([0-9]*\) ms *(\{0,1\}\([^)]*\))\{0,1\}$/\1 \2/p' | tail -n 1
}
