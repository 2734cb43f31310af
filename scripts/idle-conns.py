#!/usr/bin/env python3
"""Server memory with many idle connections, and stalled TLS handshakes (BENCHMARKS.md; the limits are in docs/http.md).

usage: scripts/idle-conns.py idle   N RUNS NAME=BIN [NAME=BIN ...]
       scripts/idle-conns.py silent N RUNS NAME=BIN [NAME=BIN ...]
       scripts/idle-conns.py stall  N RUNS NAME=BIN [NAME=BIN ...]

idle:  starts each binary (`--no-auth`, fresh --path, 127.0.0.1, a free port), creates
       /r and its config, then opens N keep-alive connections that each send one
       `HEAD /r/config` and read its 200, then stay idle. Prints VmRSS (and RssAnon,
       threads, open fds) before the connections and 3 s after the last answer, and VmHWM.
silent: the same, but the N connections send nothing (plain TCP): what a client that opens
       connections and never writes costs until the 30 s head timeout.
stall: starts each binary with --tls (a throw-away self-signed P-256 certificate made
       with the openssl CLI), opens N TCP connections that never send a byte, and prints
       the server's open fds and VmRSS 2 s after the last connect and again 13 s after it
       (the handshake timeout is 10 s), plus how many client sockets saw the server close.
Binaries run in turn, RUNS times each, the order swapped on every run (interleaved, as
scripts/loadgen-ab.py). Every loop is bounded by N and by time; all sockets go to
127.0.0.1; servers get SIGTERM, then SIGKILL.
"""
import os, re, resource, signal, socket, statistics, subprocess, sys, tempfile, time


def status(pid):
    d = {}
    for line in open(f'/proc/{pid}/status'):
        k, _, v = line.partition(':')
        d[k] = v.strip()
    kib = lambda k: int(d.get(k, '0 kB').split()[0]) / 1024
    return {'rss': kib('VmRSS'), 'hwm': kib('VmHWM'), 'anon': kib('RssAnon'),
            'threads': int(d['Threads']), 'fds': len(os.listdir(f'/proc/{pid}/fd'))}


def start(bin_, path, extra):
    p = subprocess.Popen([bin_, '--path', path, '--listen', '127.0.0.1:0', *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        m = re.search(r'start server on 127\.0\.0\.1:(\d+)', line)
        if m:
            # drain the log so the server never blocks on a full pipe
            import threading
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, int(m.group(1))
    p.kill()
    sys.exit(f'{bin_}: no "start server on" line')


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def request(port, raw):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.sendall(raw)
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b'\r\n', 1)[0]


def idle(bin_, n, silent=False):
    d = tempfile.mkdtemp(prefix='idle-conns-')
    p, port = start(bin_, d, ['--no-auth'])
    try:
        request(port, b'POST /r/?create=true HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
        request(port, b'POST /r/config HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\ncfg')
        time.sleep(0.5)
        before = status(p.pid)
        socks = []
        head = b'HEAD /r/config HTTP/1.1\r\nHost: x\r\n\r\n'
        deadline = time.time() + 120
        ok = 0
        for i in range(n):
            if time.time() > deadline:
                break
            s = socket.create_connection(('127.0.0.1', port), timeout=30)
            socks.append(s)
            if silent:
                ok += 1
                continue
            s.sendall(head)
            if len(socks) % 500 == 0 or i == n - 1:  # read answers in batches
                for t in socks[ok:]:
                    got = b''
                    while b'\r\n\r\n' not in got:
                        c = t.recv(4096)
                        if not c:
                            break
                        got += c
                    if not got.startswith(b'HTTP/1.1 200'):
                        sys.exit(f'{bin_}: connection {ok}: {got[:40]!r}')
                    ok += 1
        time.sleep(3)
        after = status(p.pid)
        for s in socks:
            s.close()
        return before, after, ok
    finally:
        stop(p)


def stall(bin_, n):
    d = tempfile.mkdtemp(prefix='stall-')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                    '-nodes', '-keyout', f'{d}/key.pem', '-out', f'{d}/cert.pem', '-days', '2',
                    '-subj', '/CN=localhost'], check=True, capture_output=True)
    p, port = start(bin_, d, ['--no-auth', '--tls', '--tls-cert', f'{d}/cert.pem',
                              '--tls-key', f'{d}/key.pem'])
    try:
        time.sleep(0.5)
        before = status(p.pid)
        socks = [socket.create_connection(('127.0.0.1', port), timeout=10) for _ in range(n)]
        t0 = time.time()
        time.sleep(2)
        held = status(p.pid)
        time.sleep(max(0, t0 + 13 - time.time()))
        freed = status(p.pid)
        closed = 0
        for s in socks:
            try:  # b'' = the server closed it; BlockingIOError = still open
                if s.recv(1, socket.MSG_DONTWAIT) == b'':
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        # and the server still answers a real handshake afterwards
        ok = subprocess.run(['curl', '-sk', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5',
                             f'https://127.0.0.1:{port}/r/config'], capture_output=True, text=True).stdout
        return before, held, freed, closed, ok
    finally:
        stop(p)


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ('idle', 'silent', 'stall'):
        sys.exit(__doc__)
    mode, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    bins = [a.split('=', 1) for a in sys.argv[4:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * n + 1000), hard))
    res = {name: [] for name, _ in bins}
    for r in range(runs):
        order = bins if r % 2 == 0 else bins[::-1]
        for name, b in order:
            load = open('/proc/loadavg').read().split()[0]
            if mode in ('idle', 'silent'):
                before, after, ok = idle(b, n, mode == 'silent')
                res[name].append(after['rss'])
                print(f'run {r + 1} {name}: load {load}; before: RSS {before["rss"]:.2f} MiB '
                      f'(anon {before["anon"]:.2f}), {before["threads"]} threads; with {ok} idle '
                      f'connections: RSS {after["rss"]:.2f} MiB (anon {after["anon"]:.2f}), HWM '
                      f'{after["hwm"]:.2f}, {after["threads"]} threads, {after["fds"]} fds; '
                      f'{(after["rss"] - before["rss"]) * 1024 / max(ok, 1):.2f} KiB per connection',
                      flush=True)
            else:
                before, held, freed, closed, ok = stall(b, n)
                res[name].append(freed['fds'] - before['fds'])
                print(f'run {r + 1} {name}: load {load}; before: {before["fds"]} fds, RSS '
                      f'{before["rss"]:.2f} MiB; 2 s after {n} silent connects: {held["fds"]} fds, '
                      f'RSS {held["rss"]:.2f} MiB; 13 s after: {freed["fds"]} fds, RSS '
                      f'{freed["rss"]:.2f} MiB, HWM {freed["hwm"]:.2f}; {closed}/{n} closed by the '
                      f'server; a real handshake afterwards: HTTP {ok}', flush=True)
    what = 'fds left over 13 s after' if mode == 'stall' else 'RSS with the connections, MiB'
    for name, v in res.items():
        print(f'{name}: median {what}: {statistics.median(v):.2f} (runs: '
              f'{" ".join(f"{x:.2f}" for x in v)})')


if __name__ == '__main__':
    main()
