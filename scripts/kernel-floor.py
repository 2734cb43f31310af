#!/usr/bin/env python3
"""What the kernel alone costs an upload on this machine (bench-results/2026-12-05/README.md, "The performance budget").

Sends FILE (default /tmp/1g.bin) over one loopback TCP connection with sendfile, and receives it
the way the server does: recv_into a 128 KiB buffer until it is full. With "file", every buffer
is also written to a file beside FILE and fsynced at the end; with "hash", also SHA-256'd
first (Python's hashlib: OpenSSL, with SHA-NI where the CPU has it). Prints the receiving thread's CPU
seconds per GiB: no HTTP, no hashing, no executor, so any server that receives and stores the
same bytes costs at least this much.

usage: scripts/kernel-floor.py null|file|hash [FILE]
"""
import hashlib
import os
import resource
import socket
import sys
import threading
import time

if len(sys.argv) < 2 or sys.argv[1] not in ('null', 'file', 'hash'):
    sys.exit(__doc__)
mode = sys.argv[1]
src = sys.argv[2] if len(sys.argv) > 2 else '/tmp/1g.bin'
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(1)
port = srv.getsockname()[1]


def send():
    c = socket.create_connection(('127.0.0.1', port))
    with open(src, 'rb') as f:
        c.sendfile(f)
    c.close()


sender = threading.Thread(target=send)
sender.start()
conn, _ = srv.accept()
buf = bytearray(128 * 1024)
mv = memoryview(buf)
dst = src + '.kernel-floor'
out = open(dst, 'wb', buffering=0) if mode != 'null' else None
hasher = hashlib.sha256() if mode == 'hash' else None
r0 = resource.getrusage(resource.RUSAGE_THREAD)
w0 = time.time()
total = 0
while True:
    got = 0
    while got < len(buf):
        n = conn.recv_into(mv[got:])
        if n == 0:
            break
        got += n
    total += got
    if hasher:
        hasher.update(mv[:got])
    if out and got:
        out.write(mv[:got])
    if got < len(buf):
        break
if out:
    os.fsync(out.fileno())
r1 = resource.getrusage(resource.RUSAGE_THREAD)
sender.join()
if out:
    out.close()
    os.remove(dst)
gib = total / (1 << 30)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(f'{mode}: {total} bytes in {time.time() - w0:.2f} s; receiving thread CPU {cpu / gib:.3f} s/GiB '
      f'(user {(r1.ru_utime - r0.ru_utime) / gib:.3f}, system {(r1.ru_stime - r0.ru_stime) / gib:.3f})')
