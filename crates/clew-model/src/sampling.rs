//! Adjusted counts: how many spans of real traffic one stored span stands for, when the spans
//! were sampled before they reached Clew.
//!
//! A trace kept with probability p stands for 1/p traces. Counts, rates and fan-outs computed
//! from sampled traces are multiplied by that weight. It is read from what samplers leave on
//! the spans:
//! - OpenTelemetry's consistent probability sampling: the `th` threshold in the `ot` entry of
//!   the W3C tracestate (`ot=th:c` keeps a quarter of the traces: 4), or the older `p` value
//!   (`ot=p:3`: 2³ = 8);
//! - a `SampleRate` attribute, on the span or its resource, as tail samplers such as Refinery
//!   write it (the number of traces the kept one stands for);
//! - the `sampler.type` = `probabilistic` and `sampler.param` tags Jaeger clients put on the
//!   root span (the probability).

use crate::span::{Span, Value};

/// The attribute a tail sampler writes with the number of traces a kept one stands for.
pub const SAMPLE_RATE_ATTRIBUTE: &str = "SampleRate";

/// Adjusted counts are kept as whole numbers up to this.
const MAX_WEIGHT: f64 = i32::MAX as f64;

/// 2⁵⁶: the range of the tracestate's sampling threshold.
const THRESHOLD_RANGE: f64 = (1u64 << 56) as f64;

/// How many spans `span` stands for according to its own sampling marks, if it has any.
/// Rounded to a whole number, at least 1.
pub fn adjusted_count(span: &Span) -> Option<u32> {
    let weight = tracestate_weight(&span.trace_state).or_else(|| attribute_weight(span)).or_else(|| jaeger_weight(span))?;
    Some(weight.round().clamp(1.0, MAX_WEIGHT) as u32)
}

/// The weight of a trace: its root span's adjusted count (1 when it has none); without a root,
/// the first span's (in the order given) that has one. A trace is sampled as a whole, so one
/// span speaks for it: the root, which made the decision.
pub fn trace_adjusted_count<'a>(root: Option<&'a Span>, spans: impl IntoIterator<Item = &'a Span>) -> u32 {
    match root {
        Some(root) => adjusted_count(root),
        None => spans.into_iter().find_map(adjusted_count),
    }
    .unwrap_or(1)
}

/// The weight the `ot` entry of a W3C tracestate gives: `th` (a 56-bit rejection threshold,
/// written as up to 14 hex digits with trailing zeros left out) or the older `p` (a power of two).
fn tracestate_weight(trace_state: &str) -> Option<f64> {
    if trace_state.is_empty() {
        return None;
    }
    let ot = trace_state.split(',').find_map(|member| member.trim().strip_prefix("ot="))?;
    let mut p_value = None;
    for field in ot.split(';') {
        if let Some(threshold) = field.strip_prefix("th:") {
            return threshold_weight(threshold);
        }
        if let Some(p) = field.strip_prefix("p:") {
            p_value = p.parse::<u32>().ok().filter(|p| *p <= 62).map(|p| 2f64.powi(p as i32));
        }
    }
    p_value
}

fn threshold_weight(hex: &str) -> Option<f64> {
    if hex.is_empty() || hex.len() > 14 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let threshold = u64::from_str_radix(hex, 16).ok()? << (4 * (14 - hex.len()));
    Some(THRESHOLD_RANGE / (THRESHOLD_RANGE - threshold as f64))
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(v) => Some(*v as f64),
        Value::Double(v) => Some(*v),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

fn attribute_weight(span: &Span) -> Option<f64> {
    let value = span.attribute(SAMPLE_RATE_ATTRIBUTE).or_else(|| crate::span::find(&span.resource.attributes, SAMPLE_RATE_ATTRIBUTE))?;
    number(value).filter(|rate| *rate >= 1.0)
}

fn jaeger_weight(span: &Span) -> Option<f64> {
    if span.attribute("sampler.type")?.as_str()? != "probabilistic" {
        return None;
    }
    let probability = number(span.attribute("sampler.param")?)?;
    (probability > 0.0 && probability <= 1.0).then(|| 1.0 / probability)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Attribute;

    fn span(trace_state: &str, attributes: Vec<Attribute>) -> Span {
        Span { trace_state: trace_state.to_string(), attributes, ..Span::default() }
    }

    #[test]
    fn the_tracestate_threshold_gives_the_inverse_probability() {
        // th:0 keeps everything; th:8 half; th:c a quarter; th:f an in sixteen.
        for (state, weight) in [("ot=th:0", 1), ("ot=th:8", 2), ("ot=th:c", 4), ("ot=th:f", 16), ("ot=th:fd70a4", 100)] {
            assert_eq!(adjusted_count(&span(state, vec![])), Some(weight), "{state}");
        }
        // Among other vendors' entries and other `ot` fields.
        assert_eq!(adjusted_count(&span("congo=t61rcWkgMzE, ot=rv:abcdef01234567;th:e", vec![])), Some(8));
        assert_eq!(adjusted_count(&span("ot=p:3", vec![])), Some(8));
        // Malformed thresholds are ignored, not guessed at.
        for state in ["ot=th:", "ot=th:xyz", "ot=th:123456789abcdef0", "ot=p:63", "other=th:8"] {
            assert_eq!(adjusted_count(&span(state, vec![])), None, "{state}");
        }
    }

    #[test]
    fn sample_rate_and_jaeger_probabilistic_tags_are_read() {
        let rate = |value: Value| span("", vec![Attribute::new(SAMPLE_RATE_ATTRIBUTE, value)]);
        assert_eq!(adjusted_count(&rate(Value::Int(20))), Some(20));
        assert_eq!(adjusted_count(&rate(Value::Str("5".into()))), Some(5));
        assert_eq!(adjusted_count(&rate(Value::Double(0.5))), None, "a rate below 1 is not a sample rate");
        let jaeger = |kind: &str, param: f64| {
            span("", vec![Attribute::new("sampler.type", Value::Str(kind.into())), Attribute::new("sampler.param", Value::Double(param))])
        };
        assert_eq!(adjusted_count(&jaeger("probabilistic", 0.001)), Some(1000));
        assert_eq!(adjusted_count(&jaeger("probabilistic", 0.0)), None);
        assert_eq!(adjusted_count(&jaeger("ratelimiting", 2.0)), None, "a rate limit says nothing of the share kept");
        // The tracestate wins over an attribute.
        let both = span("ot=th:8", vec![Attribute::new(SAMPLE_RATE_ATTRIBUTE, Value::Int(10))]);
        assert_eq!(adjusted_count(&both), Some(2));
    }

    #[test]
    fn a_trace_takes_its_roots_weight_else_the_first_marked_span() {
        let plain = span("", vec![]);
        let marked = span("ot=th:c", vec![]);
        let other = span("ot=th:8", vec![]);
        assert_eq!(trace_adjusted_count(Some(&other), [&other, &marked]), 2);
        assert_eq!(trace_adjusted_count(Some(&plain), [&plain, &marked]), 1, "the root decides");
        assert_eq!(trace_adjusted_count(None, [&plain, &marked, &other]), 4);
        assert_eq!(trace_adjusted_count(None, [&plain]), 1);
    }
}
