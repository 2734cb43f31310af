#!/usr/bin/env bash
# Peak RSS of a server holding the per-repository inventory of N repositories (BENCHMARKS.md,
# "per-repository inventory"): N repositories `userI/laptop`, each with a config and one
# snapshot, then the start-up walk, then three GET /metrics and three status pages.
# usage: scripts/inventory-mem.sh BIN N PORT        (e.g. target/release/rest-server 1000 18932)
set -euo pipefail
BIN=$1 N=$2 PORT=$3
M=$(mktemp -d)
trap 'kill $p 2>/dev/null || true; rm -rf "$M"' EXIT
for i in $(seq 1 "$N"); do
    r=$M/data/user$i/laptop
    mkdir -p "$r"/{data/aa,index,keys,locks,snapshots}
    echo c >"$r/config"
    head -c 100 /dev/urandom >"$r/snapshots/$(printf '%064x' "$i")"
done
mkdir -p "$M/data"
"$BIN" --path "$M/data" --no-auth --prometheus --listen "127.0.0.1:$PORT" 2>"$M/log" &
p=$!
for _ in $(seq 1 600); do grep -q Inventory "$M/log" && break; sleep 0.1; done
echo "walk only: $(grep VmHWM /proc/$p/status | awk '{print $2, $3}')"
for _ in 1 2 3; do
    curl -sf "127.0.0.1:$PORT/metrics" >/dev/null
    curl -sf -H 'Accept: text/html' "127.0.0.1:$PORT/" >/dev/null
done
echo "walk + 3 scrapes + 3 pages: $(grep VmHWM /proc/$p/status | awk '{print $2, $3}')"
