#!/bin/bash
# Prints the path of a current restic (Debian 13 "trixie"'s package, 0.18), fetched from the
# mirror this machine's apt already uses, so the end-to-end tests also run with the restic
# that users run today, not only Debian 12's 0.14:
#
#   TEST_RESTIC=$(.ci/restic-new.sh) cargo test --release --test restic
#
# The machine's apt setup is untouched: a private sources list, list and cache directory
# (apt-get update / apt-get download with -o Dir::...), and the binary comes out of the .deb
# with dpkg-deb -x, nothing is installed. Cached in $RESTIC_NEW_CACHE (default
# /var/cache/rest-server-test-restic); delete it to fetch the newest again.
set -euo pipefail

suite=${RESTIC_NEW_SUITE:-trixie}
cache=${RESTIC_NEW_CACHE:-/var/cache/rest-server-test-restic}/$suite
if [ -x "$cache/restic" ] && "$cache/restic" version >/dev/null 2>&1; then
    echo "$cache/restic"
    exit 0
fi

# shellcheck disable=SC2016  # apt-get expands $(SITE), not the shell
mirror=$(apt-get indextargets --format '$(SITE) $(CODENAME)' 'Identifier: Packages' |
    awk '$2 == "bookworm" || $2 == "trixie" { print $1; exit }')
[ -n "$mirror" ] || { echo ".ci/restic-new.sh: apt has no Debian source to use" >&2; exit 1; }
rm -rf "$cache"
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/apt/parts"
echo "deb $mirror $suite main" >"$cache/apt/sources.list"
opts=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o "Dir::Etc::SourceParts=$cache/apt/parts"
    -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
    -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq >&2
(cd "$cache/apt" && apt-get "${opts[@]}" download restic >&2)
dpkg-deb -x "$cache"/apt/restic_*.deb "$cache/root"
install -m 0755 "$cache/root/usr/bin/restic" "$cache/restic"
rm -rf "$cache/root" "$cache/apt/lists" "$cache/apt/cache"
"$cache/restic" version >&2
echo "$cache/restic"
