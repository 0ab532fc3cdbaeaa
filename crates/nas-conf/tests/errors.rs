//! Errors, with exact positions and messages.

use nas_conf::{ConfError, Parser};

fn err(src: &str) -> ConfError {
    match Parser::new().env(|_| None).parse_str(src) {
        Ok(d) => panic!("expected an error for {src:?}, got {}", d.root()),
        Err(e) => e,
    }
}

/// Asserts the full `Display` text, which starts with `<string>:line:col:`.
fn assert_err(src: &str, want: &str) {
    assert_eq!(err(src).to_string(), want, "input: {src:?}");
}

#[test]
fn unterminated_strings() {
    assert_err(
        "a: \"abc",
        "<string>:1:4: unterminated double-quoted string",
    );
    assert_err(
        "a: 1\nb:   'abc\n\n",
        "<string>:2:6: unterminated single-quoted string",
    );
    assert_err(
        "a: \"abc\\",
        "<string>:1:4: unterminated double-quoted string",
    );
    assert_err("\"key: 1", "<string>:1:1: unterminated quoted key");
    assert_err("x {\n  'key: 1 }", "<string>:2:3: unterminated quoted key");
    assert_err(
        "a: (\nno end\n",
        "<string>:1:4: unterminated `(` block (it ends with `)` alone on a line)",
    );
}

#[test]
fn unbalanced_brackets() {
    assert_err("a {\n  b: 1\n", "<string>:1:3: `{` is never closed");
    assert_err(
        "a {\n  b {\n    c: 1\n  }\n",
        "<string>:1:3: `{` is never closed",
    );
    assert_err("a: [1, 2\n", "<string>:1:4: `[` is never closed");
    assert_err("a: [1,\n  2,\n", "<string>:1:4: `[` is never closed");
    assert_err(
        "a: 1\n}\n",
        "<string>:2:1: unexpected `}` without a matching `{`",
    );
    assert_err(
        "a { b: 1 } }",
        "<string>:1:12: unexpected `}` without a matching `{`",
    );
    assert_err("]", "<string>:1:1: unexpected `]` without a matching `[`");
    assert_err("{ a: 1", "<string>:1:1: `{` is never closed");
    let e = err("x {\n  y: [\n");
    assert!(matches!(e, ConfError::Unclosed { open: '[', .. }), "{e}");
    assert_eq!(e.position().map(|p| (p.line, p.column)), Some((2, 6)));
}

#[test]
fn undefined_variables() {
    assert_err(
        "a: 1\nb: $NOPE\n",
        "<string>:2:4: undefined variable `$NOPE`: no earlier key `NOPE` in this or an \
         enclosing block and no environment variable `NOPE`",
    );
    // Defined later does not count.
    let e = err("a: $b\nb: 1");
    match &e {
        ConfError::UndefinedVariable { pos, name } => {
            assert_eq!(name, "b");
            assert_eq!((pos.line, pos.column), (1, 4));
        }
        other => panic!("unexpected {other}"),
    }
    // Nor does a key of a sibling block.
    let e = err("x { p: 1 }\ny { q: $p }");
    assert!(matches!(e, ConfError::UndefinedVariable { .. }), "{e}");
    // Inside an array.
    let e = err("a: [1,\n  $missing]");
    assert_eq!(e.position().map(|p| (p.line, p.column)), Some((2, 3)));
    // A bare `$`.
    assert!(matches!(err("a: $"), ConfError::UndefinedVariable { .. }));
}

#[test]
fn environment_variable_errors() {
    let p = Parser::new().env(|n| match n {
        "A" => Some("$B".into()),
        "B" => Some("$A".into()),
        "SELF" => Some("[$SELF]".into()),
        "BAD" => Some("\"open".into()),
        "TWO" => Some("one two".into()),
        "DANGLING" => Some("$NOWHERE".into()),
        _ => None,
    });
    let e = p.parse_str("x: $A").unwrap_err();
    match &e {
        ConfError::VariableCycle { name, pos } => {
            assert_eq!(name, "A");
            assert_eq!(pos.to_string(), "<env B>:1:1");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(matches!(
        p.parse_str("x: $SELF").unwrap_err(),
        ConfError::VariableCycle { .. }
    ));
    let e = p.parse_str("x: 1\ny: $BAD").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:2:4: environment variable `BAD` (referenced as `$BAD`) is not a valid value: \
         <env BAD>:1:1: unterminated double-quoted string"
    );
    let e = p.parse_str("y: $TWO").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:1:4: environment variable `TWO` (referenced as `$TWO`) is not a valid value: \
         <env TWO>:1:5: unexpected `t` after the value"
    );
    let e = p.parse_str("y: $DANGLING").unwrap_err();
    match e {
        ConfError::InvalidEnvValue { name, error, .. } => {
            assert_eq!(name, "DANGLING");
            assert!(matches!(*error, ConfError::UndefinedVariable { .. }));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn invalid_escapes() {
    assert_err(
        "a: \"x\\qy\"",
        "<string>:1:6: invalid escape `\\q` (only \\xHH, \\t, \\n, \\r, \\\" and \\\\ are allowed)",
    );
    assert_err(
        "a: \"\\x4\"",
        "<string>:1:5: expected two hexadecimal digits after `\\x`, got `4`",
    );
    assert_err(
        "a: \"\\xzz\"",
        "<string>:1:5: expected two hexadecimal digits after `\\x`, got ``",
    );
    assert_err(
        "a: \"\\xff\"",
        "<string>:1:4: `\\x` escapes in this string do not form valid UTF-8",
    );
    // Bare words too.
    let e = err("a: C:\\data");
    assert!(matches!(e, ConfError::InvalidEscape { .. }), "{e}");
    assert_eq!(e.position().map(|p| p.column), Some(6));
    assert!(matches!(err("a: x\\ y"), ConfError::InvalidEscape { .. }));
}

#[test]
fn numbers_out_of_range() {
    assert_err(
        "a: 9223372036854775808",
        "<string>:1:4: integer '9223372036854775808' is out of the range",
    );
    assert_err(
        "a: -9223372036854775809",
        "<string>:1:4: integer '-9223372036854775809' is out of the range",
    );
    assert_err("a: 9eb", "<string>:1:4: integer '9eb' is out of the range");
    assert_err(
        "x {\n  a: 10000000000000g\n}",
        "<string>:2:6: integer '10000000000000g' is out of the range",
    );
    let big = format!("a: 1{}.5", "0".repeat(400));
    let e = err(&big);
    assert!(matches!(e, ConfError::FloatOutOfRange { .. }), "{e}");
}

#[test]
fn missing_values_and_keys() {
    assert_err("a", "<string>:1:2: expected a value for key `a`");
    assert_err("a:", "<string>:1:3: expected a value for key `a`");
    assert_err("a =  \n", "<string>:1:6: expected a value for key `a`");
    assert_err("a\nb: 1", "<string>:1:2: expected a value for key `a`");
    assert_err(
        "x { a }",
        "<string>:1:7: expected a value for `a`, found `}`",
    );
    assert_err("a: ,", "<string>:1:4: expected a value for `a`, found `,`");
    assert_err(
        ": 1",
        "<string>:1:1: unexpected key separator `:`: missing key",
    );
    assert_err(
        "x {\n  = 1\n}",
        "<string>:2:3: unexpected key separator `=`: missing key",
    );
    assert_err("x { [ }", "<string>:1:5: expected a key, found `[`");
    assert_err("x { { } }", "<string>:1:5: expected a key, found `{`");
}

#[test]
fn junk_after_values() {
    assert_err(
        "a: \"x\" y",
        "<string>:1:8: unexpected `y` after a value; expected a newline, `,`, `;` or `}`",
    );
    assert_err(
        "a: 1 2",
        "<string>:1:6: unexpected `2` after a value; expected a newline, `,`, `;` or `}`",
    );
    assert_err(
        "a { b: 1 } c",
        "<string>:1:12: unexpected `c` after a value; expected a newline, `,`, `;` or `}`",
    );
    assert_err(
        "a: [1 2]",
        "<string>:1:7: unexpected `2` in array; expected `,`, a newline or `]`",
    );
    assert_err(
        "a: [,1]",
        "<string>:1:5: unexpected `,` in array: missing element",
    );
    assert_err(
        "a: [1,,2]",
        "<string>:1:7: unexpected `,` in array: missing element",
    );
    assert_err(
        "a: [1,\n,2]",
        "<string>:2:1: unexpected `,` in array: missing element",
    );
}

#[test]
fn nesting_is_bounded() {
    let deep = "a: ".to_string() + &"[".repeat(100_000);
    let e = err(&deep);
    assert!(matches!(e, ConfError::TooDeep { .. }), "{e}");
    let deep = "a: ".to_string() + &"{b: ".repeat(100_000);
    assert!(matches!(err(&deep), ConfError::TooDeep { .. }));
    let deep = "{".repeat(100_000);
    assert!(matches!(err(&deep), ConfError::TooDeep { .. }));
    // Exactly at the limit is fine.
    let n = nas_conf::MAX_DEPTH;
    let ok = format!("a: {}{}", "[".repeat(n), "]".repeat(n));
    assert!(Parser::new().parse_str(&ok).is_ok());
}

#[test]
fn every_error_has_a_position() {
    for src in [
        "a: \"x",
        "a {",
        "}",
        "a: $X",
        "a: 99999999999999999999",
        "a: \"\\z\"",
        "a",
        "include nowhere/at/all.conf",
    ] {
        let e = err(src);
        let pos = e.position().unwrap_or_else(|| panic!("no position: {e}"));
        assert_eq!(pos.file(), None);
        assert!(e.to_string().starts_with("<string>:"), "{e}");
    }
}
