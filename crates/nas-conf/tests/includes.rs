//! `include` directives.

use std::fs;
use std::path::{Path, PathBuf};

use nas_conf::{ConfError, Parser};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

fn parser() -> Parser {
    Parser::new().env(|_| None)
}

#[test]
fn include_forms_merge_top_level_keys_in_place() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.conf", "a1: 1\na2: { x: y }\n");
    write(dir.path(), "b.conf", "b: 2\n");
    write(dir.path(), "c.conf", "c: 3\n");
    let main = write(
        dir.path(),
        "main.conf",
        "first: 0\ninclude \"a.conf\"\ninclude b.conf\nINCLUDE 'c.conf'; after: 4\n",
    );
    let d = parser().parse_file(&main).unwrap();
    assert_eq!(
        d.root().to_string(),
        "{first: 0, a1: 1, a2: {x: \"y\"}, b: 2, c: 3, after: 4}"
    );
    // Positions point into the included file.
    let a1 = d.get("a1").unwrap();
    assert_eq!(a1.pos.file(), Some(dir.path().join("a.conf").as_path()));
    assert_eq!((a1.pos.line, a1.pos.column), (1, 5));
    let (k, _) = d.get_key_value("b").unwrap();
    assert_eq!(
        k.pos.to_string(),
        format!("{}:1:1", dir.path().join("b.conf").display())
    );
    assert_eq!(
        d.files(),
        [
            main.clone(),
            dir.path().join("a.conf"),
            dir.path().join("b.conf"),
            dir.path().join("c.conf")
        ]
    );
}

#[test]
fn include_inside_a_block_and_override_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tls.conf", "cert: /c.pem\nkey: /k.pem\n");
    let main = write(
        dir.path(),
        "main.conf",
        "http {\n  key: early\n  include tls.conf\n  cert: late\n}\n",
    );
    let d = parser().parse_file(&main).unwrap();
    // Later definitions win in both directions.
    assert_eq!(
        d.root().to_string(),
        "{http: {key: \"/k.pem\", cert: \"late\"}}"
    );
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "conf/sub/leaf.conf", "leaf: true\n");
    write(
        dir.path(),
        "conf/sub/mid.conf",
        "include leaf.conf\nmid: 1\n",
    );
    let main = write(dir.path(), "conf/main.conf", "include sub/mid.conf\n");
    let d = parser().parse_file(&main).unwrap();
    assert_eq!(d.root().to_string(), "{leaf: true, mid: 1}");
    // Absolute include paths are used as they are.
    let abs = dir.path().join("conf/sub/leaf.conf");
    let d = parser()
        .parse_str(&format!("include \"{}\"", abs.display()))
        .unwrap();
    assert_eq!(d.root().to_string(), "{leaf: true}");
    assert_eq!(d.files(), [abs]);
}

#[test]
fn include_base_override() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shared/x.conf", "x: 1\n");
    let main = write(dir.path(), "conf/main.conf", "include shared/x.conf\n");
    assert!(matches!(
        parser().parse_file(&main),
        Err(ConfError::IncludeNotFound { .. })
    ));
    let d = parser().include_base(dir.path()).parse_file(&main).unwrap();
    assert_eq!(d.root().to_string(), "{x: 1}");
    let d = parser()
        .include_base(dir.path())
        .parse_str("include shared/x.conf")
        .unwrap();
    assert_eq!(d.root().to_string(), "{x: 1}");
}

#[test]
fn included_keys_are_variables_afterwards_but_includes_have_their_own_scope() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vars.conf", "port: 4222\n");
    write(dir.path(), "uses.conf", "listen: $port\n");
    let main = write(
        dir.path(),
        "main.conf",
        "include vars.conf\nlisten: $port\n",
    );
    let d = parser().parse_file(&main).unwrap();
    assert_eq!(d.get("listen").unwrap().as_i64(), Some(4222));
    // As in nats-server, an included file cannot see the includer's keys.
    let main = write(dir.path(), "main2.conf", "port: 1\ninclude uses.conf\n");
    let err = parser().parse_file(&main).unwrap_err();
    match &err {
        ConfError::UndefinedVariable { pos, name } => {
            assert_eq!(name, "port");
            assert_eq!(pos.file(), Some(dir.path().join("uses.conf").as_path()));
            assert_eq!((pos.line, pos.column), (1, 9));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn include_not_found_reports_path_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.conf", "a: 1\n  include missing.conf\n");
    let err = parser().parse_file(&main).unwrap_err();
    match &err {
        ConfError::IncludeNotFound { pos, path } => {
            assert_eq!(path, &dir.path().join("missing.conf"));
            assert_eq!(pos.file(), Some(main.as_path()));
            assert_eq!((pos.line, pos.column), (2, 11));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:11: include file `{}` not found",
            main.display(),
            dir.path().join("missing.conf").display()
        )
    );
}

#[test]
fn include_of_a_directory_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    let main = write(dir.path(), "main.conf", "include d\n");
    let err = parser().parse_file(&main).unwrap_err();
    assert!(matches!(err, ConfError::IncludeRead { .. }), "{err}");
}

#[test]
fn include_cycles_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "self.conf", "a: 1\ninclude self.conf\n");
    let err = parser().parse_file(&main).unwrap_err();
    match &err {
        ConfError::IncludeCycle { pos, path } => {
            assert_eq!(path, &dir.path().join("self.conf"));
            assert_eq!((pos.line, pos.column), (2, 9));
        }
        other => panic!("unexpected {other}"),
    }

    fs::create_dir(dir.path().join("sub")).unwrap();
    write(dir.path(), "x.conf", "include y.conf\n");
    write(dir.path(), "y.conf", "y: 1\ninclude ./sub/../x.conf\n");
    let x = dir.path().join("x.conf");
    let err = parser().parse_file(&x).unwrap_err();
    match &err {
        ConfError::IncludeCycle { pos, path } => {
            assert_eq!(path, &dir.path().join("./sub/../x.conf"));
            assert_eq!(pos.file(), Some(dir.path().join("y.conf").as_path()));
            assert_eq!(pos.line, 2);
        }
        other => panic!("unexpected {other}"),
    }
    // Including the same file twice (not nested) is fine.
    write(dir.path(), "leaf.conf", "leaf: 1\n");
    let main = write(
        dir.path(),
        "twice.conf",
        "include leaf.conf\ninclude leaf.conf\n",
    );
    assert!(parser().parse_file(&main).is_ok());
}

#[test]
fn long_include_chains_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let n = nas_conf::MAX_INCLUDE_DEPTH + 2;
    for i in 0..n {
        write(
            dir.path(),
            &format!("f{i}.conf"),
            &format!("include f{}.conf\n", i + 1),
        );
    }
    write(dir.path(), &format!("f{n}.conf"), "end: 1\n");
    let err = parser()
        .parse_file(&dir.path().join("f0.conf"))
        .unwrap_err();
    assert!(matches!(err, ConfError::TooDeep { .. }), "{err}");
}

#[test]
fn errors_inside_includes_point_into_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.conf", "ok: 1\nbad: \"unterminated\n");
    let main = write(dir.path(), "main.conf", "include bad.conf\n");
    let err = parser().parse_file(&main).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:6: unterminated double-quoted string",
            dir.path().join("bad.conf").display()
        )
    );
}

#[test]
fn top_level_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let err = nas_conf::parse_file(&missing).unwrap_err();
    assert!(matches!(err, ConfError::Read { .. }));
    assert!(err.position().is_none());
    assert!(err.to_string().starts_with(&format!(
        "cannot read configuration file `{}`: ",
        missing.display()
    )));
    // A file with a syntax error names the file.
    let bad = write(dir.path(), "bad.conf", "a {\n");
    let err = nas_conf::parse_file(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:1:3: `{{` is never closed", bad.display())
    );
}

#[test]
fn include_directive_syntax_errors() {
    let p = parser();
    let e = p.parse_str("include \"x.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:1:9: unterminated quoted include path"
    );
    let e = p.parse_str("include  \nx: 1").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:1:10: expected an include path, found end of line"
    );
    let e = p.parse_str("include [a]").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<string>:1:9: expected an include path, found `[`"
    );
    // No include through an environment variable.
    let p = Parser::new().env(|n| (n == "E").then(|| "{ include x.conf }".to_string()));
    let e = p.parse_str("a: $E").unwrap_err();
    assert!(matches!(e, ConfError::InvalidEnvValue { .. }), "{e}");
}
