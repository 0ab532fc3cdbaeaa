//! The HTTP API (nats-account-server v1 routes, plus metrics), mapped onto actix-web.
//!
//! Errors from the lower layers are turned into status codes and bodies here and nowhere else.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use nas_store::{Store, StoreError};

use crate::accept::{AcceptError, Accepter, WritePath};
use crate::cache::{Served, VerifiedCache};
use crate::delete::DeleteRefusal;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyOutcome};
use crate::resolver::Resolved;
use crate::signing::{Signed, SigningError, SigningService};
use crate::view;

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The verified cache (GET path).
    pub cache: VerifiedCache,
    /// The accept rule (POST path).
    pub accepter: Accepter,
    /// The operator's signing service for self-signed uploads (`signrequestsubject`).
    pub signing: Option<SigningService>,
    /// The delete rule (DELETE path, shared with NATS DELETE).
    pub deleter: crate::delete::Deleter,
    /// Activation tokens (accept rule, bound, verified cache).
    pub activations: crate::activation::Activations,
    /// The store (pack, activations, health).
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Notifications.
    pub notifier: Arc<dyn Notifier>,
    /// The operator JWT file, served verbatim.
    pub operator_jwt: Option<Bytes>,
    /// The lookup chain of GET (cache, store, system account, primary or NATS).
    pub resolver: crate::resolver::Resolver,
    /// `maxreplicationpack`: default and upper bound of `/jwt/v1/pack?max=` (negative = none).
    pub max_pack: i64,
    /// Whether `/metrics` is served on this listener.
    pub metrics_on_main: bool,
    /// URL of the primary this instance replicates (its POSTs are refused and sent there).
    pub primary_url: Option<String>,
    /// `http { readtimeout }`: a request body must arrive within this.
    pub request_deadline: std::time::Duration,
    /// `http { bodylimit }`.
    pub body_limit: usize,
    /// `/healthz`'s store probe, reused for a second.
    pub health: HealthProbe,
}

/// The last store health probe, reused for a second: `/healthz` is polled by load balancers
/// and anyone else, and a probe can cost a paid request (an S3 LIST).
#[derive(Default)]
pub struct HealthProbe {
    last: std::sync::Mutex<Option<(Instant, String)>>,
}

/// How long a store health probe's answer is reused.
const HEALTH_PROBE_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl HealthProbe {
    async fn store_state(&self, store: &Store) -> String {
        if let Some((at, state)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < HEALTH_PROBE_REUSE {
                return state.clone();
            }
        }
        let state =
            match tokio::time::timeout(std::time::Duration::from_secs(1), store.backend().health())
                .await
            {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("unavailable: {e}"),
                Err(_) => "unavailable: health check timed out".to_owned(),
            };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), state.clone()));
        state
    }
}

/// Current Unix time in seconds.
fn now() -> i64 {
    nas_jwt::unix_now()
}

/// Query flags, read as the Go server does: first occurrence, value lower-cased equals `true`.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(req: &HttpRequest) -> Query {
        Query {
            pairs: form_urlencoded::parse(req.query_string().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// `text/plain` error body (the Go server's "plain" helper): message + newline.
fn plain(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(format!("{message}\n"))
}

/// `text/plain; charset=utf-8` + nosniff (the Go server's "stdlib" helper).
fn stdlib(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(format!("{message}\n"))
}

fn store_unavailable(e: &StoreError) -> HttpResponse {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("account store unavailable, try again: {e}"),
    )
}

/// `GET /jwt/v1/accounts[/]`: the probe nats-server sends at startup; always 200.
async fn probe() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "0"))
        .finish()
}

const NO_MATCHING_ACCOUNT: &str = "no matching account JWT";

/// `GET /jwt/v1/accounts/<key>`.
async fn get_account(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: web::Path<String>,
) -> HttpResponse {
    let query = Query::parse(&req);
    if query.get("jti").is_some_and(|v| !v.is_empty()) {
        return plain(
            StatusCode::NOT_IMPLEMENTED,
            "lookup by jti is no longer supported",
        );
    }
    let served = match state.resolver.resolve(&key).await {
        Resolved::Found(served) => served,
        Resolved::Missing => return plain(StatusCode::NOT_FOUND, NO_MATCHING_ACCOUNT),
        Resolved::StoreUnavailable(e) => return store_unavailable(&e),
        Resolved::UpstreamUnreachable(why) => return plain(StatusCode::SERVICE_UNAVAILABLE, &why),
    };
    let response = respond_with_jwt(&req, &query, &served, true);
    // As the Go server: only a request answered with the JWT itself notifies.
    if query.flag("notify")
        && response.status() == StatusCode::OK
        && !query.flag("text")
        && !query.flag("decode")
        && !notify_again(&state, &served)
    {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error sending notification of change",
        );
    }
    response
}

/// The JWT in the form the query asks for: `text`, `decode`, a 404 for `check` on an expired
/// account, 304 for a matching `If-None-Match`, else the JWT itself.
fn respond_with_jwt(
    req: &HttpRequest,
    query: &Query,
    served: &Served,
    account: bool,
) -> HttpResponse {
    if query.flag("text") {
        return HttpResponse::Ok()
            .content_type("text/plain")
            .body(served.token.clone());
    }
    if query.flag("decode") {
        return decoded(req, query, &served.token);
    }
    let now = now();
    if account && query.flag("check") && served.expired(now) {
        return HttpResponse::NotFound().finish();
    }
    if let Some(inm) = req.headers().get(header::IF_NONE_MATCH) {
        if inm.to_str().is_ok_and(|v| v.contains(served.etag.as_str())) {
            return HttpResponse::NotModified().finish();
        }
    }
    HttpResponse::Ok()
        .insert_header((header::ETAG, served.etag.as_str()))
        .insert_header((header::CACHE_CONTROL, served.cache_control(now)))
        .content_type("application/jwt")
        .body(served.token.clone())
}

/// `?notify=true`: publishes the account again through the notifier (rate-limited there);
/// `false` when that failed (the Go server then answers 500).
fn notify_again(state: &AppState, served: &Served) -> bool {
    match state.notifier.republish(&served.key, &served.token) {
        NotifyOutcome::Failed(e) => {
            tracing::error!("notification for {} failed: {e}", served.key);
            false
        }
        NotifyOutcome::NotConfigured => {
            tracing::info!(
                "skipping notification for {}, no NATS configured",
                crate::accept::short_key(&served.key)
            );
            true
        }
        NotifyOutcome::Sent => true,
    }
}

/// The decoded view: Go's readable layout, or valid JSON with `format=json` or
/// `Accept: application/json`.
fn decoded(req: &HttpRequest, query: &Query, token: &[u8]) -> HttpResponse {
    let wants_json = query
        .get("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("json"))
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(view::json(token))
    } else {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body(view::human(token))
    }
}

/// The response for a refused write: one status and message per reason.
pub fn accept_error_response(error: &AcceptError) -> HttpResponse {
    let bad = StatusCode::BAD_REQUEST;
    match error {
        AcceptError::TooLarge { .. } => plain(StatusCode::PAYLOAD_TOO_LARGE, &error.to_string()),
        AcceptError::Malformed(reason) => plain(bad, &format!("bad JWT in request\n{reason}")),
        AcceptError::KeyMismatch { key, sub } => plain(
            bad,
            &format!("pub keys don't match\nthe JWT's subject is {sub}, the URL names {key}"),
        ),
        AcceptError::SubjectNotAccount
        | AcceptError::SelfSigned
        | AcceptError::IssuerNotOperator => plain(bad, &error.to_string()),
        AcceptError::NoOperator => plain(
            bad,
            "untrusted issuer in request\nno operator is configured on this account server",
        ),
        AcceptError::Untrusted(iss) => plain(
            bad,
            &format!(
                "untrusted issuer in request\n{iss} is not the operator or one of its signing keys"
            ),
        ),
        AcceptError::StrictIdentityKey => plain(
            bad,
            "untrusted issuer in request\noperator requires issuer to be a signing key",
        ),
        AcceptError::Invalid(issues) => {
            let mut parts = vec![error.to_string()];
            parts.extend(issues.iter().map(|i| format!("\t - {i}\n")));
            stdlib(bad, &parts.join("\n"))
        }
        AcceptError::Stale { .. }
        | AcceptError::SameSecond { .. }
        | AcceptError::Deleted { .. } => plain(StatusCode::CONFLICT, &error.to_string()),
        AcceptError::ReadOnly(_) => HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD, OPTIONS"))
            .content_type("text/plain")
            .body(format!("{error}\n")),
        AcceptError::Store(StoreError::Unavailable(e)) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("error saving JWT: account store unavailable, try again: {e}"),
        ),
        AcceptError::Store(e) => {
            tracing::error!("store write failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "error saving JWT")
        }
    }
}

/// The client's address, for the audit log.
fn peer(req: &HttpRequest) -> String {
    req.peer_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// `POST /jwt/v1/accounts/<key>`.
async fn post_account(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(&state, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Some(primary) = &state.primary_url {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD, OPTIONS"))
            .content_type("text/plain")
            .body(format!(
                "this account server is a replica of {0}: POST the JWT to {0}/jwt/v1/accounts/{1}\n",
                primary,
                key.as_str()
            ));
    }
    let origin = peer(&req);
    let accepted = state
        .accepter
        .accept(WritePath::Http, &origin, Some(key.as_str()), &body, now())
        .await;
    match (accepted, &state.signing) {
        (Ok(_), _) => HttpResponse::Ok().finish(),
        (Err(e), Some(signing)) if e.is_untrusted_issuer() => {
            self_signed_upload(&state, signing, &origin, key.as_str(), &body).await
        }
        (Err(e), _) => accept_error_response(&e),
    }
}

/// An upload the operator does not sign: asks the signing service, then stores its answer
/// through the accept rule, or passes its message back (202).
async fn self_signed_upload(
    state: &AppState,
    signing: &SigningService,
    origin: &str,
    key: &str,
    body: &[u8],
) -> HttpResponse {
    let iss = nas_jwt::jwt::peek_payload(body)
        .ok()
        .and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    match signing.sign(&state.store, key, &iss, body).await {
        Ok(Signed::Jwt(jwt)) => {
            let accepted = state
                .accepter
                .accept(WritePath::Http, origin, Some(key), &jwt, now())
                .await;
            match accepted {
                Ok(_) => HttpResponse::Ok().finish(),
                Err(e) => accept_error_response(&e),
            }
        }
        Ok(Signed::Pending(text)) => HttpResponse::Accepted()
            .content_type("text/plain; charset=utf-8")
            .body(text),
        Err(e @ (SigningError::IssuerSubjectPair | SigningError::NotTrusted)) => {
            plain(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(SigningError::Store(e)) => store_unavailable(&e),
        Err(e) => stdlib(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `DELETE /jwt/v1/accounts/<key>`: the body is an operator-signed delete request (the claim
/// `nsc push --prune` sends over NATS) that lists `<key>`; only `<key>` is deleted.
async fn delete_account(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(&state, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if state.primary_url.is_some() {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "this account server is a replica: delete on its primary",
        );
    }
    match state
        .deleter
        .delete_one(&peer(&req), &body, key.as_str())
        .await
    {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(e) => plain(delete_status(&e.refusal), &e.to_string()),
    }
}

/// The status of a refused delete: the request's fault (400), not allowed (403), a newer JWT
/// stored (409), or the store (503/500).
fn delete_status(refusal: &DeleteRefusal) -> StatusCode {
    match refusal {
        DeleteRefusal::Undecodable(_)
        | DeleteRefusal::Malformed
        | DeleteRefusal::Expired
        | DeleteRefusal::NotYetValid
        | DeleteRefusal::NotListed(_) => StatusCode::BAD_REQUEST,
        DeleteRefusal::Disabled
        | DeleteRefusal::NotSelfSigned
        | DeleteRefusal::NotTrusted
        | DeleteRefusal::SystemAccount => StatusCode::FORBIDDEN,
        DeleteRefusal::Partial {
            unavailable: true, ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        DeleteRefusal::Partial {
            newer_stored: true, ..
        } => StatusCode::CONFLICT,
        DeleteRefusal::Partial { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `GET /jwt/v1/operator`.
async fn get_operator(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(jwt) = &state.operator_jwt else {
        return not_found().await;
    };
    let query = Query::parse(&req);
    if query.flag("text") {
        return HttpResponse::Ok()
            .content_type("text/plain")
            .body(jwt.clone());
    }
    if query.flag("decode") {
        let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(jwt));
        return decoded(&req, &query, token.as_bytes());
    }
    HttpResponse::Ok()
        .content_type("application/jwt")
        .body(jwt.clone())
}

/// `GET /jwt/v1/pack?max=N`.
async fn get_pack(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let query = Query::parse(&req);
    let limit = state.max_pack;
    let max = match query.get("max") {
        None => limit,
        Some(raw) => {
            let value = raw.to_lowercase();
            let Ok(max) = value.parse::<i64>() else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("bad max parameter {value:?}"),
                );
            };
            if limit >= 0 && max > limit {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("bad max parameter {value:?}, no more than {limit} are allowed"),
                );
            }
            // A negative max asks for everything: that is still at most the configured bound
            // (only `maxreplicationpack: -1` makes a pack unbounded).
            if max < 0 {
                limit
            } else {
                max
            }
        }
    };
    if max == 0 {
        return HttpResponse::Ok().content_type("text/plain").finish();
    }
    let max = usize::try_from(max).ok();
    let mut entries = state.cache.verified_pack_stream(max).peekable();
    // A store that fails before the first entry still gets its status; after it, the headers
    // are sent and a failure can only cut the body short.
    if let Some(Err(e)) = std::pin::Pin::new(&mut entries).peek().await {
        return pack_failed(e);
    }
    let body = crate::pack::encode_body(entries).map(|chunk| {
        chunk.map_err(|e| {
            tracing::error!("pack failed after its first entries; the body is cut short: {e}");
            actix_web::error::ErrorServiceUnavailable("pack cut short")
        })
    });
    // Chunked and pulled by actix as the client reads: a slow client holds the store reads
    // instead of a buffer of the whole store. On an error the connection is closed without the
    // last chunk, so the client sees a broken body, never a short pack that looks complete.
    HttpResponse::Ok()
        .content_type("text/plain")
        .streaming(body)
}

/// The answer to a pack that failed before its first entry.
fn pack_failed(e: &StoreError) -> HttpResponse {
    match e {
        StoreError::Unavailable(_) => store_unavailable(e),
        e => {
            tracing::error!("pack failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "error packing JWTs")
        }
    }
}

/// `GET /jwt/v1/help`.
async fn help() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(crate::help::TEXT)
}

/// `GET /healthz`: 200 while HTTP is served; the body reports the store.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.health.store_state(&state.store).await;
    let nats = match state.metrics.nats_connected.get() {
        1 => "connected",
        _ => "not connected",
    };
    HttpResponse::Ok().json(serde_json::json!({
        "status": if store == "ok" { "ok" } else { "degraded" },
        "store": store,
        "store_backend": state.store.backend().kind(),
        "nats": nats,
    }))
}

/// `GET /readyz`: 200 only while the store answers (a load balancer or Kubernetes readiness
/// probe then sends traffic elsewhere during an outage; `/healthz` stays 200, as liveness).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.health.store_state(&state.store).await;
    let ready = store == "ok";
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": store,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics` (Prometheus text format).
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if !state.metrics_on_main {
        return not_found().await;
    }
    render_metrics(&state.metrics)
}

/// `GET /metrics` of the separate metrics listener (`metrics { listen }`).
pub async fn metrics_only(metrics: web::Data<Metrics>) -> HttpResponse {
    render_metrics(&metrics)
}

fn render_metrics(metrics: &Metrics) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

/// `POST /jwt/v1/activations`.
async fn post_activation(state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    use crate::activation::ActivationError as E;
    let body = match read_body(&state, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match state.activations.accept(&body, now()).await {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(E::ReadOnly) => accept_error_response(&AcceptError::ReadOnly(String::new())),
        Err(E::Store(e @ StoreError::Unavailable(_))) => store_unavailable(&e),
        Err(E::Store(e)) => {
            tracing::error!("activation write failed: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "error saving activation JWT",
            )
        }
        Err(e @ E::Stale { .. }) => plain(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ E::TooMany { .. }) => plain(StatusCode::FORBIDDEN, &e.to_string()),
        Err(e) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `GET /jwt/v1/activations/<hash>`.
async fn get_activation(
    state: web::Data<AppState>,
    req: HttpRequest,
    hash: web::Path<String>,
) -> HttpResponse {
    let served = match state.activations.get(&hash).await {
        Ok(Some(served)) => served,
        Ok(None) | Err(StoreError::InvalidKey { .. }) => {
            return stdlib(StatusCode::NOT_FOUND, "No Matching JWT")
        }
        Err(e) => return store_unavailable(&e),
    };
    respond_with_jwt(&req, &Query::parse(&req), &served, false)
}

/// Unknown path: the Go router's exact 404.
async fn not_found() -> HttpResponse {
    stdlib(StatusCode::NOT_FOUND, "404 page not found")
}

/// Known path, other method: 405 with `Allow`; `OPTIONS` (not a CORS preflight) gets 200.
fn method_not_allowed(
    allow: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    move |req: HttpRequest| {
        let response = if is_preflight(&req) {
            preflight(&req)
        } else if req.method() == Method::OPTIONS {
            HttpResponse::Ok()
                .insert_header((header::ALLOW, allow))
                .finish()
        } else {
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, allow))
                .content_type("text/plain; charset=utf-8")
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .body("Method Not Allowed\n")
        };
        std::future::ready(response)
    }
}

/// Fixed path segments of every route; `{}` is a key.
const ROUTES: &[&[&str]] = &[
    &["jwt", "v1", "help"],
    &["jwt", "v1", "operator"],
    &["jwt", "v1", "pack"],
    &["jwt", "v1", "accounts"],
    &["jwt", "v1", "accounts", "{}"],
    &["jwt", "v1", "activations"],
    &["jwt", "v1", "activations", "{}"],
    &["healthz"],
    &["readyz"],
    &["metrics"],
];

/// The canonical spelling of a path that only differs from a route by case, a trailing slash or
/// empty segments (the Go router redirects those).
fn canonical_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    ROUTES.iter().find_map(|route| {
        if route.len() != segments.len() {
            return None;
        }
        let mut out = String::new();
        for (pattern, seg) in route.iter().zip(&segments) {
            out.push('/');
            if *pattern == "{}" {
                out.push_str(seg);
            } else if pattern.eq_ignore_ascii_case(seg) {
                out.push_str(pattern);
            } else {
                return None;
            }
        }
        Some(out)
    })
}

/// Default service: CORS preflight for any path, redirects for unclean paths, else 404.
fn is_preflight(req: &HttpRequest) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

async fn fallback(req: HttpRequest) -> HttpResponse {
    if is_preflight(&req) {
        return preflight(&req);
    }
    if let Some(canonical) = canonical_path(req.path()) {
        if canonical != req.path() {
            let status = if req.method() == Method::GET {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::TEMPORARY_REDIRECT
            };
            let mut location = canonical;
            if !req.query_string().is_empty() {
                location = format!("{location}?{}", req.query_string());
            }
            return HttpResponse::build(status)
                .insert_header((header::LOCATION, location))
                .finish();
        }
    }
    not_found().await
}

/// A CORS preflight: 204, echoing the origin for allowed methods.
fn preflight(req: &HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    response.insert_header((
        header::VARY,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    ));
    let headers = req.headers();
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let allowed = ["GET", "POST", "OPTIONS"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method));
    if let (Some(origin), true) = (headers.get(header::ORIGIN), allowed) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
        response.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, method));
        if let Some(h) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
    }
    response.finish()
}

fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    // The name is the pattern: metrics read it back without rebuilding the pattern string.
    web::resource(path)
        .name(path)
        .default_service(web::to(method_not_allowed(allow)))
}

/// Registers every route on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let get_head = "GET, HEAD, OPTIONS";
    cfg.service(
        resource("/jwt/v1/accounts/{key}", "GET, HEAD, OPTIONS, POST, DELETE")
            .route(web::get().to(get_account))
            .route(web::head().to(get_account))
            .route(web::post().to(post_account))
            .route(web::delete().to(delete_account)),
    )
    .service(
        resource("/jwt/v1/accounts", get_head)
            .route(web::get().to(probe))
            .route(web::head().to(probe)),
    )
    .service(
        resource("/jwt/v1/accounts/", get_head)
            .route(web::get().to(probe))
            .route(web::head().to(probe)),
    )
    .service(
        resource("/jwt/v1/operator", get_head)
            .route(web::get().to(get_operator))
            .route(web::head().to(get_operator)),
    )
    .service(
        resource("/jwt/v1/pack", get_head)
            .route(web::get().to(get_pack))
            .route(web::head().to(get_pack)),
    )
    .service(
        resource("/jwt/v1/help", get_head)
            .route(web::get().to(help))
            .route(web::head().to(help)),
    )
    .service(
        resource("/healthz", get_head)
            .route(web::get().to(healthz))
            .route(web::head().to(healthz)),
    )
    .service(
        resource("/readyz", get_head)
            .route(web::get().to(readyz))
            .route(web::head().to(readyz)),
    )
    .service(resource("/metrics", get_head).route(web::get().to(metrics)))
    .service(
        resource("/jwt/v1/activations", "OPTIONS, POST").route(web::post().to(post_activation)),
    )
    .service(
        resource("/jwt/v1/activations/{hash}", get_head)
            .route(web::get().to(get_activation))
            .route(web::head().to(get_activation)),
    )
    .default_service(web::to(fallback));
}

/// The metric label of a request method, from a closed set: made-up methods are `other`, so a
/// client cannot create series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body not received within the read timeout of {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("bad request body: {0}")]
    Broken(String),
}

impl BodyError {
    /// 408 / 413 close the connection: the rest of the body is never read.
    fn response(&self) -> HttpResponse {
        let status = match self {
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        };
        HttpResponse::build(status)
            .force_close()
            .content_type("text/plain")
            .body(format!("{self}\n"))
    }
}

/// Reads a request body within `http { readtimeout }` (counted from when the handler starts,
/// i.e. just after the head) and the body limit, as the Go server's `http.Server` does; actix's
/// own timeout covers only the head, so a client sending one byte a second could otherwise hold
/// a connection forever.
async fn read_body(state: &AppState, mut payload: web::Payload) -> Result<Bytes, HttpResponse> {
    use futures::StreamExt;
    let limit = state.body_limit;
    let read = async {
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    let read = match state.request_deadline {
        d if d.is_zero() => read.await,
        d => tokio::time::timeout(d, read)
            .await
            .unwrap_or(Err(BodyError::Timeout(d))),
    };
    read.map_err(|e| e.response())
}

/// Middleware body: CORS response headers and request metrics, for every response.
pub async fn observe<B: MessageBody>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let started = Instant::now();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let method = req.method().clone();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let _in_flight = metrics
        .as_ref()
        .map(|m| crate::metrics::GaugeGuard::inc(&m.http_in_flight));
    let mut res = next.call(req).await?;
    crate::listener::spend_request_budget(&mut res);
    let is_preflight = res.status() == StatusCode::NO_CONTENT && method == Method::OPTIONS;
    if !is_preflight {
        let headers = res.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            if method == Method::GET || method == Method::POST {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("Authorization"),
                );
            }
        }
    }
    if let Some(metrics) = metrics {
        let route = res.request().match_name().unwrap_or("unmatched");
        metrics
            .http_requests
            .with_label_values(&[route, method_label(&method), res.status().as_str()])
            .inc();
        metrics
            .http_duration
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(
            canonical_path("/JWT/v1/help").as_deref(),
            Some("/jwt/v1/help")
        );
        assert_eq!(
            canonical_path("/jwt/v1/Accounts/ABC").as_deref(),
            Some("/jwt/v1/accounts/ABC")
        );
        assert_eq!(
            canonical_path("/jwt/v1/accounts/ABC/").as_deref(),
            Some("/jwt/v1/accounts/ABC")
        );
        assert_eq!(canonical_path("/jwt/v2/help"), None);
    }
}
