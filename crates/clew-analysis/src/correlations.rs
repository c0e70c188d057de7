//! Correlations (Lightstep Correlations, Honeycomb BubbleUp): which attribute values are
//! over-represented in a selection of an operation's spans (a latency range, or its failures)
//! against the rest. Each value gets the normalised difference of its rates,
//! `(p_sel − p_base) / (p_sel + p_base)` in [−1, +1] (+1: only in the selection; −1: never in
//! it), a two-proportion z-test, and a Benjamini–Hochberg correction over every value compared;
//! a value ranks only with enough support. Each attribute also gets the total-variation distance
//! between its value distributions in the two groups. Numeric attributes that take many values
//! (sizes, counts) are compared as distributions with the two-sample Kolmogorov–Smirnov test.

use std::collections::BTreeMap;

use clew_query::CorrelationFacts;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::render::{cell, table};

/// A value needs this many selected spans, and this share of the selection, to rank.
pub const MIN_SUPPORT: u64 = 5;
pub const MIN_SUPPORT_SHARE: f64 = 0.01;
/// The false-discovery rate of the Benjamini–Hochberg correction.
pub const FALSE_DISCOVERY_RATE: f64 = 0.01;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Correlation {
    /// `span.<key>`, `resource.<key>`, `trace.service` (the trace passes through that service) or `status`.
    pub key: String,
    pub value: String,
    /// In [−1, +1].
    pub score: f64,
    pub selected: u64,
    pub baseline: u64,
    /// Share of the selection that carries it.
    pub selected_share: f64,
    pub baseline_share: f64,
    pub p_value: f64,
    /// The p-value after the Benjamini–Hochberg correction.
    pub q_value: f64,
    /// Enough support and a q-value under the false-discovery rate.
    pub significant: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttributeDifference {
    pub key: String,
    /// Half the summed absolute differences of each value's share in the two groups, in [0, 1].
    pub distance: f64,
    /// The value that differs most, and by how much (selection share minus baseline share).
    pub value: String,
    pub difference: f64,
}

/// A numeric attribute whose distribution differs between the selection and the baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NumericDifference {
    pub key: String,
    /// The Kolmogorov–Smirnov statistic: the largest gap between the two cumulative
    /// distributions, in [0, 1].
    pub statistic: f64,
    pub p_value: f64,
    /// p under the false-discovery rate after a Bonferroni correction over the numeric keys,
    /// with enough support on both sides.
    pub significant: bool,
    /// `higher` or `lower`: the selection's median against the baseline's.
    pub direction: String,
    pub selected_median: f64,
    pub baseline_median: f64,
    pub selected_p90: f64,
    pub baseline_p90: f64,
    /// Spans that carried the key on each side (the test reads a sample of at most 2,000 each).
    pub selected_spans: u64,
    pub baseline_spans: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CorrelationReport {
    /// The service compared, or every service.
    pub service: Option<String>,
    pub operation: Option<String>,
    pub selection: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub selected: u64,
    pub baseline: u64,
    /// Spans whose attributes were compared (a sample of the baseline, or of both, over a
    /// large scope: see `notes`).
    pub compared_selected: u64,
    pub compared_baseline: u64,
    pub sampled_traces: Option<f64>,
    /// Significant over-represented values first (by score), then significant under-represented
    /// ones (by |score|), then the rest.
    pub correlations: Vec<Correlation>,
    /// Attributes whose distribution differs most, first.
    pub attributes: Vec<AttributeDifference>,
    /// Numeric attributes, the most different distribution first.
    pub numeric: Vec<NumericDifference>,
    pub high_cardinality: Vec<String>,
    pub latency: Vec<(f64, u64)>,
    pub selected_latency: Vec<(f64, u64)>,
    pub heatmap_step_nanos: u64,
    pub heatmap: Vec<clew_query::HeatCell>,
    /// How the counts were made (sampling, a capped TraceQL evaluation).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// The Kolmogorov–Smirnov statistic of two samples and its asymptotic p-value (Numerical
/// Recipes' `probks` with Stephens' small-sample correction).
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> (f64, f64) {
    kolmogorov_smirnov_sorted(&sorted(a), &sorted(b))
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values
}

/// [`kolmogorov_smirnov`] of samples already in ascending order.
fn kolmogorov_smirnov_sorted(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 1.0);
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let effective = (n * m / (n + m)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * d;
    (d, kolmogorov_q(lambda))
}

/// Q_KS(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The `q` quantile of values in ascending order (nearest rank).
fn quantile_of(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn numeric_differences(numeric: &[clew_query::NumericValues]) -> Vec<NumericDifference> {
    let keys = numeric.len().max(1) as f64;
    let mut out: Vec<NumericDifference> = numeric
        .iter()
        .map(|n| {
            let (selected, baseline) = (sorted(&n.selected), sorted(&n.baseline));
            let (statistic, p_value) = kolmogorov_smirnov_sorted(&selected, &baseline);
            let (selected_median, baseline_median) = (quantile_of(&selected, 0.5), quantile_of(&baseline, 0.5));
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let higher =
                if selected_median != baseline_median { selected_median > baseline_median } else { mean(&n.selected) >= mean(&n.baseline) };
            NumericDifference {
                key: n.key.clone(),
                statistic,
                p_value,
                significant: p_value * keys < FALSE_DISCOVERY_RATE && n.selected_spans >= MIN_SUPPORT && n.baseline_spans >= MIN_SUPPORT,
                direction: if higher { "higher" } else { "lower" }.into(),
                selected_median,
                baseline_median,
                selected_p90: quantile_of(&selected, 0.9),
                baseline_p90: quantile_of(&baseline, 0.9),
                selected_spans: n.selected_spans,
                baseline_spans: n.baseline_spans,
            }
        })
        .collect();
    out.sort_by(|a, b| b.significant.cmp(&a.significant).then(b.statistic.total_cmp(&a.statistic)).then_with(|| a.key.cmp(&b.key)));
    out
}

/// Two-sided p-value of the two-proportion z-test.
fn p_value(normal: &Normal, selected: u64, selected_total: u64, baseline: u64, baseline_total: u64) -> f64 {
    let (n1, n2) = (selected_total as f64, baseline_total as f64);
    let pooled = (selected + baseline) as f64 / (n1 + n2);
    let variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (selected as f64 / n1 - baseline as f64 / n2) / variance.sqrt();
    2.0 * (1.0 - normal.cdf(z.abs()))
}

pub fn correlations(
    service: Option<&str>,
    operation: Option<&str>,
    selection: String,
    window: (u64, u64),
    facts: CorrelationFacts,
) -> CorrelationReport {
    let mut warnings = Vec::new();
    if facts.selected == 0 {
        warnings.push("no span of the scope is in the selection: widen it or the time range".into());
    }
    if facts.baseline == 0 {
        warnings.push("every span of the scope is in the selection: there is no baseline to compare with".into());
    }
    // Shares are of the spans whose attributes were compared.
    let (n_sel, n_base) = (facts.compared_selected, facts.compared_baseline);
    let normal = Normal::standard();
    let mut correlations: Vec<Correlation> = Vec::new();
    if n_sel > 0 && n_base > 0 {
        for v in &facts.values {
            let p_sel = v.selected as f64 / n_sel as f64;
            let p_base = v.baseline as f64 / n_base as f64;
            let score = if p_sel + p_base > 0.0 { (p_sel - p_base) / (p_sel + p_base) } else { 0.0 };
            correlations.push(Correlation {
                key: v.key.clone(),
                value: v.value.clone(),
                score,
                selected: v.selected,
                baseline: v.baseline,
                selected_share: p_sel,
                baseline_share: p_base,
                p_value: p_value(&normal, v.selected, n_sel, v.baseline, n_base),
                q_value: 1.0,
                significant: false,
            });
        }
    }
    // Benjamini–Hochberg: q_i = min over j ≥ i of p_(j) · m / j, in ascending order of p.
    let m = correlations.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| correlations[*a].p_value.total_cmp(&correlations[*b].p_value));
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(correlations[i].p_value * m as f64 / (rank + 1) as f64);
        correlations[i].q_value = running.min(1.0);
    }
    let min_support = MIN_SUPPORT.max((MIN_SUPPORT_SHARE * n_sel as f64).ceil() as u64);
    for c in &mut correlations {
        // A value over-represented in the selection needs support there; one under-represented
        // needs it in the baseline's proportion instead.
        let support = if c.score >= 0.0 { c.selected } else { c.baseline };
        c.significant = c.q_value < FALSE_DISCOVERY_RATE && support >= min_support;
    }
    // Over-represented values first (what the selection has that the rest has not), then
    // under-represented ones, each by the strength of the score.
    let group = |c: &Correlation| match (c.significant, c.score > 0.0) {
        (true, true) => 0,
        (true, false) => 1,
        (false, _) => 2,
    };
    correlations.sort_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then_with(|| b.score.abs().total_cmp(&a.score.abs()))
            .then_with(|| (b.selected + b.baseline).cmp(&(a.selected + a.baseline)))
            .then_with(|| (&a.key, &a.value).cmp(&(&b.key, &b.value)))
    });
    let mut by_key: BTreeMap<&str, Vec<&Correlation>> = BTreeMap::new();
    for c in &correlations {
        by_key.entry(&c.key).or_default().push(c);
    }
    let mut attributes: Vec<AttributeDifference> = by_key
        .into_iter()
        .filter_map(|(key, values)| {
            // Spans without the key count as one more value.
            let (sel, base): (f64, f64) = values.iter().fold((0.0, 0.0), |(s, b), c| (s + c.selected_share, b + c.baseline_share));
            let missing = ((1.0 - sel).max(0.0) - (1.0 - base).max(0.0)).abs();
            let distance = 0.5 * (values.iter().map(|c| (c.selected_share - c.baseline_share).abs()).sum::<f64>() + missing);
            let top = values
                .iter()
                .max_by(|a, b| (a.selected_share - a.baseline_share).abs().total_cmp(&(b.selected_share - b.baseline_share).abs()))?;
            Some(AttributeDifference {
                key: key.to_string(),
                distance,
                value: top.value.clone(),
                difference: top.selected_share - top.baseline_share,
            })
        })
        .collect();
    attributes.sort_by(|a, b| b.distance.total_cmp(&a.distance).then_with(|| a.key.cmp(&b.key)));
    CorrelationReport {
        service: service.map(str::to_string),
        operation: operation.map(str::to_string),
        selection,
        start_unix_nano: window.0,
        end_unix_nano: window.1,
        selected: facts.selected,
        baseline: facts.baseline,
        compared_selected: n_sel,
        compared_baseline: n_base,
        sampled_traces: facts.sampled_traces,
        correlations,
        attributes,
        numeric: numeric_differences(&facts.numeric),
        high_cardinality: facts.high_cardinality,
        latency: facts.latency,
        selected_latency: facts.selected_latency,
        heatmap_step_nanos: facts.heatmap_step_nanos,
        heatmap: facts.heatmap,
        notes: facts.notes,
        warnings,
    }
}

impl CorrelationReport {
    fn title(&self) -> String {
        let service = self.service.as_deref().unwrap_or("every service");
        match &self.operation {
            Some(operation) => format!("{service} {operation}"),
            None => service.to_string(),
        }
    }

    fn numeric_rows(&self) -> Vec<[String; 5]> {
        self.numeric
            .iter()
            .filter(|n| n.significant)
            .take(10)
            .map(|n| {
                [
                    n.key.clone(),
                    format!("{:.2}", n.statistic),
                    format!("{} ({} vs {})", n.direction, number(n.selected_median), number(n.baseline_median)),
                    format!("{} vs {}", number(n.selected_p90), number(n.baseline_p90)),
                    format!("{:.1e}", n.p_value),
                ]
            })
            .collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "## What sets {} apart in {}\n\n{} spans selected, {} in the baseline. Score: +1 only in the selection, −1 never in it.\n\n| Attribute | Value | Score | Selection | Baseline | q-value |\n|---|---|---|---|---|---|\n",
            cell(&self.selection),
            cell(&self.title()),
            self.selected,
            self.baseline
        );
        for c in self.correlations.iter().filter(|c| c.significant).take(25) {
            out.push_str(&format!(
                "| {} | {} | {:+.2} | {:.1}% ({}) | {:.1}% ({}) | {:.1e} |\n",
                cell(&c.key),
                cell(&c.value),
                c.score,
                100.0 * c.selected_share,
                c.selected,
                100.0 * c.baseline_share,
                c.baseline,
                c.q_value
            ));
        }
        let numeric = self.numeric_rows();
        if !numeric.is_empty() {
            out.push_str("\n### Numeric attributes whose distribution differs\n\n| Attribute | KS statistic | Median, selection vs baseline | p90 | p-value |\n|---|---|---|---|---|\n");
            for row in numeric {
                out.push_str(&format!("| {} |\n", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("\n_{}_\n", cell(note)));
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut rows = vec![["ATTRIBUTE".to_string(), "VALUE".into(), "SCORE".into(), "SELECTION".into(), "BASELINE".into(), "Q".into()]];
        for c in self.correlations.iter().filter(|c| c.significant).take(25) {
            rows.push([
                c.key.clone(),
                c.value.clone(),
                format!("{:+.2}", c.score),
                format!("{:.1}% ({})", 100.0 * c.selected_share, c.selected),
                format!("{:.1}% ({})", 100.0 * c.baseline_share, c.baseline),
                format!("{:.1e}", c.q_value),
            ]);
        }
        let mut out =
            format!("{} in {}: {} selected, {} baseline\n{}", self.selection, self.title(), self.selected, self.baseline, table(&rows));
        let numeric = self.numeric_rows();
        if !numeric.is_empty() {
            let mut rows = vec![["NUMERIC ATTRIBUTE".to_string(), "KS".into(), "MEDIAN".into(), "P90".into(), "P".into()]];
            rows.extend(numeric);
            out.push('\n');
            out.push_str(&table(&rows));
        }
        for note in &self.notes {
            out.push_str(&format!("\nnote: {note}"));
        }
        out
    }
}

/// A number as people write it: whole numbers without decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.3}") }
}

#[cfg(test)]
mod tests {
    use clew_query::ValueCounts;

    use super::*;

    fn facts(values: &[(&str, &str, u64, u64)], selected: u64, baseline: u64) -> CorrelationFacts {
        CorrelationFacts {
            selected,
            baseline,
            compared_selected: selected,
            compared_baseline: baseline,
            values: values
                .iter()
                .map(|(k, v, s, b)| ValueCounts { key: k.to_string(), value: v.to_string(), selected: *s, baseline: *b })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_over_represented_value_ranks_first_with_the_documented_endpoints() {
        let report = correlations(
            Some("search"),
            Some("GET /search"),
            "slow".into(),
            (0, 1),
            facts(
                &[
                    ("span.cloud.region", "us-east-1", 300, 0),
                    ("span.cloud.region", "eu-west-1", 0, 350),
                    ("span.cloud.region", "eu-central-1", 0, 350),
                    ("span.http.route", "/search", 300, 700),
                    ("span.rare", "x", 2, 0),
                ],
                300,
                700,
            ),
        );
        let first = &report.correlations[0];
        assert_eq!((first.key.as_str(), first.value.as_str(), first.score), ("span.cloud.region", "us-east-1", 1.0));
        assert!(first.significant && first.q_value < 1e-10);
        let never = report.correlations.iter().find(|c| c.value == "eu-west-1").unwrap();
        assert_eq!(never.score, -1.0);
        assert!(never.significant);
        let everywhere = report.correlations.iter().find(|c| c.key == "span.http.route").unwrap();
        assert_eq!(everywhere.score, 0.0);
        assert!(!everywhere.significant);
        let rare = report.correlations.iter().find(|c| c.key == "span.rare").unwrap();
        assert_eq!(rare.score, 1.0);
        assert!(!rare.significant, "two spans are not enough support");
        assert_eq!(report.attributes[0].key, "span.cloud.region");
        assert!((report.attributes[0].distance - 1.0).abs() < 1e-9);
        assert!(report.attributes.iter().find(|a| a.key == "span.http.route").unwrap().distance < 1e-9);
    }

    #[test]
    fn an_empty_side_is_said_not_scored() {
        let report = correlations(Some("a"), None, "errors".into(), (0, 1), facts(&[("span.k", "v", 0, 10)], 0, 10));
        assert!(report.correlations.is_empty());
        assert!(report.warnings[0].contains("no span"));
    }

    #[test]
    fn kolmogorov_smirnov_matches_known_values() {
        // Identical samples: no difference.
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let (d, p) = kolmogorov_smirnov(&a, &a);
        assert_eq!(d, 0.0);
        assert_eq!(p, 1.0);
        // Disjoint samples: the largest statistic, and a tiny p.
        let b: Vec<f64> = (1000..1100).map(f64::from).collect();
        let (d, p) = kolmogorov_smirnov(&a, &b);
        assert_eq!(d, 1.0);
        assert!(p < 1e-20);
        // Shifted by a quarter of the range: D = 0.25, and with n = m = 100 the asymptotic
        // p-value is 2·e^(−2λ²) ≈ 0.0030 (λ = (√50 + 0.12 + 0.11/√50) · 0.25 ≈ 1.80).
        let c: Vec<f64> = (25..125).map(f64::from).collect();
        let (d, p) = kolmogorov_smirnov(&a, &c);
        assert!((d - 0.25).abs() < 1e-12, "{d}");
        assert!((p - 0.0030).abs() < 0.0002, "{p}");
    }

    #[test]
    fn a_larger_numeric_attribute_in_the_selection_is_significant_and_higher() {
        let numeric = vec![
            clew_query::NumericValues {
                key: "span.rows".into(),
                selected: (0..500).map(|i| 100.0 + i as f64).collect(),
                baseline: (0..1500).map(|i| i as f64 / 3.0).collect(),
                selected_spans: 500,
                baseline_spans: 1500,
            },
            clew_query::NumericValues {
                key: "span.same".into(),
                selected: (0..500).map(f64::from).collect(),
                baseline: (0..500).map(f64::from).collect(),
                selected_spans: 500,
                baseline_spans: 500,
            },
        ];
        let differences = numeric_differences(&numeric);
        assert_eq!(differences[0].key, "span.rows");
        assert!(differences[0].significant);
        assert_eq!(differences[0].direction, "higher");
        assert_eq!(differences[0].selected_median, 350.0);
        assert!(!differences[1].significant);
    }
}
