//! Metadata filters in the Chroma/MongoDB style, parsed once and evaluated in memory.
//!
//! ```json
//! {"$and": [{"lang": "en"}, {"year": {"$gte": 2020}}, {"tag": {"$in": ["a", "b"]}}]}
//! ```
//!
//! * `{"field": value}` is shorthand for `{"field": {"$eq": value}}`; several keys in one object
//!   must all hold (an implicit `$and`), as must several operators on one field.
//! * Operators: `$eq $ne $gt $gte $lt $lte $in $nin $and $or`.
//! * Fields name top-level metadata keys; a dotted name (`"author.name"`) reaches into nested
//!   objects when no top-level key has that exact name.
//! * Operands are scalars: strings, numbers, booleans, and `null` for `$eq`/`$ne`/`$in`/`$nin`.
//!   Numbers compare numerically (integers exactly), strings by code point; an ordering
//!   operator between different types never matches.
//! * A missing field equals `null`: it matches `$eq: null`, `$ne: x` and `$nin`, never an
//!   ordering operator. A field holding an array matches `$eq`/`$in` when any element does, and
//!   `$ne`/`$nin` when no element does (MongoDB's semantics).

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::limits::{Limit, Limits};

/// A filter that is not well formed, or larger than the server's limits. The message names
/// where in the filter the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at {at}: {reason}")]
pub struct FilterError {
    /// Where in the filter: a JSON-path-like location such as `$and[1].year`.
    pub at: String,
    /// What is wrong there.
    pub reason: String,
    /// The limit the filter is over, with the value and the maximum, when that is what is
    /// wrong.
    pub limit: Option<(Limit, usize, usize)>,
}

/// The bounds a filter is parsed under: nesting (so that a hostile filter cannot exhaust the
/// stack) and list length (so that one `$in` cannot make every document's check slow).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    depth: usize,
    values: usize,
}

/// A scalar operand of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
}

impl Scalar {
    fn from_json(v: &Value) -> Option<Scalar> {
        Some(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number(n.clone()),
            Value::String(s) => Scalar::String(s.clone()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    /// Whether a metadata value equals this operand.
    fn equals(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Null, Value::Null) => true,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Number(a), Value::Number(b)) => compare_numbers(b, a) == Ordering::Equal,
            (Scalar::String(a), Value::String(b)) => a == b,
            _ => false,
        }
    }

    /// How a metadata value orders against this operand, when the types are comparable.
    fn order(&self, v: &Value) -> Option<Ordering> {
        match (self, v) {
            (Scalar::Number(a), Value::Number(b)) => Some(compare_numbers(b, a)),
            (Scalar::String(a), Value::String(b)) => Some(b.as_str().cmp(a.as_str())),
            _ => None,
        }
    }
}

/// Compares two JSON numbers exactly when both are integers, as `f64` otherwise.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    match (a.as_i64(), b.as_u64()) {
        // A negative i64 against a u64 too large for i64.
        (Some(x), Some(_)) if x < 0 => return Ordering::Less,
        _ => {}
    }
    match (a.as_u64(), b.as_i64()) {
        (Some(_), Some(y)) if y < 0 => return Ordering::Greater,
        _ => {}
    }
    let x = a.as_f64().unwrap_or(f64::NAN);
    let y = b.as_f64().unwrap_or(f64::NAN);
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ord4 {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Eq(Path, Scalar),
    Ne(Path, Scalar),
    Order(Path, Ord4, Scalar),
    In(Path, Vec<Scalar>),
    Nin(Path, Vec<Scalar>),
}

/// A field reference: the name as written, and its dotted segments.
#[derive(Debug, Clone, PartialEq)]
struct Path {
    full: String,
    segments: Vec<String>,
}

impl Path {
    fn new(name: &str) -> Path {
        Path {
            full: name.to_string(),
            segments: name.split('.').map(str::to_string).collect(),
        }
    }

    fn lookup<'m>(&self, metadata: &'m Value) -> Option<&'m Value> {
        let obj = metadata.as_object()?;
        if let Some(v) = obj.get(&self.full) {
            return Some(v);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let mut cur = metadata;
        for seg in &self.segments {
            cur = cur.as_object()?.get(seg)?;
        }
        Some(cur)
    }
}

/// A parsed metadata filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

impl Filter {
    /// Parses a filter from its JSON form under the default [`Limits`]. An empty object
    /// matches everything.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        Filter::parse_with(value, &Limits::default())
    }

    /// Parses a filter under the server's limits on nesting and list length.
    pub fn parse_with(value: &Value, limits: &Limits) -> Result<Filter, FilterError> {
        let bounds = Bounds {
            depth: limits.max_filter_depth,
            values: limits.max_filter_values,
        };
        Ok(Filter {
            root: parse_object(value, "filter", 0, bounds)?,
        })
    }

    /// The filter with no condition, which every document matches.
    pub fn everything() -> Filter {
        Filter {
            root: Node::And(Vec::new()),
        }
    }

    /// Whether the filter has no condition at all (`{}`), and so matches every document.
    pub fn is_empty(&self) -> bool {
        matches!(&self.root, Node::And(clauses) if clauses.is_empty())
    }

    /// Whether a document's metadata (a JSON object, or `null` for none) satisfies the filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        eval(&self.root, metadata)
    }
}

fn err(at: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        at: at.to_string(),
        reason: reason.into(),
        limit: None,
    }
}

fn over(at: &str, what: &str, limit: Limit, got: usize, max: usize) -> FilterError {
    FilterError {
        at: at.to_string(),
        reason: format!(
            "{what} is {got}; the limit is {max} ({}, set with --{} or {})",
            limit.name(),
            limit.name().replace('_', "-"),
            limit.env()
        ),
        limit: Some((limit, got, max)),
    }
}

fn parse_object(
    value: &Value,
    at: &str,
    depth: usize,
    bounds: Bounds,
) -> Result<Node, FilterError> {
    if depth > bounds.depth {
        return Err(over(
            at,
            "the nesting of $and/$or",
            Limit::FilterDepth,
            depth,
            bounds.depth,
        ));
    }
    let obj = value
        .as_object()
        .ok_or_else(|| err(at, "expected an object"))?;
    let mut clauses = Vec::with_capacity(obj.len());
    for (key, v) in obj {
        let here = format!("{at}.{key}");
        let node = match key.as_str() {
            "$and" | "$or" => {
                let items = v
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| err(&here, format!("{key} needs a non-empty array")))?;
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse_object(item, &format!("{here}[{i}]"), depth + 1, bounds))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Node::And(nodes)
                } else {
                    Node::Or(nodes)
                }
            }
            k if k.starts_with('$') => {
                return Err(err(
                    &here,
                    format!("unknown operator '{k}' (expected $and or $or, or a field name)"),
                ));
            }
            "" => return Err(err(&here, "field names must not be empty")),
            field => parse_field(Path::new(field), v, &here, bounds)?,
        };
        clauses.push(node);
    }
    Ok(if clauses.len() == 1 {
        clauses.pop().expect("one clause")
    } else {
        Node::And(clauses)
    })
}

fn parse_field(path: Path, v: &Value, at: &str, bounds: Bounds) -> Result<Node, FilterError> {
    let ops = match v {
        Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => ops,
        Value::Object(_) | Value::Array(_) => {
            return Err(err(
                at,
                "expected a scalar to compare with, or an object of operators such as {\"$gt\": 1}",
            ));
        }
        scalar => {
            let s = Scalar::from_json(scalar).expect("checked not array/object");
            return Ok(Node::Eq(path, s));
        }
    };
    let mut nodes = Vec::with_capacity(ops.len());
    for (op, operand) in ops {
        let here = format!("{at}.{op}");
        nodes.push(parse_operator(&path, op, operand, &here, bounds)?);
    }
    Ok(if nodes.len() == 1 {
        nodes.pop().expect("one operator")
    } else {
        Node::And(nodes)
    })
}

fn parse_operator(
    path: &Path,
    op: &str,
    operand: &Value,
    at: &str,
    bounds: Bounds,
) -> Result<Node, FilterError> {
    let scalar = |v: &Value| {
        Scalar::from_json(v).ok_or_else(|| err(at, format!("{op} needs a scalar operand")))
    };
    let orderable = |v: &Value| match v {
        Value::Number(_) | Value::String(_) => Ok(Scalar::from_json(v).expect("scalar")),
        _ => Err(err(at, format!("{op} needs a number or a string"))),
    };
    let list = |v: &Value| {
        let items = v
            .as_array()
            .ok_or_else(|| err(at, format!("{op} needs an array of scalars")))?;
        if items.len() > bounds.values {
            return Err(over(
                at,
                &format!("the length of the {op} list"),
                Limit::FilterValues,
                items.len(),
                bounds.values,
            ));
        }
        items.iter().map(&scalar).collect::<Result<Vec<_>, _>>()
    };
    Ok(match op {
        "$eq" => Node::Eq(path.clone(), scalar(operand)?),
        "$ne" => Node::Ne(path.clone(), scalar(operand)?),
        "$gt" => Node::Order(path.clone(), Ord4::Gt, orderable(operand)?),
        "$gte" => Node::Order(path.clone(), Ord4::Gte, orderable(operand)?),
        "$lt" => Node::Order(path.clone(), Ord4::Lt, orderable(operand)?),
        "$lte" => Node::Order(path.clone(), Ord4::Lte, orderable(operand)?),
        "$in" => Node::In(path.clone(), list(operand)?),
        "$nin" => Node::Nin(path.clone(), list(operand)?),
        other if other.starts_with('$') => {
            return Err(err(
                at,
                format!(
                    "unknown operator '{other}' (expected one of $eq $ne $gt $gte $lt $lte $in $nin)"
                ),
            ));
        }
        other => {
            return Err(err(
                at,
                format!("'{other}' mixes a field name with operators in one object"),
            ));
        }
    })
}

/// Whether `pred` holds for the field value, or for any element when the value is an array.
fn any_value(v: Option<&Value>, pred: impl Fn(&Value) -> bool) -> bool {
    match v {
        None => pred(&Value::Null),
        Some(Value::Array(items)) => items.iter().any(pred),
        Some(v) => pred(v),
    }
}

fn eval(node: &Node, metadata: &Value) -> bool {
    match node {
        Node::And(nodes) => nodes.iter().all(|n| eval(n, metadata)),
        Node::Or(nodes) => nodes.iter().any(|n| eval(n, metadata)),
        Node::Eq(path, s) => any_value(path.lookup(metadata), |v| s.equals(v)),
        Node::Ne(path, s) => !any_value(path.lookup(metadata), |v| s.equals(v)),
        Node::In(path, list) => {
            any_value(path.lookup(metadata), |v| list.iter().any(|s| s.equals(v)))
        }
        Node::Nin(path, list) => {
            !any_value(path.lookup(metadata), |v| list.iter().any(|s| s.equals(v)))
        }
        Node::Order(path, op, s) => {
            let Some(v) = path.lookup(metadata) else {
                return false;
            };
            let test = |v: &Value| match s.order(v) {
                None => false,
                Some(o) => match op {
                    Ord4::Gt => o == Ordering::Greater,
                    Ord4::Gte => o != Ordering::Less,
                    Ord4::Lt => o == Ordering::Less,
                    Ord4::Lte => o != Ordering::Greater,
                },
            };
            match v {
                Value::Array(items) => items.iter().any(test),
                v => test(v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(filter: Value, meta: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&meta)
    }

    #[test]
    fn equality_and_shorthand() {
        let meta = json!({"lang": "en", "n": 3, "ok": true, "none": null});
        assert!(m(json!({"lang": "en"}), meta.clone()));
        assert!(m(json!({"lang": {"$eq": "en"}}), meta.clone()));
        assert!(!m(json!({"lang": "fr"}), meta.clone()));
        assert!(m(json!({"n": 3.0}), meta.clone()));
        assert!(m(json!({"ok": true}), meta.clone()));
        assert!(m(json!({"none": null}), meta.clone()));
        assert!(m(json!({"missing": null}), meta.clone()));
        assert!(!m(json!({"n": "3"}), meta.clone()), "no type coercion");
        assert!(m(json!({}), meta.clone()), "empty filter matches all");
        assert!(m(json!({"lang": "en"}), json!({"lang": ["de", "en"]})));
    }

    #[test]
    fn not_equal_and_missing_fields() {
        let meta = json!({"lang": "en"});
        assert!(m(json!({"lang": {"$ne": "fr"}}), meta.clone()));
        assert!(!m(json!({"lang": {"$ne": "en"}}), meta.clone()));
        assert!(m(json!({"other": {"$ne": "x"}}), meta.clone()));
        assert!(m(json!({"lang": "en"}), meta.clone()));
        assert!(!m(
            json!({"lang": {"$ne": "en"}}),
            json!({"lang": ["en", "de"]})
        ));
        assert!(!m(json!({"lang": "en"}), Value::Null));
        assert!(m(json!({"lang": {"$ne": "en"}}), Value::Null));
    }

    #[test]
    fn ordering_operators() {
        let meta =
            json!({"year": 2021, "price": 9.5, "name": "bob", "big": 18446744073709551615u64});
        assert!(m(json!({"year": {"$gt": 2020}}), meta.clone()));
        assert!(!m(json!({"year": {"$gt": 2021}}), meta.clone()));
        assert!(m(json!({"year": {"$gte": 2021}}), meta.clone()));
        assert!(m(json!({"year": {"$lt": 2021.5}}), meta.clone()));
        assert!(m(json!({"year": {"$lte": 2021}}), meta.clone()));
        assert!(!m(json!({"year": {"$lt": 2021}}), meta.clone()));
        assert!(m(json!({"price": {"$gt": 9, "$lt": 10}}), meta.clone()));
        assert!(m(json!({"name": {"$gt": "alice"}}), meta.clone()));
        assert!(!m(json!({"name": {"$gt": 1}}), meta.clone()), "mixed types");
        assert!(!m(json!({"missing": {"$lt": 1}}), meta.clone()));
        assert!(m(json!({"big": {"$gt": -1}}), meta.clone()));
        assert!(m(
            json!({"big": {"$gt": 9223372036854775807i64}}),
            meta.clone()
        ));
    }

    #[test]
    fn membership_operators() {
        let meta = json!({"tag": "b", "tags": ["x", "y"]});
        assert!(m(json!({"tag": {"$in": ["a", "b"]}}), meta.clone()));
        assert!(!m(json!({"tag": {"$in": []}}), meta.clone()));
        assert!(m(json!({"tag": {"$nin": ["a", "c"]}}), meta.clone()));
        assert!(!m(json!({"tag": {"$nin": ["b"]}}), meta.clone()));
        assert!(m(json!({"tags": {"$in": ["y"]}}), meta.clone()));
        assert!(!m(json!({"tags": {"$nin": ["y"]}}), meta.clone()));
        assert!(m(json!({"missing": {"$nin": ["y"]}}), meta.clone()));
    }

    #[test]
    fn logical_operators_and_paths() {
        let meta = json!({"a": 1, "b": 2, "author": {"name": "ann"}, "x.y": 5});
        assert!(m(json!({"$and": [{"a": 1}, {"b": 2}]}), meta.clone()));
        assert!(!m(json!({"$and": [{"a": 1}, {"b": 3}]}), meta.clone()));
        assert!(m(json!({"$or": [{"a": 9}, {"b": 2}]}), meta.clone()));
        assert!(!m(json!({"$or": [{"a": 9}, {"b": 9}]}), meta.clone()));
        assert!(m(json!({"a": 1, "b": 2}), meta.clone()));
        assert!(m(
            json!({"$or": [{"$and": [{"a": 1}, {"b": 9}]}, {"author.name": "ann"}]}),
            meta.clone()
        ));
        assert!(m(json!({"x.y": 5}), meta.clone()), "exact dotted key wins");
    }

    #[test]
    fn rejects_malformed_filters() {
        let bad = [
            json!([1, 2]),
            json!({"$and": []}),
            json!({"$and": {"a": 1}}),
            json!({"$not": {"a": 1}}),
            json!({"a": {"$regex": "x"}}),
            json!({"a": {"$gt": true}}),
            json!({"a": {"$gt": null}}),
            json!({"a": {"$in": "x"}}),
            json!({"a": {"$in": [[1]]}}),
            json!({"a": {"$eq": {"b": 1}}}),
            json!({"a": {"b": 1}}),
            json!({"a": [1, 2]}),
            json!({"a": {"$gt": 1, "b": 2}}),
            json!({"": 1}),
        ];
        for f in bad {
            let e = Filter::parse(&f).expect_err(&f.to_string());
            assert!(e.to_string().contains("filter"), "{e}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({"$and": [deep]});
        }
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn error_names_the_location() {
        let e = Filter::parse(&json!({"$and": [{"a": 1}, {"b": {"$gt": []}}]})).unwrap_err();
        assert_eq!(e.at, "filter.$and[1].b.$gt");
    }
}
