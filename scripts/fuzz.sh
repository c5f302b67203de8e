#!/usr/bin/env bash
# Searches each fuzz target for new failing inputs for FUZZTIME (a duration
# or a count such as 100000x). Usage: fuzz.sh FUZZTIME PKG:TARGET...
#
# Go 1.26's fuzzing coordinator can fail a target with a bare "context
# deadline exceeded" when -fuzztime ends while a worker is mid-input
# (go.dev/issue/75804, fixed in Go 1.27): no input is written and nothing
# reproduces. Such a run counts as passed once the target's corpus replays
# cleanly; any other failure, or one that wrote an input, fails.
set -uo pipefail

GO=${GO:-go}
fuzztime=$1
shift
failed=0
for spec in "$@"; do
	pkg=${spec%%:*} target=${spec#*:}
	out=$(mktemp)
	if ! "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
		if ! grep -q 'Failing input written to' "$out" && grep -q 'context deadline exceeded' "$out" &&
			"$GO" test -count=1 -run "^${target}\$" "$pkg" >/dev/null; then
			echo "fuzz: $target stopped with Go's fuzztime shutdown race (go.dev/issue/75804), no input written; its corpus replays cleanly: counted as passed" >&2
		else
			echo "fuzz: $target in $pkg FAILED" >&2
			failed=1
		fi
	fi
	rm -f "$out"
done
exit $failed
