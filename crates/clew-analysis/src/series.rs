//! TraceQL metrics results for people: a table with a sparkline per series, Markdown, CSV.

use clew_query::traceql::{MetricsResult, Series};

use crate::render::{cell, table};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A series' name: its labels as `key=value`, or the function when it has none.
pub fn series_name(result: &MetricsResult, series: &Series) -> String {
    if series.labels.is_empty() {
        return result.function.clone();
    }
    series.labels.iter().map(|(k, v)| format!("{k}={}", v.text())).collect::<Vec<_>>().join(", ")
}

/// At most [`WIDTH`] bars, each the mean of the steps it covers, scaled between the lowest and
/// highest bar; a gap where no step it covers has a sample.
pub fn sparkline(result: &MetricsResult, series: &Series) -> String {
    let steps = ((result.end_unix_nano - result.start_unix_nano) / result.step_nanos.max(1)).max(1) as usize;
    let width = steps.min(WIDTH);
    let mut sums = vec![(0.0f64, 0u32); width];
    for (t, v) in &series.samples {
        let step = ((t * 1_000_000).saturating_sub(result.start_unix_nano) / result.step_nanos.max(1)) as usize;
        if let Some(slot) = sums.get_mut(step * width / steps) {
            slot.0 += v;
            slot.1 += 1;
        }
    }
    let bars: Vec<Option<f64>> = sums.iter().map(|&(sum, n)| (n > 0).then(|| sum / n as f64)).collect();
    let (lo, hi) = bars.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    bars.into_iter()
        .map(|bar| match bar {
            None => ' ',
            Some(v) if hi > lo => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
            Some(_) => BARS[3],
        })
        .collect()
}

/// Bars in a sparkline at most.
pub const WIDTH: usize = 60;

fn number(value: f64) -> String {
    if value == 0.0 || (value.abs() >= 0.01 && value.abs() < 1e6) {
        format!("{value:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{value:.3e}")
    }
}

struct Summary {
    min: f64,
    mean: f64,
    max: f64,
    last: f64,
}

fn summary(series: &Series) -> Option<Summary> {
    let values: Vec<f64> = series.samples.iter().map(|(_, v)| *v).collect();
    let last = *values.last()?;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Summary { min, mean: values.iter().sum::<f64>() / values.len() as f64, max, last })
}

fn notes(result: &MetricsResult) -> String {
    let mut out = format!(
        "{} over {} steps of {} s; {} spans matched ({})\n",
        result.function,
        (result.end_unix_nano - result.start_unix_nano) / result.step_nanos.max(1),
        result.step_nanos as f64 / 1e9,
        result.matched_spans,
        if result.path == "sql" { "one scan".to_string() } else { format!("{} traces evaluated", result.inspected_traces) }
    );
    if let Some(partial) = &result.partial {
        out.push_str(&format!("Partial: {partial}\n"));
    }
    out
}

pub fn to_table(result: &MetricsResult) -> String {
    let mut rows = vec![["series".to_string(), "min".into(), "mean".into(), "max".into(), "last".into(), "over time".into()]];
    for series in &result.series {
        let Some(s) = summary(series) else { continue };
        rows.push([series_name(result, series), number(s.min), number(s.mean), number(s.max), number(s.last), sparkline(result, series)]);
    }
    format!("{}\n{}", notes(result), table(&rows))
}

pub fn to_markdown(result: &MetricsResult) -> String {
    let mut out = format!("{}\n| series | min | mean | max | last |\n|---|---:|---:|---:|---:|\n", notes(result));
    for series in &result.series {
        let Some(s) = summary(series) else { continue };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&series_name(result, series)),
            number(s.min),
            number(s.mean),
            number(s.max),
            number(s.last)
        ));
    }
    out
}

/// One row per sample: series, Unix ms, value.
pub fn to_csv(result: &MetricsResult) -> String {
    let mut out = String::from("series,timestamp_ms,value\n");
    for series in &result.series {
        let name = series_name(result, series).replace('"', "\"\"");
        for (t, v) in &series.samples {
            out.push_str(&format!("\"{name}\",{t},{v}\n"));
        }
    }
    out
}
