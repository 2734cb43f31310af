#!/usr/bin/env bash
# Does evicting uploads from the page cache still pay? On a machine whose page cache is
# small (a memory cgroup of LIMIT_MIB stands in for a Pi's RAM), each binary in turn (order
# swapped on every run):
#   1. a "hot set" file of HOT_MIB, read twice inside the cgroup (what else the machine
#      keeps cached: another service's files, the system's libraries);
#   2. loadgen uploads 8 connections x PACKS x 16 MiB with verification to the server,
#      which runs inside the cgroup (one round, --keep);
#   3. `fincore` counts what is still resident: of the hot set, and of the packs just
#      uploaded (which `restic check --read-data` right after a backup would read back).
# Needs root and a memory cgroup (v1 or v2) it may create children in.
#
# usage: scripts/pagecache-pressure.sh RUNS PACKS LIMIT_MIB HOT_MIB NAME=BIN [NAME=BIN ...]
set -euo pipefail
RUNS=$1 PACKS=$2 LIMIT=$3 HOT=$4
shift 4
LOADGEN=${LOADGEN:-target/release/loadgen}

own_v1=$(sed -n 's/^[0-9]*:memory:\(.*\)$/\1/p' /proc/self/cgroup)
if [ -n "$own_v1" ] && [ -d "/sys/fs/cgroup/memory$own_v1" ]; then
    parent=/sys/fs/cgroup/memory$own_v1 limit_file=memory.limit_in_bytes
else
    parent=/sys/fs/cgroup$(sed -n 's/^0::\(.*\)$/\1/p' /proc/self/cgroup) limit_file=memory.max
fi

resident() { # MiB resident, MiB in all: of the files given
    fincore --bytes --noheadings --raw -o RES,SIZE "$@" |
        awk '{r += $1; s += $2} END {printf "%.1f %.1f\n", r / 1048576, s / 1048576}'
}

for ((r = 0; r < RUNS; r++)); do
    if ((r % 2 == 0)); then order=("$@"); else order=(); for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done; fi
    for nb in "${order[@]}"; do
        name=${nb%%=*} bin=${nb#*=}
        cg=$parent/pagecache-pressure-$$
        mkdir "$cg"
        echo $((LIMIT * 1024 * 1024)) >"$cg/$limit_file"
        dir=$(mktemp -d /var/tmp/pagecache-pressure-XXXXXX)
        # Runs "$@" inside the cgroup.
        printf '#!/bin/sh\necho $$ > %s/cgroup.procs\nexec "$@"\n' "$cg" >"$dir/in-cgroup"
        chmod +x "$dir/in-cgroup"
        dd if=/dev/urandom of="$dir/hot" bs=1M count="$HOT" conv=fsync status=none
        dd if="$dir/hot" iflag=nocache count=0 status=none # out of the cache: read in anew below
        "$dir/in-cgroup" sh -c "cat '$dir/hot' >/dev/null; cat '$dir/hot' >/dev/null"
        read -r hot_before _ < <(resident "$dir/hot")
        "$LOADGEN" --dir "$dir" --keep --only upload --rounds 1 --packs "$PACKS" \
            --server "$dir/in-cgroup $bin --path {path} --listen {listen}" >/dev/null 2>&1
        data=$(ls -d "$dir"/*/*-upload/bench/data)
        read -r hot_after _ < <(resident "$dir/hot")
        read -r packs_res packs_size < <(find "$data" -type f -print0 | xargs -0 fincore --bytes --noheadings --raw -o RES,SIZE |
            awk '{r += $1; s += $2} END {printf "%.1f %.1f\n", r / 1048576, s / 1048576}')
        echo "run $((r + 1)) $name: hot set $hot_before -> $hot_after of $HOT MiB resident; packs $packs_res of $packs_size MiB resident (cgroup limit $LIMIT MiB)"
        rm -rf "$dir"
        rmdir "$cg"
    done
done
