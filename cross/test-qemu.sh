#!/bin/bash
# Runs a cross-built rest-server under qemu user emulation and drives it with a real restic:
# init, two backups, check --read-data, forget --prune, restore, byte-for-byte compare.
# Also checks that `file` calls the binary static and stripped and that --version runs.
#
#   cross/test-qemu.sh                     # aarch64, binary from dist/bin (build it first)
#   cross/test-qemu.sh --build aarch64     # CI: build the aarch64 binary, then test it
#   cross/test-qemu.sh armv6 armv7 x86_64  # several targets, one after the other
#   cross/test-qemu.sh --binary path/to/rest-server aarch64
#   cross/test-qemu.sh --cargo-test aarch64  # `cargo test` for aarch64, run under qemu
#
# Options: --build (run cross/build.sh for the target first), --variant tls|notls (which build
# under dist/bin to test; default tls; the tls build also runs the round trip over HTTPS with
# a certificate the server generates, and the TLS check below), --binary PATH (test this file;
# one target only), --openssl small|vendored (which OpenSSL --build and --cargo-test link,
# see cross/build.sh; default small),
# --cargo-test (instead of the round trip: build the unit and integration tests for the
# target and run them under qemu, so ARM-only bugs (alignment, atomics, the SHA2 instruction
# path) show up; once per release at least). Tests that start the server binary need the
# kernel to run an aarch64 child too: --cargo-test registers qemu in binfmt_misc from
# qemu-user-static's /usr/lib/binfmt.d/qemu-aarch64.conf when it is not registered yet
# (root; stays registered until reboot).
#
# CPU models pinned so that instructions the real machines lack are caught (SIGILL):
#   aarch64: qemu's default ("max"; every ARMv8 feature, so the SHA2 instruction path runs)
#   armv7:   cortex-a7 (OpenWrt's arm_cortex-a7_neon-vfpv4, Pi 2)
#   armv6:   arm1176 (Pi Zero/1): an ARMv7 binary dies here, which proves the pin works
# Override with QEMU_CPU. x86_64 runs natively.
#
# TLS check (tls variant): the small OpenSSL of cross/openssl.sh has much configured out, so
# `openssl s_client` (the host's) must negotiate each suite the server offers, over TLS 1.2
# and 1.3, with the generated ECDSA certificate and with an RSA one, key exchange X25519 and
# P-256; TLS 1.1 must be refused.
#
# Needs: qemu-user-static and restic (apt-get install qemu-user-static restic), curl, openssl.
# Network: 127.0.0.1 only, on a port the kernel picks. Takes about a minute per target.
set -euo pipefail

cd "$(dirname "$0")/.."

die() {
    echo "cross/test-qemu.sh: $*" >&2
    exit 1
}

# shellcheck source=cross/targets.sh
. cross/targets.sh

build=0
cargo_test=0
openssl=small
variant=tls
binary=
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        --build) build=1; shift ;;
        --cargo-test) cargo_test=1; shift ;;
        --variant) [ $# -ge 2 ] || die "--variant needs tls or notls"; variant=$2; shift 2 ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
        --openssl) [ $# -ge 2 ] || die "--openssl needs small or vendored"; openssl=$2; shift 2 ;;
        -*) echo "cross/test-qemu.sh: unknown option '$1'" >&2; exit 2 ;;
        *) targets+=("$(triple_of "$1")"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl)
[ -z "$binary" ] || [ ${#targets[@]} = 1 ] || die "--binary takes exactly one target"
case "$variant" in tls | notls) ;; *) die "--variant needs tls or notls" ;; esac
case "$openssl" in small | vendored) ;; *) die "--openssl needs small or vendored" ;; esac

command -v restic >/dev/null || die "restic not found (apt-get install restic)"
command -v curl >/dev/null || die "curl not found (apt-get install curl)"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A few MiB that exercise restic's chunker and dedup: random (incompressible) files of several
# sizes, compressible text, an empty file, a symlink, nested directories, odd names.
make_source() {
    local src=$1
    mkdir -p "$src/a/b/c" "$src/with space" "$src/empty-dir"
    head -c 3145728 /dev/urandom >"$src/random-3M.bin"
    head -c 1048577 /dev/urandom >"$src/a/random-1M+1.bin"
    head -c 4095 /dev/urandom >"$src/a/b/small.bin"
    head -c 65536 /dev/urandom >"$src/a/b/c/64k.bin"
    cat "$src/random-3M.bin" "$src/a/b/small.bin" >"$src/a/b/c/duplicate-of-3M-plus.bin"
    seq 1 200000 >"$src/with space/numbers.txt"
    : >"$src/a/empty"
    printf 'h\xc3\xa9llo\n' >"$src/with space/caf$(printf '\xc3\xa9').txt"
    ln -s ../random-3M.bin "$src/a/link"
}

run_target() {
    local t=$1 bin qemu=() cpu
    bin=${binary:-dist/bin/$t/$variant/rest-server}
    if [ "$build" = 1 ]; then
        cross/build.sh --variant "$variant" --openssl "$openssl" "$t"
    fi
    [ -x "$bin" ] || die "$bin missing: run cross/build.sh --variant $variant $t (or pass --build)"

    case "$t" in
        aarch64-*) qemu=(qemu-aarch64-static); cpu=${QEMU_CPU:-} ;;
        armv7-*) qemu=(qemu-arm-static); cpu=${QEMU_CPU:-cortex-a7} ;;
        arm-*) qemu=(qemu-arm-static); cpu=${QEMU_CPU:-arm1176} ;;
        x86_64-*) qemu=(); cpu= ;;
    esac
    if [ ${#qemu[@]} -gt 0 ]; then
        command -v "${qemu[0]}" >/dev/null ||
            die "${qemu[0]} not found (apt-get install qemu-user-static)"
        [ -z "$cpu" ] || qemu+=(-cpu "$cpu")
    fi
    echo "==> $t ($variant): $bin under ${qemu[*]:-native}" >&2

    local info
    info=$(file -b "$bin")
    case "$info" in
        *"dynamically linked"* | *interpreter*) die "$bin is dynamically linked: $info" ;;
        *"statically linked"* | *"static-pie linked"*) ;;
        *) die "$bin: 'file' does not say static: $info" ;;
    esac
    case "$info" in *", stripped"*) ;; *) die "$bin is not stripped: $info" ;; esac
    echo "file: $info" >&2

    local version
    version=$("${qemu[@]}" "$bin" --version)
    case "$version" in "rest-server "*) ;; *) die "unexpected --version output: $version" ;; esac
    echo "version: $version" >&2

    round_trip "$t" "$bin" http
    # The TLS build once more over HTTPS: its OpenSSL on the target CPU, a certificate the
    # server generates, restic trusting exactly that certificate; then every suite.
    # (With --binary, pass --variant notls for a TLS-free binary.)
    if [ "$variant" = tls ]; then
        round_trip "$t" "$bin" https
        tls_check "$t" "$bin"
    fi
}

# start_server DIR ARGS...: runs the binary ($bin) under qemu with --listen on a free port,
# logging to DIR/server.log; sets server_pid and port.
start_server() {
    local d=$1 _
    shift
    "${qemu[@]}" "$bin" --listen 127.0.0.1:0 "$@" 2>"$d/server.log" &
    server_pid=$!
    port=''
    for _ in $(seq 1 300); do
        port=$(sed -n 's/.*start server on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$d/server.log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$d/server.log" >&2; die "server died"; }
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$d/server.log" >&2; die "server did not start in 30 s"; }
}

# stop_server DIR: SIGTERM, which must be a graceful shutdown with exit status 0.
stop_server() {
    local d=$1 rc=0
    kill -TERM "$server_pid"
    wait "$server_pid" || rc=$?
    server_pid=
    [ "$rc" = 0 ] || { cat "$d/server.log" >&2; die "server exited $rc after SIGTERM"; }
}

# round_trip TARGET BINARY http|https: start the server under qemu, run restic against it.
round_trip() {
    local t=$1 bin=$2 scheme=$3
    local d="$work/$t-$scheme"
    mkdir -p "$d/data" "$d/src"
    make_source "$d/src"
    local tls=() cacert=()
    if [ "$scheme" = https ]; then
        tls=(--tls --tls-generate-cert --tls-cert "$d/cert.pem" --tls-key "$d/key.pem")
        cacert=(--cacert "$d/cert.pem")
    fi

    local port
    start_server "$d" --path "$d/data" --no-auth "${tls[@]}"

    # A repository two levels down exercises the sub-repository routing as well.
    export RESTIC_REPOSITORY="rest:$scheme://127.0.0.1:$port/ci/$t/"
    export RESTIC_PASSWORD=qemu-round-trip
    local r=(restic --cache-dir "$d/cache" --quiet "${cacert[@]}")
    "${r[@]}" init
    "${r[@]}" backup --host ci "$d/src"
    echo "second run, same data: dedup, only a new snapshot" >"$d/src/a/new.txt"
    "${r[@]}" backup --host ci "$d/src"
    "${r[@]}" check --read-data
    "${r[@]}" forget --keep-last 1 --prune
    "${r[@]}" check --read-data
    "${r[@]}" restore latest --target "$d/restore"
    # restic restores absolute paths below the target.
    diff -r --no-dereference "$d/src" "$d/restore$d/src" ||
        die "restored tree differs from the source"
    [ "$(readlink "$d/restore$d/src/a/link")" = ../random-3M.bin ] || die "symlink not restored"
    [ "$("${r[@]}" snapshots --json | grep -o '"id"' | wc -l)" = 1 ] ||
        die "forget --prune did not leave exactly one snapshot"

    # On-disk layout is the Go server's: config and the five type directories, data/XX.
    local p="$d/data/ci/$t"
    for f in config data index keys locks snapshots data/00 data/ff; do
        [ -e "$p/$f" ] || die "repository on disk lacks $f"
    done
    # No stray temp files from uploads.
    if find "$d/data" -name '*temp*' | grep -q .; then die "temp files left behind"; fi

    # SIGTERM: graceful shutdown, exit 0.
    stop_server "$d"
    echo "==> $t ($variant): restic round trip over $scheme OK" >&2
    rm -rf "$d"
}

# handshake PORT ARGS...: one `openssl s_client` handshake; prints "TLSv1.x SUITE" (or
# nothing when it failed) and the server's temporary key ("X25519, 253 bits").
handshake() {
    local port=$1 out
    shift
    out=$(timeout 60 openssl s_client -connect "127.0.0.1:$port" "$@" </dev/null 2>&1) || true
    sed -n 's/^New, \(TLSv1\.[23]\), Cipher is \(.*\)$/\1 \2/p' <<<"$out"
    sed -n 's/^Server Temp Key: //p' <<<"$out"
}

# tls_check TARGET BINARY: each suite the server offers, with an ECDSA certificate (the
# generated one) and an RSA one (made here by the host's openssl), over TLS 1.2 and 1.3, key
# exchange X25519 and P-256; TLS 1.1 refused.
tls_check() {
    local t=$1 bin=$2 kind c got port n=0
    local d="$work/$t-tls"
    mkdir -p "$d/data"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$d/rsa.key" -out "$d/rsa.crt" 2>/dev/null
    for kind in ECDSA RSA; do
        if [ "$kind" = ECDSA ]; then
            start_server "$d" --path "$d/data" --no-auth --tls --tls-generate-cert \
                --tls-cert "$d/ec.crt" --tls-key "$d/ec.key"
        else
            start_server "$d" --path "$d/data" --no-auth --tls \
                --tls-cert "$d/rsa.crt" --tls-key "$d/rsa.key"
        fi
        for c in "ECDHE-$kind-AES128-GCM-SHA256" "ECDHE-$kind-AES256-GCM-SHA384" \
            "ECDHE-$kind-CHACHA20-POLY1305"; do
            got=$(handshake "$port" -tls1_2 -cipher "$c" | sed -n 1p)
            [ "$got" = "TLSv1.2 $c" ] || die "$kind certificate, TLS 1.2 $c: got '$got'"
            n=$((n + 1))
        done
        for c in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256; do
            got=$(handshake "$port" -tls1_3 -ciphersuites "$c" | sed -n 1p)
            [ "$got" = "TLSv1.3 $c" ] || die "$kind certificate, TLS 1.3 $c: got '$got'"
            n=$((n + 1))
        done
        for c in X25519:X25519 P-256:ECDH; do
            got=$(handshake "$port" -tls1_3 -groups "${c%%:*}" | sed -n 2p)
            case "$got" in "${c#*:}, "*) ;; *) die "$kind certificate, group ${c%%:*}: got '$got'" ;; esac
            n=$((n + 1))
        done
        # SECLEVEL 0: the client really offers TLS 1.1 whatever the host's openssl.cnf says;
        # the server must answer with a protocol_version alert.
        got=$(timeout 60 openssl s_client -connect "127.0.0.1:$port" -tls1_1 \
            -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1) || true
        grep -q 'alert protocol version' <<<"$got" ||
            die "$kind certificate: TLS 1.1 not refused with a protocol_version alert: $got"
        n=$((n + 1))
        stop_server "$d"
    done
    echo "==> $t ($variant): TLS check OK ($n handshakes: 12 suites, 4 groups, TLS 1.1 refused)" >&2
    rm -rf "$d"
}

# Lets the kernel run binaries of another architecture through qemu (for test binaries that
# spawn the server). The 'F' flag in the Debian conf opens qemu now, so it works in any
# mount namespace later.
ensure_binfmt() {
    local name=$1 dir=/proc/sys/fs/binfmt_misc
    [ -e "$dir/$name" ] && return 0
    if [ ! -e "$dir/register" ]; then
        mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || true
    fi
    [ -e "$dir/$name" ] && return 0
    if [ -w "$dir/register" ] && [ -f "/usr/lib/binfmt.d/$name.conf" ]; then
        cat "/usr/lib/binfmt.d/$name.conf" >"$dir/register" && return 0
    fi
    echo "cross/test-qemu.sh: warning: could not register $name in binfmt_misc; tests" \
        "that start the server binary will fail with 'Exec format error'" >&2
}

run_cargo_test() {
    local t=$1 runner var
    case "$t" in
        aarch64-*) runner="qemu-aarch64-static"; ensure_binfmt qemu-aarch64 ;;
        *) die "--cargo-test supports aarch64 (the 32-bit ARM std cannot be installed here)" ;;
    esac
    var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$t")_RUNNER"
    echo "==> cargo test for $t under $runner" >&2
    # Debug profile: overflow checks on, and the prebuilt std (tests need unwinding).
    # OpenSSL compiled for the target, the one the release binary links (also for the TLS
    # tests' own client), as cross/build.sh does.
    local features=(--features vendored)
    if [ "$openssl" = small ]; then
        local ssl_dir prefix
        ssl_dir=$(cross/openssl.sh "$t")
        prefix=$(tr 'a-z-' 'A-Z_' <<<"$t")
        export "${prefix}_OPENSSL_DIR=$ssl_dir" "${prefix}_OPENSSL_STATIC=1"
        features=(--features tls)
    fi
    env "$var=$runner" cargo-zigbuild test --locked --no-fail-fast --target "$t" "${features[@]}"
}

for t in "${targets[@]}"; do
    if [ "$cargo_test" = 1 ]; then
        run_cargo_test "$t"
    else
        run_target "$t"
    fi
done
