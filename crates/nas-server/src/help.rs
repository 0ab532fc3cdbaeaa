//! The text of `GET /jwt/v1/help`: what this server really serves.

/// The help page.
pub const TEXT: &str = r#"
# NATS Account Server JWT API HELP

This server hosts operator-signed NATS account JWTs for nats-servers (URL resolver), nsc and other
account servers. Flags below are on when their value is `true` (any case).

## GET /jwt/v1/help
This page.

## GET /jwt/v1/operator
The operator JWT this server was configured with (404 if none). `?text=true` serves it as
text/plain, `?decode=true` shows header and claims.

## GET /jwt/v1/accounts and GET /jwt/v1/accounts/
The probe nats-server sends at startup: always 200 with an empty body.

## GET /jwt/v1/accounts/<pubkey>
The account JWT, `Content-Type: application/jwt`, `ETag: "<jti>"`, `Cache-Control` from the JWT's
expiry (never negative; `no-cache` when it has none). 304 when `If-None-Match` carries the ETag.
404 `no matching account JWT` if unknown; 503 if the store cannot be reached. Stored JWTs are
served only if their signature, subject and issuer verify.
  ?check=true   404 if the JWT has expired
  ?text=true    serve as text/plain
  ?decode=true  show header and claims (add `format=json` or `Accept: application/json` for JSON)
  ?notify=true  publish the JWT to nats-servers again (if NATS is configured)

## POST /jwt/v1/accounts/<pubkey>
Store or update an account JWT (the body is the raw JWT, at most 1 MiB, as `nsc push` sends it).
It must be signed by the configured operator or one of its signing keys (only signing keys when
the operator sets strict_signing_key_usage), its subject must be <pubkey>, it must be valid now,
and it must not be older (iat) than the stored JWT. 200 when stored (or already stored); 400 with
the reason; 409 when older than the stored JWT; 413 when too large; 405 on a read-only server.
Accepted changes are published once on $SYS.ACCOUNT.<pubkey>.CLAIMS.UPDATE when NATS is configured.

## GET /jwt/v1/pack?max=<n>
Every stored, unexpired account JWT as `<pubkey>|<jwt>` lines (at most `max`, bounded by
`maxreplicationpack`).

## POST /jwt/v1/activations
Store an activation token under its hash id. Accepted only when it is issued by an account this
server serves (or by one of that account's signing keys, with issuer_account naming it), is not
expired and is valid now; a newer iat replaces the stored token, an older one gets 409. An
account holds at most `maxactivationsperaccount` activations (default 1000; 403 beyond).

## GET /jwt/v1/activations/<hash>
An activation token by hash id, served only while it still verifies as above; `text`, `decode`,
ETag and 304 as for accounts.

## GET /healthz
200 while the server runs; the JSON body reports the store and NATS state.

## GET /metrics
Prometheus metrics (unless moved to their own listener).
"#;
