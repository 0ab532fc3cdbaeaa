//! The hand-written recursive-descent parser.
//!
//! It follows nats-server's `conf/lex.go` + `conf/parse.go` where real configs depend on the
//! behaviour, and is deliberately more lenient (or stricter with a clearer message) where Go's
//! state machine produces surprising results; the crate docs list those choices.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ConfError;
use crate::value::{Document, Map, Origin, Position, Spanned, Value};

/// Bracket nesting limit. Recursion depth is proportional to it, so it is what stands between
/// `[[[[…` and a stack overflow.
pub(crate) const MAX_DEPTH: usize = 128;

/// Include nesting limit. Cycles are caught separately; this bounds long non-cyclic chains.
pub(crate) const MAX_INCLUDE_DEPTH: usize = 32;

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Parser options. [`crate::parse_str`] and [`crate::parse_file`] use the defaults; build one of
/// these to substitute the environment (tests, sandboxing) or to change where includes resolve.
#[derive(Default)]
pub struct Parser {
    env: Option<Box<EnvFn>>,
    include_base: Option<PathBuf>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("custom_env", &self.env.is_some())
            .field("include_base", &self.include_base)
            .finish()
    }
}

impl Parser {
    /// Default options: `$NAME` falls back to the process environment; includes resolve relative
    /// to the including file's directory (the current directory for [`Parser::parse_str`]).
    pub fn new() -> Self {
        Parser::default()
    }

    /// Replaces the process environment as the fallback for `$NAME` references.
    pub fn env<F>(mut self, lookup: F) -> Self
    where
        F: Fn(&str) -> Option<String> + Send + Sync + 'static,
    {
        self.env = Some(Box::new(lookup));
        self
    }

    /// Resolves every relative include path against `dir` instead of the including file's
    /// directory. The Go account server behaves like this with the process's current directory
    /// (it parses file contents, not the file); nats-server uses the including file's directory.
    pub fn include_base(mut self, dir: impl Into<PathBuf>) -> Self {
        self.include_base = Some(dir.into());
        self
    }

    /// Parses configuration text. Positions report `<string>`.
    pub fn parse_str(&self, src: &str) -> Result<Document, ConfError> {
        let mut ctx = Ctx::new(self);
        let root = FileParser::new(src, Origin::Str, None, &mut ctx, 0).parse_document()?;
        Ok(Document {
            root,
            files: ctx.files,
        })
    }

    /// Reads and parses a configuration file, following includes.
    pub fn parse_file(&self, path: &Path) -> Result<Document, ConfError> {
        let text = fs::read_to_string(path).map_err(|error| ConfError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut ctx = Ctx::new(self);
        ctx.files.push(path.to_path_buf());
        if let Ok(canonical) = fs::canonicalize(path) {
            ctx.include_stack.push(canonical);
        }
        let origin = Origin::File(Arc::from(path));
        let root = FileParser::new(&text, origin, Some(path), &mut ctx, 0).parse_document()?;
        Ok(Document {
            root,
            files: ctx.files,
        })
    }

    fn lookup_env(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(f) => f(name),
            None => std::env::var(name).ok(),
        }
    }
}

/// State shared by the top-level file, its includes and environment-variable sub-parses.
struct Ctx<'o> {
    opts: &'o Parser,
    /// Canonical paths of the files being parsed, outermost first, for cycle detection.
    include_stack: Vec<PathBuf>,
    /// Environment variables being expanded, for cycle detection.
    env_stack: Vec<String>,
    files: Vec<PathBuf>,
}

impl<'o> Ctx<'o> {
    fn new(opts: &'o Parser) -> Self {
        Ctx {
            opts,
            include_stack: Vec::new(),
            env_stack: Vec::new(),
            files: Vec::new(),
        }
    }
}

#[derive(Clone, Copy)]
struct Cursor<'a> {
    src: &'a str,
    off: usize,
    line: u32,
    col: u32,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.off..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.rest().chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.off += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    fn at_comment(&self) -> bool {
        let r = self.rest();
        r.starts_with('#') || r.starts_with("//")
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if is_nl(c) {
                break;
            }
            self.bump();
        }
    }

    fn skip_inline_ws(&mut self) {
        while matches!(self.peek(), Some(c) if is_inline_ws(c)) {
            self.bump();
        }
    }

    /// Whitespace, newlines and comments.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => break,
            }
        }
    }
}

fn is_nl(c: char) -> bool {
    c == '\n' || c == '\r'
}

fn is_inline_ws(c: char) -> bool {
    c.is_whitespace() && !is_nl(c)
}

/// Characters that end a bare value (NATS: whitespace, `,`, `;`, `]`, `}`).
fn ends_bare_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ';' | ']' | '}')
}

/// Characters that end a bare key. Go's lexer only stops at whitespace and separators, which
/// swallows the `{` of `http{`; stopping at brackets too is what a reader expects, and stopping
/// at quotes keeps every key printable (a key holding both quote kinds could not be written).
fn ends_bare_key(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ':' | '=' | '{' | '}' | '[' | ']' | ',' | ';' | '"' | '\''
        )
}

/// Whether the text at `c` is a key followed by `:` or `=` (lookahead only).
fn starts_entry_with_separator(mut c: Cursor<'_>) -> bool {
    match c.peek() {
        Some(q @ ('"' | '\'')) => {
            c.bump();
            loop {
                match c.bump() {
                    None => return false,
                    Some(x) if x == q => break,
                    Some(_) => {}
                }
            }
        }
        Some(ch) if !ends_bare_key(ch) => {
            while matches!(c.peek(), Some(ch) if !ends_bare_key(ch)) {
                c.bump();
            }
        }
        _ => return false,
    }
    c.skip_inline_ws();
    matches!(c.peek(), Some(':' | '='))
}

struct FileParser<'a, 'c, 'o> {
    cur: Cursor<'a>,
    origin: Origin,
    /// The file being parsed, when it is one; includes resolve against its directory.
    file: Option<&'a Path>,
    ctx: &'c mut Ctx<'o>,
    /// Open maps, outermost first; `$NAME` looks here innermost first.
    scopes: Vec<Map>,
    depth: usize,
    /// Parsing an environment variable's text: includes are refused, there is no file scope.
    env_mode: bool,
}

impl<'a, 'c, 'o> FileParser<'a, 'c, 'o> {
    fn new(
        src: &'a str,
        origin: Origin,
        file: Option<&'a Path>,
        ctx: &'c mut Ctx<'o>,
        depth: usize,
    ) -> Self {
        let mut cur = Cursor {
            src,
            off: 0,
            line: 1,
            col: 1,
        };
        // Editors on some platforms add a BOM; it is never meaningful in a config.
        if src.starts_with('\u{feff}') {
            cur.off = '\u{feff}'.len_utf8();
        }
        FileParser {
            cur,
            origin,
            file,
            ctx,
            scopes: Vec::new(),
            depth,
            env_mode: false,
        }
    }

    fn pos(&self) -> Position {
        Position::new(self.origin.clone(), self.cur.line, self.cur.col)
    }

    fn syntax<T>(&self, pos: Position, message: impl Into<String>) -> Result<T, ConfError> {
        Err(ConfError::Syntax {
            pos,
            message: message.into(),
        })
    }

    fn enter(&mut self, pos: &Position) -> Result<(), ConfError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ConfError::TooDeep {
                pos: pos.clone(),
                limit: MAX_DEPTH,
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn parse_document(mut self) -> Result<Map, ConfError> {
        self.scopes.push(Map::new());
        self.parse_entries(None)?;
        Ok(self.scopes.pop().unwrap_or_default())
    }

    fn current(&mut self) -> &mut Map {
        if self.scopes.is_empty() {
            self.scopes.push(Map::new());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    /// Entries of the innermost open map, up to EOF (`open` = None) or the `}` matching `open`.
    fn parse_entries(&mut self, open: Option<&Position>) -> Result<(), ConfError> {
        loop {
            // Stray `,`/`;` between entries are harmless; NATS accepts them after values.
            loop {
                self.cur.skip_blank();
                if matches!(self.cur.peek(), Some(',' | ';')) {
                    self.cur.bump();
                } else {
                    break;
                }
            }
            let pos = self.pos();
            match self.cur.peek() {
                None => {
                    return match open {
                        None => Ok(()),
                        Some(p) => Err(ConfError::Unclosed {
                            pos: p.clone(),
                            open: '{',
                        }),
                    };
                }
                Some('}') => {
                    if open.is_some() {
                        self.cur.bump();
                        return Ok(());
                    }
                    return Err(ConfError::Unmatched { pos, found: '}' });
                }
                Some(']') => return Err(ConfError::Unmatched { pos, found: ']' }),
                // The whole file may be wrapped in braces (JSON-like configs); nats-server
                // accepts such a block anywhere at the top level and merges it into the top.
                Some('{') if self.scopes.len() == 1 && !self.env_mode => {
                    self.cur.bump();
                    self.enter(&pos)?;
                    self.parse_entries(Some(&pos))?;
                    self.leave();
                    self.value_end()?;
                }
                Some(_) => self.parse_entry()?,
            }
        }
    }

    fn parse_entry(&mut self) -> Result<(), ConfError> {
        let key_pos = self.pos();
        let (key, bare) = self.parse_key()?;

        if bare && key.eq_ignore_ascii_case("include") {
            // `include x` is a directive; `include: x` / `include = x` is an ordinary key.
            let mut look = self.cur;
            look.skip_inline_ws();
            if look.off > self.cur.off && !matches!(look.peek(), Some(':' | '=')) {
                self.cur = look;
                return self.parse_include();
            }
        }

        self.cur.skip_inline_ws();
        let mut has_sep = false;
        if matches!(self.cur.peek(), Some(':' | '=')) {
            self.cur.bump();
            has_sep = true;
            self.cur.skip_inline_ws();
        }
        let before_blank = self.pos();
        if matches!(self.cur.peek(), None | Some('\n' | '\r')) || self.cur.at_comment() {
            // A value may start on a later line after `:`/`=`, or when it is a `{` block (brace
            // on its own line); a key alone on a line is an error rather than a swallowed next
            // line.
            self.cur.skip_blank();
            if self.cur.peek().is_none() || !(has_sep || self.cur.peek() == Some('{')) {
                return self.syntax(before_blank, format!("expected a value for key `{key}`"));
            }
        }
        let value = self.parse_value(&key)?;
        self.value_end()?;
        self.current().insert(Spanned::new(key, key_pos), value);
        Ok(())
    }

    /// After a value in a map: only blanks up to a newline, `,`, `;`, `}`, a comment or EOF.
    fn value_end(&mut self) -> Result<(), ConfError> {
        self.cur.skip_inline_ws();
        match self.cur.peek() {
            None | Some('\n' | '\r' | '}') => Ok(()),
            Some(',' | ';') => {
                self.cur.bump();
                Ok(())
            }
            Some(_) if self.cur.at_comment() => Ok(()),
            // `resolver { type: full dir: './jwt' }`: Go rejects a second entry on the line
            // without a `,`, but the intent is unambiguous when it has its own `:`/`=`.
            Some(_) if starts_entry_with_separator(self.cur) => Ok(()),
            Some(c) => self.syntax(
                self.pos(),
                format!("unexpected `{c}` after a value; expected a newline, `,`, `;` or `}}`"),
            ),
        }
    }

    fn parse_key(&mut self) -> Result<(String, bool), ConfError> {
        let pos = self.pos();
        match self.cur.peek() {
            Some(q @ ('"' | '\'')) => {
                // Quoted keys are raw in NATS: no escapes.
                self.cur.bump();
                let start = self.cur.off;
                loop {
                    match self.cur.peek() {
                        None => {
                            return Err(ConfError::Unterminated {
                                pos,
                                what: "quoted key",
                            })
                        }
                        Some(c) if c == q => break,
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
                let key = self.cur.src[start..self.cur.off].to_string();
                self.cur.bump();
                Ok((key, false))
            }
            Some(c @ (':' | '=')) => {
                self.syntax(pos, format!("unexpected key separator `{c}`: missing key"))
            }
            Some(c) if ends_bare_key(c) => self.syntax(pos, format!("expected a key, found `{c}`")),
            _ => {
                let start = self.cur.off;
                while matches!(self.cur.peek(), Some(c) if !ends_bare_key(c)) {
                    self.cur.bump();
                }
                Ok((self.cur.src[start..self.cur.off].to_string(), true))
            }
        }
    }

    fn parse_value(&mut self, what: &str) -> Result<Spanned<Value>, ConfError> {
        let pos = self.pos();
        let value = match self.cur.peek() {
            None => {
                return self.syntax(
                    pos,
                    format!("expected a value for `{what}`, found end of input"),
                )
            }
            Some(c) if is_nl(c) => {
                return self.syntax(
                    pos,
                    format!("expected a value for `{what}`, found end of line"),
                )
            }
            Some(c @ (',' | ';' | ']' | '}')) => {
                return self.syntax(pos, format!("expected a value for `{what}`, found `{c}`"))
            }
            Some('[') => self.parse_array(&pos)?,
            Some('{') => {
                self.cur.bump();
                self.enter(&pos)?;
                self.scopes.push(Map::new());
                let result = self.parse_entries(Some(&pos));
                let map = self.scopes.pop().unwrap_or_default();
                result?;
                self.leave();
                Value::Map(map)
            }
            Some('"') => Value::String(self.parse_dq_string(&pos)?),
            Some('\'') => Value::String(self.parse_sq_string(&pos)?),
            Some('(') => Value::String(self.parse_paren_block(&pos)?),
            Some(_) => return self.parse_bare(pos),
        };
        Ok(Spanned::new(value, pos))
    }

    fn parse_array(&mut self, open: &Position) -> Result<Value, ConfError> {
        self.cur.bump();
        self.enter(open)?;
        let mut items = Vec::new();
        self.cur.skip_blank();
        if self.cur.peek() == Some(']') {
            self.cur.bump();
            self.leave();
            return Ok(Value::Array(items));
        }
        loop {
            match self.cur.peek() {
                None => {
                    return Err(ConfError::Unclosed {
                        pos: open.clone(),
                        open: '[',
                    })
                }
                Some(',') => {
                    return self.syntax(self.pos(), "unexpected `,` in array: missing element")
                }
                _ => {}
            }
            items.push(self.parse_value("array element")?);
            // One comma at most: a second one would be an empty element, which NATS rejects.
            let mut separated = false;
            let mut comma = false;
            loop {
                self.cur.skip_inline_ws();
                match self.cur.peek() {
                    Some(c) if is_nl(c) => {
                        self.cur.bump();
                        separated = true;
                    }
                    Some(',') if !comma => {
                        self.cur.bump();
                        comma = true;
                        separated = true;
                    }
                    Some(_) if self.cur.at_comment() => self.cur.skip_comment(),
                    _ => break,
                }
            }
            match self.cur.peek() {
                Some(']') => {
                    self.cur.bump();
                    break;
                }
                None => {
                    return Err(ConfError::Unclosed {
                        pos: open.clone(),
                        open: '[',
                    })
                }
                Some(_) if separated => {}
                Some(c) => {
                    return self.syntax(
                        self.pos(),
                        format!("unexpected `{c}` in array; expected `,`, a newline or `]`"),
                    )
                }
            }
        }
        self.leave();
        Ok(Value::Array(items))
    }

    /// A backslash escape (the `\` not yet consumed), appended to `buf` as bytes because `\xHH`
    /// produces single bytes that only together form UTF-8.
    fn parse_escape(&mut self, buf: &mut Vec<u8>, what: &'static str) -> Result<(), ConfError> {
        let pos = self.pos();
        self.cur.bump();
        let c = match self.cur.bump() {
            Some(c) => c,
            None => return Err(ConfError::Unterminated { pos, what }),
        };
        let byte = match c {
            't' => b'\t',
            'n' => b'\n',
            'r' => b'\r',
            '"' => b'"',
            '\\' => b'\\',
            'x' => {
                let hex: String = (0..2).filter_map(|_| self.take_hex_digit()).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 => b,
                    _ => {
                        return self.syntax(
                            pos,
                            format!("expected two hexadecimal digits after `\\x`, got `{hex}`"),
                        )
                    }
                }
            }
            other => {
                return Err(ConfError::InvalidEscape {
                    pos,
                    escape: format!("\\{other}"),
                })
            }
        };
        buf.push(byte);
        Ok(())
    }

    fn take_hex_digit(&mut self) -> Option<char> {
        match self.cur.peek() {
            Some(c) if c.is_ascii_hexdigit() => self.cur.bump(),
            _ => None,
        }
    }

    fn bytes_to_string(&self, buf: Vec<u8>, pos: &Position) -> Result<String, ConfError> {
        String::from_utf8(buf).or_else(|_| {
            self.syntax(
                pos.clone(),
                "`\\x` escapes in this string do not form valid UTF-8",
            )
        })
    }

    fn parse_dq_string(&mut self, open: &Position) -> Result<String, ConfError> {
        const WHAT: &str = "double-quoted string";
        self.cur.bump();
        let mut buf = Vec::new();
        loop {
            match self.cur.peek() {
                None => {
                    return Err(ConfError::Unterminated {
                        pos: open.clone(),
                        what: WHAT,
                    })
                }
                Some('"') => {
                    self.cur.bump();
                    break;
                }
                Some('\\') => {
                    if self.cur.peek2().is_none() {
                        return Err(ConfError::Unterminated {
                            pos: open.clone(),
                            what: WHAT,
                        });
                    }
                    self.parse_escape(&mut buf, WHAT)?
                }
                Some(c) => {
                    let mut tmp = [0u8; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                    self.cur.bump();
                }
            }
        }
        self.bytes_to_string(buf, open)
    }

    fn parse_sq_string(&mut self, open: &Position) -> Result<String, ConfError> {
        self.cur.bump();
        let start = self.cur.off;
        loop {
            match self.cur.peek() {
                None => {
                    return Err(ConfError::Unterminated {
                        pos: open.clone(),
                        what: "single-quoted string",
                    })
                }
                Some('\'') => break,
                Some(_) => {
                    self.cur.bump();
                }
            }
        }
        let s = self.cur.src[start..self.cur.off].to_string();
        self.cur.bump();
        Ok(s)
    }

    /// NATS's `(` block: raw text up to a `)` alone at the start of a line.
    fn parse_paren_block(&mut self, open: &Position) -> Result<String, ConfError> {
        self.cur.bump();
        let start = self.cur.off;
        loop {
            match self.cur.bump() {
                None => {
                    return Err(ConfError::Unterminated {
                        pos: open.clone(),
                        what: "`(` block (it ends with `)` alone on a line)",
                    })
                }
                Some('\n')
                    if self.cur.peek() == Some(')')
                        && !matches!(self.cur.peek2(), Some(c) if !c.is_whitespace()) =>
                {
                    let end = self.cur.off - 1;
                    let text = self.cur.src[start..end].trim_end_matches('\r').to_string();
                    self.cur.bump();
                    return Ok(text);
                }
                Some(_) => {}
            }
        }
    }

    /// An unquoted value: boolean, number, variable reference or string.
    fn parse_bare(&mut self, pos: Position) -> Result<Spanned<Value>, ConfError> {
        let start_cur = self.cur;
        let start = self.cur.off;
        let mut escaped = false;
        while let Some(c) = self.cur.peek() {
            if ends_bare_value(c) {
                break;
            }
            self.cur.bump();
            if c == '\\' {
                // The escaped character belongs to the word even if it would end it; whether
                // the escape is valid is decided when the word is unescaped.
                escaped = true;
                self.cur.bump();
            }
        }
        if escaped {
            // nats-server processes escapes in bare strings too, and then treats the word as a
            // string (no number/bool/variable detection); matching it keeps `\\` meaning `\`.
            let s = self.unescape_bare(start_cur, &pos)?;
            return Ok(Spanned::new(Value::String(s), pos));
        }
        let text = &self.cur.src[start..self.cur.off];
        if let Some(name) = text.strip_prefix('$') {
            return self.resolve_variable(name, pos);
        }
        let value = classify_bare(text, &pos)?;
        Ok(Spanned::new(value, pos))
    }

    /// Re-reads the bare word from `start` to the cursor, applying escapes.
    fn unescape_bare(&mut self, start: Cursor<'a>, pos: &Position) -> Result<String, ConfError> {
        let end = self.cur.off;
        let saved = self.cur;
        self.cur = start;
        let mut buf = Vec::new();
        while self.cur.off < end {
            match self.cur.peek() {
                Some('\\') => self.parse_escape(&mut buf, "escape sequence")?,
                Some(c) => {
                    let mut tmp = [0u8; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                    self.cur.bump();
                }
                None => break,
            }
        }
        self.cur = saved;
        self.bytes_to_string(buf, pos)
    }

    fn resolve_variable(&mut self, name: &str, pos: Position) -> Result<Spanned<Value>, ConfError> {
        // nats-server special case: unquoted bcrypt hashes (`$2a$11$...`) are not variables.
        if name.starts_with("2a$") {
            return Ok(Spanned::new(Value::String(format!("${name}")), pos));
        }
        for scope in self.scopes.iter().rev() {
            if let Some(v) = scope.get_exact(name) {
                return Ok(Spanned::new(v.value.clone(), pos));
            }
        }
        if self.ctx.env_stack.iter().any(|n| n == name) {
            return Err(ConfError::VariableCycle {
                pos,
                name: name.to_string(),
            });
        }
        let Some(text) = self.ctx.opts.lookup_env(name) else {
            return Err(ConfError::UndefinedVariable {
                pos,
                name: name.to_string(),
            });
        };
        self.ctx.env_stack.push(name.to_string());
        let result = self.parse_env_value(name, &text);
        self.ctx.env_stack.pop();
        match result {
            Ok(value) => Ok(Spanned::new(value, pos)),
            // A cycle already names the culprit; wrapping it once per hop only adds noise.
            Err(e @ ConfError::VariableCycle { .. }) => Err(e),
            Err(e) => Err(ConfError::InvalidEnvValue {
                pos,
                name: name.to_string(),
                error: Box::new(e),
            }),
        }
    }

    /// An environment variable's text is parsed as a config value (so `8080` is an integer), as
    /// nats-server does by parsing `pk=<text>`.
    fn parse_env_value(&mut self, name: &str, text: &str) -> Result<Value, ConfError> {
        let origin = Origin::Env(Arc::from(name));
        let depth = self.depth;
        let mut sub = FileParser::new(text, origin, None, self.ctx, depth);
        sub.env_mode = true;
        sub.cur.skip_blank();
        if sub.cur.peek().is_none() {
            return Ok(Value::String(String::new()));
        }
        let v = sub.parse_value(name)?;
        sub.cur.skip_blank();
        if let Some(c) = sub.cur.peek() {
            return sub.syntax(sub.pos(), format!("unexpected `{c}` after the value"));
        }
        Ok(v.value)
    }

    fn parse_include(&mut self) -> Result<(), ConfError> {
        let pos = self.pos();
        let path = match self.cur.peek() {
            Some(q @ ('"' | '\'')) => {
                // Go reads quoted include paths raw, without escapes.
                self.cur.bump();
                let start = self.cur.off;
                loop {
                    match self.cur.peek() {
                        None => {
                            return Err(ConfError::Unterminated {
                                pos,
                                what: "quoted include path",
                            })
                        }
                        Some(c) if c == q => break,
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
                let p = self.cur.src[start..self.cur.off].to_string();
                self.cur.bump();
                p
            }
            None => return self.syntax(pos, "expected an include path, found end of input"),
            Some(c) if is_nl(c) => {
                return self.syntax(pos, "expected an include path, found end of line")
            }
            Some(c @ ('[' | '{' | '(' | ',' | ';' | '}' | ']')) => {
                return self.syntax(pos, format!("expected an include path, found `{c}`"))
            }
            Some(_) => {
                let start = self.cur.off;
                while matches!(self.cur.peek(), Some(c) if !c.is_whitespace() && c != ';' && c != '}')
                {
                    self.cur.bump();
                }
                self.cur.src[start..self.cur.off].to_string()
            }
        };
        if path.is_empty() {
            return self.syntax(pos, "empty include path");
        }
        if self.env_mode {
            return self.syntax(pos, "include is not allowed in an environment variable");
        }
        self.value_end()?;

        let base = match (&self.ctx.opts.include_base, self.file) {
            (Some(dir), _) => dir.clone(),
            (None, Some(file)) => file.parent().map(Path::to_path_buf).unwrap_or_default(),
            (None, None) => PathBuf::new(),
        };
        let full = base.join(&path);
        let read_err = |error: io::Error, pos: Position, full: PathBuf| {
            if error.kind() == io::ErrorKind::NotFound {
                ConfError::IncludeNotFound { pos, path: full }
            } else {
                ConfError::IncludeRead {
                    pos,
                    path: full,
                    error,
                }
            }
        };
        let canonical =
            fs::canonicalize(&full).map_err(|e| read_err(e, pos.clone(), full.clone()))?;
        if self.ctx.include_stack.contains(&canonical) {
            return Err(ConfError::IncludeCycle { pos, path: full });
        }
        if self.ctx.include_stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(ConfError::TooDeep {
                pos,
                limit: MAX_INCLUDE_DEPTH,
            });
        }
        let text = fs::read_to_string(&full).map_err(|e| read_err(e, pos.clone(), full.clone()))?;
        self.ctx.include_stack.push(canonical);
        self.ctx.files.push(full.clone());
        let origin = Origin::File(Arc::from(full.as_path()));
        let depth = self.depth;
        // Like nats-server, the included file is parsed on its own (it cannot see the
        // includer's variables) and its top-level keys are merged here.
        let result = FileParser::new(&text, origin, Some(&full), self.ctx, depth).parse_document();
        self.ctx.include_stack.pop();
        let map = result?;
        let current = self.current();
        for (k, v) in map {
            current.insert(k, v);
        }
        Ok(())
    }
}

/// Suffix multipliers of nats-server's `parse.go`: SI for the bare letter, binary for `b`, `i`
/// and `ib` forms.
fn size_multiplier(suffix: &str) -> Option<i64> {
    let s = suffix.to_ascii_lowercase();
    let (letter, rest) = s.split_at(s.chars().next()?.len_utf8());
    let exp = match letter {
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: i64 = match rest {
        "" => 1000,
        "b" | "i" | "ib" => 1024,
        _ => return None,
    };
    base.checked_pow(exp)
}

fn is_datetime(t: &str) -> bool {
    // The only datetime form NATS lexes: ISO 8601 Zulu, e.g. 2016-05-04T18:53:41Z.
    const SHAPE: &[u8] = b"0000-00-00T00:00:00Z";
    t.len() == SHAPE.len()
        && t.bytes().zip(SHAPE).all(|(b, &s)| {
            if s == b'0' {
                b.is_ascii_digit()
            } else {
                b == s
            }
        })
}

fn classify_bare(text: &str, pos: &Position) -> Result<Value, ConfError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Ok(Value::Bool(true)),
        "false" | "no" | "off" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || is_datetime(text) {
        return Ok(Value::String(text.to_string()));
    }
    let number_len = text.len() - unsigned.len() + digits;
    let (number, rest) = text.split_at(number_len);
    let out_of_range = || ConfError::IntegerOutOfRange {
        pos: pos.clone(),
        text: text.to_string(),
    };
    if rest.is_empty() {
        return number
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| out_of_range());
    }
    if let Some(mult) = size_multiplier(rest) {
        let n: i64 = number.parse().map_err(|_| out_of_range())?;
        return n
            .checked_mul(mult)
            .map(Value::Integer)
            .ok_or_else(out_of_range);
    }
    if let Some(frac) = rest.strip_prefix('.') {
        if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
            let f: f64 = text.parse().map_err(|_| ConfError::FloatOutOfRange {
                pos: pos.clone(),
                text: text.to_string(),
            })?;
            if f.is_infinite() {
                return Err(ConfError::FloatOutOfRange {
                    pos: pos.clone(),
                    text: text.to_string(),
                });
            }
            return Ok(Value::Float(f));
        }
    }
    // `2s`, `127.0.0.1:4222`, `1m30s`, `10.0.0.1`: NATS keeps these as strings (or errors),
    // and durations and addresses are exactly what such words mean in practice.
    Ok(Value::String(text.to_string()))
}
