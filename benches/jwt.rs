//! JWT hot paths: decode + verify + trust check of an account JWT, and `jti` computation.
//!
//! Run: `cargo bench --bench jwt`. Results go to BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nas_jwt::OperatorTrust;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
const REF_NOW: i64 = 1_780_272_000;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

fn bench(c: &mut Criterion) {
    let trust =
        OperatorTrust::from_operator_jwt(&read("operator_signing_keys.jwt")).expect("operator");
    let mut group = c.benchmark_group("account_jwt");
    group.throughput(Throughput::Elements(1));
    for name in ["account_b.jwt", "account_a.jwt"] {
        let token = read(name);
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| {
                trust
                    .verify_account(black_box(&token), None, REF_NOW)
                    .expect("valid")
            })
        });
    }
    let token = read("account_b.jwt");
    let jwt = nas_jwt::decode(&token).expect("decodes");
    let (_, claims) = jwt.into_account().expect("account");
    group.bench_function("jti", |b| {
        b.iter(|| nas_jwt::jti::compute_v2(black_box(&claims)))
    });
    // The floor: one Ed25519 verification of the same signature, key already decoded.
    let text = std::str::from_utf8(&token).expect("utf8");
    let (signed, sig) = text.rsplit_once('.').expect("three parts");
    let sig = data_encoding::BASE64URL_NOPAD
        .decode(sig.as_bytes())
        .expect("b64");
    let sig = ed25519_dalek::Signature::from_slice(&sig).expect("64 bytes");
    let issuer = nas_jwt::PublicKey::parse(trust.identity()).expect("key");
    let vk = issuer.verifying_key().expect("point");
    group.bench_function("ed25519_verify_only", |b| {
        b.iter(|| {
            use ed25519_dalek::Verifier;
            vk.verify(black_box(signed.as_bytes()), &sig)
                .expect("valid")
        })
    });
    group.bench_function("verifying_key_decompress", |b| {
        b.iter(|| issuer.verifying_key().expect("point"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
