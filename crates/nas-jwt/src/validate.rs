//! The blocking checks of the Go library's account `Validate` that matter to an account server.
//!
//! Not every rule of jwt v2 is reproduced (subject syntax and overlap rules, for instance, are
//! nats-server's concern at load time); what is here are the checks that decide whether a token
//! is structurally sound: embedded activation tokens, key fields, enum values and mapping weights.

use crate::claims::AccountClaims;
use crate::jwt::decode;
use crate::nkey::{is_valid_public_key, KeyRole};

fn is_account_key(key: &str) -> bool {
    is_valid_public_key(key, KeyRole::Account)
}

/// Blocking validation errors of an account (time checks excluded), Go's wording where it has one.
pub fn account_errors(claims: &AccountClaims) -> Vec<String> {
    let mut errors = Vec::new();
    let nats = &claims.nats;
    for import in &nats.imports {
        let subject = &import.subject;
        if subject.is_empty() {
            errors.push("import subject is empty".to_owned());
        }
        if !is_account_key(&import.account) {
            errors.push(format!(
                "account to import from {:?} is not a valid account public key",
                import.account
            ));
        }
        if import.kind != "stream" && import.kind != "service" {
            errors.push(format!("invalid import type {:?}", import.kind));
        }
        if !import.token.is_empty() {
            let activation = match decode(import.token.as_bytes()).and_then(|j| j.into_activation())
            {
                Ok((_, activation)) => activation,
                Err(_) => {
                    errors.push(format!(
                        "import {subject:?} contains an invalid activation token"
                    ));
                    continue;
                }
            };
            if activation.iss != import.account && activation.nats.issuer_account != import.account
            {
                errors.push(format!(
                    "activation token doesn't match account for import {subject:?}"
                ));
            }
            if activation.sub != claims.sub {
                errors.push(format!(
                    "activation token doesn't match account it is being included in, {subject:?}"
                ));
            }
            if !activation.nats.kind.is_empty() && activation.nats.kind != import.kind {
                errors.push(format!(
                    "mismatch between token import type {} and type of import {}",
                    activation.nats.kind, import.kind
                ));
            }
        }
    }
    for export in &nats.exports {
        if export.subject.is_empty() {
            errors.push("export subject is empty".to_owned());
        }
        if export.kind != "stream" && export.kind != "service" {
            errors.push(format!("invalid export type {:?}", export.kind));
        }
    }
    for key in claims.signing_key_strings() {
        if !is_account_key(key) {
            errors.push(format!("{key:?} is not a valid account signing key"));
        }
    }
    if !matches!(nats.cluster_traffic.as_str(), "" | "system" | "owner") {
        errors.push(format!(
            "unknown cluster traffic option: {:?}",
            nats.cluster_traffic
        ));
    }
    for (subject, mappings) in &nats.mappings {
        let total: i64 = mappings.iter().map(|m| m.weight).sum();
        if total > 100 {
            errors.push(format!(
                "mapping {subject:?} exceeds 100% among all of it's weighted to mappings"
            ));
        }
    }
    errors
}
