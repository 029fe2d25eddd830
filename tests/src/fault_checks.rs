//! What a fault test reads back from agentd: the fault lines of its log (a fault is said once
//! when raised, `fault: <kind>`, and once when it clears, `fault cleared: <kind>`) and the
//! `isthmus_faults_total{kind}` / `isthmus_faults_active{kind}` series of a metrics page.

/// The value of `family{kind="<kind>"}` on a metrics page; panics if the series is missing
/// (every kind has its series from the start).
pub fn fault_series(metrics: &str, family: &str, kind: &str) -> f64 {
    let prefix = format!("{family}{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in the metrics page"))
}

/// The lines of `log` that contain every one of `needles`.
pub fn lines_with(log: &str, needles: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}
