//! The status page: `GET /` from a browser (`Accept: text/html`) answers a small HTML page of
//! the repositories the user may read, with size, quota bar, snapshot count and the newest
//! snapshot's age coloured by freshness, plus a few server facts. Server-rendered from the
//! inventory (storage/inventory.rs), so a page view walks nothing; no script, no external
//! asset. `--no-status-page` turns it off, and `GET /` then answers as before.
//! README "Is every backup fresh?" shows it.

use crate::access::Right;
use crate::app::{AuthMode, State};
use crate::handler::{Request, header_str, set};
use crate::http::body::{Body, Response};
use crate::lock::Lock as _;
use crate::storage::inventory::{self, RepoStats, age, human_bytes};
use crate::storage::quota::{self, QuotaShare, Usage};
use hyper::Method;
use hyper::header;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// A snapshot younger than this is fresh (green); older than [`STALE`] is stale (red); in
/// between, amber. 26 h: a daily backup with some slack, as the alert in docs/metrics.md.
const FRESH: u64 = 26 * 3600;
const STALE: u64 = 3 * 86_400;

/// Whether a request asks for the status page: `GET /` that accepts HTML.
pub(crate) fn wanted(req: &Request) -> bool {
    req.method() == Method::GET
        && req.uri().path() == "/"
        && header_str(req, header::ACCEPT).is_some_and(|a| a.contains("text/html"))
}

/// The page for `user` (already authenticated).
pub(crate) async fn serve(st: &State, user: Option<&str>) -> Response {
    // The same rules as a request's: a changed access file is read again first.
    if let Some(access) = &st.access {
        access.reload_if_changed().await;
    }
    let repos: Vec<(String, RepoStats)> = st
        .inventory
        .report()
        .into_iter()
        .filter(|(name, _)| may_read(st, user, name))
        .collect();
    let root = st.repos.root().to_owned();
    let free = smol::unblock(move || {
        rustix::fs::statvfs(&root)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    })
    .await;
    let html = render(st, user, &repos, free, inventory::now());
    let mut res = Response::new(Body::text(html));
    set(&mut res, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(&mut res, header::CACHE_CONTROL, "no-store");
    res
}

/// The same rules a read of the repository passes in the handler: `--private-repos` (first
/// segment = user), the access file's `r` right; everything otherwise.
fn may_read(st: &State, user: Option<&str>, name: &str) -> bool {
    let segments: Vec<String> = if name.is_empty() {
        Vec::new()
    } else {
        name.split('/').map(str::to_owned).collect()
    };
    if st.private_repos
        && let Some(user) = user
        && segments.first().map(String::as_str) != Some(user)
    {
        return false;
    }
    if let Some(access) = &st.access {
        return access.get().decide(user, &segments).right >= Right::Read;
    }
    true
}

/// The quota the repository `name` counts against, as the server counts it now.
fn quota_of(st: &State, report: Option<&Usage>, name: &str) -> Option<QuotaShare> {
    let (q, report) = (st.quota.as_ref()?, report?);
    let rules = st.access.as_ref().map(|a| a.get());
    quota::share_of(
        name,
        |seg| rules.as_ref()?.quota(seg)?.limit,
        |seg| {
            let found = report.segments.iter().find(|(n, _, _)| n == seg);
            found.map_or(0, |s| s.1)
        },
        report.used,
        q.limit(),
    )
}

fn render(
    st: &State,
    user: Option<&str>,
    repos: &[(String, RepoStats)],
    free: Option<u64>,
    now: u64,
) -> String {
    let mut out = String::with_capacity(4096 + repos.len() * 400);
    // Taken once for the page (it copies every segment's usage), not once per repository.
    let quota_report = st.quota.as_ref().map(|q| q.report());
    out.push_str(concat!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content=\"width=device-width,initial-scale=1\">",
        "<title>rest-server status</title><style>",
        "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:46em;padding:.8em;color:#222}",
        "h1{font-size:1.3em;margin:.2em 0 .6em}",
        ".r{border:1px solid #ddd;border-radius:6px;padding:.5em .7em;margin:.5em 0}",
        ".n{font-weight:600;word-break:break-all}",
        ".m{color:#555;font-size:.92em}",
        ".age{white-space:nowrap;font-weight:600;padding:0 .35em;border-radius:4px;color:#fff}",
        ".fresh{background:#2e7d32}.old{background:#b26a00}.stale{background:#c62828}",
        ".bar{height:.5em;background:#eee;border-radius:3px;margin-top:.3em;overflow:hidden}",
        ".bar i{display:block;height:100%;background:#1565c0}",
        ".bar i.full{background:#c62828}",
        "dl{display:grid;grid-template-columns:auto 1fr;gap:.1em .8em;font-size:.9em;color:#444}",
        "dd{margin:0;word-break:break-all}",
        "</style></head><body><h1>rest-server status</h1>\n",
    ));
    if repos.is_empty() {
        out.push_str("<p>No repositories to show.</p>\n");
    }
    // The background scrub's findings, per repository (with --scrub-every).
    let damaged: std::collections::BTreeMap<String, u64> = st
        .scrub
        .as_ref()
        .map(|s| s.damaged().into_iter().collect())
        .unwrap_or_default();
    for (name, s) in repos {
        out.push_str("<div class=r><div class=n>/");
        escape(&mut out, name);
        out.push_str("</div><div class=m>");
        let _ = write!(
            out,
            "{} &middot; {} object{} &middot; {} snapshot{} &middot; ",
            human_bytes(s.total_bytes()),
            s.total_objects(),
            if s.total_objects() == 1 { "" } else { "s" },
            s.snapshots(),
            if s.snapshots() == 1 { "" } else { "s" }
        );
        match s.newest_snapshot {
            Some(t) => {
                let a = now.saturating_sub(t);
                let class = match a {
                    _ if a <= FRESH => "fresh",
                    _ if a <= STALE => "old",
                    _ => "stale",
                };
                let _ = write!(
                    out,
                    "newest <span class=\"age {class}\">{}</span>",
                    age(t, now)
                );
            }
            None => out.push_str("<span class=\"age stale\">no snapshot</span>"),
        }
        out.push_str("</div>");
        if let Some(&n) = damaged.get(name).filter(|n| **n > 0) {
            let _ = write!(
                out,
                "<div class=m><span class=\"age stale\">{n} damaged object{}</span> found by the scrub: run <code>restic check --read-data</code></div>",
                if n == 1 { "" } else { "s" }
            );
        }
        if let Some(QuotaShare { of, used, limit }) = quota_of(st, quota_report.as_ref(), name) {
            let pct = crate::cmd::status::percent(used, limit);
            let full = if pct >= 90 { " class=full" } else { "" };
            out.push_str("<div class=m>quota of ");
            escape(&mut out, &of);
            let _ = write!(
                out,
                ": {pct}% of {}</div><div class=bar><i{full} style=\"width:{}%\"></i></div>",
                human_bytes(limit),
                pct.min(100)
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("<dl>");
    let mut fact = |k: &str, v: &str| {
        let _ = write!(out, "<dt>{k}</dt><dd>");
        escape(&mut out, v);
        out.push_str("</dd>");
    };
    fact("version", crate::cli::VERSION);
    fact("uptime", &uptime(st.started.elapsed().as_secs()));
    if let Some(free) = free {
        fact("disk free", &human_bytes(free));
    }
    if let Some(scrub) = &st.scrub {
        let last = scrub.last_pass_completed.load(Ordering::Relaxed);
        let started = scrub.pass_started.load(Ordering::Relaxed);
        let mut text = match last {
            0 => "no complete pass yet".to_owned(),
            t => format!("last complete pass {}", age(t, now)),
        };
        if started != 0 {
            let _ = write!(text, "; a pass is running (started {})", age(started, now));
        }
        fact("scrub", &text);
    }
    if let Some(fp) = st.tls_fingerprint.locked().clone() {
        fact("TLS SHA-256", &fp);
    }
    match (&st.authn, user) {
        (AuthMode::Anonymous, _) | (_, None) => fact("user", "anonymous"),
        (_, Some(u)) => fact("user", u),
    }
    out.push_str("</dl></body></html>\n");
    out
}

fn uptime(s: u64) -> String {
    match s {
        0..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// HTML text escaping: repository and user names come from the disk and the client.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        let mut s = String::new();
        super::escape(&mut s, "<b>&\"'");
        assert_eq!(s, "&lt;b&gt;&amp;&quot;&#39;");
    }
}
