#!/usr/bin/env bash
# The test command (README: "Run the tests"). CI runs it from .ci/run after
# starting the S3 test servers; run it yourself the same way:
#
#   bash .ci/run            # installs what the tests need, starts servers, runs this
#   bash scripts/test.sh    # just the tests; S3 tests skip unless CI=true or endpoints are set
#
# It vets the code, runs every test once, then each Go fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${VIGIL_FUZZTIME:-10s}

echo "== go vet"
go vet ./...

echo "== go test"
go test -count=1 -timeout 40m ./...

echo "== race detector on the concurrent packages"
go test -count=1 -race -timeout 20m ./storage/repo/ ./runner/...
# disks of one VM are read at once (parallel_disks), into one Builder
go test -count=1 -race -timeout 20m -run 'TestFullThenIncremental|TestNBDTransportFullThenIncremental' ./jobs/vmbackup/

echo "== fuzz ($FUZZTIME each)"
# Every func FuzzXxx in a _test.go file, run in its own package.
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
	pkg=./$(dirname "${f#./}")
	grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r fn; do
		echo "-- $pkg $fn"
		out=$(mktemp)
		rc=0
		go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$FUZZTIME" "$pkg" >"$out" 2>&1 || rc=$?
		cat "$out"
		if [[ $rc -ne 0 ]]; then
			# The fuzz engine sometimes stops a busy worker at the deadline
			# ("context deadline exceeded") without any failing input: that is
			# the machine's load, not a bug. Run it again once, one worker.
			# A real failure ("Failing input written to ...") fails at once.
			if grep -q "Failing input written" "$out" || ! grep -q "context deadline exceeded" "$out"; then
				rm -f "$out"
				exit 1
			fi
			go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$FUZZTIME" -parallel=1 "$pkg"
		fi
		rm -f "$out"
	done
done
echo "== all tests passed"
