#!/usr/bin/env bash
# Benchmark vigil against restic 0.18.1 on the shared corpus, in one run, on
# this machine. Prints wall, CPU, peak RSS and stored bytes per step, and the
# vigil/restic ratios.
#
#   bash scripts/bench.sh [--size 2G] [--dir /tmp/vigil-bench] [--markdown FILE] [--s3]
#
# The corpus comes from ../shared/bench/gen (seed 1). restic is installed with
# `go install` (cached under ~/.cache/vigil-tools). Both tools read the
# corpus from the page cache (it was just written), with default options;
# vigil chooses its image chunking profile for *.img files by itself.
#
# --s3 runs the same steps for both tools into a MinIO on 127.0.0.1 started
# with scripts/s3-servers.sh (and stopped at the end), and on local disk in the
# same run, then prints the S3 table with the server's CPU time per step (from
# /proc/PID/stat of the minio process) and each tool's S3/local wall ratio.
# Stored bytes over S3 are what MinIO keeps on its disk (objects plus its
# xl.meta files).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

size=2G
dir=${TMPDIR:-/tmp}/vigil-bench
markdown=""
s3=false
while [[ $# -gt 0 ]]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--markdown) markdown=$2; shift 2 ;;
	--s3) s3=true; shift ;;
	*) echo "usage: $0 [--size 2G] [--dir DIR] [--markdown FILE] [--s3]" >&2; exit 2 ;;
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

minio_pid=""
if $s3; then
	s3env=$dir/s3.env
	# A previous run killed hard leaves its env file behind: stop those first.
	scripts/s3-servers.sh stop "$s3env" >/dev/null 2>&1 || true
	scripts/s3-servers.sh start "$s3env"
	trap 'scripts/s3-servers.sh stop "$s3env"' EXIT
	# shellcheck disable=SC1090
	. "$s3env"
	minio_pid=$(<"$VIGIL_S3_SERVERS_STATE/minio.pid")
	minio_data=$VIGIL_S3_SERVERS_STATE/minio-data
	export AWS_ACCESS_KEY_ID=$VIGIL_TEST_MINIO_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$VIGIL_TEST_MINIO_SECRET_KEY
	# No profile or shared files: only the keys above, for both tools.
	export AWS_PROFILE="" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
fi
clk_tck=$(getconf CLK_TCK)

# server_cpu: CPU seconds (user + system) the minio process has used so far.
server_cpu() {
	[[ -n $minio_pid ]] || { echo 0; return; }
	# Fields after "pid (comm) ": state is 1, so utime (14) and stime (15) are 12 and 13.
	sed 's/^.*) //' "/proc/$minio_pid/stat" | awk -v hz="$clk_tck" '{printf "%.2f", ($12 + $13) / hz}'
}

# stored_bytes TOOL: the repository's size on disk (for S3: its bucket in MinIO's data folder).
stored_bytes() {
	case $1 in
	*-s3) du -sb "$minio_data/bench-${1%-s3}" | cut -f1 ;;
	*) du -sb "$dir/$1-repo" | cut -f1 ;;
	esac
}

# measure TOOL STEP BYTES CMD...: runs CMD, records wall/user/sys/rss, the
# repository size after it and the S3 server's CPU time during it.
measure() {
	local tool=$1 step=$2 bytes=$3
	shift 3
	local t cpu0 cpu1
	t=$(mktemp)
	cpu0=$(server_cpu)
	/usr/bin/time -f "%e %U %S %M" -o "$t" "$@" >/dev/null 2>"$dir/$tool-$step.err" || {
		echo "$tool $step failed:" >&2
		cat "$dir/$tool-$step.err" >&2
		exit 1
	}
	cpu1=$(server_cpu)
	local stored
	stored=$(stored_bytes "$tool")
	read -r wall user sys rss <"$t"
	rm -f "$t"
	local srv
	srv=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b - a}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$step" "$bytes" "$wall" "$user" "$sys" "$rss" "$stored" "$srv" >>"$results"
	echo "$tool $step: ${wall}s, rss ${rss} KiB, repo $stored bytes, server cpu ${srv}s" >&2
}

img=$(stat -c %s "$corpus/vm-a.img")
logs1=$(du -sb "$corpus/logs-day1" | cut -f1)
logs2=$(du -sb "$corpus/logs-day2" | cut -f1)

tools=(restic vigil)
if $s3; then
	tools=(restic vigil restic-s3 vigil-s3)
fi
for tool in "${tools[@]}"; do
	base=${tool%-s3}
	rm -rf "$dir/$tool-cache" "$dir/$tool-restore"
	if [[ $tool == *-s3 ]]; then
		# A fresh server per run, so the bucket is new.
		repo=s3:$VIGIL_TEST_MINIO_ENDPOINT/bench-$base/repo
	else
		repo=$dir/$tool-repo
		rm -rf "$repo"
	fi
	if [[ $base == restic ]]; then
		export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$dir/$tool-cache
		"$restic" init -q
		cmd=("$restic")
	else
		export VIGIL_REPOSITORY=$repo
		cmd=("$vigil" --cache-dir "$dir/$tool-cache")
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
	measure $tool "check --read-data" "$(stored_bytes "$tool")" "${cmd[@]}" check --read-data
done

python3 - "$results" "$markdown" "$size" "$s3" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
md, size, s3 = sys.argv[2], sys.argv[3], sys.argv[4] == "true"
data = collections.OrderedDict()
prev = {}
for tool, step, b, wall, user, sys_, rss, stored, srv in rows:
    b, wall, user, sys_, rss, stored, srv = int(b), float(wall), float(user), float(sys_), int(rss), int(stored), float(srv)
    added = stored - prev.get(tool, 0)
    prev[tool] = stored
    data.setdefault(step, {})[tool] = dict(bytes=b, mbps=b / 1e6 / wall, wall=wall, cpu=user + sys_, rss=rss / 1024, added=added, total=stored, srv=srv)

def table(r_name, v_name, server):
    out = []
    cols = ["step", "restic wall", "vigil wall", "restic MB/s", "vigil MB/s", "speed ratio", "restic CPU s", "vigil CPU s"]
    if server:
        cols += ["MinIO CPU s (restic)", "MinIO CPU s (vigil)"]
    cols += ["restic peak RSS", "vigil peak RSS", "restic stored", "vigil stored", "stored ratio"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    for step, t in data.items():
        r, v = t[r_name], t[v_name]
        backup = step.startswith("backup")
        st_r = f"+{r['added']/1e6:,.1f} MB" if backup else ""
        st_v = f"+{v['added']/1e6:,.1f} MB" if backup else ""
        ratio = f"{v['added']/r['added']:.2f}" if backup and r["added"] > 0 else ""
        cells = [step, f"{r['wall']:.2f} s", f"{v['wall']:.2f} s", f"{r['mbps']:.0f}", f"{v['mbps']:.0f}", f"{v['mbps']/r['mbps']:.2f}x", f"{r['cpu']:.1f}", f"{v['cpu']:.1f}"]
        if server:
            cells += [f"{r['srv']:.1f}", f"{v['srv']:.1f}"]
        cells += [f"{r['rss']:.0f} MiB", f"{v['rss']:.0f} MiB", st_r, st_v, ratio]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"Total repository after the five backups: restic {prev[r_name]/1e6:,.0f} MB, vigil {prev[v_name]/1e6:,.0f} MB (ratio {prev[v_name]/prev[r_name]:.2f}).")
    return out

def total(tool, steps):
    b = sum(data[s][tool]["bytes"] for s in steps)
    w = sum(data[s][tool]["wall"] for s in steps)
    return b, w

if not s3:
    out = table("restic", "vigil", False)
else:
    out = table("restic-s3", "vigil-s3", True)
    out.append("")
    out.append("Over S3 against local disk, same run (wall time, S3 / local; lower is better, 1.00 = no cost):")
    out.append("")
    out.append("| step | restic local | restic S3 | restic S3/local | vigil local | vigil S3 | vigil S3/local |")
    out.append("|---|---|---|---|---|---|---|")
    for step, t in data.items():
        rl, rs, vl, vs = t["restic"], t["restic-s3"], t["vigil"], t["vigil-s3"]
        out.append(f"| {step} | {rl['wall']:.2f} s | {rs['wall']:.2f} s | {rs['wall']/rl['wall']:.2f} | {vl['wall']:.2f} s | {vs['wall']:.2f} s | {vs['wall']/vl['wall']:.2f} |")
    steps = list(data)
    for label, sel in (("backups", [s for s in steps if s.startswith("backup")]), ("all steps", steps)):
        _, rl = total("restic", sel)
        _, rs = total("restic-s3", sel)
        b, vl = total("vigil", sel)
        _, vs = total("vigil-s3", sel)
        out.append(f"| **{label}** | {rl:.2f} s | {rs:.2f} s | {rs/rl:.2f} | {vl:.2f} s | {vs:.2f} s | {vs/vl:.2f} |")
    out.append("")
    b_sel = [s for s in steps if s.startswith("backup")]
    b, vs = total("vigil-s3", b_sel)
    _, rs = total("restic-s3", b_sel)
    _, vl = total("vigil", b_sel)
    _, rl = total("restic", b_sel)
    srv_v = sum(data[s]["vigil-s3"]["srv"] for s in steps)
    srv_r = sum(data[s]["restic-s3"]["srv"] for s in steps)
    out.append(f"Targets (issue 3), over the five backups: vigil S3/local {vs/vl:.2f}x (target <= 1.20x; restic here {rs/rl:.2f}x); "
               f"vigil over S3 {b/1e6/vs:.0f} MB/s against restic's {b/1e6/rs:.0f} MB/s = {rs/vs:.2f}x restic's throughput (target >= 1.6x). "
               f"MinIO CPU over all steps: {srv_v:.1f} s for vigil, {srv_r:.1f} s for restic.")
text = "\n".join(out)
print(text)
if md:
    open(md, "w").write(text + "\n")
PY
