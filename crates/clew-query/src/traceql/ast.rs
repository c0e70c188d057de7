//! The TraceQL syntax tree.

use clew_model::{SpanKind, StatusCode};

/// `first | stage | stage … with (hint = value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub first: SpansetExpr,
    pub stages: Vec<Stage>,
    /// A metrics query ends in a metrics function (`| rate() by (…)`): it is answered by the
    /// metrics endpoints, not by search.
    pub metrics: Option<Metrics>,
    pub hints: Vec<(String, Value)>,
}

impl Query {
    pub fn hint(&self, name: &str) -> Option<&Value> {
        self.hints.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }`: the spans for which `expr` holds.
    Filter(Expr),
    /// Both sides found in the trace: the spans of both.
    And(Box<SpansetExpr>, Box<SpansetExpr>),
    Or(Box<SpansetExpr>, Box<SpansetExpr>),
    Structural {
        relation: Relation,
        mode: Mode,
        left: Box<SpansetExpr>,
        right: Box<SpansetExpr>,
    },
    /// A parenthesised pipeline used as a spanset.
    Pipeline(Box<Query>),
}

/// How the right-hand spans relate to the left-hand ones (`a > b`: b is a child of a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Child,
    Descendant,
    Parent,
    Ancestor,
    Sibling,
}

/// `>`: the matching right-hand spans; `&>`: both sides' matching spans; `!>`: the right-hand
/// spans with no such relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Right,
    Union,
    Not,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Filter(SpansetExpr),
    Aggregate { function: Aggregate, field: Option<Field>, op: CompareOp, value: Value },
    By(Vec<Field>),
    Select(Vec<Field>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Field(Field),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Regex,
    NotRegex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Str(String),
    Status(StatusCode),
    Kind(SpanKind),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Attribute { scope: AttrScope, key: String },
    Intrinsic(Intrinsic),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrScope {
    Span,
    Resource,
    /// `.key`: the span's attribute, else its resource's.
    Any,
    Event,
    Link,
    Instrumentation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    SpanId,
    ParentId,
    ChildCount,
    TraceDuration,
    RootName,
    RootService,
    TraceId,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    ScopeName,
    ScopeVersion,
}

/// `| function by (fields) | topk(n)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub function: MetricsFunction,
    pub by: Vec<Field>,
    pub rank: Option<Rank>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    /// Matching spans per second.
    Rate,
    CountOverTime,
    MinOverTime(Field),
    MaxOverTime(Field),
    AvgOverTime(Field),
    SumOverTime(Field),
    /// The field's quantiles, one series per quantile.
    QuantileOverTime(Field, Vec<f64>),
    /// Counts per power-of-two bucket of the field, one series per bucket.
    HistogramOverTime(Field),
}

impl MetricsFunction {
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFunction::Rate => "rate",
            MetricsFunction::CountOverTime => "count_over_time",
            MetricsFunction::MinOverTime(_) => "min_over_time",
            MetricsFunction::MaxOverTime(_) => "max_over_time",
            MetricsFunction::AvgOverTime(_) => "avg_over_time",
            MetricsFunction::SumOverTime(_) => "sum_over_time",
            MetricsFunction::QuantileOverTime(..) => "quantile_over_time",
            MetricsFunction::HistogramOverTime(_) => "histogram_over_time",
        }
    }

    /// The field whose values the function aggregates.
    pub fn field(&self) -> Option<&Field> {
        match self {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => None,
            MetricsFunction::MinOverTime(f)
            | MetricsFunction::MaxOverTime(f)
            | MetricsFunction::AvgOverTime(f)
            | MetricsFunction::SumOverTime(f)
            | MetricsFunction::QuantileOverTime(f, _)
            | MetricsFunction::HistogramOverTime(f) => Some(f),
        }
    }
}

/// `topk(n)` / `bottomk(n)`: at each timestamp, the n series with the highest (lowest) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    Top(usize),
    Bottom(usize),
}
