#!/bin/bash
# Measures `cfs-deploy commit` on this machine:
#
#   1. the first commit of a real tree (default /usr/local/go) into an empty
#      insecure repository,
#   2. a second commit of the same, unchanged tree,
#   3. a commit of a copy of that tree after one file changed (touch + append),
#   4. peak RSS (/usr/bin/time -v) of the first commit of a generated tree of
#      100,000 files,
#   5. the same trees through an upstream `mkcomposefs --digest-store`, when
#      one is on PATH (not cfs-deploy's own multi-call front end).
#
# The source is read where it is; the repository, the copy and the
# generated tree live under $BENCH_DIR (default /var/tmp), whose filesystem
# is printed. Sources are read from a warm page cache (each measurement is
# repeated; nothing drops caches, which would disturb other work on the
# machine). Uses hyperfine when installed, else a loop timed with date.
#
# Usage: bench/repo_commit.sh [SOURCE-TREE]
#   RUNS=N           repetitions per measurement (default 3)
#   FILES=N          size of the generated tree (default 100000)
#   BENCH_DIR=DIR    where repositories and copies go (default /var/tmp)
#   KEEP=1           keep the work directory
set -euo pipefail

SRC=${1:-/usr/local/go}
RUNS=${RUNS:-3}
FILES=${FILES:-100000}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
here=$(cd "$(dirname "$0")/.." && pwd)

[ -d "$SRC" ] || { echo "no source tree $SRC" >&2; exit 1; }
work=$(mktemp -d "$BENCH_DIR/cfs-bench.XXXXXX")
cleanup() { [ -n "${KEEP:-}" ] && { echo "kept $work" >&2; return; }; rm -rf "$work"; }
trap cleanup EXIT

echo "building cfs-deploy..." >&2
(cd "$here" && go build -o "$work/cfs-deploy" ./cmd/cfs-deploy)
cfs="$work/cfs-deploy"

# An upstream mkcomposefs: on PATH and not a link to cfs-deploy.
upstream=""
if m=$(command -v mkcomposefs 2>/dev/null); then
	if ! "$m" --help 2>&1 | grep -q cfs-deploy && [ "$(readlink -f "$m")" != "$(readlink -f "$cfs")" ]; then
		upstream=$m
	fi
fi

fs_of() { df -PT "$1" | awk 'NR==2 {print $1 " (" $2 ") on " $7}'; }
files_in() { find "$1" | wc -l; }
size_of() { du -sh --apparent-size "$1" | cut -f1; }

echo "source:     $SRC, $(files_in "$SRC") entries, $(size_of "$SRC"), on $(fs_of "$SRC")" >&2
echo "repository: under $work, on $(fs_of "$work")" >&2
echo "machine:    $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Results: name, mean seconds, min seconds, extra.
results=()
add() { results+=("$1|$2|$3|$4"); }

# measure NAME PREPARE COMMAND: time COMMAND (run RUNS times, PREPARE
# before each) and record mean and min seconds.
measure() {
	local name=$1 prepare=$2 cmd=$3
	if command -v hyperfine >/dev/null; then
		hyperfine --style basic --runs "$RUNS" --prepare "$prepare" \
			--export-json "$work/h.json" "$cmd" >&2
		read -r mean min < <(python3 -c '
import json,sys
r=json.load(open(sys.argv[1]))["results"][0]
print("%.3f %.3f" % (r["mean"], r["min"]))' "$work/h.json")
	else
		local total=0 min="" t0 t1 d
		for _ in $(seq "$RUNS"); do
			bash -c "$prepare" >/dev/null 2>&1
			t0=$(date +%s.%N)
			bash -c "$cmd" >/dev/null 2>&1
			t1=$(date +%s.%N)
			d=$(echo "$t1 - $t0" | bc)
			total=$(echo "$total + $d" | bc)
			if [ -z "$min" ] || [ "$(echo "$d < $min" | bc)" = 1 ]; then min=$d; fi
		done
		mean=$(echo "scale=3; $total / $RUNS" | bc)
		min=$(printf '%.3f' "$min")
	fi
	add "$name" "$mean" "$min" "${4:-}"
}

repo="$work/repo"
fresh="rm -rf $repo && $cfs init --insecure --repo $repo"

# 1. First commit into an empty repository.
measure "first commit of $SRC" "$fresh" "$cfs commit --repo $repo --branch main $SRC"

# 2. The same tree again (the repository holds every object already).
bash -c "$fresh" >/dev/null
"$cfs" commit --repo "$repo" --branch main "$SRC" >/dev/null 2>&1
measure "second commit, unchanged tree" "true" "$cfs commit --repo $repo --branch main $SRC"

# 3. A copy of the tree with one file changed before each commit.
copy="$work/copy"
cp -a "$SRC" "$copy"
"$cfs" commit --repo "$repo" --branch copy "$copy" >/dev/null 2>&1
victim=$(find "$copy" -type f -size +8k -print -quit)
measure "commit after changing one file" \
	"touch $victim && echo change-\$RANDOM >> $victim" \
	"$cfs commit --repo $repo --branch copy $copy" "changed: ${victim#"$copy"/}"

# 4. Peak RSS for a generated tree.
gen="$work/gen"
echo "generating $FILES files..." >&2
python3 - "$gen" "$FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 1000), "e%02d" % (i % 17))
    if i < 17000:
        os.makedirs(d, exist_ok=True)
    size = (i * 7919) % 9000 if i % 4 else i % 60
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write((b"%d-" % i) * (size // 7 + 1))
EOF
genrepo="$work/genrepo"
rm -rf "$genrepo" && "$cfs" init --insecure --repo "$genrepo" >/dev/null
/usr/bin/time -v "$cfs" commit --repo "$genrepo" --branch main "$gen" >/dev/null 2>"$work/time.txt"
rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
add "first commit, $FILES generated files" "-" "-" "wall $wall, peak RSS $((rss / 1024)) MiB"
/usr/bin/time -v "$cfs" commit --repo "$genrepo" --branch main "$gen" >/dev/null 2>"$work/time.txt"
rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
add "second commit, $FILES generated files" "-" "-" "wall $wall, peak RSS $((rss / 1024)) MiB"

# 5. Upstream mkcomposefs on the same trees.
if [ -n "$upstream" ]; then
	store="$work/store"
	measure "upstream mkcomposefs --digest-store $SRC" "rm -rf $store $work/img" \
		"$upstream --digest-store=$store $SRC $work/img"
	/usr/bin/time -v "$upstream" --digest-store="$store" "$gen" "$work/img" >/dev/null 2>"$work/time.txt"
	rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
	wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
	add "upstream mkcomposefs, $FILES files" "-" "-" "wall $wall, peak RSS $((rss / 1024)) MiB"
else
	add "upstream mkcomposefs" "-" "-" "not on PATH: skipped"
fi

echo
printf '%-46s %9s %9s  %s\n' "measurement (runs: $RUNS)" "mean s" "min s" "notes"
printf '%-46s %9s %9s  %s\n' "----------------------------------------------" "---------" "---------" "-----"
for r in "${results[@]}"; do
	IFS='|' read -r name mean min extra <<<"$r"
	printf '%-46s %9s %9s  %s\n' "$name" "$mean" "$min" "$extra"
done
echo
echo "source $SRC: $(files_in "$SRC") entries, $(size_of "$SRC"); repositories on $(fs_of "$work")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
