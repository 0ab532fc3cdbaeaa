//! Table-driven check of every Go-made fixture in `tests/fixtures/jwt/manifest.json`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use nas_jwt::creds::{decorate_jwt, extract_jwt, extract_seed, format_creds};
use nas_jwt::jwt::signature_verifies;
use nas_jwt::{
    check_time, decode, decode_generic, hash_id, AnyClaims, JwtError, KeyRole, OperatorTrust,
    SigningKey, VerifyError, MAX_TOKEN_BYTES,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn repo_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jwt")
}

/// The shared fixture folder beside the repository, present on developer machines and in CI.
fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/jwt")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(repo_fixtures().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

/// Where an entry's file lives: generated ones in the repo, external ones only in shared/.
fn entry_dir(file: &str) -> PathBuf {
    if file.starts_with("external/") {
        shared_fixtures()
    } else {
        repo_fixtures()
    }
}

/// Which vectors a test checks: the generated ones (in the repository, always), or the
/// third-party ones (not redistributed here; in the shared folder beside the repository).
#[derive(Clone, Copy, PartialEq)]
enum Vectors {
    Generated,
    External,
}

impl Vectors {
    /// Whether `file` (or entry id) belongs to this set.
    fn holds(self, id: &str) -> bool {
        id.starts_with("external/") == (self == Vectors::External)
    }

    /// Fails loudly when the set's files are absent (never passes by checking nothing).
    fn require(self) {
        let dir = shared_fixtures().join("external");
        assert!(
            self == Vectors::Generated || dir.is_dir(),
            "the external test vectors are not at {}: they are third-party files, not part of \
             this repository; put them there to run these ignored tests",
            dir.display()
        );
    }
}

fn read_token(entry: &Value) -> Vec<u8> {
    let file = entry["file"].as_str().unwrap();
    let raw = std::fs::read(entry_dir(file).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    if entry["encoding"].as_str() == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

fn opt_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn trust_sets(m: &Value, with_external: bool) -> Vec<(String, OperatorTrust)> {
    m["trust_sets"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(id, _)| with_external || !id.starts_with("external/"))
        .map(|(id, set)| {
            let file = set["operator_file"].as_str().unwrap();
            let bytes = std::fs::read(entry_dir(file).join(file)).unwrap();
            let trust = OperatorTrust::from_operator_jwt(&bytes)
                .unwrap_or_else(|e| panic!("trust set {id}: {e}"));
            assert_eq!(trust.identity(), set["operator"].as_str().unwrap(), "{id}");
            assert_eq!(
                trust.strict(),
                set["strict_signing_key_usage"].as_bool().unwrap(),
                "{id}"
            );
            (id.clone(), trust)
        })
        .collect()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn every_generated_entry_behaves_as_the_go_library_says() {
    let checked = check_entries(Vectors::Generated);
    assert!(checked >= 49, "only {checked} entries checked");
}

#[test]
#[ignore = "needs the third-party vectors in ../shared/fixtures/jwt/external (not redistributed); run with --ignored"]
fn every_external_entry_behaves_as_the_go_library_says() {
    let checked = check_entries(Vectors::External);
    assert!(checked >= 10, "only {checked} entries checked");
}

/// Checks every manifest entry of `set`; returns how many.
fn check_entries(set: Vectors) -> usize {
    set.require();
    let m = manifest();
    let trust = trust_sets(&m, set == Vectors::External);
    let mut checked = 0;
    for entry in m["entries"].as_array().unwrap() {
        let id = entry["id"].as_str().unwrap();
        if !set.holds(id) {
            continue;
        }
        let expect = &entry["expect"];
        let token = read_token(entry);
        if let Some(n) = entry["token_bytes"].as_u64() {
            assert_eq!(token.len() as u64, n, "{id}: token_bytes");
            assert_eq!(
                data_encoding::HEXLOWER.encode(&Sha256::digest(&token)),
                entry["sha256"].as_str().unwrap(),
                "{id}: sha256"
            );
        }
        let kind = entry["kind"].as_str().unwrap();
        let typed = if kind == "generic" {
            decode_generic(&token)
        } else {
            decode(&token)
        };
        let generic = decode_generic(&token);
        let oversize = token.len() > MAX_TOKEN_BYTES;

        // Decode outcome. jwt 2.3.0 has no size cap; we refuse what jwt >= 2.8.1 refuses.
        if oversize {
            assert_eq!(typed, Err(JwtError::TooLarge(token.len())), "{id}");
            assert_eq!(generic, Err(JwtError::TooLarge(token.len())), "{id}");
        } else {
            assert_eq!(
                typed.is_ok(),
                expect["decodes"].as_bool().unwrap(),
                "{id}: decodes {typed:?}"
            );
            assert_eq!(
                generic.is_ok(),
                expect["generic_decodes"].as_bool().unwrap(),
                "{id}: generic_decodes {generic:?}"
            );
        }
        if let (Err(err), Some(go)) = (&typed, expect["go_error"].as_str()) {
            match err {
                JwtError::Json { .. } => assert!(go.contains("invalid character"), "{id}: {go}"),
                other => assert_eq!(other.to_string(), go, "{id}: error text"),
            }
        }
        if !oversize {
            let sig = expect["signature_valid"].as_bool();
            assert_eq!(signature_verifies(&token), sig, "{id}: signature_valid");
        }

        if let Ok(jwt) = &typed {
            let c = jwt.claims();
            assert_eq!(c.sub(), entry["sub"].as_str().unwrap_or(""), "{id}: sub");
            assert_eq!(c.iss(), entry["iss"].as_str().unwrap_or(""), "{id}: iss");
            assert_eq!(c.iat(), opt_i64(&entry["iat"]), "{id}: iat");
            assert_eq!(c.exp(), opt_i64(&entry["exp"]), "{id}: exp");
            assert_eq!(c.nbf(), opt_i64(&entry["nbf"]), "{id}: nbf");
            assert_eq!(c.jti(), entry["jti"].as_str().unwrap_or(""), "{id}: jti");
            assert_eq!(c.name(), entry["name"].as_str().unwrap_or(""), "{id}: name");
            assert_eq!(jwt.computed_jti(), c.jti(), "{id}: recomputed jti");
            assert_eq!(jwt.kind().name(), kind, "{id}: kind");
            assert_eq!(
                i64::from(jwt.version()),
                entry["version"].as_i64().unwrap(),
                "{id}: version"
            );
            if let AnyClaims::Account(account) = c {
                let errors = nas_jwt::validate::account_errors(account);
                assert_eq!(
                    errors.is_empty(),
                    expect["validation_errors"].as_array().unwrap().is_empty(),
                    "{id}: validation {errors:?}"
                );
            }
            if let AnyClaims::Activation(act) = c {
                assert_eq!(
                    nas_jwt::activation_hash_id(act).unwrap(),
                    entry["hash_id"].as_str().unwrap(),
                    "{id}: hash id"
                );
            }
        }

        if let Some(at) = expect["time_valid_at"]["at"].as_i64() {
            let valid = check_time(opt_i64(&entry["exp"]), opt_i64(&entry["nbf"]), at).is_ok();
            assert_eq!(
                valid,
                expect["time_valid_at"]["valid"].as_bool().unwrap(),
                "{id}: time"
            );
        }

        if expect.get("trusted_by").is_some_and(|t| !t.is_null()) {
            let want = ids(&expect["trusted_by"]);
            let iss = entry["iss"].as_str().unwrap_or("");
            let sub = entry["sub"].as_str().unwrap_or("");
            let decoded = if oversize { true } else { typed.is_ok() };
            let got: BTreeSet<String> = trust
                .iter()
                .filter(|(_, t)| {
                    decoded
                        && if kind == "generic" {
                            t.trusts_delete_request(iss, sub)
                        } else {
                            t.trusts_issuer(iss)
                        }
                })
                .map(|(id, _)| id.clone())
                .collect();
            let want: BTreeSet<String> = want
                .into_iter()
                .filter(|t| set == Vectors::External || !t.starts_with("external/"))
                .collect();
            assert_eq!(got, want, "{id}: trusted_by");
        }
        checked += 1;
    }
    println!("checked {checked} manifest entries");
    checked
}

#[test]
fn generated_creds_and_decorated_files_round_trip() {
    creds_round_trip(Vectors::Generated);
}

#[test]
#[ignore = "needs the third-party vectors in ../shared/fixtures/jwt/external (not redistributed); run with --ignored"]
fn external_creds_and_decorated_files_round_trip() {
    creds_round_trip(Vectors::External);
}

fn creds_round_trip(set: Vectors) {
    set.require();
    let m = manifest();
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_fixtures().join("keys.json")).unwrap())
            .unwrap();
    for creds in m["creds"].as_array().unwrap() {
        let file = creds["file"].as_str().unwrap();
        if !set.holds(file) {
            continue;
        }
        let text = std::fs::read_to_string(entry_dir(file).join(file)).unwrap();
        let jwt_file = creds["jwt_file"].as_str().unwrap();
        let jwt = std::fs::read_to_string(entry_dir(jwt_file).join(jwt_file)).unwrap();
        assert_eq!(extract_jwt(&text), jwt.trim(), "{file}: jwt");
        let seed = extract_seed(&text).unwrap();
        let key = SigningKey::from_seed(&seed, KeyRole::User).unwrap();
        assert_eq!(
            key.public_key().as_str(),
            creds["user"].as_str().unwrap(),
            "{file}: seed"
        );
        if let Some(name) = creds["seed_key"].as_str() {
            assert_eq!(seed, keys[name]["seed"].as_str().unwrap(), "{file}");
            assert_eq!(
                format_creds(&jwt, &seed),
                text,
                "{file}: byte-identical creds"
            );
        }
    }
    for deco in m["decorated"].as_array().unwrap() {
        let file = deco["file"].as_str().unwrap();
        if !set.holds(file) {
            continue;
        }
        let text = std::fs::read_to_string(entry_dir(file).join(file)).unwrap();
        let jwt_file = deco["jwt_file"].as_str().unwrap();
        let jwt = std::fs::read_to_string(entry_dir(jwt_file).join(jwt_file)).unwrap();
        assert_eq!(extract_jwt(&text), jwt.trim(), "{file}");
        if !file.starts_with("external/") {
            assert_eq!(
                decorate_jwt(&jwt, deco["kind"].as_str().unwrap()),
                text,
                "{file}"
            );
        }
    }
}

#[test]
fn hash_id_vectors() {
    let m = manifest();
    for v in m["hash_id_vectors"].as_array().unwrap() {
        let s = |k: &str| v[k].as_str().unwrap();
        assert_eq!(
            nas_jwt::activation::clean_subject(s("subject")),
            s("cleaned")
        );
        assert_eq!(
            hash_id(s("iss"), s("sub"), s("subject")).unwrap(),
            s("hash_id")
        );
    }
    assert!(hash_id("", "A", "foo").is_err());
}

#[test]
#[ignore = "compares tests/fixtures/jwt with ../shared/fixtures/jwt, which only a development checkout has; run with --ignored"]
fn fixtures_are_byte_identical_to_shared() {
    let shared = shared_fixtures();
    assert!(
        shared.is_dir(),
        "{} not found: nothing to compare the copied fixtures with",
        shared.display()
    );
    let mut compared = 0;
    for entry in std::fs::read_dir(&shared).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        let name = entry.file_name();
        let ours = std::fs::read(repo_fixtures().join(&name))
            .unwrap_or_else(|_| panic!("{name:?} missing from tests/fixtures/jwt"));
        assert_eq!(
            ours,
            std::fs::read(entry.path()).unwrap(),
            "{name:?} differs"
        );
        compared += 1;
    }
    let ours = std::fs::read_dir(repo_fixtures()).unwrap().count();
    assert_eq!(
        ours, compared,
        "tests/fixtures/jwt has files that shared/ does not"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_fixtures().join(name)).unwrap()
}

const REF_NOW: i64 = 1780272000;

fn operator() -> OperatorTrust {
    OperatorTrust::from_operator_jwt(&fixture("operator_signing_keys.jwt")).unwrap()
}

#[test]
fn each_bad_account_gets_its_own_error() {
    let op = operator();
    let verify = |name: &str| op.verify_account(&fixture(name), None, REF_NOW);
    assert!(verify("account_a.jwt").is_ok());
    assert!(verify("edge_trailing_newline.jwt").is_ok());
    assert_eq!(
        verify("broken_tampered_payload.jwt"),
        Err(VerifyError::Decode(JwtError::SignatureV2))
    );
    assert_eq!(
        verify("broken_bad_signature.jwt"),
        Err(VerifyError::Decode(JwtError::SignatureV2))
    );
    assert_eq!(
        verify("broken_two_parts.jwt"),
        Err(VerifyError::Decode(JwtError::Chunks))
    );
    assert_eq!(
        verify("broken_wrong_alg.jwt"),
        Err(VerifyError::Decode(JwtError::UnexpectedAlgorithm(
            "HS256".into()
        )))
    );
    assert_eq!(
        verify("broken_newer_version.jwt"),
        Err(VerifyError::Decode(JwtError::NewerVersion))
    );
    assert!(matches!(
        verify("account_foreign.jwt"),
        Err(VerifyError::Untrusted(_))
    ));
    assert_eq!(
        verify("account_d_self_signed.jwt"),
        Err(VerifyError::SelfSigned)
    );
    assert!(matches!(
        verify("account_e_expired.jwt"),
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        verify("account_f_not_yet_valid.jwt"),
        Err(VerifyError::NotYetValid { .. })
    ));
    assert!(matches!(
        verify("user_a.jwt"),
        Err(VerifyError::Decode(JwtError::WrongKind {
            expected: "account",
            found: "user"
        }))
    ));
    let strict = OperatorTrust::from_operator_jwt(&fixture("operator_strict.jwt")).unwrap();
    assert_eq!(
        strict.verify_account(&fixture("account_b.jwt"), None, REF_NOW),
        Err(VerifyError::StrictIdentityKey)
    );
    let m = manifest();
    let mismatch = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "account_m_upload_mismatch")
        .unwrap();
    let under = mismatch["upload_under"].as_str().unwrap();
    assert!(matches!(
        op.verify_account(
            &fixture("account_m_upload_mismatch.jwt"),
            Some(under),
            REF_NOW
        ),
        Err(VerifyError::SubjectMismatch { .. })
    ));
    // Truncated: a token cut in its signature.
    let b = fixture("account_b.jwt");
    assert!(matches!(
        op.verify_account(&b[..b.len() - 10], None, REF_NOW),
        Err(VerifyError::Decode(
            JwtError::SignatureLength | JwtError::SignatureV2
        ))
    ));
    // Anything but a trailing newline around a token is refused.
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(&b);
    assert!(matches!(
        op.verify_account(&spaced, None, REF_NOW),
        Err(VerifyError::Decode(_))
    ));
    // Oversized.
    let big = vec![b'a'; MAX_TOKEN_BYTES + 1];
    assert_eq!(
        op.verify_account(&big, None, REF_NOW),
        Err(VerifyError::Decode(JwtError::TooLarge(MAX_TOKEN_BYTES + 1)))
    );
}

#[test]
fn minted_tokens_verify_and_carry_go_jti() {
    let operator = SigningKey::generate(KeyRole::Operator);
    let sk = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let mut op_claims = nas_jwt::OperatorClaims::new(operator.public_key().as_str(), "op");
    op_claims.nats.signing_keys = vec![sk.public_key().as_str().to_owned()];
    let op_jwt = nas_jwt::encode(&mut op_claims, &operator, 1_767_225_600).unwrap();
    let trust = OperatorTrust::from_operator_jwt(op_jwt.as_bytes()).unwrap();
    let mut acc = nas_jwt::AccountClaims::new_account(account.public_key().as_str(), "acc");
    let token = nas_jwt::encode(&mut acc, &sk, 1_767_225_600).unwrap();
    let verified = trust
        .verify_account(
            token.as_bytes(),
            Some(account.public_key().as_str()),
            REF_NOW,
        )
        .unwrap();
    assert_eq!(
        verified.claims.jti,
        nas_jwt::jti::compute_v2(&verified.claims)
    );
    assert_eq!(verified.claims.nats.limits.subs, -1);
    // A user key may not sign accounts.
    let user = SigningKey::generate(KeyRole::User);
    assert!(nas_jwt::encode(&mut acc, &user, 0).is_err());
}
