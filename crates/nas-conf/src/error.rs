//! Parse errors.

use std::io;
use std::path::PathBuf;

use crate::value::Position;

/// Everything that can go wrong while parsing. Every variant except [`ConfError::Read`] carries
/// the [`Position`] (origin, line, column) of the offending text; the `Display` form starts with
/// `file:line:col: `.
///
/// I/O errors are part of the message rather than a `source()`, so printing the error alone
/// (as a CLI does) already says why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The top-level file could not be read.
    #[error("cannot read configuration file `{}`: {error}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// Text that does not fit the grammar; the message says what was expected.
    #[error("{pos}: {message}")]
    Syntax {
        /// Where.
        pos: Position,
        /// What was wrong.
        message: String,
    },
    /// A quoted string, quoted key, quoted include path or `(` block with no end.
    #[error("{pos}: unterminated {what}")]
    Unterminated {
        /// Where it starts (the opening quote or parenthesis).
        pos: Position,
        /// What it is, e.g. `double-quoted string`.
        what: &'static str,
    },
    /// A `{` or `[` that is never closed.
    #[error("{pos}: `{open}` is never closed")]
    Unclosed {
        /// Position of the opening bracket.
        pos: Position,
        /// `{` or `[`.
        open: char,
    },
    /// A `}` or `]` with no matching opening bracket.
    #[error("{pos}: unexpected `{found}` without a matching `{}`", if *found == '}' { '{' } else { '[' })]
    Unmatched {
        /// Position of the stray bracket.
        pos: Position,
        /// `}` or `]`.
        found: char,
    },
    /// A backslash escape NATS does not allow.
    #[error(
        "{pos}: invalid escape `{escape}` (only \\xHH, \\t, \\n, \\r, \\\" and \\\\ are allowed)"
    )]
    InvalidEscape {
        /// Position of the backslash.
        pos: Position,
        /// The escape as written, e.g. `\q`.
        escape: String,
    },
    /// An integer (after its size suffix) that does not fit in 64 bits.
    #[error("{pos}: integer '{text}' is out of the range")]
    IntegerOutOfRange {
        /// Where.
        pos: Position,
        /// The number as written.
        text: String,
    },
    /// A float too large for `f64`.
    #[error("{pos}: float '{text}' is out of the range")]
    FloatOutOfRange {
        /// Where.
        pos: Position,
        /// The number as written.
        text: String,
    },
    /// `$NAME` with no earlier key `NAME` in scope and no environment variable `NAME`.
    #[error(
        "{pos}: undefined variable `${name}`: no earlier key `{name}` in this or an enclosing \
         block and no environment variable `{name}`"
    )]
    UndefinedVariable {
        /// Position of the reference.
        pos: Position,
        /// The name without `$`.
        name: String,
    },
    /// Environment variables whose values refer to each other in a loop.
    #[error("{pos}: variable reference cycle for `${name}`")]
    VariableCycle {
        /// Position of the reference that closes the loop.
        pos: Position,
        /// The name without `$`.
        name: String,
    },
    /// An environment variable whose text is not a valid NATS conf value.
    #[error("{pos}: environment variable `{name}` (referenced as `${name}`) is not a valid value: {error}")]
    InvalidEnvValue {
        /// Position of the `$NAME` reference.
        pos: Position,
        /// The variable name.
        name: String,
        /// What was wrong with its text.
        error: Box<ConfError>,
    },
    /// An include file that does not exist.
    #[error("{pos}: include file `{}` not found", path.display())]
    IncludeNotFound {
        /// Position of the include path.
        pos: Position,
        /// The path after joining it to the including file's directory.
        path: PathBuf,
    },
    /// An include file that exists but cannot be read (permissions, not UTF-8, a directory...).
    #[error("{pos}: cannot read include file `{}`: {error}", path.display())]
    IncludeRead {
        /// Position of the include path.
        pos: Position,
        /// The path after joining it to the including file's directory.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// A file that (directly or indirectly) includes itself.
    #[error("{pos}: include cycle: `{}` is already being included", path.display())]
    IncludeCycle {
        /// Position of the include path.
        pos: Position,
        /// The path after joining it to the including file's directory.
        path: PathBuf,
    },
    /// Brackets or includes nested deeper than the parser allows; the limit keeps hostile input
    /// from exhausting the stack.
    #[error("{pos}: nesting deeper than {limit} levels")]
    TooDeep {
        /// Where the limit was crossed.
        pos: Position,
        /// The limit.
        limit: usize,
    },
}

impl ConfError {
    /// The position of the error, for every variant but [`ConfError::Read`].
    pub fn position(&self) -> Option<&Position> {
        match self {
            ConfError::Read { .. } => None,
            ConfError::Syntax { pos, .. }
            | ConfError::Unterminated { pos, .. }
            | ConfError::Unclosed { pos, .. }
            | ConfError::Unmatched { pos, .. }
            | ConfError::InvalidEscape { pos, .. }
            | ConfError::IntegerOutOfRange { pos, .. }
            | ConfError::FloatOutOfRange { pos, .. }
            | ConfError::UndefinedVariable { pos, .. }
            | ConfError::VariableCycle { pos, .. }
            | ConfError::InvalidEnvValue { pos, .. }
            | ConfError::IncludeNotFound { pos, .. }
            | ConfError::IncludeRead { pos, .. }
            | ConfError::IncludeCycle { pos, .. }
            | ConfError::TooDeep { pos, .. } => Some(pos),
        }
    }
}
