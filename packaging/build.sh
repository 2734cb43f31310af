#!/bin/bash
# Builds the installable packages from the static binaries of cross/build.sh:
#
#   packaging/build.sh                     # every target whose binaries are in dist/bin
#   packaging/build.sh --build aarch64     # run cross/build.sh for it first
#   packaging/build.sh --variant notls armv6 x86_64
#
# Per target (short names as in cross/build.sh) and variant, into dist/pkg/:
#   .deb     Debian/Raspberry Pi OS: aarch64 -> arm64, armv6 -> armhf, x86_64 -> amd64
#            (armhf gets the ARMv6 build: Raspberry Pi OS armhf also runs on the ARMv6 Pi
#            Zero/1, where an ARMv7 binary dies with SIGILL; the ARMv6 binary runs on every
#            ARMv7/ARMv8 CPU too. So no .deb for armv7.)
#   .ipk     OpenWrt 24.10 and older (opkg), one per OpenWrt package architecture that the
#            binary runs on (see OPENWRT_ARCHS below)
#   .tar.gz  binary + README + systemd and OpenWrt service files, for manual installs
#            (OpenWrt 25.12's apk packages cannot be built with tools available here: see
#            packaging/README.md)
# Variant "tls" is package rest-server; "notls" is rest-server-nossl, which provides,
# conflicts with and replaces rest-server (OpenWrt's naming for TLS-free builds).
#
# Options: --variant tls|notls|both (default both; a variant whose binary is missing is
# skipped unless named explicitly), --build, --out DIR (default dist/pkg).
# Needs: dpkg-deb, tar, gzip (Debian). Reproducible: file times are SOURCE_DATE_EPOCH
# (default: the last commit's time), owners root:root.
set -euo pipefail

cd "$(dirname "$0")/.."
here=packaging

die() {
    echo "packaging/build.sh: $*" >&2
    exit 2
}

# shellcheck source=cross/targets.sh
. cross/targets.sh

# Debian architecture of a build, or nothing (armv7: armhf is served by the ARMv6 build).
deb_arch() {
    case "$1" in
        aarch64-*) echo arm64 ;;
        arm-*) echo armhf ;;
        x86_64-*) echo amd64 ;;
    esac
}

# OpenWrt package architectures a build runs on. opkg installs a package only if its
# Architecture is listed in /etc/opkg.conf's arch lines, so a binary that runs on several
# OpenWrt targets gets one .ipk per name. The 32-bit builds are static and hard-float; the
# float ABI is internal to a static binary, so only the CPU features count: ARMv7 needs
# VFPv3-D16 (no NEON), ARMv6 needs VFPv2. Set these variables to build under other names.
OPENWRT_ARCHS_aarch64=${OPENWRT_ARCHS_aarch64:-aarch64_cortex-a53 aarch64_cortex-a72 aarch64_generic}
OPENWRT_ARCHS_armv7=${OPENWRT_ARCHS_armv7:-arm_cortex-a7_neon-vfpv4 arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4}
OPENWRT_ARCHS_armv6=${OPENWRT_ARCHS_armv6:-arm_arm1176jzf-s_vfp}
OPENWRT_ARCHS_x86_64=${OPENWRT_ARCHS_x86_64:-x86_64}

openwrt_archs() {
    case "$1" in
        aarch64-*) echo "$OPENWRT_ARCHS_aarch64" ;;
        armv7-*) echo "$OPENWRT_ARCHS_armv7" ;;
        arm-*) echo "$OPENWRT_ARCHS_armv6" ;;
        x86_64-*) echo "$OPENWRT_ARCHS_x86_64" ;;
    esac
}

short_of() {
    case "$1" in
        aarch64-*) echo aarch64 ;;
        armv7-*) echo armv7 ;;
        arm-*) echo armv6 ;;
        x86_64-*) echo x86_64 ;;
    esac
}

variants="tls notls"
explicit_variant=0
build=0
out=dist/pkg
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        --variant) [ $# -ge 2 ] || die "--variant needs tls, notls or both"
            case "$2" in
                tls | notls) variants=$2; explicit_variant=1 ;;
                both) variants="tls notls"; explicit_variant=1 ;;
                *) die "--variant needs tls, notls or both" ;;
            esac
            shift 2 ;;
        --build) build=1; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) targets+=("$(triple_of "$1")"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    for t in aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf \
        arm-unknown-linux-musleabihf x86_64-unknown-linux-musl; do
        for v in $variants; do
            if [ -x "dist/bin/$t/$v/rest-server" ]; then targets+=("$t"); break; fi
        done
    done
    [ ${#targets[@]} -gt 0 ] || die "no binaries in dist/bin: run cross/build.sh first (or --build TARGET)"
fi
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
# Package revision: bump when only the packaging changes.
revision=${PKG_REVISION:-1}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
# Set PKG_MAINTAINER to a real address for published packages (lintian: bogus-mail-host).
maintainer=${PKG_MAINTAINER:-"rest-server developers <rest-server@localhost>"}
summary="restic REST backend server: static, small, crash-safe"
description=" A drop-in for restic's rest-server (same URLs, flags and on-disk layout),
 built as one static binary for Raspberry Pis, NASes and routers. Uploads
 are verified (SHA-256) and written atomically; listings stream."

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Deterministic tar.gz of a directory's contents: sorted, root-owned, fixed times.
tgz() {
    local dir=$1 dest=$2
    shift 2
    tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime="@$SOURCE_DATE_EPOCH" -C "$dir" -cf - "$@" | gzip -9n >"$dest"
}

build_deb() {
    local t=$1 v=$2 bin=$3 arch pkg root
    arch=$(deb_arch "$t")
    [ -n "$arch" ] || return 0
    pkg=rest-server
    [ "$v" = notls ] && pkg=rest-server-nossl
    root="$work/deb-$t-$v"
    local doc="$root/usr/share/doc/$pkg"
    install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
        "$root/etc/default" "$doc" "$root/usr/share/lintian/overrides"
    install -m 0755 "$bin" "$root/usr/bin/rest-server"
    install -m 0644 "$here/debian/rest-server.service" "$here/debian/rest-server.socket" \
        "$here/debian/rest-server-scrub.service" "$here/debian/rest-server-scrub.timer" \
        "$root/usr/lib/systemd/system/"
    install -m 0644 "$here/debian/default" "$root/etc/default/rest-server"
    install -m 0644 "$here/README.md" "$here/debian/copyright" "$doc/"
    {
        echo "$pkg ($version-$revision) unstable; urgency=medium"
        echo
        echo "  * Built by packaging/build.sh from the rest-server sources."
        echo
        echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    } | gzip -9n >"$doc/changelog.Debian.gz"
    # Static on purpose: one binary for every Debian release and Raspberry Pi OS.
    echo "$pkg: statically-linked-binary [usr/bin/rest-server]" \
        >"$root/usr/share/lintian/overrides/$pkg"
    chmod 0644 "$doc/changelog.Debian.gz" "$root/usr/share/lintian/overrides/$pkg"
    install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" \
        "$root/DEBIAN/"
    echo /etc/default/rest-server >"$root/DEBIAN/conffiles"
    {
        echo "Package: $pkg"
        echo "Version: $version-$revision"
        echo "Architecture: $arch"
        echo "Maintainer: $maintainer"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
        echo "Depends: adduser"
        if [ "$v" = notls ]; then
            echo "Provides: rest-server"
            echo "Conflicts: rest-server"
            echo "Replaces: rest-server"
        fi
        echo "Section: net"
        echo "Priority: optional"
        echo "Description: $summary"
        echo "$description"
        [ "$v" = notls ] && echo " .
 This build has no TLS support (terminate TLS in a reverse proxy)."
    } >"$root/DEBIAN/control"
    # Directories 0755, files as installed above; dpkg-deb --root-owner-group: root:root.
    find "$root" -type d -exec chmod 0755 {} +
    local deb="$out/${pkg}_${version}-${revision}_${arch}.deb"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    echo "$deb"
}

build_ipk() {
    local t=$1 v=$2 bin=$3 arch pkg d
    pkg=rest-server
    [ "$v" = notls ] && pkg=rest-server-nossl
    for arch in $(openwrt_archs "$t"); do
        d="$work/ipk-$arch-$v"
        install -d "$d/data/usr/bin" "$d/data/etc/init.d" "$d/data/etc/config" "$d/control"
        install -m 0755 "$bin" "$d/data/usr/bin/rest-server"
        install -m 0755 "$here/openwrt/rest-server.init" "$d/data/etc/init.d/rest-server"
        install -m 0644 "$here/openwrt/rest-server.config" "$d/data/etc/config/rest-server"
        install -m 0755 "$here/openwrt/postinst" "$here/openwrt/prerm" "$d/control/"
        echo /etc/config/rest-server >"$d/control/conffiles"
        {
            echo "Package: $pkg"
            echo "Version: $version-$revision"
            echo "Source: rest-server"
            echo "SourceName: rest-server"
            echo "License: BSD-2-Clause"
            echo "Section: net"
            echo "Require-User: rest-server:rest-server"
            if [ "$v" = notls ]; then
                echo "Provides: rest-server"
                echo "Conflicts: rest-server"
            fi
            echo "Architecture: $arch"
            echo "Installed-Size: $(du -sb "$d/data" | cut -f1)"
            echo "Maintainer: $maintainer"
            echo "Description: $summary"
            echo "$description"
        } >"$d/control/control"
        echo 2.0 >"$d/debian-binary"
        tgz "$d/data" "$d/data.tar.gz" .
        tgz "$d/control" "$d/control.tar.gz" .
        local ipk="$out/${pkg}_${version}-${revision}_${arch}.ipk"
        # The order opkg's own ipkg-build writes.
        tgz "$d" "$ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
        echo "$ipk"
    done
}

build_tarball() {
    local t=$1 v=$2 bin=$3 name d
    name="rest-server-$version-$(short_of "$t")"
    [ "$v" = notls ] && name="$name-nossl"
    d="$work/tar-$t-$v/$name"
    install -d "$d/systemd" "$d/openwrt"
    install -m 0755 "$bin" "$d/rest-server"
    install -m 0644 "$here/README.md" "$d/README.md"
    install -m 0644 "$here/debian/rest-server.service" "$here/debian/rest-server.socket" \
        "$here/debian/rest-server-scrub.service" "$here/debian/rest-server-scrub.timer" \
        "$d/systemd/"
    install -m 0644 "$here/debian/default" "$d/systemd/rest-server.default"
    install -m 0755 "$here/openwrt/rest-server.init" "$d/openwrt/rest-server.init"
    install -m 0644 "$here/openwrt/rest-server.config" "$d/openwrt/rest-server.config"
    tgz "$work/tar-$t-$v" "$out/$name.tar.gz" "$name"
    echo "$out/$name.tar.gz"
}

for t in "${targets[@]}"; do
    for v in $variants; do
        bin="dist/bin/$t/$v/rest-server"
        if [ "$build" = 1 ]; then
            cross/build.sh --variant "$v" "$t" >&2
        fi
        if [ ! -x "$bin" ]; then
            if [ "$explicit_variant" = 1 ]; then
                die "$bin missing: run cross/build.sh --variant $v $(short_of "$t") (or --build)"
            fi
            echo "packaging/build.sh: skipping $t $v: $bin missing" >&2
            continue
        fi
        build_deb "$t" "$v" "$bin"
        build_ipk "$t" "$v" "$bin"
        build_tarball "$t" "$v" "$bin"
    done
done
