//! A parser for the NATS configuration file format (nats-server's `conf` package), producing a
//! tree of [`Value`]s in which every key and value keeps its [`Position`] (file, line, column).
//!
//! The account server's config file and the nats-server snippets it prints use this syntax.
//! No maintained Rust crate parses NATS conf, so this one is hand-written, following
//! nats-server's `conf/lex.go` and `conf/parse.go` and `docs/spec/config-and-cli.md` §1.
//!
//! ```
//! let doc = nas_conf::parse_str(r#"
//!     OperatorJWTPath: "/etc/nas/operator.jwt"
//!     http { port: 9090 }
//!     resolver: URL(http://localhost:9090/jwt/v1/accounts/)
//! "#).unwrap();
//! assert_eq!(doc.get("operatorjwtpath").unwrap().as_str(), Some("/etc/nas/operator.jwt"));
//! let http = doc.get("HTTP").unwrap().as_map().unwrap();
//! assert_eq!(http.get("port").unwrap().as_i64(), Some(9090));
//! assert_eq!(http.get("port").unwrap().pos.line, 3);
//! ```
//!
//! # Syntax
//!
//! * `key: value`, `key = value`, `key value`; blocks `name { … }`, `name: { … }`; entries end at a
//!   newline, `,` or `;`. The whole file may be wrapped in `{ … }`.
//! * Arrays `[a, b]`, elements separated by a comma and/or newlines (a trailing comma is fine).
//! * Comments `#` and `//` to the end of the line (`//` inside a bare value such as
//!   `nats://host` is part of the value).
//! * Strings: `"…"` with escapes `\t \n \r \" \\ \xHH` (anything else is an error), `'…'` raw,
//!   bare words (`localhost`, `/tmp/x`, `nats://127.0.0.1:4222`, `URL(http://x/y)`, `2s`) which
//!   end at whitespace, `,`, `;`, `]` or `}`; `( … )` raw blocks ending with `)` alone on a line.
//! * Integers with size suffixes, case-insensitive: `k` = 1000, `kb`/`ki`/`kib` = 1024, likewise
//!   `m`, `g`, `t`, `p`, `e`. So an unquoted `2m` is the integer 2 000 000 — write `"2m"` for a
//!   duration. Floats `1.5`. Out of range → [`ConfError::IntegerOutOfRange`].
//! * Booleans `true/false/yes/no/on/off`, any case, unquoted only.
//! * `include "file"` / `include file` merges the top-level keys of another file at that point,
//!   relative to the including file's directory (see [`Parser::include_base`]).
//! * `$NAME` takes the value of the key `NAME` defined earlier in the same or an enclosing block
//!   (exact spelling, innermost first), else of the environment variable `NAME` parsed as a value
//!   (so `8080` is an integer). `$2a$…` is a bcrypt hash, kept as a string.
//! * Duplicate keys: the last one wins.
//!
//! # Where this parser differs from nats-server
//!
//! It is lenient where Go's state machine rejects or mangles plainly meant input; real-world
//! configs that nats-server accepts parse to the same values:
//!
//! * Any bare word that is not exactly a number, a sized number or a float is a string: `1m30s`,
//!   `1.9s`, `./jwt`, `.5`, `-x` (Go errors on these), and `[1, 2]` works (Go's lexer swallows
//!   the `]` after a trailing number).
//! * Several entries may share a line without commas when each has its own `:`/`=`
//!   (`resolver { type: full dir: './jwt' }`); Go wants a `,` there. `a: x y` is still an error.
//! * Datetimes stay strings. Bare keys also end at brackets and quotes (`http{` is key `http`
//!   and a block). A value may start on the next line after `:`/`=`, or when it is a `{` block;
//!   `key: # comment` starts a comment, not the string `#`. A single quote inside a bare value
//!   is ordinary text.
//! * Include cycles and over-deep nesting are errors (Go recurses until it crashes); an include
//!   inside an environment variable's value is refused.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod duration;
mod error;
mod parser;
mod value;

use std::path::Path;

pub use duration::{parse_duration, DurationError};
pub use error::ConfError;
pub use parser::Parser;
pub use value::{Document, Iter, Map, Origin, Position, Spanned, Value};

/// Maximum bracket nesting depth; deeper input fails with [`ConfError::TooDeep`].
pub const MAX_DEPTH: usize = parser::MAX_DEPTH;

/// Maximum include nesting depth; deeper chains fail with [`ConfError::TooDeep`].
pub const MAX_INCLUDE_DEPTH: usize = parser::MAX_INCLUDE_DEPTH;

/// Parses configuration text with default options (positions say `<string>`, includes resolve
/// against the current directory, `$NAME` falls back to the process environment).
pub fn parse_str(src: &str) -> Result<Document, ConfError> {
    Parser::new().parse_str(src)
}

/// Reads and parses a configuration file with default options (includes resolve against the
/// including file's directory, as nats-server does).
pub fn parse_file(path: &Path) -> Result<Document, ConfError> {
    Parser::new().parse_file(path)
}
