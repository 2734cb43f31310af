#!/bin/bash
# Builds the small static OpenSSL that the TLS binaries of cross/build.sh link, for one musl
# target, and prints its install directory (include/, lib/libssl.a, lib/libcrypto.a).
#
#   cross/openssl.sh aarch64          # short name or Rust triple (see cross/targets.sh)
#   cross/openssl.sh --print-options  # the Configure options, one a line
#
# Why not `--features vendored`: openssl-src configures OpenSSL with its defaults, which
# compile in QUIC, DTLS, CMS, OCSP, CMP, post-quantum signatures, SM2/3/4, ARIA and more;
# OpenSSL 3's providers reference every enabled algorithm from tables, so the linker cannot
# drop them, and openssl-src has no way to pass Configure options. Here the same source (the
# openssl-src crate pinned in Cargo.lock, checksum-verified by cargo: no other download) is
# configured with everything off that a TLS 1.2/1.3 server with ECDHE + AES-GCM/ChaCha20-
# Poly1305 suites, RSA or ECDSA certificates and a self-signed P-256 certificate generator
# never uses, and compiled by zig cc (the C compiler and linker cargo-zigbuild uses) with
# -Os, function/data sections and without unwind tables (C never unwinds; Rust panics
# abort). bench-results/2026-11-23/README.md "Binary size" has the measurements.
#
# Cached per target and per build recipe in $CARGO_TARGET_DIR/openssl/<triple>/<key>/, where
# the key hashes this script's code (not its comments), the OpenSSL source's path and
# version, zig's version and the C flags: a second run with the same recipe prints the directory at once (and cargo,
# seeing the same directory, rebuilds nothing). A changed recipe builds anew in a new
# directory, which makes cargo rebuild openssl-sys; old directories can be deleted by hand.
#
# Environment:
#   CARGO_TARGET_DIR   as for cargo (default: ./target)
#   C_OPT_FLAGS        optimization flags for OpenSSL's C code (default "-Os")
#   OPENSSL_SRC_DIR    an OpenSSL source tree to use instead of openssl-src's (testing)
set -euo pipefail

cd "$(dirname "$0")/.."

die() {
    echo "cross/openssl.sh: $*" >&2
    exit 2
}

# shellcheck source=cross/targets.sh
. cross/targets.sh

# What is switched off, and why that is safe. openssl-sys detects most of these (OPENSSL_NO_*
# in the installed headers) and the openssl crate leaves out what they remove. What it binds
# without a cfg (SslMethod::dtls() calls DTLS_method) links because nothing of ours calls it:
# checked for the release binary and for `cargo test` (cross/test-qemu.sh --cargo-test).
options=(
    # What openssl-src also does: static only, no tests, no compression, no legacy provider,
    # no engines, no async (musl lacks makecontext), no secure heap (openssl#7207 on musl).
    no-shared no-module no-tests no-comp no-zlib no-zlib-dynamic no-legacy no-engine
    no-async no-secure-memory no-ssl3 no-md2 no-rc5 no-weak-ssl-ciphers no-camellia
    no-idea no-seed
    # Only the libraries: no openssl program, no manual pages, no DSO loader.
    no-apps no-docs no-dso
    # Protocols and protocol extras a restic server never speaks: QUIC, DTLS (and datagram
    # BIOs, SCTP), TLS 1.0/1.1 (the minimum is 1.2), SRP, PSK suites, SRTP, NPN, certificate
    # transparency, OCSP stapling and the HTTP client it needs, CMP, CMS, timestamps,
    # RFC 3779 extensions, the ssl-trace printer, the console UI (OpenSSL's own passphrase
    # prompt: an encrypted key is refused at once instead), TCP fast open, integrity-only
    # TLS 1.3 suites, deprecated TLS curves.
    no-quic no-dtls no-dgram no-sctp no-tls1 no-tls1-method no-tls1_1 no-tls1_1-method
    no-srp no-psk no-srtp no-nextprotoneg no-ct no-ocsp no-http no-cmp no-cms no-ts
    no-rfc3779 no-ssl-trace no-ui-console no-tfo no-integrity-only-ciphers
    no-tls-deprecated-ec
    # Algorithms no suite, certificate or key of ours uses (and post-quantum ML-KEM: clients
    # that offer X25519MLKEM768 also offer X25519). Kept: AES(-GCM), ChaCha20-Poly1305,
    # SHA-1/2/3, HMAC, HKDF, the TLS PRF, RSA, ECDSA and ECDH on prime curves, X25519/X448;
    # DH, because the openssl crate's mozilla_intermediate_v5 sets FFDHE-2048 parameters.
    # DES and DSA are not needed either, but stay: the budget is met without them, and the
    # openssl crate calls into both from code we do not use, a link risk for little gain.
    no-aria no-sm2 no-sm3 no-sm4 no-ec2m no-gost no-whirlpool no-md4 no-mdc2 no-rc2
    no-rc4 no-bf no-cast no-rmd160 no-ocb no-siphash no-siv no-scrypt no-argon2
    no-ml-dsa no-ml-kem no-slh-dsa no-lms no-multiblock
    # Runtime behaviour: no openssl.cnf read at start (a static binary should not change
    # with whatever config the machine has), no thread pool (only argon2 used it), no
    # source file names in error records (smaller; the reason strings stay).
    no-autoload-config no-thread-pool no-default-thread-pool no-filenames
)

if [ "${1:-}" = --print-options ]; then
    printf '%s\n' "${options[@]}"
    exit 0
fi
[ $# = 1 ] || die "usage: cross/openssl.sh TARGET (aarch64, armv7, armv6, x86_64 or a triple)"
t=$(triple_of "$1")

# OpenSSL's Configure target, zig's target, and the CPU flags cargo-zigbuild gives zig cc
# for the same Rust target (so C and Rust agree on the instruction set).
case "$t" in
    aarch64-unknown-linux-musl) os=linux-aarch64; zt=aarch64-linux-musl; cpu=() ;;
    armv7-unknown-linux-musleabihf)
        os=linux-armv4; zt=arm-linux-musleabihf; cpu=(-mcpu=generic+v7a+vfp3-d32+thumb2-neon) ;;
    arm-unknown-linux-musleabihf)
        os=linux-armv4; zt=arm-linux-musleabihf; cpu=(-mcpu=generic+v6+strict_align+vfp2-d32) ;;
    x86_64-unknown-linux-musl) os=linux-x86_64; zt=x86_64-linux-musl; cpu=() ;;
    *) die "no OpenSSL recipe for $t" ;;
esac

read -r -a opt_flags <<<"${C_OPT_FLAGS:--Os}"
cflags=("${opt_flags[@]}" -ffunction-sections -fdata-sections
        -fno-asynchronous-unwind-tables -fno-unwind-tables -w)

# The OpenSSL source: openssl-src as pinned by Cargo.lock (cargo downloads it if needed).
src=${OPENSSL_SRC_DIR:-}
if [ -z "$src" ]; then
    manifest=$(cargo metadata --locked --format-version 1 --features vendored |
        python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "openssl-src":
        print(p["manifest_path"])')
    [ -n "$manifest" ] || die "openssl-src not found in Cargo.lock"
    src=$(dirname "$manifest")/openssl
fi
[ -f "$src/Configure" ] || die "$src: not an OpenSSL source tree"
version=$(sed -n 's/^\(MAJOR\|MINOR\|PATCH\)=//p' "$src/VERSION.dat" | paste -sd.)

zig=$(python3 -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))') ||
    die "zig not found (pip install ziglang; cross/build.sh does that)"
zig_version=$("$zig" version)

key=$({
    grep -v '^[[:space:]]*#' "$0"
    echo "$src $version $zig_version $t ${cflags[*]}"
} | sha256sum | cut -c1-12)
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir/openssl/$t"
base=$(cd "$target_dir/openssl/$t" && pwd)/$key
install=$base/install

if [ -f "$install/.complete" ]; then
    echo "$install"
    exit 0
fi

# One build per recipe at a time (two cross/build.sh runs sharing a target dir).
exec 9>"$base.lock"
flock 9
if [ -f "$install/.complete" ]; then
    echo "$install"
    exit 0
fi

echo "==> OpenSSL $version for $t ($os, ${cflags[*]}) in $base" >&2
start=$(date +%s)
rm -rf "$base"
mkdir -p "$base/build" "$base/bin"
# zig cc for the target, called directly (a few ms per call, not the ~0.3 s of the
# cargo-zigbuild wrapper), with llvm-ar/ranlib from the same zig.
cat >"$base/bin/cc" <<EOF
#!/bin/sh
exec "$zig" cc -target $zt ${cpu[*]} "\$@"
EOF
printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" >"$base/bin/ar"
printf '#!/bin/sh\nexec "%s" ranlib "$@"\n' "$zig" >"$base/bin/ranlib"
chmod +x "$base/bin/cc" "$base/bin/ar" "$base/bin/ranlib"

log=$base/build.log
if ! (
    cd "$base/build"
    env -u CROSS_COMPILE CC="$base/bin/cc" AR="$base/bin/ar" RANLIB="$base/bin/ranlib" \
        perl "$src/Configure" "$os" --prefix="$install" --openssldir=/usr/local/ssl \
        --libdir=lib "${options[@]}" "${cflags[@]}"
    make -j"$(nproc)" build_libs
    make install_dev
) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "OpenSSL build failed; full log: $log"
fi
rm -rf "$base/build"
touch "$install/.complete"
echo "==> OpenSSL for $t built in $(( $(date +%s) - start )) s" >&2
echo "$install"
