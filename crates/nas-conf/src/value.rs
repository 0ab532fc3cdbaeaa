//! The value tree: [`Value`], [`Map`], [`Spanned`], [`Position`] and [`Document`].

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::duration::parse_duration;

/// Where a piece of text came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Text handed to [`crate::parse_str`] (shown as `<string>`).
    Str,
    /// A configuration file (the top-level one or an included one), as the path was written or
    /// joined, not canonicalised, so messages show what the user typed.
    File(Arc<Path>),
    /// The text of an environment variable that a `$NAME` reference fell back to (shown as
    /// `<env NAME>`), so errors inside it do not pretend to be in a file.
    Env(Arc<str>),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Str => f.write_str("<string>"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(name) => write!(f, "<env {name}>"),
        }
    }
}

/// A location in the configuration text: origin, 1-based line and 1-based column (counted in
/// characters, a tab counting as one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The file (or string, or environment variable) the text came from.
    pub origin: Origin,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl Position {
    /// Builds a position.
    pub fn new(origin: Origin, line: u32, column: u32) -> Self {
        Position {
            origin,
            line,
            column,
        }
    }

    /// The file path, when the text came from a file.
    pub fn file(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.origin, self.line, self.column)
    }
}

/// A value (or key) together with the position where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value itself.
    pub value: T,
    /// Where it starts in the source.
    pub pos: Position,
}

impl<T> Spanned<T> {
    /// Pairs a value with its position.
    pub fn new(value: T, pos: Position) -> Self {
        Spanned { value, pos }
    }

    /// Drops the position.
    pub fn into_inner(self) -> T {
        self.value
    }
}

// Deref lets callers write `entry.as_str()` without unwrapping the span at every use.
impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Spanned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// A configuration value.
///
/// NATS datetimes (`2016-05-04T18:53:41Z`) are kept as [`Value::String`]: nothing in the account
/// server uses them and a string loses nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted or bare string (also duration-looking text such as `2s`).
    String(String),
    /// A 64-bit integer, size suffixes already applied (`1k` = 1000, `1kb` = 1024).
    Integer(i64),
    /// A float (`1.5`).
    Float(f64),
    /// `true`/`false`/`yes`/`no`/`on`/`off`, any case, unquoted.
    Bool(bool),
    /// `[a, b]`.
    Array(Vec<Spanned<Value>>),
    /// `{ k: v }`, or the top level of a file.
    Map(Map),
}

impl Value {
    /// A short name of the variant for type-error messages (`string`, `integer`, `float`,
    /// `boolean`, `array`, `map`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean. Strings such as `"true"` are not booleans here; the
    /// account server's lenient string-to-bool rule belongs to the layer that knows field types.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Spanned<Value>]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The map, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A string holding a Go-style duration (`"1m30s"`, `"500ms"`, `"2h"`), parsed with
    /// [`parse_duration`]. Integers give `None`: NATS reads a bare `2m` as the integer 2000000, so
    /// guessing a unit here would hide that surprise instead of reporting it.
    pub fn as_duration(&self) -> Option<Duration> {
        self.as_str().and_then(|s| parse_duration(s).ok())
    }
}

/// Writes the value in NATS conf syntax that parses back to the same tree (strings always quoted),
/// which is handy for logs, `-dump`-style output and tests.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write_quoted(f, s),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Float(x) => {
                // NATS floats need a `.` and digits on both sides; Rust's `{}` drops `.0`.
                if x.is_finite() && x.fract() == 0.0 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            Value::Bool(b) => write!(f, "{b}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", item.value)?;
                }
                f.write_str("]")
            }
            Value::Map(m) => write!(f, "{m}"),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c == '\x7f' => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_key(f: &mut fmt::Formatter<'_>, k: &str) -> fmt::Result {
    let bare = !k.is_empty()
        && !k.starts_with('#')
        && !k.contains("//")
        && !k.eq_ignore_ascii_case("include")
        && !k
            .chars()
            .any(|c| c.is_whitespace() || ":={}[],;\"'".contains(c));
    if bare {
        f.write_str(k)
    } else if k.contains('"') {
        // Quoted keys have no escapes in NATS, so pick the quote the key does not contain (the
        // parser never produces a key with both).
        write!(f, "'{k}'")
    } else {
        write!(f, "\"{k}\"")
    }
}

/// A block's entries in source order. Keys keep their spelling and position; lookups with
/// [`Map::get`] ignore case because the account server matches option names that way.
///
/// Entries are distinct by exact spelling, as in the Go parser's map: a later `port` replaces an
/// earlier `port` (last one wins), but `port` and `PORT` are two entries, and [`Map::get`] picks
/// between them the way the Go account server does (see there).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    entries: Vec<(Spanned<String>, Spanned<Value>)>,
}

fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts or replaces (same exact spelling) an entry, returning the replaced value.
    /// A replaced entry keeps its place in the order but takes the new key position.
    pub fn insert(
        &mut self,
        key: Spanned<String>,
        value: Spanned<Value>,
    ) -> Option<Spanned<Value>> {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| k.value == key.value) {
            slot.0 = key;
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.entries.push((key, value));
        None
    }

    /// Case-insensitive lookup (`get("OperatorJWTPath")` finds `operatorjwtpath`).
    ///
    /// Mirrors the Go account server's order: the exact spelling first, then the all-lower-case
    /// spelling, then any case-insensitive match (the last one defined, where Go's choice is
    /// random).
    pub fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// Like [`Map::get`], also returning the key as written (with its position).
    pub fn get_key_value(&self, key: &str) -> Option<(&Spanned<String>, &Spanned<Value>)> {
        let found = self
            .entries
            .iter()
            .find(|(k, _)| k.value == key)
            .or_else(|| {
                let lower = key.to_lowercase();
                self.entries
                    .iter()
                    .find(|(k, _)| k.value == lower)
                    .or_else(|| {
                        self.entries
                            .iter()
                            .rev()
                            .find(|(k, _)| eq_fold(&k.value, key))
                    })
            });
        found.map(|(k, v)| (k, v))
    }

    /// Exact-spelling lookup, as NATS variable references (`$name`) use.
    pub fn get_exact(&self, key: &str) -> Option<&Spanned<Value>> {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    /// True when [`Map::get`] would find something.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Removes every entry matching `key` case-insensitively, returning the one [`Map::get`]
    /// would have returned.
    pub fn remove(&mut self, key: &str) -> Option<Spanned<Value>> {
        let wanted = self.get_key_value(key).map(|(k, _)| k.value.clone())?;
        let mut out = None;
        let mut kept = Vec::with_capacity(self.entries.len());
        for (k, v) in self.entries.drain(..) {
            if k.value == wanted {
                out = Some(v);
            } else if !eq_fold(&k.value, key) {
                kept.push((k, v));
            }
        }
        self.entries = kept;
        out
    }

    /// Entries in source order, keys as written (for unknown-key warnings with positions).
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.entries.iter(),
        }
    }

    /// Keys as written, in source order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.value.as_str())
    }
}

/// Iterator over a [`Map`]'s entries.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    inner: std::slice::Iter<'a, (Spanned<String>, Spanned<Value>)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Spanned<String>, &'a Spanned<Value>);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Spanned<String>, &'a Spanned<Value>);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Map {
    type Item = (Spanned<String>, Spanned<Value>);
    type IntoIter = std::vec::IntoIter<(Spanned<String>, Spanned<Value>)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Writes `{k: v, ...}` in NATS conf syntax (see [`Value`]'s `Display`).
impl fmt::Display for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write_key(f, &k.value)?;
            write!(f, ": {}", v.value)?;
        }
        f.write_str("}")
    }
}

/// A parsed configuration: the top-level map plus the files that were read.
///
/// Dereferences to the top-level [`Map`], so `doc.get("http")` works directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub(crate) root: Map,
    pub(crate) files: Vec<PathBuf>,
}

impl Document {
    /// The top-level map.
    pub fn root(&self) -> &Map {
        &self.root
    }

    /// Takes the top-level map.
    pub fn into_root(self) -> Map {
        self.root
    }

    /// Every file read, the top-level file first (if any), then includes in the order they were
    /// read; useful for reload-on-change.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Deref for Document {
    type Target = Map;
    fn deref(&self) -> &Map {
        &self.root
    }
}
