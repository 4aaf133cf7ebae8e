#!/bin/bash
# Measures `cfs-deploy pull` on this machine, against its floors:
#
#   1. a pull of a commit of a real tree (default /usr/local/go: about
#      14,000 objects, 230 MB) over loopback HTTP into an empty repository,
#      against committing the same tree locally into an empty repository
#      (goal: within 1.5x), and against two floors with the same 8
#      parallel requests: fetching every object and discarding it
#      (loopback HTTP), and fetching it and computing its fs-verity digest
#      (what a verified pull must do before it writes anything);
#   2. the pull of an update in which 10 files changed: bytes the server
#      sent against the changed objects + image + commit record
#      (goal: within 5%);
#   3. an OCI pull of a 3-layer image whose top layer changed, through a
#      counting proxy in front of a local docker-registry: the bytes
#      downloaded against the top layer's size (goal: only that layer);
#      a Go benchmark, BenchmarkPullChangedTopLayer in internal/oci.
#
# Repositories are insecure (no fs-verity on this host) and live under
# $BENCH_DIR (default /var/tmp). The server is bench/pullfloor, a Go
# static file server (http.FileServer) on 127.0.0.1.
#
# Usage: bench/pull.sh [SOURCE-TREE]
#   RUNS=N         repetitions of each timing (default 3)
#   BENCH_DIR=DIR  where repositories go (default /var/tmp)
#   KEEP=1         keep the work directory
#
# "cpu s" is the user + system time of the measured command alone: for a
# pull over HTTP the server's time is not in it, though on a machine with
# few cores the server competes with the pull for them.
set -euo pipefail

SRC=${1:-/usr/local/go}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
here=$(cd "$(dirname "$0")/.." && pwd)

[ -d "$SRC" ] || { echo "no source tree $SRC" >&2; exit 1; }
work=$(mktemp -d "$BENCH_DIR/cfs-bench-pull.XXXXXX")
server=""
cleanup() {
	[ -n "$server" ] && kill "$server" 2>/dev/null || true
	[ -n "${KEEP:-}" ] && { echo "kept $work" >&2; return; }
	rm -rf "$work"
}
trap cleanup EXIT

echo "building..." >&2
(cd "$here" && go build -o "$work/cfs-deploy" ./cmd/cfs-deploy && go build -o "$work/pullfloor" ./bench/pullfloor)
cfs="$work/cfs-deploy"
empty_config="$work/config.toml"
: >"$empty_config"
c() { "$cfs" --config "$empty_config" "$@"; }

# measure NAME PREPARE COMMAND...: triples of a name, a preparation and a
# command. Each command runs RUNS times, PREPARE before each (untimed);
# the commands take turns, round by round, so that a change of load on a
# shared machine hits them all alike. Records min and mean wall seconds and
# mean CPU seconds (user + system) of the command's own processes.
results=()
measure() {
	local -a names=() preps=() cmds=()
	while (($#)); do names+=("$1"); preps+=("$2"); cmds+=("$3"); shift 3; done
	local -a total=() cpu=() min=()
	local i e u s
	for _ in $(seq "$RUNS"); do
		for i in "${!cmds[@]}"; do
			bash -c "${preps[$i]}" >/dev/null 2>&1
			/usr/bin/time -o "$work/time" -f "%e %U %S" bash -c "${cmds[$i]}" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
			read -r e u s <"$work/time"
			total[i]=$(echo "${total[i]:-0} + $e" | bc)
			cpu[i]=$(echo "${cpu[i]:-0} + $u + $s" | bc)
			if [ -z "${min[i]:-}" ] || [ "$(echo "$e < ${min[i]}" | bc)" = 1 ]; then min[i]=$e; fi
			echo "${names[$i]}: $e s" >&2
		done
	done
	for i in "${!cmds[@]}"; do
		results+=("$(printf '%-52s %8.2f %8.2f %8.2f' "${names[$i]}" "${min[i]}" "$(echo "scale=3; ${total[i]} / $RUNS" | bc)" "$(echo "scale=3; ${cpu[i]} / $RUNS" | bc)")")
	done
}

remote="$work/remote"
c init --insecure --repo "$remote" >/dev/null
c commit --repo "$remote" --branch main "$SRC" >/dev/null 2>&1
objects=$(find "$remote/objects" -type f | wc -l)
bytes=$(du -sb --apparent-size "$remote/objects" | cut -f1)
(cd "$remote" && find objects -type f) >"$work/list"
"$work/pullfloor" serve "$remote" "$work/addr" &
server=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.05; done
url=$(cat "$work/addr")
echo "source: $SRC; published repository: $objects objects, $bytes bytes; served at $url" >&2
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

local_repo="$work/local"
fresh="rm -rf $local_repo && $cfs --config $empty_config init --insecure --repo $local_repo"
# The server's CPU time (clock ticks in /proc/PID/stat) during the pulls.
server_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
t0=$(server_ticks)
measure \
	"commit $SRC locally into an empty repository" "$fresh" "$cfs --config $empty_config commit --repo $local_repo --branch main $SRC" \
	"pull it over loopback HTTP into an empty repository" "$fresh" "$cfs --config $empty_config pull --repo $local_repo $url main" \
	"pull from a plain path (file://) into an empty repo" "$fresh" "$cfs --config $empty_config pull --repo $local_repo $remote main"
server_cpu=$(echo "scale=2; ($(server_ticks) - $t0) / $(getconf CLK_TCK) / $RUNS" | bc)
measure \
	"floor: GET every object, discard (8 at once)" "true" "$work/pullfloor fetch $url $work/list" \
	"floor: GET every object + fs-verity digest" "true" "$work/pullfloor fetch -verity $url $work/list"

# 2. The 10-file update.
copy="$work/copy"
cp -a "$SRC" "$copy"
c commit --repo "$remote" --branch upd "$copy" >/dev/null 2>&1
bash -c "$fresh" >/dev/null
c pull --repo "$local_repo" "$url" upd >/dev/null 2>&1
mapfile -t victims < <(find "$copy" -type f -size +2k | sort | head -n 10)
for v in "${victims[@]}"; do echo "// changed $RANDOM" >>"$v"; done
out=$(c commit --repo "$remote" --branch upd "$copy" 2>/dev/null)
commit=$(awk '$1 == "commit" {print $2}' <<<"$out")
image=$(awk '$1 == "image" {print $2}' <<<"$out")
curl -s "$url/.stats" >/dev/null # reset
c pull --repo "$local_repo" --json "$url" upd >"$work/upd.json"
sent=$(curl -s "$url/.stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
changed=0
for v in "${victims[@]}"; do changed=$((changed + $(stat -c %s "$v"))); done
objsize() { stat -c %s "$remote/objects/${1:0:2}/${1:2}"; }
imgsize=$(objsize "$image")
recsize=$(objsize "$commit")
useful=$((changed + imgsize + recsize))

# 3. OCI.
echo "OCI benchmark (go test -bench PullChangedTopLayer ./internal/oci)..." >&2
oci=$(cd "$here" && go test -run '^$' -bench BenchmarkPullChangedTopLayer -benchtime 1x ./internal/oci 2>&1 | grep -E '^Benchmark' || true)

echo
printf '%-52s %8s %8s %8s\n' "measurement (runs: $RUNS)" "min s" "mean s" "cpu s"
printf '%s\n' "${results[@]}"
echo "(the HTTP server used $server_cpu s of CPU per pull)"
echo
echo "10-file update: server sent $sent bytes; changed objects $changed + image $imgsize + commit $recsize = $useful bytes; ratio $(echo "scale=4; $sent / $useful" | bc)"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  pull --json: %d objects fetched (%d bytes), %d requests, %.3fs" % (r["fetched_objects"], r["fetched_object_bytes"], r["requests"], r["seconds"]))' "$work/upd.json"
echo
echo "OCI pull of a 3-layer image whose top layer changed:"
echo "  $oci"
echo
echo "source $SRC: $objects objects, $bytes bytes; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
