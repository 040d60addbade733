#!/usr/bin/env bash
# Benchmark vigil against restic 0.18.1 on the shared corpus, in one run, on
# this machine. Prints wall, CPU, peak RSS and stored bytes per step, and the
# vigil/restic ratios.
#
#   bash scripts/bench.sh [--size 2G] [--dir /tmp/vigil-bench] [--markdown FILE]
#
# The corpus comes from ../shared/bench/gen (seed 1). restic is installed with
# `go install` (cached under ~/.cache/vigil-tools). Both tools read the
# corpus from the page cache (it was just written), with default options;
# vigil chooses its image chunking profile for *.img files by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

size=2G
dir=${TMPDIR:-/tmp}/vigil-bench
markdown=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--markdown) markdown=$2; shift 2 ;;
	*) echo "usage: $0 [--size 2G] [--dir DIR] [--markdown FILE]" >&2; exit 2 ;;
	esac
done

RESTIC_VERSION=v0.18.1
cache=${VIGIL_TOOL_CACHE:-$HOME/.cache/vigil-tools}
restic=$cache/restic-$RESTIC_VERSION/restic
if [[ ! -x $restic ]]; then
	echo "installing restic $RESTIC_VERSION (once per machine)" >&2
	GOBIN=$(dirname "$restic") go install github.com/restic/restic/cmd/restic@$RESTIC_VERSION
fi
if [[ ! -x /usr/bin/time ]]; then
	apt-get install -y time >/dev/null
fi
mkdir -p "$dir"
vigil=$dir/vigil
go build -o "$vigil" ./cmd/vigil

corpus=$dir/corpus-$size
if [[ ! -f $corpus/MANIFEST.txt ]]; then
	echo "generating corpus ($size) in $corpus" >&2
	(cd "$root/../shared/bench/gen" && go run . -out "$corpus" -seed 1 -size "$size")
fi

export RESTIC_PASSWORD=bench VIGIL_PASSWORD=bench
results=$dir/results.tsv
: >"$results"

# measure TOOL STEP BYTES CMD...: runs CMD, records wall/user/sys/rss.
measure() {
	local tool=$1 step=$2 bytes=$3
	shift 3
	local t
	t=$(mktemp)
	/usr/bin/time -f "%e %U %S %M" -o "$t" "$@" >/dev/null 2>"$dir/$tool-$step.err" || {
		echo "$tool $step failed:" >&2
		cat "$dir/$tool-$step.err" >&2
		exit 1
	}
	local repo=$dir/$tool-repo
	local stored
	stored=$(du -sb "$repo" | cut -f1)
	read -r wall user sys rss <"$t"
	rm -f "$t"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$step" "$bytes" "$wall" "$user" "$sys" "$rss" "$stored" >>"$results"
	echo "$tool $step: ${wall}s, rss ${rss} KiB, repo $stored bytes" >&2
}

img=$(stat -c %s "$corpus/vm-a.img")
logs1=$(du -sb "$corpus/logs-day1" | cut -f1)
logs2=$(du -sb "$corpus/logs-day2" | cut -f1)

for tool in restic vigil; do
	repo=$dir/$tool-repo
	rm -rf "$repo" "$dir/$tool-cache" "$dir/$tool-restore"
	if [[ $tool == restic ]]; then
		export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$dir/restic-cache
		"$restic" init -q
		cmd=("$restic")
	else
		export VIGIL_REPOSITORY=$repo
		cmd=("$vigil" --cache-dir "$dir/vigil-cache")
		"${cmd[@]}" init -q
	fi
	measure $tool "backup vm-a" "$img" "${cmd[@]}" backup "$corpus/vm-a.img"
	measure $tool "backup vm-a-next" "$img" "${cmd[@]}" backup "$corpus/vm-a-next.img"
	measure $tool "backup vm-b" "$img" "${cmd[@]}" backup "$corpus/vm-b.img"
	measure $tool "backup logs-day1" "$logs1" "${cmd[@]}" backup "$corpus/logs-day1"
	measure $tool "backup logs-day2" "$logs2" "${cmd[@]}" backup "$corpus/logs-day2"
	# The snapshot of vm-a: the first one.
	snap=$("${cmd[@]}" snapshots --json | python3 -c '
import json, sys
text = sys.stdin.read().strip()
items = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines()]
items.sort(key=lambda s: s["time"])
print(items[0]["id"])')
	measure $tool "restore vm-a" "$img" "${cmd[@]}" restore "$snap" --target "$dir/$tool-restore"
	cmp "$corpus/vm-a.img" "$(find "$dir/$tool-restore" -name vm-a.img)" || { echo "$tool restore differs" >&2; exit 1; }
	rm -rf "$dir/$tool-restore"
	measure $tool "check --read-data" "$(du -sb "$repo" | cut -f1)" "${cmd[@]}" check --read-data
done

python3 - "$results" "$markdown" "$size" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
md, size = sys.argv[2], sys.argv[3]
data = collections.OrderedDict()
prev = {}
for tool, step, b, wall, user, sys_, rss, stored in rows:
    b, wall, user, sys_, rss, stored = int(b), float(wall), float(user), float(sys_), int(rss), int(stored)
    added = stored - prev.get(tool, 0)
    prev[tool] = stored
    data.setdefault(step, {})[tool] = dict(mbps=b / 1e6 / wall, wall=wall, cpu=user + sys_, rss=rss / 1024, added=added, total=stored)
out = []
out.append(f"| step | restic wall | vigil wall | restic MB/s | vigil MB/s | speed ratio | restic CPU s | vigil CPU s | restic peak RSS | vigil peak RSS | restic stored | vigil stored | stored ratio |")
out.append("|" + "---|" * 13)
for step, t in data.items():
    r, v = t["restic"], t["vigil"]
    st_r = f"+{r['added']/1e6:,.1f} MB" if step.startswith("backup") else ""
    st_v = f"+{v['added']/1e6:,.1f} MB" if step.startswith("backup") else ""
    ratio = f"{v['added']/r['added']:.2f}" if step.startswith("backup") and r["added"] > 0 else ""
    out.append(f"| {step} | {r['wall']:.2f} s | {v['wall']:.2f} s | {r['mbps']:.0f} | {v['mbps']:.0f} | {v['mbps']/r['mbps']:.2f}x | {r['cpu']:.1f} | {v['cpu']:.1f} | {r['rss']:.0f} MiB | {v['rss']:.0f} MiB | {st_r} | {st_v} | {ratio} |")
last = list(data.values())[-1]
out.append("")
out.append(f"Total repository after the five backups: restic {prev['restic']/1e6:,.0f} MB, vigil {prev['vigil']/1e6:,.0f} MB (ratio {prev['vigil']/prev['restic']:.2f}).")
text = "\n".join(out)
print(text)
if md:
    open(md, "w").write(text + "\n")
PY
