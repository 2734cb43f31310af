//! Scenarios

use super::*;

/// Uploads every pack (connection i sends packs i, i+C, ...) in `rounds` rounds, each round
/// into its own repository (`/bench`, `/bench1`, ...) so no delete runs between rounds. With
/// `machine`, the limit is measured right before each round and each round's throughput is
/// judged against its own reading. Server CPU is counted during the rounds only.
#[allow(clippy::too_many_arguments)]
pub(crate) fn upload(
    o: &Opts,
    r: &mut Results,
    si: usize,
    server: &Server,
    packs: &[Pack],
    scenario: &'static str,
    idle: Option<f64>,
    mut machine: Option<&mut Machine>,
) {
    let label = r.per_server[si].0.clone();
    let repo = |round: usize| match round {
        0 => REPO.to_owned(),
        n => format!("{REPO}{n}"),
    };
    let mut setup = server.conn(false);
    for round in 0..o.rounds {
        let path = format!("{}/?create=true", repo(round));
        if let Err(e) = expect(&mut setup, "POST", &path, &[], b"", 200) {
            r.notes.push(format!("{label}: {scenario}: {e}"));
            return;
        }
    }
    drop(setup);
    let reset = server.reset_hwm();
    let deadline = o.deadline();
    let (mut rates, mut fractions, mut measured_fractions, mut lat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut cpu, mut ccpu) = (0u64, 0.0, 0.0);
    let mut others = Vec::new();
    let mut error = None;
    for round in 0..o.rounds {
        let limit = match machine
            .as_deref_mut()
            .map(|m| (m.sample(packs, o.conns), m))
        {
            Some((Ok(s), m)) => Some((m.limit(&s), m.limit_measured(&s), s.write)),
            Some((Err(e), _)) => {
                r.notes.push(format!("machine limit: {e}"));
                None
            }
            None => None,
        };
        let repo = repo(round);
        let (cpu0, ccpu0, busy0) = (server.cpu(), client_cpu(), machine_busy());
        let (elapsed, outs) = run_workers(o.conns, |i, barrier| {
            let mut out = WorkerOut::default();
            let mut c = server.conn(false);
            if let Err(e) = c.connect() {
                out.error = Some(e.to_string());
            }
            barrier.wait();
            for p in packs.iter().skip(i).step_by(o.conns) {
                if out.error.is_some() || Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let path = format!("{repo}/data/{}", p.id);
                match expect(&mut c, "POST", &path, &[], &p.data, 200) {
                    Ok(()) => {
                        out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                        out.bytes += p.data.len() as u64;
                        out.requests += 1;
                    }
                    Err(e) => out.error = Some(e),
                }
            }
            out
        });
        let (dcpu, dccpu) = (server.cpu() - cpu0, client_cpu() - ccpu0);
        (cpu, ccpu) = (cpu + dcpu, ccpu + dccpu);
        others.push((machine_busy() - busy0 - dcpu - dccpu).max(0.0) / elapsed.as_secs_f64());
        let t = totals(elapsed, outs);
        let rate = t.bytes as f64 / MIB / t.secs;
        if t.requests > 0 {
            rates.push(rate);
        }
        if let Some((limit, measured, write)) = limit {
            let verify = scenario == "upload_verify";
            fractions.push(rate / if verify { limit } else { write });
            measured_fractions.push(rate / if verify { measured } else { write });
        }
        bytes += t.bytes;
        lat.extend(t.latencies_ms);
        if let Some(e) = t.error {
            error.get_or_insert(e);
            break;
        }
    }
    if let Some(e) = error {
        r.notes.push(format!("{label}: {scenario}: {e}"));
    }
    let gib = bytes as f64 / GIB;
    let mut put = |name, unit, better, value| r.push(si, scenario, name, unit, better, value);
    put(
        "throughput (median of rounds)",
        "MiB/s",
        Better::Higher,
        median(rates),
    );
    if scenario == "upload_verify" {
        put(
            "fraction of machine limit",
            "x",
            Better::Higher,
            median(fractions),
        );
        put(
            "fraction of limit w/ parallel SHA",
            "x",
            Better::Higher,
            median(measured_fractions),
        );
    } else {
        put(
            "fraction of write speed",
            "x",
            Better::Higher,
            median(fractions),
        );
    }
    put(
        "latency p50 per pack",
        "ms",
        Better::Lower,
        percentile(&mut lat, 50.0),
    );
    put(
        "latency p99 per pack",
        "ms",
        Better::Lower,
        percentile(&mut lat, 99.0),
    );
    put(
        "server CPU per GiB",
        "s",
        Better::Lower,
        (gib > 0.0).then(|| cpu / gib),
    );
    put(
        "client CPU per GiB",
        "s",
        Better::Neither,
        (gib > 0.0).then(|| ccpu / gib),
    );
    // A model, not a measurement: the MiB/s that server plus client CPU per GiB would allow
    // if every core were ours (on a shared box the wall clock cannot show it).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    put(
        "CPU-bound ceiling if all cores free",
        "MiB/s",
        Better::Higher,
        (cpu + ccpu > 0.0).then(|| cores.min(o.conns) as f64 * 1024.0 * gib / (cpu + ccpu)),
    );
    put(
        "others' CPU on this box meanwhile",
        "cores",
        Better::Neither,
        median(others),
    );
    r.push_peak_rss(si, scenario, reset, server.hwm());
    r.push(
        si,
        scenario,
        "idle RSS after start",
        "MiB",
        Better::Lower,
        idle,
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss = server.rss();
    r.push(
        si,
        scenario,
        "RSS 0.5 s after load",
        "MiB",
        Better::Lower,
        rss,
    );
}

/// Full GETs of every pack (checked byte for byte), then restic-like ranged reads: each pack's
/// tail (where restic finds the pack header) and random 1 MiB blobs.
/// The file a pack was stored in by a server with the restic layout under `dir`.
pub(crate) fn pack_file(dir: &Path, p: &Pack) -> PathBuf {
    dir.join(&REPO[1..])
        .join("data")
        .join(&p.id[..2])
        .join(&p.id)
}

/// Brings the stored packs into the page cache (`warm`) or drops them from it.
pub(crate) fn page_cache(dir: &Path, packs: &[Pack], warm: bool) -> io::Result<()> {
    for p in packs {
        let path = pack_file(dir, p);
        if warm {
            io::copy(&mut fs::File::open(&path)?, &mut io::sink())?;
        } else {
            let f = fs::File::open(&path)?;
            f.sync_data()?;
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
        }
    }
    Ok(())
}

pub(crate) fn download(
    o: &Opts,
    r: &mut Results,
    si: usize,
    server: &Server,
    packs: &[Pack],
    dir: &Path,
) {
    const RANGES_PER_PACK: usize = 8;
    const BLOB: usize = 1 << 20;
    // (scenario, ranged, page cache before: None = as the upload left it, Some(warm))
    let mut states = vec![
        ("download_full", false, None),
        ("download_range", true, None),
    ];
    if o.download_states {
        states.push(("download_full_warm", false, Some(true)));
        states.push(("download_full_cold", false, Some(false)));
    }
    for (scenario, ranged, cache) in states {
        if let Some(warm) = cache
            && let Err(e) = page_cache(dir, packs, warm)
        {
            let label = &r.per_server[si].0;
            r.notes
                .push(format!("{label}: {scenario}: page cache: {e}"));
            continue;
        }
        let reset = server.reset_hwm();
        let cpu0 = server.cpu();
        let deadline = o.deadline();
        let (elapsed, outs) = run_workers(o.conns, |i, barrier| {
            let mut out = WorkerOut::default();
            let mut c = server.conn(false);
            if let Err(e) = c.connect() {
                out.error = Some(e.to_string());
            }
            let mut rng = fastrand::Rng::with_seed(i as u64);
            barrier.wait();
            for p in packs.iter().skip(i).step_by(o.conns) {
                let len = p.data.len();
                let ranges: Vec<(usize, usize)> = if ranged {
                    let mut v = vec![(len.saturating_sub(64 * 1024), len)];
                    v.extend((1..RANGES_PER_PACK).map(|_| {
                        let start = rng.usize(..len.saturating_sub(BLOB).max(1));
                        (start, (start + BLOB).min(len))
                    }));
                    v
                } else {
                    vec![(0, len)]
                };
                for (start, end) in ranges {
                    if out.error.is_some() || Instant::now() > deadline {
                        break;
                    }
                    let range = format!("bytes={start}-{}", end - 1);
                    let headers: &[(&str, &str)] = if ranged { &[("Range", &range)] } else { &[] };
                    let mut at = start;
                    let mut same = true;
                    let t = Instant::now();
                    let got = c.request(
                        "GET",
                        &format!("{REPO}/data/{}", p.id),
                        headers,
                        b"",
                        &mut |b: &[u8]| {
                            same &= p.data.get(at..at + b.len()) == Some(b);
                            at += b.len();
                        },
                    );
                    let want = if ranged { 206 } else { 200 };
                    match got {
                        Ok(resp)
                            if resp.status == want
                                && resp.body_len == (end - start) as u64
                                && same =>
                        {
                            out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            out.bytes += resp.body_len;
                            out.requests += 1;
                        }
                        Ok(resp) => {
                            out.error = Some(format!(
                                "GET {range}: status {} with {} bytes (wanted {want} with {}), content {}",
                                resp.status,
                                resp.body_len,
                                end - start,
                                if same { "ok" } else { "wrong" }
                            ))
                        }
                        Err(e) => out.error = Some(format!("GET: {e}")),
                    }
                }
            }
            out
        });
        let cpu = server.cpu() - cpu0;
        let mut t = totals(elapsed, outs);
        if let Some(e) = &t.error {
            r.notes
                .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
        }
        let gib = t.bytes as f64 / GIB;
        r.push(
            si,
            scenario,
            "throughput",
            "MiB/s",
            Better::Higher,
            (t.requests > 0).then(|| t.bytes as f64 / MIB / t.secs),
        );
        r.push(
            si,
            scenario,
            "requests per second",
            "req/s",
            Better::Higher,
            (t.requests > 0).then(|| t.requests as f64 / t.secs),
        );
        r.push(
            si,
            scenario,
            "latency p50",
            "ms",
            Better::Lower,
            percentile(&mut t.latencies_ms, 50.0),
        );
        r.push(
            si,
            scenario,
            "latency p99",
            "ms",
            Better::Lower,
            percentile(&mut t.latencies_ms, 99.0),
        );
        r.push(
            si,
            scenario,
            "server CPU per GiB",
            "s",
            Better::Lower,
            (gib > 0.0).then(|| cpu / gib),
        );
        r.push_peak_rss(si, scenario, reset, server.hwm());
    }
}

/// Rounds of the small-request scenario; they alternate between the two servers.
pub(crate) const SMALL_ROUNDS: usize = 5;

/// Creates the repository and its config; returns how long the very first request took (a
/// HEAD answered 404, so it costs what authentication costs: one bcrypt with credentials).
pub(crate) fn small_setup(server: &Server, auth: bool) -> Result<f64, String> {
    let mut c = server.conn(auth);
    let t = Instant::now();
    expect(&mut c, "HEAD", &format!("{REPO}/config"), &[], b"", 404)?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    expect(
        &mut c,
        "POST",
        &format!("{REPO}/?create=true"),
        &[],
        b"",
        200,
    )?;
    expect(&mut c, "POST", &format!("{REPO}/config"), &[], b"cfg", 200)?;
    Ok(first_ms)
}

/// Starts a server for the small-request scenario and sets it up: (server, idle RSS, first
/// request ms).
pub(crate) fn start_small(
    o: &Opts,
    spec: &ServerSpec,
    dirs: &mut Dirs,
    auth: bool,
) -> Result<(Server, Option<f64>, f64), String> {
    let dir = dirs.fresh("small")?;
    if auth {
        write_htpasswd(&dir.join(".htpasswd"))?;
    }
    let s = Server::start(spec, &dir, if auth { AUTH } else { NO_AUTH }, o.pick_port)?;
    let idle = s.idle_rss();
    match small_setup(&s, auth) {
        Ok(first) => Ok((s, idle, first)),
        Err(e) => {
            s.stop();
            Err(e)
        }
    }
}

/// Keep-alive `HEAD /bench/config` from C connections: one server with `--no-auth`, one with
/// bcrypt cost-10 credentials on every request, started side by side. Rounds alternate
/// between them so that load from elsewhere on the box hits both alike; the auth/no-auth
/// ratio is the median of the per-round ratios.
pub(crate) fn small(o: &Opts, r: &mut Results, si: usize, spec: &ServerSpec, dirs: &mut Dirs) {
    let label = r.per_server[si].0.clone();
    let mut servers = Vec::new();
    for auth in [false, true] {
        let scenario = if auth {
            "small_head_auth"
        } else {
            "small_head_noauth"
        };
        match start_small(o, spec, dirs, auth) {
            Ok((s, idle, first)) => servers.push((scenario, auth, s, idle, first)),
            Err(e) => {
                r.notes.push(format!("{label}: {scenario}: {e}"));
                for (_, _, s, _, _) in servers {
                    s.stop();
                }
                return;
            }
        }
    }
    let path = format!("{REPO}/config");
    let deadline = o.deadline();
    let per_round = o.requests.div_ceil(SMALL_ROUNDS);
    let mut rates = [Vec::new(), Vec::new()];
    let mut lat = [Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0];
    let mut count = [0u64, 0];
    let mut error = None;
    for (_, _, s, _, _) in &servers {
        s.reset_hwm();
    }
    for _ in 0..SMALL_ROUNDS {
        for (i, (_, auth, server, _, _)) in servers.iter().enumerate() {
            let cpu0 = server.cpu();
            let (elapsed, outs) = run_workers(o.conns, |_, barrier| {
                let mut out = WorkerOut::default();
                let mut c = server.conn(*auth);
                if let Err(e) = c.connect() {
                    out.error = Some(e.to_string());
                }
                barrier.wait();
                for _ in 0..per_round {
                    if out.error.is_some() || Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    let got = if o.small_get && out.requests % 2 == 1 {
                        let mut body = Vec::new();
                        match c.request("GET", &path, &[], b"", &mut |b: &[u8]| {
                            body.extend_from_slice(b)
                        }) {
                            Ok(resp) if resp.status == 200 && body == b"cfg" => Ok(()),
                            Ok(resp) => Err(format!(
                                "GET {path}: status {} with {:?}",
                                resp.status,
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => Err(format!("GET {path}: {e}")),
                        }
                    } else {
                        expect(&mut c, "HEAD", &path, &[], b"", 200)
                    };
                    match got {
                        Ok(()) => {
                            out.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            out.requests += 1;
                        }
                        Err(e) => out.error = Some(e),
                    }
                }
                out
            });
            cpu[i] += server.cpu() - cpu0;
            let t = totals(elapsed, outs);
            if t.requests > 0 {
                rates[i].push(t.requests as f64 / t.secs);
            }
            count[i] += t.requests;
            lat[i].extend(t.latencies_ms);
            if let Some(e) = t.error {
                error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = error {
        r.notes.push(format!("{label}: small requests: {e}"));
    }
    let ratios: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(a, n)| a / n).collect();
    for (i, (scenario, auth, server, idle, first)) in servers.into_iter().enumerate() {
        let k = count[i] as f64 / 1000.0;
        let mut put = |name, unit, better, value| r.push(si, scenario, name, unit, better, value);
        put(
            "requests per second (median of rounds)",
            "req/s",
            Better::Higher,
            median(rates[i].clone()),
        );
        put(
            "latency p50",
            "ms",
            Better::Lower,
            percentile(&mut lat[i], 50.0),
        );
        put(
            "latency p99",
            "ms",
            Better::Lower,
            percentile(&mut lat[i], 99.0),
        );
        put(
            "server CPU per 1000 req",
            "s",
            Better::Lower,
            (k > 0.0).then(|| cpu[i] / k),
        );
        put("peak RSS", "MiB", Better::Lower, server.hwm());
        put("idle RSS after start", "MiB", Better::Lower, idle);
        put(
            "very first request (bcrypt if auth)",
            "ms",
            Better::Lower,
            Some(first),
        );
        if auth {
            put(
                "auth / no-auth rate (median of rounds)",
                "x",
                Better::Higher,
                median(ratios.clone()),
            );
        }
        server.stop();
    }
}

/// v2 listings of data/ in the big repository, one after the other on one connection.
pub(crate) fn list(o: &Opts, r: &mut Results, si: usize, server: &Server, objects: usize) {
    let scenario = "list_v2_data";
    let idle = server.idle_rss();
    let reset = server.reset_hwm();
    let before = server.rss();
    let cpu0 = server.cpu();
    let deadline = o.deadline();
    let mut c = server.conn(false);
    let (mut total, mut ttfb) = (Vec::new(), Vec::new());
    let mut json_len = 0;
    for _ in 0..o.listings {
        if Instant::now() > deadline {
            break;
        }
        let mut body = Vec::new();
        let mut first = None;
        let t = Instant::now();
        let got = c.request(
            "GET",
            &format!("{REPO}/data/"),
            &[("Accept", "application/vnd.x.restic.rest.v2")],
            b"",
            &mut |b: &[u8]| {
                first.get_or_insert_with(|| t.elapsed());
                body.extend_from_slice(b);
            },
        );
        let took = t.elapsed();
        let entries = body.windows(8).filter(|w| w == b"{\"name\":").count();
        match got {
            Ok(resp) if resp.status == 200 && entries == objects && body.starts_with(b"[") => {
                total.push(took.as_secs_f64());
                ttfb.push(first.unwrap_or(took).as_secs_f64() * 1e3);
                json_len = body.len();
            }
            Ok(resp) => {
                r.notes.push(format!(
                    "{}: {scenario}: status {}, {entries} entries (wanted {objects})",
                    r.per_server[si].0, resp.status
                ));
                break;
            }
            Err(e) => {
                r.notes
                    .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
                break;
            }
        }
    }
    let n = total.len() as f64;
    let cpu = server.cpu() - cpu0;
    let hwm = server.hwm();
    r.push(
        si,
        scenario,
        "time per listing p50",
        "s",
        Better::Lower,
        percentile(&mut total, 50.0),
    );
    r.push(
        si,
        scenario,
        "time per listing max",
        "s",
        Better::Lower,
        percentile(&mut total, 100.0),
    );
    r.push(
        si,
        scenario,
        "time to first byte p50",
        "ms",
        Better::Lower,
        percentile(&mut ttfb, 50.0),
    );
    r.push(
        si,
        scenario,
        "server CPU per listing",
        "s",
        Better::Lower,
        (n > 0.0).then(|| cpu / n),
    );
    r.push(
        si,
        scenario,
        "JSON size",
        "MiB",
        Better::Neither,
        (json_len > 0).then(|| json_len as f64 / MIB),
    );
    r.push_peak_rss(si, scenario, reset, hwm);
    r.push(
        si,
        scenario,
        "peak RSS growth while listing",
        "MiB",
        Better::Lower,
        hwm.zip(before).map(|(h, b)| h - b),
    );
    r.push(
        si,
        scenario,
        "idle RSS after start",
        "MiB",
        Better::Lower,
        idle,
    );
}

/// Time from spawning the server to its first 200 (`HEAD /bench/config`), polled every ms.
pub(crate) fn time_to_first_200(server: &Server, deadline: Instant) -> Option<Duration> {
    loop {
        let mut c = server.conn(false);
        match c.request("HEAD", &format!("{REPO}/config"), &[], b"", &mut discard) {
            Ok(resp) if resp.status == 200 => return Some(server.spawned.elapsed()),
            // Up, but refusing: waiting longer will not help.
            Ok(_) => return None,
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Start-up on the big repository: first 200 without and with `--max-size`, and with it the
/// time until an upload is accepted (uploads wait for the usage tally). Median of 3 starts.
pub(crate) fn startup(o: &Opts, r: &mut Results, si: usize, spec: &ServerSpec, root: &Path) {
    let scenario = "startup_100k";
    let tiny = b"loadgen startup probe";
    let tiny_id = hex(&Sha256::digest(tiny));
    let (mut plain, mut quota, mut upload_ok, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        for with_quota in [false, true] {
            let flags = if with_quota { MAX_SIZE } else { NO_AUTH };
            let server = match Server::start(spec, root, flags, o.pick_port) {
                Ok(s) => s,
                Err(e) => {
                    r.notes
                        .push(format!("{}: {scenario}: {e}", r.per_server[si].0));
                    return;
                }
            };
            let deadline = o.deadline();
            let first = time_to_first_200(&server, deadline);
            if with_quota {
                quota.extend(first.map(|d| d.as_secs_f64() * 1e3));
                let mut c = server.conn(false);
                let path = format!("{REPO}/data/{tiny_id}");
                if expect(&mut c, "POST", &path, &[], tiny, 200).is_ok() {
                    upload_ok.push(server.spawned.elapsed().as_secs_f64() * 1e3);
                }
                let _ = expect(&mut c, "DELETE", &path, &[], b"", 200);
                rss.extend(server.rss());
            } else {
                plain.extend(first.map(|d| d.as_secs_f64() * 1e3));
            }
            server.stop();
        }
    }
    r.push(
        si,
        scenario,
        "first 200, no quota",
        "ms",
        Better::Lower,
        median(plain),
    );
    r.push(
        si,
        scenario,
        "first 200 with --max-size",
        "ms",
        Better::Lower,
        median(quota),
    );
    r.push(
        si,
        scenario,
        "first upload accepted, --max-size",
        "ms",
        Better::Lower,
        median(upload_ok),
    );
    r.push(
        si,
        scenario,
        "RSS after tally",
        "MiB",
        Better::Lower,
        median(rss),
    );
}
