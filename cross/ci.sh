#!/bin/bash
# CI for the cross builds and packages, for .ci/run to call on a fresh Debian 12
# machine as root. Two clean builds dominate the time (see bench-results/2026-11-23/README.md "Build times"):
#   1. static builds: aarch64 with TLS (the small OpenSSL of cross/openssl.sh), x86_64
#      without TLS (the packages tests install it; no second OpenSSL build)
#   2. restic round trips against the aarch64 binary under qemu, over HTTP and HTTPS, and
#      every TLS suite with an ECDSA and an RSA certificate (`openssl s_client`)
#   3. package tests (packaging/test.sh), which prints "N passed, N failed"
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    # make and perl build OpenSSL; openssl is the TLS check's client.
    for p in qemu-user-static restic curl openssl make perl file shellcheck busybox; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null
    fi
fi

cross/build.sh --variant tls aarch64
cross/build.sh --variant notls x86_64
cross/test-qemu.sh aarch64
packaging/test.sh
