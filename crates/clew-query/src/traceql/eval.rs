//! Evaluating a parsed query on one assembled trace: spansets are sets of span indexes.

use std::collections::HashMap;

use clew_model::{AssembledTrace, Span, Value as SpanValue};

use super::ast::*;

/// A set of matching spans (indexes into the trace's spans, in trace order), with the
/// `by()` values that formed it and the fields `select()` asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanset {
    pub spans: Vec<usize>,
    pub group: Vec<(Field, Value)>,
    pub selected: Vec<Field>,
}

/// The trace around the spans being tested: tree links and compiled regexes.
pub struct TraceContext<'a> {
    trace: &'a AssembledTrace,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    regexes: std::cell::RefCell<HashMap<String, regex::Regex>>,
}

impl<'a> TraceContext<'a> {
    pub fn new(trace: &'a AssembledTrace) -> Self {
        let index: HashMap<_, usize> = trace.spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
        let parent: Vec<Option<usize>> = trace
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| s.parent_span_id.and_then(|p| index.get(&p).copied()).filter(|p| *p != i))
            .collect();
        let mut children = vec![Vec::new(); trace.spans.len()];
        for (child, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(child);
            }
        }
        Self { trace, parent, children, regexes: Default::default() }
    }

    fn span(&self, index: usize) -> &Span {
        &self.trace.spans[index]
    }

    fn regex(&self, pattern: &str) -> Option<regex::Regex> {
        let mut cache = self.regexes.borrow_mut();
        if let Some(found) = cache.get(pattern) {
            return Some(found.clone());
        }
        let compiled = regex::Regex::new(&format!("^(?:{pattern})$")).ok()?;
        cache.insert(pattern.to_string(), compiled.clone());
        Some(compiled)
    }

    fn ancestors(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        let mut seen = 0;
        std::iter::successors(self.parent[index], move |p| {
            seen += 1;
            // A cycle of parent IDs cannot loop forever.
            if seen > self.parent.len() { None } else { self.parent[*p] }
        })
    }
}

/// Runs the whole query on a trace; an empty result means the trace does not match.
pub fn evaluate(query: &Query, context: &TraceContext<'_>) -> Vec<Spanset> {
    let first = spanset_mask(&query.first, context);
    let spans: Vec<usize> = (0..first.len()).filter(|i| first[*i]).collect();
    let mut sets = if spans.is_empty() { vec![] } else { vec![Spanset { spans, group: vec![], selected: vec![] }] };
    for stage in &query.stages {
        sets = apply_stage(stage, sets, context);
        if sets.is_empty() {
            break;
        }
    }
    sets
}

fn apply_stage(stage: &Stage, sets: Vec<Spanset>, context: &TraceContext<'_>) -> Vec<Spanset> {
    match stage {
        Stage::Filter(expr) => {
            let mask = spanset_mask(expr, context);
            sets.into_iter()
                .filter_map(|mut set| {
                    set.spans.retain(|i| mask[*i]);
                    (!set.spans.is_empty()).then_some(set)
                })
                .collect()
        }
        Stage::Aggregate { function, field, op, value } => sets
            .into_iter()
            .filter(|set| aggregate(*function, field.as_ref(), &set.spans, context).is_some_and(|a| compare(*op, &a, value, context)))
            .collect(),
        Stage::By(fields) => {
            let mut out: Vec<Spanset> = Vec::new();
            for set in sets {
                let mut groups: Vec<(Vec<Value>, Vec<usize>)> = Vec::new();
                for &span in &set.spans {
                    let key: Vec<Value> =
                        fields.iter().map(|f| field_values(f, span, context).into_iter().next().unwrap_or(Value::Nil)).collect();
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, spans)) => spans.push(span),
                        None => groups.push((key, vec![span])),
                    }
                }
                for (key, spans) in groups {
                    let mut group = set.group.clone();
                    group.extend(fields.iter().cloned().zip(key));
                    out.push(Spanset { spans, group, selected: set.selected.clone() });
                }
            }
            out
        }
        Stage::Select(fields) => sets
            .into_iter()
            .map(|mut set| {
                set.selected.extend(fields.iter().cloned());
                set
            })
            .collect(),
    }
}

fn aggregate(function: Aggregate, field: Option<&Field>, spans: &[usize], context: &TraceContext<'_>) -> Option<Value> {
    if function == Aggregate::Count {
        return Some(Value::Int(spans.len() as i64));
    }
    let field = field?;
    let mut numbers = Vec::new();
    let mut is_duration = false;
    for &span in spans {
        for value in field_values(field, span, context) {
            match value {
                Value::Int(i) => numbers.push(i as f64),
                Value::Float(f) => numbers.push(f),
                Value::Duration(d) => {
                    is_duration = true;
                    numbers.push(d as f64)
                }
                _ => {}
            }
        }
    }
    if numbers.is_empty() {
        return None;
    }
    let result = match function {
        Aggregate::Avg => numbers.iter().sum::<f64>() / numbers.len() as f64,
        Aggregate::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => numbers.iter().sum(),
    };
    Some(if is_duration { Value::Duration(result as i64) } else { Value::Float(result) })
}

/// The spans of the trace that a spanset expression selects.
pub fn spanset_mask(expr: &SpansetExpr, context: &TraceContext<'_>) -> Vec<bool> {
    let count = context.trace.spans.len();
    match expr {
        SpansetExpr::Filter(condition) => (0..count).map(|i| truthy(condition, i, context)).collect(),
        SpansetExpr::And(left, right) => {
            let (l, r) = (spanset_mask(left, context), spanset_mask(right, context));
            if l.contains(&true) && r.contains(&true) { l.iter().zip(&r).map(|(a, b)| *a || *b).collect() } else { vec![false; count] }
        }
        SpansetExpr::Or(left, right) => {
            let (l, r) = (spanset_mask(left, context), spanset_mask(right, context));
            l.iter().zip(&r).map(|(a, b)| *a || *b).collect()
        }
        SpansetExpr::Pipeline(query) => {
            let mut mask = vec![false; count];
            for set in evaluate(query, context) {
                for span in set.spans {
                    mask[span] = true;
                }
            }
            mask
        }
        SpansetExpr::Structural { relation, mode, left, right } => {
            let (l, r) = (spanset_mask(left, context), spanset_mask(right, context));
            // related(x, y): y stands in `relation` to x (e.g. Child: y is a child of x).
            let related = |x: usize, y: usize| -> bool {
                match relation {
                    Relation::Child => context.parent[y] == Some(x),
                    Relation::Descendant => context.ancestors(y).any(|a| a == x),
                    Relation::Parent => context.parent[x] == Some(y),
                    Relation::Ancestor => context.ancestors(x).any(|a| a == y),
                    Relation::Sibling => x != y && context.parent[x].is_some() && context.parent[x] == context.parent[y],
                }
            };
            let lefts: Vec<usize> = (0..count).filter(|i| l[*i]).collect();
            let mut mask = vec![false; count];
            for y in (0..count).filter(|i| r[*i]) {
                let has = match relation {
                    // Walk the tree from y instead of testing every left span.
                    Relation::Child => context.parent[y].is_some_and(|p| l[p]),
                    Relation::Descendant => context.ancestors(y).any(|a| l[a]),
                    Relation::Parent => context.children[y].iter().any(|c| l[*c]),
                    _ => lefts.iter().any(|x| related(*x, y)),
                };
                match mode {
                    Mode::Right => mask[y] |= has,
                    Mode::Not => mask[y] |= !has,
                    Mode::Union => {
                        if has {
                            mask[y] = true;
                            for x in &lefts {
                                if related(*x, y) {
                                    mask[*x] = true;
                                }
                            }
                        }
                    }
                }
            }
            mask
        }
    }
}

/// Whether a condition holds for a span (a bare boolean field means `= true`).
fn truthy(expr: &Expr, span: usize, context: &TraceContext<'_>) -> bool {
    match expr {
        Expr::Literal(Value::Bool(b)) => *b,
        Expr::Literal(_) => false,
        Expr::And(a, b) => truthy(a, span, context) && truthy(b, span, context),
        Expr::Or(a, b) => truthy(a, span, context) || truthy(b, span, context),
        Expr::Not(inner) => !truthy(inner, span, context),
        Expr::Field(field) => field_values(field, span, context).iter().any(|v| *v == Value::Bool(true)),
        Expr::Arith(..) => false,
        Expr::Compare(op, left, right) => {
            let (lefts, rights) = (values(left, span, context), values(right, span, context));
            let nil_left = matches!(**left, Expr::Literal(Value::Nil));
            let nil_right = matches!(**right, Expr::Literal(Value::Nil));
            if nil_left || nil_right {
                let present = if nil_right { !lefts.is_empty() } else { !rights.is_empty() };
                return match op {
                    CompareOp::Eq => !present,
                    CompareOp::Ne => present,
                    _ => false,
                };
            }
            match op {
                // An array matches `!=`/`!~` only when no element matches the positive form.
                CompareOp::Ne | CompareOp::NotRegex if !lefts.is_empty() && !rights.is_empty() => {
                    let positive = if *op == CompareOp::Ne { CompareOp::Eq } else { CompareOp::Regex };
                    !lefts.iter().any(|l| rights.iter().any(|r| compare(positive, l, r, context)))
                }
                _ => lefts.iter().any(|l| rights.iter().any(|r| compare(*op, l, r, context))),
            }
        }
    }
}

fn values(expr: &Expr, span: usize, context: &TraceContext<'_>) -> Vec<Value> {
    match expr {
        Expr::Literal(value) => vec![value.clone()],
        Expr::Field(field) => field_values(field, span, context),
        Expr::Arith(op, a, b) => {
            let (a, b) = (values(a, span, context), values(b, span, context));
            match (a.first(), b.first()) {
                (Some(a), Some(b)) => arith(*op, a, b).into_iter().collect(),
                _ => vec![],
            }
        }
        other => vec![Value::Bool(truthy(other, span, context))],
    }
}

pub(crate) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Duration(d) => Some(*d as f64),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn arith(op: ArithOp, a: &Value, b: &Value) -> Option<Value> {
    let (x, y) = (number(a)?, number(b)?);
    let result = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
        ArithOp::Pow => x.powf(y),
    };
    Some(match (a, b) {
        (Value::Duration(_), _) | (_, Value::Duration(_)) => Value::Duration(result as i64),
        (Value::Int(_), Value::Int(_)) if result.fract() == 0.0 => Value::Int(result as i64),
        _ => Value::Float(result),
    })
}

/// Compares two values; numbers compare across int, float and duration, and a string that
/// holds a number compares as one (spans from Zipkin carry their numbers as strings).
pub fn compare(op: CompareOp, left: &Value, right: &Value, context: &TraceContext<'_>) -> bool {
    use std::cmp::Ordering;
    if matches!(op, CompareOp::Regex | CompareOp::NotRegex) {
        let (Some(text), Value::Str(pattern)) = (text_of(left), right) else { return false };
        let matched = context.regex(pattern).is_some_and(|re| re.is_match(&text));
        return matched == (op == CompareOp::Regex);
    }
    let ordering = match (left, right) {
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Status(a), Value::Status(b)) => (a == b).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        (Value::Kind(a), Value::Kind(b)) => (a == b).then_some(Ordering::Equal).or(Some(Ordering::Less)),
        (Value::Status(a), Value::Str(b)) | (Value::Str(b), Value::Status(a)) => {
            Some(if a.as_str() == b.to_ascii_lowercase() { Ordering::Equal } else { Ordering::Less })
        }
        (Value::Kind(a), Value::Str(b)) | (Value::Str(b), Value::Kind(a)) => {
            Some(if a.as_str() == b.to_ascii_lowercase() { Ordering::Equal } else { Ordering::Less })
        }
        (a, b) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    let Some(ordering) = ordering else { return false };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Regex | CompareOp::NotRegex => unreachable!("handled above"),
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Status(s) => Some(s.as_str().to_string()),
        Value::Kind(k) => Some(k.as_str().to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn from_span_value(value: &SpanValue, out: &mut Vec<Value>) {
    match value {
        SpanValue::Empty => {}
        SpanValue::Str(s) => out.push(Value::Str(s.clone())),
        SpanValue::Bool(b) => out.push(Value::Bool(*b)),
        SpanValue::Int(i) => out.push(Value::Int(*i)),
        SpanValue::Double(d) => out.push(Value::Float(*d)),
        SpanValue::Bytes(_) | SpanValue::Map(_) => out.push(Value::Str(value.render())),
        SpanValue::Array(items) => items.iter().for_each(|item| from_span_value(item, out)),
    }
}

fn attribute(attributes: &[clew_model::Attribute], key: &str, out: &mut Vec<Value>) {
    if let Some(attribute) = attributes.iter().find(|a| a.key == key) {
        from_span_value(&attribute.value, out);
    }
}

/// The values a field has on a span (several for arrays, events and links; none if absent).
pub fn field_values(field: &Field, index: usize, context: &TraceContext<'_>) -> Vec<Value> {
    let span = context.span(index);
    let facts = &context.trace.facts;
    let mut out = Vec::new();
    match field {
        Field::Attribute { scope, key } => match scope {
            AttrScope::Span => attribute(&span.attributes, key, &mut out),
            AttrScope::Resource => attribute(&span.resource.attributes, key, &mut out),
            AttrScope::Any => {
                attribute(&span.attributes, key, &mut out);
                if out.is_empty() {
                    attribute(&span.resource.attributes, key, &mut out);
                }
            }
            AttrScope::Event => span.events.iter().for_each(|e| attribute(&e.attributes, key, &mut out)),
            AttrScope::Link => span.links.iter().for_each(|l| attribute(&l.attributes, key, &mut out)),
            AttrScope::Instrumentation => attribute(&span.scope.attributes, key, &mut out),
        },
        Field::Intrinsic(intrinsic) => match intrinsic {
            Intrinsic::Name => out.push(Value::Str(span.name.clone())),
            Intrinsic::Status => out.push(Value::Status(span.status_code)),
            Intrinsic::StatusMessage => out.push(Value::Str(span.status_message.clone())),
            Intrinsic::Kind => out.push(Value::Kind(span.kind)),
            Intrinsic::Duration => out.push(Value::Duration(span.duration_nanos() as i64)),
            Intrinsic::SpanId => out.push(Value::Str(span.span_id.to_hex())),
            Intrinsic::ParentId => out.extend(span.parent_span_id.map(|p| Value::Str(p.to_hex()))),
            Intrinsic::ChildCount => out.push(Value::Int(context.children[index].len() as i64)),
            Intrinsic::TraceDuration => out.push(Value::Duration(facts.duration_nanos() as i64)),
            Intrinsic::RootName => out.push(Value::Str(facts.root_name.clone())),
            Intrinsic::RootService => out.push(Value::Str(facts.root_service.clone())),
            Intrinsic::TraceId => out.push(Value::Str(span.trace_id.to_hex())),
            Intrinsic::EventName => out.extend(span.events.iter().map(|e| Value::Str(e.name.clone()))),
            Intrinsic::EventTimeSinceStart => {
                out.extend(span.events.iter().map(|e| Value::Duration(e.time_unix_nano.saturating_sub(span.start_time_unix_nano) as i64)))
            }
            Intrinsic::LinkTraceId => out.extend(span.links.iter().map(|l| Value::Str(l.trace_id.to_hex()))),
            Intrinsic::LinkSpanId => out.extend(span.links.iter().map(|l| Value::Str(l.span_id.to_hex()))),
            Intrinsic::ScopeName => out.push(Value::Str(span.scope.name.clone())),
            Intrinsic::ScopeVersion => out.push(Value::Str(span.scope.version.clone())),
        },
    }
    out
}
