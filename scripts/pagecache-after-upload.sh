#!/usr/bin/env bash
# How much of just-uploaded packs a server leaves in the page cache (the experiment on early
# writeback with the HTTP layer on hyper; BENCHMARKS.md lists where its log is). For each binary in turn, RUNS
# times with the order swapped on every run: loadgen uploads 8 connections x PACKS x 16 MiB
# with verification (one round, --keep), then `fincore` counts the resident bytes of the
# packs in that repository right after the server has stopped.
#
# usage: scripts/pagecache-after-upload.sh RUNS PACKS NAME=BIN [NAME=BIN ...]
set -euo pipefail
RUNS=$1 PACKS=$2
shift 2
LOADGEN=${LOADGEN:-target/release/loadgen}
for ((r = 0; r < RUNS; r++)); do
    if ((r % 2 == 0)); then order=("$@"); else order=(); for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done; fi
    for nb in "${order[@]}"; do
        name=${nb%%=*} bin=${nb#*=}
        dir=$(mktemp -d /tmp/pagecache-XXXXXX)
        "$LOADGEN" --dir "$dir" --keep --only upload --rounds 1 --packs "$PACKS" \
            --server "$bin --path {path} --listen {listen}" >/dev/null 2>&1
        # the verify upload's repository: $dir/loadgen-<pid>/<n>-upload/bench/data
        data=$(ls -d "$dir"/*/*-upload/bench/data)
        read -r res size < <(find "$data" -type f -print0 | xargs -0 fincore --bytes --noheadings --raw -o RES,SIZE |
            awk '{r += $1; s += $2} END {print r, s}')
        awk -v n="$name" -v r="$((r + 1))" -v res="$res" -v size="$size" \
            'BEGIN { printf "run %d %s: %.1f of %.1f MiB of packs resident after upload (%.1f%%)\n", r, n, res / 1048576, size / 1048576, 100 * res / size }'
        rm -rf "$dir"
    done
done
