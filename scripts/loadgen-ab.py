#!/usr/bin/env python3
"""A/B comparison of two server binaries with loadgen, interleaved (BENCHMARKS.md, the budget table).

Runs `loadgen --compare` N times, swapping which binary goes first on every run, and prints
for each scenario and metric the median over the runs of each binary, their ratio (B/A) and
the per-run values. On a shared, noisy machine this is what makes two builds comparable:
both see the same minutes of load.

usage: scripts/loadgen-ab.py NAME_A BIN_A NAME_B BIN_B N [loadgen options...]
  e.g. scripts/loadgen-ab.py base /tmp/rs-base perf target/release/rest-server 5 --only upload
env:   LOADGEN (default target/release/loadgen), AB_DIR (run JSON files, default
       a new directory under /tmp); loadgen's own --dir etc. go among the options.
       AB_SUMMARIZE=1 runs nothing and prints the table of the N runs already in AB_DIR.
"""
import json, os, statistics, subprocess, sys, tempfile

if len(sys.argv) < 6:
    sys.exit(__doc__)
na, a, nb, b, n = sys.argv[1:6]
extra = sys.argv[6:]
loadgen = os.environ.get('LOADGEN', 'target/release/loadgen')
out = os.environ.get('AB_DIR') or tempfile.mkdtemp(prefix='loadgen-ab-')
os.makedirs(out, exist_ok=True)
values = {}  # (scenario, metric) -> name -> [value per run]
for i in range(int(n)):
    first, second = ((na, a), (nb, b)) if i % 2 == 0 else ((nb, b), (na, a))
    js = f'{out}/run{i}.json'
    load = open('/proc/loadavg').read().split()[0]
    if not os.environ.get('AB_SUMMARIZE'):
        subprocess.run([loadgen, '--json', js,
                        '--server', f'{first[1]} --path {{path}} --listen {{listen}}',
                        '--compare', f'{second[1]} --path {{path}} --listen {{listen}}',
                        '--names', f'{first[0]},{second[0]}'] + extra,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    for s in json.load(open(js))['servers']:
        for scenario, metrics in s['scenarios'].items():
            for metric, v in metrics.items():
                values.setdefault((scenario, metric), {}).setdefault(s['name'], []).append(v['value'])
    print(f'run {i + 1}/{n} done (load average before it: {load}), {js}', file=sys.stderr, flush=True)
print(f'{"scenario":17} {"metric":40} {na:>10} {nb:>10} {nb + "/" + na:>9}  per run: {na} | {nb}')
for (scenario, metric), per in sorted(values.items()):
    if na in per and nb in per:
        ma, mb = statistics.median(per[na]), statistics.median(per[nb])
        # No ratio to a base that prints as 0.00 (e.g. others' CPU of 1e-13 s): it means nothing.
        ratio = f'{mb / ma:9.2f}' if abs(ma) >= 0.005 else ' ' * 9
        runs = ' '.join(f'{x:.2f}' for x in per[na]) + ' | ' + ' '.join(f'{x:.2f}' for x in per[nb])
        print(f'{scenario:17} {metric:40} {ma:10.2f} {mb:10.2f} {ratio}  {runs}')
