#!/bin/bash
# Builds fully static, stripped release binaries of rest-server for small machines.
#
#   cross/build.sh                      # all four targets, with and without TLS
#   cross/build.sh aarch64 x86_64       # some targets (short names or full triples)
#   cross/build.sh --variant notls armv6
#   cross/build.sh --openssl vendored aarch64   # OpenSSL as openssl-src builds it (fallback)
#
# Targets (short name = Rust triple; the machines they are for):
#   aarch64 = aarch64-unknown-linux-musl        Pi 3/4/5 with a 64-bit OS, most NAS, newer ARM routers
#   armv7   = armv7-unknown-linux-musleabihf    32-bit ARMv7 with VFPv3/NEON: routers, Pi 2+
#   armv6   = arm-unknown-linux-musleabihf      ARMv6 + VFP: Pi Zero/1 (and so every 32-bit Pi)
#   x86_64  = x86_64-unknown-linux-musl         PCs, x86 NAS and routers
#
# Variants: "tls" has OpenSSL compiled in (a static binary cannot use the system's libssl);
# "notls" is `--no-default-features`, for routers with little flash or TLS terminated
# elsewhere. Both use the `dist` cargo profile (release with opt-level "z", see Cargo.toml).
#
# OpenSSL for "tls": by default the small one of cross/openssl.sh (built once per target and
# cached in the target dir, from the source of the openssl-src crate in Cargo.lock, with
# everything a TLS server of ours does not use configured out), linked through openssl-sys's
# <TRIPLE>_OPENSSL_DIR and <TRIPLE>_OPENSSL_STATIC=1. `--openssl vendored` builds with
# `--features vendored` instead: openssl-src's default configuration, 1.3 MB bigger on
# aarch64 and over its 4.5 MiB budget; the fallback should the small recipe ever fail.
# Both compile OpenSSL with C_OPT_FLAGS and without unwind tables (C code never unwinds
# here and Rust panics abort: 0.42 MB of .eh_frame on aarch64).
#
# Output: dist/bin/<triple>/<variant>/rest-server (override with --out DIR), plus a size table.
#
# std is built from source for every target (-Zbuild-std, with RUSTC_BOOTSTRAP=1), so it is
# optimized for size and LTO'd with the rest: 77 KB (7.6%) smaller on aarch64. The 32-bit ARM
# targets need this anyway. --prebuilt-std uses rustup's std for aarch64 and x86_64 instead.
#
# Everything needed comes from rustup, pip and apt and is installed idempotently on the first
# run (skip with --no-setup): `rustup target add` for the targets that have a prebuilt std,
# `rustup component add rust-src` for the two 32-bit ARM targets (whose rust-std cannot be
# installed here, so std is built from source with -Zbuild-std and RUSTC_BOOTSTRAP=1), and
# `pip install ziglang cargo-zigbuild` (zig is the C compiler and linker, with its own musl).
#
# Environment:
#   CARGO_TARGET_DIR   honoured as usual (default: ./target)
#   OPT_LEVEL          override the dist profile's opt-level (size measurements)
#   C_OPT_FLAGS        optimization flags for OpenSSL's C code (default "-Os")
#   ZIGLANG_VERSION, CARGO_ZIGBUILD_VERSION   the pip versions to install (the tested ones)
set -euo pipefail

cd "$(dirname "$0")/.."

ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.17.1}
CARGO_ZIGBUILD_VERSION=${CARGO_ZIGBUILD_VERSION:-0.24.0}
export C_OPT_FLAGS=${C_OPT_FLAGS:--Os}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
    echo "cross/build.sh: $*" >&2
    exit 2
}

# shellcheck source=cross/targets.sh
. cross/targets.sh

# The 32-bit ARM musl targets have no installable rust-std here: build std from rust-src.
needs_build_std() {
    case "$1" in
        armv7-unknown-linux-musleabihf | arm-unknown-linux-musleabihf) return 0 ;;
        *) return 1 ;;
    esac
}

# Whether this build compiles std from source (always for 32-bit ARM, by default for all).
uses_build_std() {
    needs_build_std "$1" || [ "$prebuilt_std" = 0 ]
}

variants="tls notls"
openssl=small
out=dist/bin
setup=1
prebuilt_std=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --variant) [ $# -ge 2 ] || die "--variant needs tls, notls or both"
            case "$2" in
                tls | notls) variants=$2 ;;
                both) variants="tls notls" ;;
                *) die "--variant needs tls, notls or both" ;;
            esac
            shift 2 ;;
        --variant=*) set -- --variant "${1#--variant=}" "${@:2}" ;;
        --openssl) [ $# -ge 2 ] || die "--openssl needs small or vendored"
            case "$2" in
                small | vendored) openssl=$2 ;;
                *) die "--openssl needs small or vendored" ;;
            esac
            shift 2 ;;
        --openssl=*) set -- --openssl "${1#--openssl=}" "${@:2}" ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        --no-setup) setup=0; shift ;;
        --prebuilt-std) prebuilt_std=1; shift ;;
        all) targets+=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
                       arm-unknown-linux-musleabihf x86_64-unknown-linux-musl); shift ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) targets+=("$(triple_of "$1")"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
                                     arm-unknown-linux-musleabihf x86_64-unknown-linux-musl)

if [ "$setup" = 1 ]; then
    # All idempotent: each is a no-op (no download) when already installed.
    if ! command -v cargo-zigbuild >/dev/null ||
        ! python3 -m ziglang version >/dev/null 2>&1; then
        python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" \
            "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    fi
    installed=$(rustup target list --installed)
    src_needed=0
    for t in "${targets[@]}"; do
        uses_build_std "$t" && src_needed=1
        # The std of aarch64/x86_64 musl also brings the self-contained crt objects that
        # rustc links even when std itself is built from source.
        if ! needs_build_std "$t" && ! grep -qx "$t" <<<"$installed"; then
            rustup target add "$t"
        fi
    done
    if [ "$src_needed" = 1 ] && ! rustup component list --installed | grep -q '^rust-src'; then
        rustup component add rust-src
    fi
fi
command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild not found (run without --no-setup)"

if [ -n "${OPT_LEVEL:-}" ]; then
    export CARGO_PROFILE_DIST_OPT_LEVEL="$OPT_LEVEL"
fi
target_dir=${CARGO_TARGET_DIR:-target}

summary=()
for t in "${targets[@]}"; do
    # cc (and so openssl-src, for --openssl vendored) reads CFLAGS_<triple with underscores>;
    # the later -Os wins over cc's own -O flag. Harmless when nothing is written in C.
    # (cross/openssl.sh reads C_OPT_FLAGS itself.)
    export "CFLAGS_${t//-/_}=$C_OPT_FLAGS -fno-asynchronous-unwind-tables -fno-unwind-tables"
    for v in $variants; do
        args=(zigbuild --profile dist --locked --target "$t")
        echo "==> $t ($v)" >&2
        start=$(date +%s)
        if [ "$v" = notls ]; then
            args+=(--no-default-features)
        elif [ "$openssl" = vendored ]; then
            args+=(--features vendored)
        else
            # openssl-sys reads these (target-prefixed, so host builds are unaffected); a new
            # OpenSSL recipe has a new directory, which makes cargo rebuild openssl-sys.
            ssl_dir=$(cross/openssl.sh "$t")
            prefix=$(tr 'a-z-' 'A-Z_' <<<"$t")
            export "${prefix}_OPENSSL_DIR=$ssl_dir" "${prefix}_OPENSSL_STATIC=1"
            args+=(--features tls)
        fi
        if uses_build_std "$t"; then
            # link-self-contained=no for these targets lives in .cargo/config.toml, so it also
            # applies to a plain `cargo zigbuild` run by hand. RUSTFLAGS would override it.
            [ -z "${RUSTFLAGS:-}" ] || die "unset RUSTFLAGS: it overrides .cargo/config.toml"
            # An empty feature list drops std's default "backtrace" feature: no symbolizer
            # (gimli, addr2line, miniz_oxide) in the binary, 73 KB less on aarch64. A panic
            # still prints its message and location, without a backtrace.
            RUSTC_BOOTSTRAP=1 cargo "${args[@]}" -Zbuild-std=std,panic_abort -Zbuild-std-features=
        else
            cargo "${args[@]}"
        fi
        secs=$(( $(date +%s) - start ))
        dest="$out/$t/$v"
        mkdir -p "$dest"
        cp "$target_dir/$t/dist/rest-server" "$dest/rest-server"
        info=$(file -b "$dest/rest-server")
        case "$info" in
            *"dynamically linked"* | *interpreter*) die "$dest/rest-server is not static: $info" ;;
            *"statically linked"* | *"static-pie linked"*) ;;
            *) die "$dest/rest-server: unexpected 'file' output: $info" ;;
        esac
        case "$info" in
            *", stripped"*) ;;
            *) die "$dest/rest-server is not stripped: $info" ;;
        esac
        size=$(stat -c %s "$dest/rest-server")
        summary+=("$(awk -v t="$t" -v v="$v" -v s="$size" -v d="$secs" \
            'BEGIN { printf "%-32s %-6s %9d bytes %7.3f MiB %5ds", t, v, s, s / 1048576, d }')")
    done
done

echo >&2
echo "target                           variant      size                   build" >&2
printf '%s\n' "${summary[@]}" >&2
