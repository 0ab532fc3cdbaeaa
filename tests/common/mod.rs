//! Minting helpers shared by the end-to-end tests: an nsc-like operator setup made with nas-jwt.

#![allow(dead_code)]

use nas_jwt::creds::format_creds;
use nas_jwt::{
    encode, AccountClaims, GenericClaims, KeyRole, OperatorClaims, SigningKey, UserClaims,
};

/// An operator with a signing key and a system account, as `nsc` would set them up.
pub struct Operator {
    pub identity: SigningKey,
    pub signing_key: SigningKey,
    pub system: SigningKey,
    pub jwt: String,
    pub system_jwt: String,
}

pub fn now() -> i64 {
    nas_jwt::unix_now()
}

impl Operator {
    pub fn new(name: &str) -> Operator {
        let identity = SigningKey::generate(KeyRole::Operator);
        let signing_key = SigningKey::generate(KeyRole::Operator);
        let system = SigningKey::generate(KeyRole::Account);
        let mut claims = OperatorClaims::new(identity.public_key().as_str(), name);
        claims.nats.signing_keys = vec![signing_key.public_key().as_str().to_owned()];
        claims.nats.system_account = system.public_key().as_str().to_owned();
        let jwt = encode(&mut claims, &identity, now()).unwrap();
        let mut sys = AccountClaims::new_account(system.public_key().as_str(), "SYS");
        let system_jwt = encode(&mut sys, &signing_key, now()).unwrap();
        Operator {
            identity,
            signing_key,
            system,
            jwt,
            system_jwt,
        }
    }

    /// A new account signed by the operator signing key.
    pub fn account(&self, name: &str) -> (SigningKey, String) {
        let key = SigningKey::generate(KeyRole::Account);
        let mut claims = AccountClaims::new_account(key.public_key().as_str(), name);
        let jwt = encode(&mut claims, &self.signing_key, now()).unwrap();
        (key, jwt)
    }
}

/// A creds file for a new user of `account`.
pub fn user_creds(account: &SigningKey, name: &str) -> String {
    let user = SigningKey::generate(KeyRole::User);
    let mut claims = UserClaims::new_user(user.public_key().as_str(), name);
    let jwt = encode(&mut claims, account, now()).unwrap();
    format_creds(&jwt, user.seed())
}

/// A user of the system account signed by its identity key: what the account server connects
/// as (nats-server's temporary system account accepts only identity-signed users at boot).
pub fn system_user_creds(operator: &Operator) -> String {
    user_creds(&operator.system, "nats-account-server")
}

/// An account JWT for an existing key, issued by the operator signing key at `iat`.
pub fn reissue(
    operator: &Operator,
    account: &SigningKey,
    name: &str,
    iat: i64,
    edit: impl FnOnce(&mut AccountClaims),
) -> String {
    let mut claims = AccountClaims::new_account(account.public_key().as_str(), name);
    edit(&mut claims);
    encode(&mut claims, &operator.signing_key, iat).unwrap()
}

/// An operator-mode nats-server config with a `cache` or `full` resolver (`kind`) that preloads
/// the system account; `extra` goes into the resolver block.
pub fn cache_or_full_config(op: &Operator, kind: &str, extra: &str) -> String {
    format!(
        "operator: {}\nsystem_account: {}\nresolver: {{ type: {kind}, dir: '{{{{dir}}}}/jwt', timeout: \"1900ms\" {extra} }}\nresolver_preload: {{ {}: {} }}\n",
        op.jwt,
        op.system.public_key(),
        op.system.public_key(),
        op.system_jwt
    )
}

/// An operator-signed delete request (nsc's generic claim) for `accounts`, issued at `iat`,
/// expiring at `exp` (0 = never).
pub fn delete_request(accounts: Vec<String>, signer: &SigningKey, iat: i64, exp: i64) -> Vec<u8> {
    let mut claims = GenericClaims::new(signer.public_key().as_str(), "");
    claims.nats.insert("accounts".into(), accounts.into());
    claims.exp = exp;
    encode(&mut claims, signer, iat).unwrap().into_bytes()
}
