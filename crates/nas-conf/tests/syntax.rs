//! Every syntax form of the NATS conf format.

use nas_conf::{Document, Parser, Value};

/// Parses with an empty environment so the host's variables cannot leak into results.
fn parse(src: &str) -> Document {
    Parser::new()
        .env(|_| None)
        .parse_str(src)
        .unwrap_or_else(|e| panic!("parse failed: {e}\n--- input ---\n{src}"))
}

fn tree(src: &str) -> String {
    parse(src).root().to_string()
}

#[test]
fn key_value_separators() {
    assert_eq!(
        tree("a: 1\nb = 2\nc 3\nd:4\ne=5"),
        "{a: 1, b: 2, c: 3, d: 4, e: 5}"
    );
    assert_eq!(tree("a : 1\nb\t=\t2\nc\t3"), "{a: 1, b: 2, c: 3}");
}

#[test]
fn blocks() {
    let want = "{http: {port: 9090, host: \"x\"}}";
    assert_eq!(tree("http { port: 9090\n host: x }"), want);
    assert_eq!(tree("http: { port: 9090, host: x }"), want);
    assert_eq!(tree("http = {port: 9090; host: x}"), want);
    assert_eq!(tree("http {\n  port: 9090\n  host: x\n}\n"), want);
    assert_eq!(tree("http{port:9090,host:x}"), want);
    // Brace on its own line.
    assert_eq!(tree("http\n{\n  port: 9090\n  host: x\n}"), want);
    assert_eq!(tree("a {}\nb: {}"), "{a: {}, b: {}}");
    assert_eq!(tree("a { b { c { d: 1 } } }"), "{a: {b: {c: {d: 1}}}}");
}

#[test]
fn outer_braces() {
    assert_eq!(tree("{\n  a: 1\n  b { c: 2 }\n}\n"), "{a: 1, b: {c: 2}}");
    assert_eq!(tree("{ a: 1, b: 2 }"), "{a: 1, b: 2}");
    // JSON-like, quoted keys.
    assert_eq!(
        tree(r#"{"a": 1, "b": {"c": [1, 2]}}"#),
        "{a: 1, b: {c: [1, 2]}}"
    );
}

#[test]
fn arrays() {
    assert_eq!(tree("a: [1, 2, 3]"), "{a: [1, 2, 3]}");
    assert_eq!(tree("a: [\n  1\n  2\n  3\n]"), "{a: [1, 2, 3]}");
    assert_eq!(tree("a: [\n  1,\n  2,\n  3,\n]"), "{a: [1, 2, 3]}");
    assert_eq!(tree("a: [1\n, 2\n, 3]"), "{a: [1, 2, 3]}");
    assert_eq!(tree("a: []"), "{a: []}");
    assert_eq!(tree("a: [ ]"), "{a: []}");
    assert_eq!(tree("a [x, 'y', \"z\"]"), "{a: [\"x\", \"y\", \"z\"]}");
    assert_eq!(
        tree("a: [[1, 2], {b: 3}, [], true]"),
        "{a: [[1, 2], {b: 3}, [], true]}"
    );
    assert_eq!(
        tree("a: [\n  # first\n  1 # one\n  // second\n  2, // two\n]"),
        "{a: [1, 2]}"
    );
    assert_eq!(
        tree("servers: [nats://a:4222, nats://b:4222]"),
        "{servers: [\"nats://a:4222\", \"nats://b:4222\"]}"
    );
}

#[test]
fn comments() {
    let src = "# leading\n// also leading\na: 1 # trailing\nb: 2 // trailing\n  # indented\nc { # in block\n  d: 3 // in block\n}\n# end";
    assert_eq!(tree(src), "{a: 1, b: 2, c: {d: 3}}");
    // `//` inside a bare value is part of the value.
    assert_eq!(tree("u: nats://h:1 // c"), "{u: \"nats://h:1\"}");
    // `#` inside a bare value too (as in Go).
    assert_eq!(tree("a: b#c"), "{a: \"b#c\"}");
    // A comment after the separator, value on the next line.
    assert_eq!(tree("a: # the value follows\n  42"), "{a: 42}");
    assert_eq!(tree(""), "{}");
    assert_eq!(tree("# only a comment"), "{}");
    assert_eq!(tree("\n\n   \n"), "{}");
}

#[test]
fn double_quoted_strings() {
    let d = parse(r#"a: "x\ty\nz\r\"q\"\\ \x41\xc3\xa9 é""#);
    assert_eq!(d.get("a").unwrap().as_str(), Some("x\ty\nz\r\"q\"\\ Aé é"));
    assert_eq!(
        parse("a: \"multi\nline\"").get("a").unwrap().as_str(),
        Some("multi\nline")
    );
    assert_eq!(parse("a: \"\"").get("a").unwrap().as_str(), Some(""));
    // Quoted text is never a number, boolean or variable.
    assert_eq!(
        tree(r##"a: "1", b: "true", c: "$x", d: "# no comment""##),
        r##"{a: "1", b: "true", c: "$x", d: "# no comment"}"##
    );
}

#[test]
fn single_quoted_strings_are_raw() {
    let d = parse(r"a: 'C:\new\table', b: 'say \x41'");
    assert_eq!(d.get("a").unwrap().as_str(), Some(r"C:\new\table"));
    assert_eq!(d.get("b").unwrap().as_str(), Some(r"say \x41"));
    assert_eq!(
        parse("a: 'it \"is\"'").get("a").unwrap().as_str(),
        Some("it \"is\"")
    );
}

#[test]
fn bare_strings() {
    let d = parse(
        "resolver: URL(http://localhost:9090/jwt/v1/accounts/)\n\
         quoted_url: URL(\"http://localhost:9090/jwt/v1/accounts/\")\n\
         server: nats://127.0.0.1:4222\n\
         listen: 127.0.0.1:4222\n\
         ip: 10.0.0.1\n\
         path: /tmp/x\n\
         rel: ./jwt\n\
         home: ~/nas\n\
         host: localhost\n\
         key: ADT2...GDQ\n\
         dashed: my-host_name.example\n\
         win: C:/nats/store\n",
    );
    let s = |k: &str| d.get(k).unwrap().as_str().unwrap().to_string();
    assert_eq!(s("resolver"), "URL(http://localhost:9090/jwt/v1/accounts/)");
    assert_eq!(
        s("quoted_url"),
        "URL(\"http://localhost:9090/jwt/v1/accounts/\")"
    );
    assert_eq!(s("server"), "nats://127.0.0.1:4222");
    assert_eq!(s("listen"), "127.0.0.1:4222");
    assert_eq!(s("ip"), "10.0.0.1");
    assert_eq!(s("path"), "/tmp/x");
    assert_eq!(s("rel"), "./jwt");
    assert_eq!(s("home"), "~/nas");
    assert_eq!(s("host"), "localhost");
    assert_eq!(s("key"), "ADT2...GDQ");
    assert_eq!(s("dashed"), "my-host_name.example");
    assert_eq!(s("win"), "C:/nats/store");
    // Bare words end at `,`, `;`, `]`, `}`.
    assert_eq!(
        tree("a: x,b: y;c: {d: z}"),
        "{a: \"x\", b: \"y\", c: {d: \"z\"}}"
    );
    // nats-server applies escapes in bare words as well.
    assert_eq!(
        parse(r"a: C:\\data").get("a").unwrap().as_str(),
        Some(r"C:\data")
    );
    assert_eq!(parse(r"a: 1\x41").get("a").unwrap().as_str(), Some("1A"));
    assert_eq!(
        parse(r"a: tru\x65").get("a").unwrap().as_str(),
        Some("true")
    );
}

#[test]
fn paren_blocks() {
    let d = parse("cert: (\n-----BEGIN-----\nabc)def\n  )\n-----END-----\n)\nnext: 1\n");
    assert_eq!(
        d.get("cert").unwrap().as_str(),
        Some("\n-----BEGIN-----\nabc)def\n  )\n-----END-----")
    );
    assert_eq!(d.get("next").unwrap().as_i64(), Some(1));
}

#[test]
fn integers_and_floats() {
    assert_eq!(
        tree("a: 0, b: 42, c: -7, d: 9223372036854775807, e: -9223372036854775808"),
        "{a: 0, b: 42, c: -7, d: 9223372036854775807, e: -9223372036854775808}"
    );
    let d = parse("a: 1.5\nb: -0.25\nc: 3.0\nd: 007");
    assert_eq!(d.get("a").unwrap().value, Value::Float(1.5));
    assert_eq!(d.get("b").unwrap().value, Value::Float(-0.25));
    assert_eq!(d.get("c").unwrap().value, Value::Float(3.0));
    assert_eq!(d.get("d").unwrap().value, Value::Integer(7));
    assert_eq!(d.get("a").unwrap().as_f64(), Some(1.5));
    assert_eq!(d.get("d").unwrap().as_f64(), Some(7.0));
}

#[test]
fn size_suffixes_follow_nats() {
    let cases: &[(&str, i64)] = &[
        ("1k", 1000),
        ("1K", 1000),
        ("1kb", 1024),
        ("1KB", 1024),
        ("1Kb", 1024),
        ("1ki", 1024),
        ("1KiB", 1024),
        ("2m", 2_000_000),
        ("2M", 2_000_000),
        ("2mb", 2 * 1024 * 1024),
        ("2MiB", 2 * 1024 * 1024),
        ("3g", 3_000_000_000),
        ("3gb", 3 * (1 << 30)),
        ("3GI", 3 * (1 << 30)),
        ("1t", 1_000_000_000_000),
        ("1tb", 1 << 40),
        ("1p", 1_000_000_000_000_000),
        ("1pb", 1 << 50),
        ("1e", 1_000_000_000_000_000_000),
        ("1eb", 1 << 60),
        ("7EiB", 7 << 60),
        ("-1k", -1000),
        ("10Gb", 10 * (1 << 30)),
    ];
    for (text, want) in cases {
        let d = parse(&format!("v: {text}"));
        assert_eq!(d.get("v").unwrap().as_i64(), Some(*want), "{text}");
    }
}

#[test]
fn durations_stay_strings() {
    let d = parse("a: 2s\nb: 500ms\nc: 1m30s\nd: 2h\ne: \"2m\"\nf: 1.9s\ng: '1h'\nh: 2m");
    for k in ["a", "b", "c", "d", "e", "f", "g"] {
        assert!(d.get(k).unwrap().as_str().is_some(), "{k}");
    }
    let ms = |k: &str| d.get(k).unwrap().as_duration().unwrap().as_millis();
    assert_eq!(ms("a"), 2000);
    assert_eq!(ms("b"), 500);
    assert_eq!(ms("c"), 90_000);
    assert_eq!(ms("d"), 7_200_000);
    assert_eq!(ms("e"), 120_000);
    assert_eq!(ms("f"), 1900);
    assert_eq!(ms("g"), 3_600_000);
    // NATS reads an unquoted 2m as 2 million.
    assert_eq!(d.get("h").unwrap().as_i64(), Some(2_000_000));
    assert_eq!(d.get("h").unwrap().as_duration(), None);
}

#[test]
fn booleans() {
    for (t, want) in [
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("yes", true),
        ("Yes", true),
        ("on", true),
        ("ON", true),
        ("false", false),
        ("False", false),
        ("no", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
    ] {
        assert_eq!(
            parse(&format!("b: {t}")).get("b").unwrap().as_bool(),
            Some(want),
            "{t}"
        );
    }
    // Only exact words.
    assert_eq!(parse("b: truex").get("b").unwrap().as_str(), Some("truex"));
    assert_eq!(parse("b: 'true'").get("b").unwrap().as_str(), Some("true"));
}

#[test]
fn datetimes_stay_strings() {
    let d = parse("t: 2016-05-04T18:53:41Z");
    assert_eq!(d.get("t").unwrap().as_str(), Some("2016-05-04T18:53:41Z"));
}

#[test]
fn semicolons_and_commas_terminate() {
    assert_eq!(tree("a: 1; b: 2; c: 3;"), "{a: 1, b: 2, c: 3}");
    assert_eq!(tree("a: 1, b: 2, c: 3,"), "{a: 1, b: 2, c: 3}");
    assert_eq!(tree("a: 1;\nb: 2,\n"), "{a: 1, b: 2}");
    assert_eq!(tree("x { a: 1; b: 2; }"), "{x: {a: 1, b: 2}}");
    // Go account-server docs style: a comma after a block.
    assert_eq!(
        tree("OperatorJWTPath: \"/x.jwt\",\nhttp {\n    port: 9090\n},\nstore {\n    dir: /tmp/s,\n    shard: true\n}"),
        "{OperatorJWTPath: \"/x.jwt\", http: {port: 9090}, store: {dir: \"/tmp/s\", shard: true}}"
    );
}

#[test]
fn entries_on_one_line_without_commas() {
    // Go needs a `,` here; accepted when the next entry has its own separator.
    assert_eq!(
        tree("resolver { type: full dir: './jwt' }"),
        "{resolver: {type: \"full\", dir: \"./jwt\"}}"
    );
    assert_eq!(tree("a: 1 b = 2 \"c\": x"), "{a: 1, b: 2, c: \"x\"}");
    // Without a separator the extra word is an error, not a silently swallowed entry.
    let e = Parser::new()
        .env(|_| None)
        .parse_str("a: hello world 1")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:1:10: unexpected `w` after a value; expected a newline, `,`, `;` or `}`"
    );
}

#[test]
fn quoted_keys() {
    let d = parse("\"my key\": 1\n'other key' = 2\n\"a:b\" 3");
    assert_eq!(d.get("my key").unwrap().as_i64(), Some(1));
    assert_eq!(d.get("other key").unwrap().as_i64(), Some(2));
    assert_eq!(d.get("a:b").unwrap().as_i64(), Some(3));
}

#[test]
fn duplicate_keys_last_wins() {
    let d = parse("a: 1\nb: 2\na: 3");
    assert_eq!(d.get("a").unwrap().as_i64(), Some(3));
    assert_eq!(d.get("a").unwrap().pos.line, 3);
    assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "b"]);
    // Blocks are replaced, not merged.
    let d = parse("h { a: 1 }\nh { b: 2 }");
    assert_eq!(d.root().to_string(), "{h: {b: 2}}");
}

#[test]
fn case_insensitive_lookup() {
    let d = parse("operatorjwtpath: /a\nHTTP { Port: 1 }\nSystemAccountJWTPath: /b");
    assert_eq!(d.get("OperatorJWTPath").unwrap().as_str(), Some("/a"));
    assert_eq!(d.get("OPERATORJWTPATH").unwrap().as_str(), Some("/a"));
    assert_eq!(d.get("systemaccountjwtpath").unwrap().as_str(), Some("/b"));
    let http = d.get("http").unwrap().as_map().unwrap();
    assert_eq!(http.get("port").unwrap().as_i64(), Some(1));
    assert!(d.get("operator_jwt_path").is_none());
    assert!(d.contains_key("Http"));
    // The key's original spelling is kept.
    let (k, _) = d.get_key_value("http").unwrap();
    assert_eq!(k.value, "HTTP");
    // Exact spelling wins, then all-lower-case, then the last case-insensitive match.
    let d = parse("Port: 1\nport: 2\nPORT: 3\npOrT: 4");
    assert_eq!(d.get("Port").unwrap().as_i64(), Some(1));
    assert_eq!(d.get("PORT").unwrap().as_i64(), Some(3));
    assert_eq!(d.get("PoRt").unwrap().as_i64(), Some(2));
    let d = parse("PORT: 3\npOrT: 4");
    assert_eq!(d.get("Port").unwrap().as_i64(), Some(4));
    assert_eq!(d.get_exact("port").map(|v| v.as_i64()), None);
}

#[test]
fn map_remove_and_iter() {
    let d = parse("a: 1\nB: 2\nb: 3\nc: 4");
    let mut m = d.into_root();
    assert_eq!(m.len(), 4);
    assert_eq!(m.remove("b").unwrap().as_i64(), Some(3));
    assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
    let seen: Vec<(String, u32)> = m
        .iter()
        .map(|(k, v)| (k.value.clone(), v.pos.line))
        .collect();
    assert_eq!(seen, [("a".to_string(), 1), ("c".to_string(), 4)]);
    assert!(m.remove("zzz").is_none());
}

#[test]
fn include_keyword_only_with_whitespace() {
    // `include: x` is an ordinary key.
    assert_eq!(tree("include: x"), "{\"include\": \"x\"}");
    assert_eq!(tree("include = 5"), "{\"include\": 5}");
    assert_eq!(tree("includes x"), "{includes: \"x\"}");
}

#[test]
fn variables_from_scope() {
    let d = parse(
        "port: 4222\n\
         listen: $port\n\
         outer: o\n\
         a {\n  port: 1\n  x: $port\n  y: $outer\n  b { z: $port }\n}\n\
         list: [$port, {q: $port}]\n",
    );
    assert_eq!(d.get("listen").unwrap().as_i64(), Some(4222));
    let a = d.get("a").unwrap().as_map().unwrap();
    assert_eq!(a.get("x").unwrap().as_i64(), Some(1));
    assert_eq!(a.get("y").unwrap().as_str(), Some("o"));
    assert_eq!(
        a.get("b")
            .unwrap()
            .as_map()
            .unwrap()
            .get("z")
            .unwrap()
            .as_i64(),
        Some(1)
    );
    assert_eq!(d.get("list").unwrap().to_string(), "[4222, {q: 4222}]");
    // Blocks can be referenced too; the reference position is where it is used.
    let d = parse("tls { cert: c }\nhttp { tls: $tls }\n");
    let http = d.get("http").unwrap().as_map().unwrap();
    assert_eq!(http.get("tls").unwrap().to_string(), "{cert: \"c\"}");
    assert_eq!(http.get("tls").unwrap().pos.line, 2);
    assert_eq!(http.get("tls").unwrap().pos.column, 13);
    // Variable names are case-sensitive, as in nats-server.
    let err = Parser::new()
        .env(|_| None)
        .parse_str("Port: 1\nx: $port")
        .unwrap_err();
    assert!(
        matches!(err, nas_conf::ConfError::UndefinedVariable { .. }),
        "{err}"
    );
}

#[test]
fn variables_from_environment() {
    let p = Parser::new().env(|name| match name {
        "NUM" => Some("8080".into()),
        "HOST" => Some("example.com".into()),
        "QUOTED" => Some("\"a b\"".into()),
        "LIST" => Some("[1, 2]".into()),
        "MAP" => Some("{ a: 1 }".into()),
        "BOOL" => Some("yes".into()),
        "EMPTY" => Some("".into()),
        "CHAIN" => Some("$NUM".into()),
        "port" => Some("from-env".into()),
        _ => None,
    });
    let d = p
        .parse_str(
            "n: $NUM\nh: $HOST\nq: $QUOTED\nl: $LIST\nm: $MAP\nb: $BOOL\ne: $EMPTY\nc: $CHAIN\n\
             port: 1\np: $port\n",
        )
        .unwrap();
    assert_eq!(
        d.root().to_string(),
        "{n: 8080, h: \"example.com\", q: \"a b\", l: [1, 2], m: {a: 1}, b: true, e: \"\", \
         c: 8080, port: 1, p: 1}"
    );
    // The value's position is the reference.
    assert_eq!(d.get("n").unwrap().pos.to_string(), "<string>:1:4");
}

#[test]
fn process_environment_is_the_default_fallback() {
    // PATH exists in any test environment; avoid set_var (tests run in parallel).
    let path = std::env::var("PATH").unwrap();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/:._-".contains(c);
    if path.is_empty() || !path.starts_with('/') || !path.chars().all(plain) {
        return;
    }
    let d = nas_conf::parse_str("p: $PATH").unwrap();
    assert_eq!(d.get("p").unwrap().as_str(), Some(path.as_str()));
}

#[test]
fn bcrypt_hashes_are_not_variables() {
    let d = parse("password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG");
    assert_eq!(
        d.get("password").unwrap().as_str(),
        Some("$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG")
    );
}

#[test]
fn positions_of_keys_and_values() {
    let src = "# comment\nhttp {\n  port: 9090\n\thost: \"h\"\n}\nlist: [\n  a,\n    b\n]\n";
    let d = parse(src);
    let (k, v) = d.get_key_value("http").unwrap();
    assert_eq!((k.pos.line, k.pos.column), (2, 1));
    assert_eq!((v.pos.line, v.pos.column), (2, 6));
    let http = v.as_map().unwrap();
    let (k, v) = http.get_key_value("port").unwrap();
    assert_eq!((k.pos.line, k.pos.column), (3, 3));
    assert_eq!((v.pos.line, v.pos.column), (3, 9));
    let (k, v) = http.get_key_value("host").unwrap();
    assert_eq!((k.pos.line, k.pos.column), (4, 2));
    assert_eq!((v.pos.line, v.pos.column), (4, 8));
    let list = d.get("list").unwrap().as_array().unwrap();
    assert_eq!((list[0].pos.line, list[0].pos.column), (7, 3));
    assert_eq!((list[1].pos.line, list[1].pos.column), (8, 5));
    assert_eq!(list[1].pos.to_string(), "<string>:8:5");
    assert_eq!(list[1].pos.file(), None);
    // Columns count characters, not bytes.
    let d = parse("é: \"ü\", x: 1");
    assert_eq!(d.get("x").unwrap().pos.column, 12);
}

#[test]
fn crlf_line_endings() {
    let d = parse("a: 1\r\nb {\r\n  c: x\r\n}\r\nl: [1,\r\n 2]\r\n");
    assert_eq!(d.root().to_string(), "{a: 1, b: {c: \"x\"}, l: [1, 2]}");
    assert_eq!(
        d.get("b")
            .unwrap()
            .as_map()
            .unwrap()
            .get("c")
            .unwrap()
            .pos
            .line,
        3
    );
}

#[test]
fn byte_order_mark_is_ignored() {
    assert_eq!(tree("\u{feff}a: 1"), "{a: 1}");
}

#[test]
fn display_round_trips() {
    let src = "a: \"q\\\"\\\\\\n\\t\\x01\"\nb: [1, 2.5, -3.0, true, {c: 'x y'}]\n\"k k\": {}\n'we\"ird': 1\ninclude: 2";
    let once = tree(src);
    let twice = tree(&once);
    assert_eq!(once, twice);
}
