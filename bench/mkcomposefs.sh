#!/bin/bash
# Benchmarks of the image front end, in one run on this machine:
#  - mkcomposefs --print-digest-only over a real tree (default /usr/local/go)
#    next to the floor: a plain Go program that walks the tree and SHA-256s
#    every byte on all cores (bench/floor), and next to upstream C
#    mkcomposefs when one is on PATH (or in $UPSTREAM_MKCOMPOSEFS);
#  - mkcomposefs --from-file of the 64,000-entry cs9 developer dump, with
#    peak memory.
# Warm page cache: every command runs once before it is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:-/usr/local/go}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -o "$out/cfs-deploy" ./cmd/cfs-deploy
go build -o "$out/floor" ./bench/floor
zcat ../shared/conformance/upstream/cs9-x86_64-developer.dump.gz >"$out/cs9.dump"
upstream=${UPSTREAM_MKCOMPOSEFS:-$(command -v mkcomposefs || true)}
# A mkcomposefs on PATH may be our own symlink; only a different binary counts.
if [ -n "$upstream" ] && [ "$(readlink -f "$upstream")" = "$(readlink -f "$out/cfs-deploy")" ]; then upstream=; fi

cmds=("$out/floor $tree" "$out/cfs-deploy mkcomposefs --print-digest-only $tree")
[ -n "$upstream" ] && cmds+=("$upstream --print-digest-only $tree")
if command -v hyperfine >/dev/null; then
	hyperfine -N --warmup 2 --runs 10 "${cmds[@]}"
	hyperfine -N --warmup 1 --runs 10 "$out/cfs-deploy mkcomposefs --from-file $out/cs9.dump $out/cs9.img"
else
	for c in "${cmds[@]}" "$out/cfs-deploy mkcomposefs --from-file $out/cs9.dump $out/cs9.img"; do
		$c >/dev/null
		s=$(date +%s.%N); for _ in 1 2 3 4 5; do $c >/dev/null; done; e=$(date +%s.%N)
		echo "$(echo "($e - $s) / 5" | bc -l | cut -c1-6) s  $c"
	done
fi
/usr/bin/time -f "cs9 --from-file: %e s, peak RSS %M KiB" "$out/cfs-deploy" mkcomposefs --from-file "$out/cs9.dump" "$out/cs9.img"
echo "cs9 image sha256: $(sha256sum "$out/cs9.img" | cut -c1-64) (upstream: $(cat ../shared/conformance/upstream/cs9-x86_64-developer.dump.gz.sha256))"
