//! Results

/// Which direction is good, so the table can say whether a ratio is a win.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Clone)]
pub(crate) struct Metric {
    pub(crate) scenario: &'static str,
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) value: Option<f64>,
}

#[derive(Default)]
pub(crate) struct Results {
    /// Per server label: metrics in the order they were measured.
    pub(crate) per_server: Vec<(String, String, Vec<Metric>)>,
    /// Scenario -> why it could not run, per server.
    pub(crate) notes: Vec<String>,
}

impl Results {
    pub(crate) fn push(
        &mut self,
        server: usize,
        scenario: &'static str,
        name: &'static str,
        unit: &'static str,
        better: Better,
        value: Option<f64>,
    ) {
        self.per_server[server].2.push(Metric {
            scenario,
            name,
            unit,
            better,
            value,
        });
    }

    /// Peak RSS of a scenario: since the scenario began when `/proc/PID/clear_refs` could
    /// reset it (`reset`), else over the server's lifetime.
    pub(crate) fn push_peak_rss(
        &mut self,
        server: usize,
        scenario: &'static str,
        reset: bool,
        mib: Option<f64>,
    ) {
        let name = if reset {
            "peak RSS"
        } else {
            "peak RSS (lifetime)"
        };
        self.push(server, scenario, name, "MiB", Better::Lower, mib);
    }

    pub(crate) fn get(&self, server: usize, scenario: &str, name: &str) -> Option<f64> {
        self.per_server[server]
            .2
            .iter()
            .find(|m| m.scenario == scenario && m.name == name)
            .and_then(|m| m.value)
    }
}

/// Nearest-rank percentile of `v` (sorted here).
pub(crate) fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    percentile(&mut v, 50.0)
}
