//! Output

use super::*;

pub(crate) fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.01 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a != 0.0 && a.is_finite() && b.is_finite() => Some(b / a),
        _ => None,
    }
}

pub(crate) fn print_machine(m: &Machine, o: &Opts) {
    let n = m.samples.len();
    println!(
        "\nMachine limit (measured in this run, median of {n} readings, one before each upload round)"
    );
    println!(
        "  cores: {} (busy cores for {} connections: {})",
        m.cores, o.conns, m.busy
    );
    let sha = m.median_of(|s| s.sha);
    let write = m.median_of(|s| s.write);
    println!(
        "  SHA-256 single core, sha2 0.11, {} backend: {sha:.0} MiB/s",
        m.sha_backend
    );
    println!(
        "  SHA-256 on {} cores at once: {:.0} MiB/s (what the shared cores really gave)",
        m.busy,
        m.median_of(|s| s.sha_parallel)
    );
    println!(
        "  sequential write + fsync in {}: {write:.0} MiB/s",
        o.dir.display()
    );
    println!(
        "  {} parallel {} MiB files + fsync: {:.0} MiB/s (not used in the limit)",
        o.conns,
        o.pack_mib,
        m.median_of(|s| s.write_parallel)
    );
    println!(
        "  limit = min(SHA-256 x busy cores, write) = min({sha:.0} x {}, {write:.0}) = {:.0} MiB/s",
        m.busy,
        m.median_of(|s| m.limit(s))
    );
}

pub(crate) fn print_table(r: &Results) {
    let two = r.per_server.len() == 2;
    let mut rows = vec![{
        let mut h = vec![
            "scenario".to_owned(),
            "metric".to_owned(),
            "unit".to_owned(),
        ];
        h.extend(r.per_server.iter().map(|s| s.0.clone()));
        if two {
            h.push(format!("{}/{}", r.per_server[1].0, r.per_server[0].0));
        }
        h
    }];
    for m in &r.per_server[0].2 {
        let mut row = vec![m.scenario.to_owned(), m.name.to_owned(), m.unit.to_owned()];
        let vals: Vec<Option<f64>> = (0..r.per_server.len())
            .map(|i| r.get(i, m.scenario, m.name))
            .collect();
        row.extend(vals.iter().map(|v| fmt_value(*v)));
        if two {
            let q = ratio(vals[0], vals[1]);
            let mark = match (q, m.better) {
                (Some(q), Better::Higher) if q > 1.0 => " (other better)",
                (Some(q), Better::Lower) if q < 1.0 => " (other better)",
                _ => "",
            };
            row.push(q.map_or("-".into(), |q| format!("{q:.2}{mark}")));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    println!();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < 3 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if c < 3 {
                        "-".repeat(w + 2)
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    }
                })
                .collect();
            println!("|{}|", rule.join("|"));
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

pub(crate) fn to_json(r: &Results, m: Option<&Machine>, o: &Opts) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(
        s,
        "  \"config\": {{\"conns\": {}, \"packs_per_conn\": {}, \"pack_mib\": {}, \"rounds\": {}, \"requests_per_conn\": {}, \"objects\": {}, \"listings\": {}, \"dir\": {}}},",
        o.conns,
        o.packs,
        o.pack_mib,
        o.rounds,
        o.requests,
        o.objects,
        o.listings,
        json_str(&o.dir.to_string_lossy())
    );
    if let Some(m) = m {
        let _ = writeln!(
            s,
            "  \"machine\": {{\"cores\": {}, \"busy_cores\": {}, \"sha256_backend\": {}, \"readings\": {}, \"sha256_mib_s\": {}, \"sha256_parallel_mib_s\": {}, \"write_fsync_mib_s\": {}, \"write_parallel_fsync_mib_s\": {}, \"limit_mib_s\": {}}},",
            m.cores,
            m.busy,
            json_str(m.sha_backend),
            m.samples.len(),
            json_num(Some(m.median_of(|s| s.sha))),
            json_num(Some(m.median_of(|s| s.sha_parallel))),
            json_num(Some(m.median_of(|s| s.write))),
            json_num(Some(m.median_of(|s| s.write_parallel))),
            json_num(Some(m.median_of(|s| m.limit(s))))
        );
    }
    s.push_str("  \"servers\": [\n");
    for (i, (label, cmd, metrics)) in r.per_server.iter().enumerate() {
        let mut by_scenario: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
        for m in metrics {
            by_scenario.entry(m.scenario).or_default().push(m);
        }
        let _ = writeln!(
            s,
            "    {{\"name\": {}, \"command\": {}, \"scenarios\": {{",
            json_str(label),
            json_str(cmd)
        );
        let scen: Vec<String> = by_scenario
            .iter()
            .map(|(name, ms)| {
                let fields: Vec<String> = ms
                    .iter()
                    .map(|m| {
                        format!(
                            "{}: {{\"value\": {}, \"unit\": {}}}",
                            json_str(m.name),
                            json_num(m.value),
                            json_str(m.unit)
                        )
                    })
                    .collect();
                format!("      {}: {{{}}}", json_str(name), fields.join(", "))
            })
            .collect();
        s.push_str(&scen.join(",\n"));
        let _ = write!(
            s,
            "\n    }}}}{}\n",
            if i + 1 < r.per_server.len() { "," } else { "" }
        );
    }
    s.push_str("  ],\n  \"ratios\": {");
    if r.per_server.len() == 2 {
        let rs: Vec<String> = r.per_server[0]
            .2
            .iter()
            .map(|m| {
                let q = ratio(r.get(0, m.scenario, m.name), r.get(1, m.scenario, m.name));
                format!(
                    "\n    {}: {}",
                    json_str(&format!("{}/{}", m.scenario, m.name)),
                    json_num(q)
                )
            })
            .collect();
        s.push_str(&rs.join(","));
        s.push_str("\n  ");
    }
    s.push_str("},\n  \"notes\": [");
    s.push_str(
        &r.notes
            .iter()
            .map(|n| json_str(n))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.push_str("]\n}\n");
    s
}
