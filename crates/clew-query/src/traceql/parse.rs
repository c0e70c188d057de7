//! TraceQL text → [`Query`]. A hand-written lexer and recursive-descent parser (TraceQL is
//! Tempo's language; no Rust library implements it); every error names the column.

use clew_model::{SpanKind, StatusCode};

use super::ast::*;

/// A parse error at a 1-based column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Re,
    NotRe,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Descendant,
    Ancestor,
    Sibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    /// An identifier or field path such as `span.http.method`, `.foo`, `span:name`, `count`.
    Ident(String),
    End,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn error<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { column, message: message.into() })
}

impl<'a> Lexer<'a> {
    fn tokens(text: &'a str) -> Result<Vec<(Token, usize)>, ParseError> {
        let mut lexer = Lexer { text, pos: 0 };
        let mut out = Vec::new();
        loop {
            let (token, column) = lexer.next()?;
            let end = token == Token::End;
            out.push((token, column));
            if end {
                return Ok(out);
            }
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn column(&self) -> usize {
        self.text[..self.pos].chars().count() + 1
    }

    fn next(&mut self) -> Result<(Token, usize), ParseError> {
        while let Some(c) = self.rest().chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        let column = self.column();
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return Ok((Token::End, column));
        };
        const SYMBOLS: &[(&str, Token)] = &[
            ("&>>", Token::UnionDescendant),
            ("&<<", Token::UnionAncestor),
            ("!>>", Token::NotDescendant),
            ("!<<", Token::NotAncestor),
            ("&&", Token::And),
            ("||", Token::Or),
            ("!=", Token::Ne),
            ("!~", Token::NotRe),
            ("=~", Token::Re),
            (">>", Token::Descendant),
            ("<<", Token::Ancestor),
            (">=", Token::Ge),
            ("<=", Token::Le),
            ("&>", Token::UnionChild),
            ("&<", Token::UnionParent),
            ("&~", Token::UnionSibling),
            ("!>", Token::NotChild),
            ("!<", Token::NotParent),
            ("{", Token::LBrace),
            ("}", Token::RBrace),
            ("(", Token::LParen),
            (")", Token::RParen),
            (",", Token::Comma),
            ("|", Token::Pipe),
            ("!", Token::Not),
            ("=", Token::Eq),
            ("<", Token::Lt),
            (">", Token::Gt),
            ("~", Token::Sibling),
            ("+", Token::Plus),
            ("-", Token::Minus),
            ("*", Token::Star),
            ("/", Token::Slash),
            ("%", Token::Percent),
            ("^", Token::Caret),
        ];
        if c == '"' || c == '`' {
            return self.string(c).map(|s| (Token::Str(s), column));
        }
        if c.is_ascii_digit() || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
            return self.number().map(|t| (t, column));
        }
        if c.is_alphanumeric() || c == '.' || c == '_' {
            return Ok((Token::Ident(self.ident()?), column));
        }
        // `!~` after a spanset is the negated sibling operator; inside a filter it is "does not
        // match". The parser tells them apart by position, so one token serves both.
        for (symbol, token) in SYMBOLS {
            if rest.starts_with(symbol) {
                self.pos += symbol.len();
                return Ok((token.clone(), column));
            }
        }
        error(column, format!("unexpected character {c:?}"))
    }

    fn string(&mut self, quote: char) -> Result<String, ParseError> {
        let column = self.column();
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos += offset + 1;
                    return Ok(out);
                }
                '\\' if quote == '"' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        error(column, "unterminated string")
    }

    fn number(&mut self) -> Result<Token, ParseError> {
        let column = self.column();
        let rest = self.rest();
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic() && c != 'µ').unwrap_or(after.len());
        let unit = &after[..unit_len];
        self.pos += digits + unit_len;
        if unit.is_empty() {
            if number.contains('.') {
                return number.parse().map(Token::Float).or_else(|_| error(column, format!("invalid number {number:?}")));
            }
            return number.parse().map(Token::Int).or_else(|_| error(column, format!("invalid integer {number:?}")));
        }
        let Some(scale) = unit_nanos(unit) else {
            return error(column, format!("unknown duration unit {unit:?}: use ns, us, ms, s, m or h"));
        };
        let value: f64 = number.parse().or_else(|_| error(column, format!("invalid duration {number}{unit}")))?;
        Ok(Token::Duration((value * scale).round() as i64))
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { break };
            if c.is_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/') {
                // A `-` only continues a name when a letter follows (`k8s.pod-name`), never
                // in `duration-5ms`; `:` only after a scope word.
                if c == '-' && !rest[1..].starts_with(|d: char| d.is_alphabetic()) {
                    break;
                }
                out.push(c);
                self.pos += c.len_utf8();
            } else if c == '"' && out.ends_with('.') {
                // span."name with spaces"
                let quoted = self.string('"')?;
                out.push_str(&quoted);
            } else {
                break;
            }
        }
        Ok(out)
    }
}

const METRICS_FUNCTIONS: &[&str] = &[
    "rate",
    "count_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "compare",
];

struct Parser {
    tokens: Vec<(Token, usize)>,
    index: usize,
}

/// Parses a TraceQL query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    let mut parser = Parser { tokens: Lexer::tokens(text)?, index: 0 };
    let query = parser.query()?;
    match parser.peek() {
        Token::End => Ok(query),
        other => error(parser.column(), format!("unexpected {} after the end of the query", describe(other))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::End => "end of query".into(),
        Token::Ident(name) => format!("{name:?}"),
        Token::Str(text) => format!("string {text:?}"),
        Token::Int(i) => format!("number {i}"),
        Token::Float(f) => format!("number {f}"),
        Token::Duration(d) => format!("duration {d}ns"),
        other => format!("{other:?}"),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.index].0
    }

    fn peek_at(&self, offset: usize) -> &Token {
        &self.tokens[(self.index + offset).min(self.tokens.len() - 1)].0
    }

    fn column(&self) -> usize {
        self.tokens[self.index].1
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.index].0.clone();
        if self.index < self.tokens.len() - 1 {
            self.index += 1;
        }
        token
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), ParseError> {
        if *self.peek() == token {
            self.advance();
            Ok(())
        } else {
            error(self.column(), format!("expected {what}, found {}", describe(self.peek())))
        }
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        let mut stages = Vec::new();
        let first = if self.starts_aggregate() {
            // A bare scalar filter such as `count() > 10` runs over every span.
            stages.push(self.stage()?);
            SpansetExpr::Filter(Expr::Literal(Value::Bool(true)))
        } else {
            self.spanset_expr()?
        };
        let mut metrics = None;
        while *self.peek() == Token::Pipe {
            self.advance();
            if self.starts_metrics() {
                metrics = Some(self.metrics()?);
                break;
            }
            stages.push(self.stage()?);
        }
        let mut hints = Vec::new();
        if matches!(self.peek(), Token::Ident(word) if word == "with") {
            self.advance();
            self.expect(Token::LParen, "( after with")?;
            loop {
                let column = self.column();
                let Token::Ident(name) = self.advance() else { return error(column, "expected a hint name") };
                self.expect(Token::Eq, "= after the hint name")?;
                let value = self.literal_value()?;
                hints.push((name, value));
                if *self.peek() == Token::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
            self.expect(Token::RParen, ") closing with(...)")?;
        }
        Ok(Query { first, stages, metrics, hints })
    }

    fn starts_metrics(&self) -> bool {
        matches!(self.peek(), Token::Ident(name) if METRICS_FUNCTIONS.contains(&name.as_str())) && *self.peek_at(1) == Token::LParen
    }

    /// `function(args) [by (fields)] [| topk(n) | bottomk(n)]`, the end of a metrics query.
    fn metrics(&mut self) -> Result<Metrics, ParseError> {
        let column = self.column();
        let Token::Ident(name) = self.advance() else { unreachable!("starts_metrics checked the name") };
        self.expect(Token::LParen, &format!("( after {name}"))?;
        let function = match name.as_str() {
            "rate" => MetricsFunction::Rate,
            "count_over_time" => MetricsFunction::CountOverTime,
            "compare" => return error(column, "compare() is not supported; use Clew's correlations (/api/v1/correlations)"),
            _ => {
                let field = self.field_or_error()?;
                match name.as_str() {
                    "min_over_time" => MetricsFunction::MinOverTime(field),
                    "max_over_time" => MetricsFunction::MaxOverTime(field),
                    "avg_over_time" => MetricsFunction::AvgOverTime(field),
                    "sum_over_time" => MetricsFunction::SumOverTime(field),
                    "histogram_over_time" => MetricsFunction::HistogramOverTime(field),
                    _ => {
                        let mut quantiles = Vec::new();
                        while *self.peek() == Token::Comma {
                            self.advance();
                            let at = self.column();
                            let q = match self.advance() {
                                Token::Float(f) => f,
                                Token::Int(i) => i as f64,
                                other => return error(at, format!("expected a quantile between 0 and 1, found {}", describe(&other))),
                            };
                            if !(0.0..=1.0).contains(&q) {
                                return error(at, format!("quantile {q} is not between 0 and 1"));
                            }
                            quantiles.push(q);
                        }
                        if quantiles.is_empty() {
                            return error(
                                self.column(),
                                "quantile_over_time needs at least one quantile, e.g. quantile_over_time(duration, .99, .5)",
                            );
                        }
                        MetricsFunction::QuantileOverTime(field, quantiles)
                    }
                }
            }
        };
        self.expect(Token::RParen, &format!(") closing {name}(...)"))?;
        let mut by = Vec::new();
        if matches!(self.peek(), Token::Ident(word) if word == "by") {
            self.advance();
            self.expect(Token::LParen, "( after by")?;
            by.push(self.field_or_error()?);
            while *self.peek() == Token::Comma {
                self.advance();
                by.push(self.field_or_error()?);
            }
            self.expect(Token::RParen, ") closing by(...)")?;
        }
        let mut rank = None;
        if *self.peek() == Token::Pipe {
            self.advance();
            let at = self.column();
            let word = match self.advance() {
                Token::Ident(word) if word == "topk" || word == "bottomk" => word,
                other => return error(at, format!("only topk(n) or bottomk(n) may follow a metrics function, found {}", describe(&other))),
            };
            self.expect(Token::LParen, &format!("( after {word}"))?;
            let at = self.column();
            let n = match self.advance() {
                Token::Int(n) if n > 0 => n as usize,
                other => return error(at, format!("{word} needs a positive count, found {}", describe(&other))),
            };
            self.expect(Token::RParen, &format!(") closing {word}(...)"))?;
            rank = Some(if word == "topk" { Rank::Top(n) } else { Rank::Bottom(n) });
        }
        Ok(Metrics { function, by, rank })
    }

    fn starts_aggregate(&self) -> bool {
        matches!(self.peek(), Token::Ident(name) if ["count", "avg", "min", "max", "sum"].contains(&name.as_str()))
            && *self.peek_at(1) == Token::LParen
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let column = self.column();
        match self.peek().clone() {
            Token::LBrace | Token::LParen => Ok(Stage::Filter(self.spanset_expr()?)),
            Token::Ident(name) if name == "by" || name == "select" => {
                self.advance();
                self.expect(Token::LParen, &format!("( after {name}"))?;
                let mut fields = vec![self.field_or_error()?];
                while *self.peek() == Token::Comma {
                    self.advance();
                    fields.push(self.field_or_error()?);
                }
                self.expect(Token::RParen, &format!(") closing {name}(...)"))?;
                Ok(if name == "by" { Stage::By(fields) } else { Stage::Select(fields) })
            }
            Token::Ident(name) if ["count", "avg", "min", "max", "sum"].contains(&name.as_str()) => {
                self.advance();
                self.expect(Token::LParen, &format!("( after {name}"))?;
                let field = if name == "count" { None } else { Some(self.field_or_error()?) };
                self.expect(Token::RParen, &format!(") closing {name}(...)"))?;
                let op_column = self.column();
                let op = match self.advance() {
                    Token::Eq => CompareOp::Eq,
                    Token::Ne => CompareOp::Ne,
                    Token::Gt => CompareOp::Gt,
                    Token::Ge => CompareOp::Ge,
                    Token::Lt => CompareOp::Lt,
                    Token::Le => CompareOp::Le,
                    other => return error(op_column, format!("expected a comparison after {name}(), found {}", describe(&other))),
                };
                let value = self.literal_value()?;
                let function = match name.as_str() {
                    "count" => Aggregate::Count,
                    "avg" => Aggregate::Avg,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    _ => Aggregate::Sum,
                };
                Ok(Stage::Aggregate { function, field, op, value })
            }
            other => error(column, format!("expected a spanset, by(), select() or an aggregate after |, found {}", describe(&other))),
        }
    }

    fn field_or_error(&mut self) -> Result<Field, ParseError> {
        let column = self.column();
        match self.advance() {
            Token::Ident(name) => {
                field(&name).ok_or_else(|| ParseError { column, message: format!("{name:?} is not an attribute or intrinsic") })
            }
            other => error(column, format!("expected an attribute, found {}", describe(&other))),
        }
    }

    /// spanset expressions: `||` binds loosest, then `&&`, then the structural operators.
    fn spanset_expr(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_and()?;
        while *self.peek() == Token::Or {
            self.advance();
            let right = self.spanset_and()?;
            left = SpansetExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_structural()?;
        while *self.peek() == Token::And {
            self.advance();
            let right = self.spanset_structural()?;
            left = SpansetExpr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn spanset_structural(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_primary()?;
        loop {
            let relation = match self.peek() {
                Token::Gt => (Relation::Child, Mode::Right),
                Token::Descendant => (Relation::Descendant, Mode::Right),
                Token::Lt => (Relation::Parent, Mode::Right),
                Token::Ancestor => (Relation::Ancestor, Mode::Right),
                Token::Sibling => (Relation::Sibling, Mode::Right),
                Token::UnionChild => (Relation::Child, Mode::Union),
                Token::UnionDescendant => (Relation::Descendant, Mode::Union),
                Token::UnionParent => (Relation::Parent, Mode::Union),
                Token::UnionAncestor => (Relation::Ancestor, Mode::Union),
                Token::UnionSibling => (Relation::Sibling, Mode::Union),
                Token::NotChild => (Relation::Child, Mode::Not),
                Token::NotDescendant => (Relation::Descendant, Mode::Not),
                Token::NotParent => (Relation::Parent, Mode::Not),
                Token::NotAncestor => (Relation::Ancestor, Mode::Not),
                Token::NotRe => (Relation::Sibling, Mode::Not),
                _ => return Ok(left),
            };
            self.advance();
            let right = self.spanset_primary()?;
            left = SpansetExpr::Structural { relation: relation.0, mode: relation.1, left: Box::new(left), right: Box::new(right) };
        }
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr, ParseError> {
        let column = self.column();
        match self.peek() {
            Token::LBrace => {
                self.advance();
                if *self.peek() == Token::RBrace {
                    self.advance();
                    return Ok(SpansetExpr::Filter(Expr::Literal(Value::Bool(true))));
                }
                let expr = self.expr()?;
                self.expect(Token::RBrace, "} closing the spanset filter")?;
                Ok(SpansetExpr::Filter(expr))
            }
            Token::LParen => {
                self.advance();
                let inner = self.query()?;
                self.expect(Token::RParen, ") closing the group")?;
                if inner.stages.is_empty() && inner.hints.is_empty() { Ok(inner.first) } else { Ok(SpansetExpr::Pipeline(Box::new(inner))) }
            }
            other => error(column, format!("expected {{ to start a spanset filter, found {}", describe(other))),
        }
    }

    // ---- expressions inside { } ----

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.expr_and()?;
        while *self.peek() == Token::Or {
            self.advance();
            left = Expr::Or(Box::new(left), Box::new(self.expr_and()?));
        }
        Ok(left)
    }

    fn expr_and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.expr_not()?;
        while *self.peek() == Token::And {
            self.advance();
            left = Expr::And(Box::new(left), Box::new(self.expr_not()?));
        }
        Ok(left)
    }

    fn expr_not(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Token::Not {
            self.advance();
            return Ok(Expr::Not(Box::new(self.expr_not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Token::Eq => CompareOp::Eq,
            Token::Ne => CompareOp::Ne,
            Token::Gt => CompareOp::Gt,
            Token::Ge => CompareOp::Ge,
            Token::Lt => CompareOp::Lt,
            Token::Le => CompareOp::Le,
            Token::Re => CompareOp::Regex,
            Token::NotRe => CompareOp::NotRegex,
            _ => return Ok(left),
        };
        self.advance();
        let column = self.column();
        let right = self.additive()?;
        if matches!(op, CompareOp::Regex | CompareOp::NotRegex) {
            let Expr::Literal(Value::Str(pattern)) = &right else {
                return error(column, "a regular expression must be a string");
            };
            if let Err(e) = regex::Regex::new(&format!("^(?:{pattern})$")) {
                return error(column, format!("invalid regular expression: {e}"));
            }
        }
        Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Token::Plus => ArithOp::Add,
                Token::Minus => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.advance();
            left = Expr::Arith(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.power()?;
        loop {
            let op = match self.peek() {
                Token::Star => ArithOp::Mul,
                Token::Slash => ArithOp::Div,
                Token::Percent => ArithOp::Rem,
                _ => return Ok(left),
            };
            self.advance();
            left = Expr::Arith(op, Box::new(left), Box::new(self.power()?));
        }
    }

    fn power(&mut self) -> Result<Expr, ParseError> {
        let base = self.unary()?;
        if *self.peek() == Token::Caret {
            self.advance();
            return Ok(Expr::Arith(ArithOp::Pow, Box::new(base), Box::new(self.power()?)));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Token::Minus {
            self.advance();
            return Ok(match self.unary()? {
                Expr::Literal(Value::Int(i)) => Expr::Literal(Value::Int(-i)),
                Expr::Literal(Value::Float(f)) => Expr::Literal(Value::Float(-f)),
                Expr::Literal(Value::Duration(d)) => Expr::Literal(Value::Duration(-d)),
                other => Expr::Arith(ArithOp::Sub, Box::new(Expr::Literal(Value::Int(0))), Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.advance() {
            Token::LParen => {
                let inner = self.expr()?;
                self.expect(Token::RParen, ") closing the parenthesis")?;
                Ok(inner)
            }
            Token::Str(text) => Ok(Expr::Literal(Value::Str(text))),
            Token::Int(i) => Ok(Expr::Literal(Value::Int(i))),
            Token::Float(f) => Ok(Expr::Literal(Value::Float(f))),
            Token::Duration(d) => Ok(Expr::Literal(Value::Duration(d))),
            Token::Ident(name) => {
                if let Some(value) = keyword(&name) {
                    return Ok(Expr::Literal(value));
                }
                field(&name).map(Expr::Field).ok_or_else(|| ParseError {
                    column,
                    message: format!("{name:?} is not an attribute (write span.{name}, resource.{name} or .{name}) or an intrinsic"),
                })
            }
            other => error(column, format!("expected a value or an attribute, found {}", describe(&other))),
        }
    }

    fn literal_value(&mut self) -> Result<Value, ParseError> {
        let column = self.column();
        match self.unary()? {
            Expr::Literal(value) => Ok(value),
            _ => error(column, "expected a literal value"),
        }
    }
}

/// Nanoseconds in one of a duration unit (`ns us µs ms s m h`), as TraceQL and Go write them.
pub fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

fn keyword(name: &str) -> Option<Value> {
    Some(match name {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "nil" => Value::Nil,
        "ok" => Value::Status(StatusCode::Ok),
        "error" => Value::Status(StatusCode::Error),
        "unset" => Value::Status(StatusCode::Unset),
        "server" => Value::Kind(SpanKind::Server),
        "client" => Value::Kind(SpanKind::Client),
        "producer" => Value::Kind(SpanKind::Producer),
        "consumer" => Value::Kind(SpanKind::Consumer),
        "internal" => Value::Kind(SpanKind::Internal),
        "unspecified" => Value::Kind(SpanKind::Unspecified),
        _ => return None,
    })
}

/// A field reference: an intrinsic, or a scoped or unscoped attribute.
pub fn field(name: &str) -> Option<Field> {
    let intrinsic = match name {
        "name" | "span:name" => Some(Intrinsic::Name),
        "status" | "span:status" => Some(Intrinsic::Status),
        "statusMessage" | "span:statusMessage" => Some(Intrinsic::StatusMessage),
        "kind" | "span:kind" => Some(Intrinsic::Kind),
        "duration" | "span:duration" => Some(Intrinsic::Duration),
        "span:id" => Some(Intrinsic::SpanId),
        "span:parentID" => Some(Intrinsic::ParentId),
        "span:childCount" => Some(Intrinsic::ChildCount),
        "traceDuration" | "trace:duration" => Some(Intrinsic::TraceDuration),
        "rootName" | "trace:rootName" => Some(Intrinsic::RootName),
        "rootServiceName" | "trace:rootService" => Some(Intrinsic::RootService),
        "trace:id" => Some(Intrinsic::TraceId),
        "event:name" => Some(Intrinsic::EventName),
        "event:timeSinceStart" => Some(Intrinsic::EventTimeSinceStart),
        "link:traceID" => Some(Intrinsic::LinkTraceId),
        "link:spanID" => Some(Intrinsic::LinkSpanId),
        "instrumentation:name" => Some(Intrinsic::ScopeName),
        "instrumentation:version" => Some(Intrinsic::ScopeVersion),
        _ => None,
    };
    if let Some(intrinsic) = intrinsic {
        return Some(Field::Intrinsic(intrinsic));
    }
    let scopes = [
        ("span.", AttrScope::Span),
        ("resource.", AttrScope::Resource),
        ("event.", AttrScope::Event),
        ("link.", AttrScope::Link),
        ("instrumentation.", AttrScope::Instrumentation),
        (".", AttrScope::Any),
    ];
    for (prefix, scope) in scopes {
        if let Some(key) = name.strip_prefix(prefix).filter(|k| !k.is_empty()) {
            return Some(Field::Attribute { scope, key: key.to_string() });
        }
    }
    None
}
