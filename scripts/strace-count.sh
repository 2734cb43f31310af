#!/usr/bin/env bash
# Runs a server under `strace -f -c` for loadgen (BENCHMARKS.md, the budget table): loadgen's SIGTERM
# goes to the server itself, so strace sees it exit and writes its summary. (strace blocks
# fatal signals when started as `strace -o FILE PROG`, and with -I1 it dies without a
# summary, leaving the server running.)
#
# usage: loadgen --server 'scripts/strace-count.sh {path}.strace BIN --path {path} --listen {listen}'
out=$1
shift
strace -f -c -o "$out" "$@" &
tracer=$!
trap 'kill -TERM $(pgrep -P $tracer)' TERM
wait $tracer # returns early on the trapped SIGTERM
wait $tracer
