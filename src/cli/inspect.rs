//! `inspect <file|url|->`: decodes a JWT of any kind (or the JWT of a creds or decorated file),
//! shows its header and claims, verifies its signature and, with `--operator`, tells whether
//! this server would accept it, with the reason a refused POST gives.

use std::path::PathBuf;
use std::process::ExitCode;

use nas_jwt::{ClaimKind, JwtError};
use serde_json::{json, Map, Value};

use super::{CliError, EXIT_REFUSED};

/// The end of `inspect --help`: exit codes.
pub const AFTER_HELP: &str = "\
EXIT CODES:
  0 the JWT decodes and its signature verifies (and, with --operator, it would be accepted);
  1 it does not verify, or the operator's rule refuses it; 2 usage error, or the file or URL
  cannot be read.";

/// `inspect`'s arguments.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The JWT: a file (raw JWT, decorated JWT or creds file), `-` for standard input, or an
    /// http(s):// URL to GET (e.g. `http://localhost:9090/jwt/v1/accounts/KEY`).
    #[arg(value_name = "FILE|URL|-")]
    pub source: String,
    /// Operator JWT file: also check the JWT with this server's accept rule (the checks of
    /// POST /jwt/v1/accounts, time included) and print the reason it would be refused.
    #[arg(long, value_name = "OPERATOR.JWT")]
    pub operator: Option<PathBuf>,
    /// Print one JSON object (kind, version, header, claims, signature, times, operator verdict).
    #[arg(long)]
    pub json: bool,
}

/// What the operator's rule said.
struct Verdict {
    operator: String,
    accepted: bool,
    reason: Option<String>,
    note: Option<&'static str>,
}

/// Everything `inspect` found out.
struct Report {
    source: String,
    creds: Option<bool>,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    kind: String,
    version: u8,
    signature: Result<(), JwtError>,
    verdict: Option<Verdict>,
    now: i64,
}

/// Runs `inspect`.
pub async fn run(args: &InspectArgs) -> ExitCode {
    match report(args).await {
        Ok(report) => {
            if args.json {
                println!("{}", to_json(&report));
            } else {
                print_human(&report);
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            }
        }
        Err(e) => e.exit("inspect"),
    }
}

async fn report(args: &InspectArgs) -> Result<Report, CliError> {
    let trust = args
        .operator
        .as_deref()
        .map(super::load_operator)
        .transpose()?;
    let bytes = super::read_source(&args.source).await?;
    let text = String::from_utf8_lossy(&bytes);
    let creds = text
        .contains("-----BEGIN")
        .then(|| nas_jwt::creds::extract_seed(&text).is_some());
    let token = nas_jwt::creds::extract_jwt(&text).trim().to_owned();
    let undecodable = |e: JwtError| CliError::Io(format!("{}: not a JWT: {e}", args.source));
    let header = nas_jwt::jwt::peek_header(token.as_bytes()).map_err(undecodable)?;
    let claims = nas_jwt::jwt::peek_payload(token.as_bytes()).map_err(undecodable)?;
    let decoded = decode(&token, &claims);
    let (kind, version) = match &decoded {
        Ok(jwt) => (jwt.kind().name().to_owned(), jwt.version()),
        Err(_) => peeked_kind(&claims),
    };
    let now = nas_jwt::unix_now();
    let verdict = trust.map(|t| judge(t, &token, decoded.as_ref().ok(), now));
    Ok(Report {
        source: args.source.clone(),
        creds,
        header,
        claims,
        kind,
        version,
        signature: decoded.map(|_| ()),
        verdict,
        now,
    })
}

/// Decodes and verifies the token; untyped claims (delete requests, say) as the generic
/// claims they are, as the server's delete rule reads them.
fn decode(token: &str, claims: &Map<String, Value>) -> Result<nas_jwt::Jwt, JwtError> {
    nas_jwt::decode(token.as_bytes()).or_else(|e| match peeked_kind(claims).0.as_str() {
        "generic" => nas_jwt::decode_generic(token.as_bytes()),
        _ => Err(e),
    })
}

/// The claim type and JWT version as written, for a token that does not decode.
fn peeked_kind(claims: &Map<String, Value>) -> (String, u8) {
    let v2 = claims
        .get("nats")
        .and_then(|n| n.get("type"))
        .and_then(Value::as_str);
    let v1 = claims.get("type").and_then(Value::as_str);
    let kind = v2.or(v1).unwrap_or("generic").to_owned();
    (kind, if v2.is_some() || v1.is_none() { 2 } else { 1 })
}

/// The operator's verdict: the accept rule for everything but activations (a user or operator
/// JWT is refused as a POST of it would be); activations get the activation rule's checks that
/// need no store.
fn judge(
    trust: nas_jwt::OperatorTrust,
    token: &str,
    jwt: Option<&nas_jwt::Jwt>,
    now: i64,
) -> Verdict {
    let operator = trust.identity().to_owned();
    if let Some(jwt) = jwt.filter(|j| j.kind() == ClaimKind::Activation) {
        let reason = activation_refusal(jwt, now);
        return Verdict {
            operator,
            accepted: reason.is_none(),
            reason,
            note: Some(
                "an activation is stored only when its issuing account is held by the server",
            ),
        };
    }
    let accepter = super::accepter(trust);
    let result = accepter.check(None, token.as_bytes(), now);
    Verdict {
        operator,
        accepted: result.is_ok(),
        reason: result.err().map(|e| super::refusal_text(&e)),
        note: None,
    }
}

/// The checks of POST /jwt/v1/activations that need no store, with its messages.
fn activation_refusal(jwt: &nas_jwt::Jwt, now: i64) -> Option<String> {
    use nas_server::activation::ActivationError;
    let nas_jwt::AnyClaims::Activation(claims) = jwt.claims() else {
        return Some(ActivationError::Malformed.to_string());
    };
    let refusal = if !nas_jwt::is_valid_public_key(&claims.sub, nas_jwt::KeyRole::Account) {
        ActivationError::BadSubject
    } else if nas_jwt::activation_hash_id(claims).is_err() {
        ActivationError::BadHash
    } else if claims.exp > 0 && now > claims.exp {
        ActivationError::Expired
    } else if claims.nbf > now {
        ActivationError::NotYetValid
    } else {
        return None;
    };
    Some(refusal.to_string())
}

impl Report {
    fn ok(&self) -> bool {
        self.signature.is_ok() && self.verdict.as_ref().is_none_or(|v| v.accepted)
    }

    fn int(&self, key: &str) -> i64 {
        self.claims.get(key).and_then(Value::as_i64).unwrap_or(0)
    }

    fn text(&self, key: &str) -> &str {
        self.claims
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn to_json(r: &Report) -> Value {
    let (exp, nbf) = (r.int("exp"), r.int("nbf"));
    json!({
        "source": r.source,
        "ok": r.ok(),
        "kind": r.kind,
        "version": r.version,
        "creds": r.creds.map(|seed| json!({ "user_seed": seed })),
        "signature": match &r.signature {
            Ok(()) => json!({ "valid": true }),
            Err(e) => json!({ "valid": false, "error": e.to_string() }),
        },
        "times": {
            "iat": r.int("iat"),
            "exp": exp,
            "nbf": nbf,
            "expired": exp > 0 && r.now > exp,
            "not_yet_valid": nbf > r.now,
        },
        "header": r.header,
        "claims": r.claims,
        "operator": r.verdict.as_ref().map(|v| json!({
            "key": v.operator,
            "accepted": v.accepted,
            "reason": v.reason,
            "note": v.note,
        })),
    })
}

fn when(secs: i64, none: &str) -> String {
    if secs == 0 {
        none.to_owned()
    } else {
        format!("{secs} ({})", super::format_time(secs))
    }
}

fn print_human(r: &Report) {
    let signature = match &r.signature {
        Ok(()) => "signature valid".to_owned(),
        Err(e) => format!("INVALID: {e}"),
    };
    println!("{} JWT (v{}), {signature}", r.kind, r.version);
    if let Some(seed) = r.creds {
        let seed = if seed {
            "with a user seed (not shown)"
        } else {
            "without a seed"
        };
        println!("from a creds/decorated file, {seed}");
    }
    println!("header:      {}", Value::Object(r.header.clone()));
    println!("subject:     {}", r.text("sub"));
    println!("issuer:      {}", r.text("iss"));
    println!("name:        {}", r.text("name"));
    println!("issued at:   {}", when(r.int("iat"), "-"));
    let exp = r.int("exp");
    let expired = if exp > 0 && r.now > exp {
        "  EXPIRED"
    } else {
        ""
    };
    println!("expires:     {}{expired}", when(exp, "never"));
    let nbf = r.int("nbf");
    let early = if nbf > r.now { "  NOT YET VALID" } else { "" };
    println!("not before:  {}{early}", when(nbf, "-"));
    println!("jti:         {}", r.text("jti"));
    let pretty = serde_json::to_string_pretty(&Value::Object(r.claims.clone())).unwrap_or_default();
    println!("claims:\n{pretty}");
    if let Some(v) = &r.verdict {
        match &v.reason {
            None => println!("operator {}: accepted", v.operator),
            Some(reason) => println!("operator {}: REFUSED: {reason}", v.operator),
        }
        if let Some(note) = v.note {
            println!("note: {note}");
        }
    }
}
