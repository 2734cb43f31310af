#!/usr/bin/env bash
# HTTPS upload throughput as a ratio of plain HTTP, in one run, on this machine (BENCHMARKS.md
# "TLS"). One curl client uploads one large object (POST /r/data/<sha256>) to the release
# binary over loopback, data dir in /dev/shm so the disk does not set the pace. Modes:
#   http             plain HTTP
#   https            TLS 1.3, server defaults
#   https-noaes      server with AES-NI (and PCLMULQDQ) masked by OPENSSL_ia32cap: the
#                    Raspberry Pi 4 case if the server kept AES-GCM first
#   https-noaes-cc   the same with --tls-prefer-chacha20: what the server picks by itself on
#                    a CPU without AES (run-time detection)
# The client (curl, OpenSSL) keeps AES-NI: a laptop backing up to a Pi.
#
# Usage: scripts/bench-tls.sh [BIN] [MiB] [runs]   (defaults: target/release/rest-server 512 3)
set -euo pipefail
BIN=${1:-target/release/rest-server}
MIB=${2:-512}
RUNS=${3:-3}
PORT=${PORT:-18555} # and the next three
MASK='~0x200000200000000' # cpuid(1).ECX bit 25 (AES) and bit 1 (PCLMULQDQ)
WORK=$(mktemp -d /dev/shm/rs-bench-tls.XXXXXX)

head -c $((MIB << 20)) /dev/urandom >"$WORK/body"
ID=$(sha256sum "$WORK/body" | cut -c1-64)

MODES=(http https https-noaes https-noaes-cc)
declare -A PID URLS

start() { # mode port
    local scheme=http env=() flags=() dir="$WORK/$1"
    case $1 in
    http) ;;
    https) scheme=https ;;
    https-noaes) scheme=https env=(OPENSSL_ia32cap="$MASK") ;;
    https-noaes-cc) scheme=https env=(OPENSSL_ia32cap="$MASK") flags=(--tls-prefer-chacha20) ;;
    esac
    if [ "$scheme" = https ]; then flags+=(--tls --tls-generate-cert); fi
    env "${env[@]}" "$BIN" --path "$dir" --no-auth --listen "127.0.0.1:$2" \
        "${flags[@]}" 2>"$WORK/$1.log" &
    PID[$1]=$!
    for _ in $(seq 100); do grep -q "start server on" "$WORK/$1.log" && break; sleep 0.05; done
    URLS[$1]="$scheme://127.0.0.1:$2"
    curl_ "$1" -o /dev/null -X POST "${URLS[$1]}/r/?create=true"
}

curl_() { # mode curl-args...
    local m=$1
    shift
    if [ "${URLS[$m]%%:*}" = https ]; then
        curl -sS --cacert "$WORK/$m/public_key" "$@"
    else
        curl -sS "$@"
    fi
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

upload() { # mode -> "MB/s server-CPU-seconds-per-GiB"
    local m=$1 before after out
    before=$(cpu_ticks "${PID[$m]}")
    out=$(curl_ "$m" -o /dev/null -X POST --data-binary @"$WORK/body" \
        -w '%{http_code} %{speed_upload}' "${URLS[$m]}/r/data/$ID")
    after=$(cpu_ticks "${PID[$m]}")
    [ "${out%% *}" = 200 ] || { echo "upload failed: $out" >&2; exit 1; }
    curl_ "$m" -o /dev/null -X DELETE "${URLS[$m]}/r/data/$ID"
    awk -v s="${out#* }" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v mib="$MIB" \
        'BEGIN { printf "%.0f %.2f", s / 1e6, t / hz * 1024 / mib }'
}

cipher() {
    [ "${URLS[$1]%%:*}" = https ] || { echo "-"; return; }
    curl_ "$1" -v -o /dev/null "${URLS[$1]}/r/config" 2>&1 |
        sed -n 's/.*SSL connection using \(.*\)/\1/p' | tr -d '\r'
}

median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

trap 'for p in "${PID[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT
port=$PORT
for m in "${MODES[@]}"; do start "$m" $((port++)); done
declare -A SPEEDS CPUS
# Round robin, so that whatever else the machine does hits every mode alike.
for _ in $(seq "$RUNS"); do
    for m in "${MODES[@]}"; do
        read -r speed cpu <<<"$(upload "$m")"
        SPEEDS[$m]+="$speed "
        CPUS[$m]+="$cpu "
    done
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "load $(cut -d' ' -f1-3 /proc/loadavg); $MIB MiB per upload, median of $RUNS"
printf '%-16s %8s %7s %12s %7s  %s\n' mode "MB/s" ratio "CPU s/GiB" ratio cipher
for m in "${MODES[@]}"; do
    s=$(echo "${SPEEDS[$m]}" | median)
    c=$(echo "${CPUS[$m]}" | median)
    [ "$m" = http ] && { s0=$s; c0=$c; }
    printf '%-16s %8s %7s %12s %7s  %s\n' "$m" "$s" \
        "$(awk -v a="$s" -v b="$s0" 'BEGIN { printf "%.2f", a / b }')" "$c" \
        "$(awk -v a="$c" -v b="$c0" 'BEGIN { printf "%.2f", a / b }')" "$(cipher "$m")"
done
