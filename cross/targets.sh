# shellcheck shell=bash
# Sourced by cross/build.sh, cross/test-qemu.sh and packaging/build.sh: the one mapping from
# the names people use (aarch64, armv7, armv6, x86_64, Debian's arm64/armhf/amd64) to Rust
# target triples. The sourcing script defines die().

triple_of() {
    case "$1" in
        aarch64 | arm64 | aarch64-unknown-linux-musl) echo aarch64-unknown-linux-musl ;;
        armv7 | armv7-unknown-linux-musleabihf) echo armv7-unknown-linux-musleabihf ;;
        armv6 | arm | armhf | arm-unknown-linux-musleabihf) echo arm-unknown-linux-musleabihf ;;
        x86_64 | amd64 | x86_64-unknown-linux-musl) echo x86_64-unknown-linux-musl ;;
        *) die "unknown target '$1' (aarch64, armv7, armv6, x86_64 or their triples)" ;;
    esac
}
