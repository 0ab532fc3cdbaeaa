//! Property-style robustness: the parser never panics (and never overflows the stack) on random,
//! mutated or truncated input, and whatever parses prints back to an equal tree.

use nas_conf::Parser;

/// xorshift64*: deterministic, dependency-free, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    "# nats-account-server\nOperatorJWTPath: \"/etc/nas/operator.jwt\"\nhttp: { host: \"0.0.0.0\", port: 9090 }\nnats: {\n  servers: [\"nats://a:4222\", \"nats://b:4222\"]\n  ConnectTimeout: 5000\n}\n",
    "resolver: URL(http://localhost:9090/jwt/v1/accounts/)\nresolver_preload { ACC: eyJhbGc.eyJzdWI.c2ln }\n",
    "resolver { type: full dir: './jwt' allow_delete: true interval: \"2m\" }\n",
    "{ a = 1k; b = 2MiB, c: -3.5 d yes }\nlist [\n 1\n 'two', \"th\\x72ee\"\n]\n",
    "port: 4222\nx { p: $port, q: [$port, {r: $port}] }\npw: $2a$11$abc\n",
    "cert: (\n-----BEGIN-----\nabc\n)\nt: 2016-05-04T18:53:41Z\nv: $ENV1\nw: $ENV2\n",
    "include missing.conf\ninclude: 1\n'q k' = \"v\\n\"\n",
];

/// Fragments that exercise every branch of the lexer.
const PIECES: &[&str] = &[
    "a",
    "key",
    "include ",
    "include",
    ":",
    "=",
    " ",
    "\t",
    "\n",
    "\r\n",
    ",",
    ";",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\n)\n",
    "\"",
    "'",
    "\\",
    "\\x",
    "\\x4",
    "\\xe9",
    "\\n",
    "#",
    "//",
    "/",
    "$",
    "$a",
    "$ENV1",
    "$ENV2",
    "$LOOP",
    "$2a$",
    "1",
    "-",
    "-1",
    "1.5",
    "1.",
    ".5",
    "9k",
    "1kb",
    "1MiB",
    "99999999999999999999",
    "9eb",
    "true",
    "NO",
    "URL(",
    "http://h:1/p",
    "127.0.0.1:4222",
    "2016-05-04T18:53:41Z",
    "é",
    "\u{feff}",
    "\0",
];

/// Iterations scale with `NAS_CONF_FUZZ_SCALE` (default 1) for longer local runs.
fn scaled(n: usize) -> usize {
    let scale = std::env::var("NAS_CONF_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize);
    n.saturating_mul(scale.max(1))
}

/// Seed offset from `NAS_CONF_FUZZ_SEED` so longer runs can explore new inputs.
fn seed(base: u64) -> u64 {
    let extra: u64 = std::env::var("NAS_CONF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (base ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1)
}

fn parser() -> Parser {
    Parser::new().env(|name| match name {
        "ENV1" => Some("[1, {a: $ENV2}]".into()),
        "ENV2" => Some("'x'".into()),
        "LOOP" => Some("$LOOP".into()),
        _ => None,
    })
}

/// Parses; if that succeeds, the printed tree must parse to the same printed tree.
fn check(p: &Parser, src: &str) {
    if let Ok(doc) = p.parse_str(src) {
        let printed = doc.root().to_string();
        let again = p
            .parse_str(&printed)
            .unwrap_or_else(|e| panic!("reprint of {src:?} failed: {e}\n{printed}"));
        assert_eq!(printed, again.root().to_string(), "input {src:?}");
    }
}

#[test]
fn truncations_of_valid_configs() {
    let p = parser();
    for seed in SEEDS {
        for (i, _) in seed.char_indices() {
            check(&p, &seed[..i]);
            check(&p, &seed[i..]);
        }
    }
}

#[test]
fn random_piece_soup() {
    let p = parser();
    let mut rng = Rng(seed(0x9e37_79b9_7f4a_7c15));
    for _ in 0..scaled(20_000) {
        let n = rng.below(24);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
        check(&p, &s);
    }
}

#[test]
fn random_mutations_of_valid_configs() {
    let p = parser();
    let mut rng = Rng(seed(0xdead_beef_cafe_f00d));
    for _ in 0..scaled(10_000) {
        let mut chars: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
        for _ in 0..=rng.below(4) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    for (k, c) in piece.chars().enumerate() {
                        chars.insert(at + k, c);
                    }
                }
                _ if at < chars.len() => {
                    chars[at] = char::from_u32(rng.below(0x80) as u32).unwrap_or('x');
                }
                _ => {}
            }
        }
        let s: String = chars.into_iter().collect();
        check(&p, &s);
    }
}

#[test]
fn random_bytes() {
    let p = parser();
    let mut rng = Rng(seed(42));
    for _ in 0..scaled(5_000) {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        check(&p, &String::from_utf8_lossy(&bytes));
    }
}
