//! Claim structures for every NATS JWT type, field names exactly as the Go library writes them.
//!
//! Missing fields take Go's zero values; unknown fields are kept in `extra` maps (top level and
//! inside `nats`) so nothing a newer library writes is lost; JSON `null` is read as the zero value,
//! as Go does.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Unknown JSON members, kept in their original order.
pub type Extra = Map<String, Value>;

/// Reads `null` as the type's default, as Go's decoder leaves a field untouched on `null`.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub(crate) fn is_zero(value: &i64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The standard claims plus the type-specific `nats` object `N`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "N: Deserialize<'de> + Default"))]
pub struct Claims<N> {
    /// Audience (unused by nats-server for accounts).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub aud: String,
    /// Expiry, Unix seconds; 0 = never.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub exp: i64,
    /// Token id (hash of the standard claims); see [`crate::jti`].
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub jti: String,
    /// Issued-at, Unix seconds; decides "newer wins".
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub iat: i64,
    /// Issuer public key.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub iss: String,
    /// Human name.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Not-before, Unix seconds; 0 = immediately.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub nbf: i64,
    /// Subject public key.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub sub: String,
    /// Type-specific claims.
    #[serde(default, deserialize_with = "nullable")]
    pub nats: N,
    /// Unknown top-level members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Members every typed `nats` object ends with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommonTail {
    /// Free-form tags.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// Claim type (`account`, `user`, …).
    #[serde(
        rename = "type",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Library version that wrote the claim (2).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub version: i64,
}

/// `nats` of an operator JWT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    /// Keys allowed to sign account JWTs.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub signing_keys: Vec<String>,
    /// Where nsc pushes and pulls.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub account_server_url: String,
    /// NATS URLs of the operator's servers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub operator_service_urls: Vec<String>,
    /// The system account.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub system_account: String,
    /// Minimum nats-server version.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub assert_server_version: String,
    /// Only signing keys may sign accounts.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub strict_signing_key_usage: bool,
    /// tags / type / version.
    #[serde(flatten)]
    pub common: CommonTail,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An allow/deny subject list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Permission {
    /// Allowed subjects.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow: Vec<String>,
    /// Denied subjects.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deny: Vec<String>,
}

/// Response permission.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsePermission {
    /// Maximum responses.
    #[serde(default, deserialize_with = "nullable")]
    pub max: i64,
    /// Time to live, nanoseconds.
    #[serde(default, deserialize_with = "nullable")]
    pub ttl: i64,
}

/// A time-of-day window for user connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    /// `HH:MM:SS`.
    #[serde(default, deserialize_with = "nullable")]
    pub start: String,
    /// `HH:MM:SS`.
    #[serde(default, deserialize_with = "nullable")]
    pub end: String,
}

/// `src` is an array of CIDRs in jwt v2 but a comma-separated string in older tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct CidrList(pub Vec<String>);

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            List(Vec<String>),
            Text(String),
            Null(()),
        }
        Ok(CidrList(match Either::deserialize(deserializer)? {
            Either::List(list) => list,
            Either::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Either::Null(()) => Vec::new(),
        }))
    }
}

/// User permissions and limits (also the template of a scoped signing key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPermissionLimits {
    /// Publish permission.
    #[serde(rename = "pub", default, deserialize_with = "nullable")]
    pub publish: Permission,
    /// Subscribe permission.
    #[serde(rename = "sub", default, deserialize_with = "nullable")]
    pub subscribe: Permission,
    /// Response permission.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub resp: Option<ResponsePermission>,
    /// Allowed source networks.
    #[serde(default, skip_serializing_if = "cidr_empty")]
    pub src: CidrList,
    /// Allowed connection times.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub times: Vec<TimeRange>,
    /// Time zone of `times`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub times_location: String,
    /// Max subscriptions (-1 unlimited).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub subs: i64,
    /// Max data bytes (-1 unlimited).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub data: i64,
    /// Max payload bytes (-1 unlimited).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub payload: i64,
    /// Bearer token (no nonce signature needed).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub bearer_token: bool,
    /// Requires connecting through a proxy (newest libraries).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub proxy_required: bool,
    /// Connection types allowed.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_connection_types: Vec<String>,
}

fn cidr_empty(list: &CidrList) -> bool {
    list.0.is_empty()
}

/// `nats` of a user JWT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Permissions and limits.
    #[serde(flatten)]
    pub limits: UserPermissionLimits,
    /// The account when `iss` is an account signing key.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub issuer_account: String,
    /// tags / type / version.
    #[serde(flatten)]
    pub common: CommonTail,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `nats` of an activation JWT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// The export subject granted.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// `stream` or `service`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Exporting account when signed by one of its signing keys.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub issuer_account: String,
    /// tags / type / version.
    #[serde(flatten)]
    pub common: CommonTail,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One import of an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Import {
    /// Name.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Imported subject.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// Exporting account.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub account: String,
    /// Embedded activation token.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub token: String,
    /// Deprecated prefix.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub to: String,
    /// Local subject.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub local_subject: String,
    /// `stream` or `service`.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Share requester info (services).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub share: bool,
    /// Allow message tracing.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub allow_trace: bool,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One export of an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// Name.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// Exported subject.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub subject: String,
    /// `stream` or `service`.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Importers need an activation token.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub token_req: bool,
    /// Revoked importers → Unix seconds.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub revocations: BTreeMap<String, i64>,
    /// `Singleton`, `Stream` or `Chunked`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub response_type: String,
    /// Nanoseconds.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub response_threshold: i64,
    /// Latency tracking (`sampling` may be a number or `"headers"`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_latency: Option<Value>,
    /// Token position for per-account subjects.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub account_token_position: i64,
    /// Advertise the export.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub advertise: bool,
    /// Allow message tracing.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub allow_trace: bool,
    /// Description.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Info URL.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub info_url: String,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// JetStream limits (0 = disabled, -1 = unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JetStreamLimits {
    /// Memory storage bytes.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub mem_storage: i64,
    /// Disk storage bytes.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub disk_storage: i64,
    /// Streams.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub streams: i64,
    /// Consumers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub consumer: i64,
    /// Max ack pending.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub max_ack_pending: i64,
    /// Max bytes of one memory stream.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub mem_max_stream_bytes: i64,
    /// Max bytes of one disk stream.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub disk_max_stream_bytes: i64,
    /// Streams must declare max bytes.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub max_bytes_required: bool,
}

/// Account limits: NATS, account and JetStream limits in one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorLimits {
    /// Max subscriptions.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub subs: i64,
    /// Max data bytes.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub data: i64,
    /// Max payload.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub payload: i64,
    /// Max imports.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub imports: i64,
    /// Max exports.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub exports: i64,
    /// Wildcard exports allowed.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub wildcards: bool,
    /// Bearer users refused.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub disallow_bearer: bool,
    /// Max connections.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub conn: i64,
    /// Max leaf node connections.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub leaf: i64,
    /// Non-tiered JetStream limits.
    #[serde(flatten)]
    pub jetstream: JetStreamLimits,
    /// Tier name (`R1`, `R3`) → JetStream limits.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tiered_limits: BTreeMap<String, JetStreamLimits>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

impl OperatorLimits {
    /// The limits `nsc add account` writes: everything unlimited, JetStream disabled.
    pub fn unlimited() -> OperatorLimits {
        OperatorLimits {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            ..OperatorLimits::default()
        }
    }
}

/// A scoped signing key: users it signs get `template` and may carry no permissions of their own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserScope {
    /// Always `user_scope`.
    pub kind: String,
    /// The signing key.
    pub key: String,
    /// Role name.
    #[serde(default, deserialize_with = "nullable")]
    pub role: String,
    /// Permissions and limits imposed on users.
    #[serde(default, deserialize_with = "nullable")]
    pub template: UserPermissionLimits,
    /// Description.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
}

/// One entry of an account's `signing_keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AccountSigningKey {
    /// A plain key.
    Plain(String),
    /// A scoped key.
    Scoped(Box<UserScope>),
}

impl AccountSigningKey {
    /// The public key, whatever the form.
    pub fn key(&self) -> &str {
        match self {
            AccountSigningKey::Plain(key) => key,
            AccountSigningKey::Scoped(scope) => &scope.key,
        }
    }
}

/// One destination of a subject mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightedMapping {
    /// Destination subject.
    pub subject: String,
    /// Percentage (1..100).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub weight: i64,
    /// Restrict to a cluster.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster: String,
}

/// `nats` of an account JWT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Imports.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub imports: Vec<Import>,
    /// Exports.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exports: Vec<Export>,
    /// Limits.
    #[serde(default, deserialize_with = "nullable")]
    pub limits: OperatorLimits,
    /// Keys allowed to sign users and activations for this account.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub signing_keys: Vec<AccountSigningKey>,
    /// Revoked users (`U…` or `*`) → Unix seconds.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub revocations: BTreeMap<String, i64>,
    /// Permissions for users without their own.
    #[serde(default, deserialize_with = "nullable")]
    pub default_permissions: DefaultPermissions,
    /// Subject mappings.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub mappings: BTreeMap<String, Vec<WeightedMapping>>,
    /// Auth callout configuration.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub authorization: Option<Value>,
    /// Message tracing.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace: Option<Value>,
    /// `system` or `owner`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_traffic: String,
    /// Description.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// Info URL.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub info_url: String,
    /// tags / type / version.
    #[serde(flatten)]
    pub common: CommonTail,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Default permissions of an account (`pub`/`sub` always written, as Go does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefaultPermissions {
    /// Publish.
    #[serde(rename = "pub", default, deserialize_with = "nullable")]
    pub publish: Permission,
    /// Subscribe.
    #[serde(rename = "sub", default, deserialize_with = "nullable")]
    pub subscribe: Permission,
    /// Responses.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub resp: Option<ResponsePermission>,
}

/// `nats` of a generic claim (for example the CLAIMS.DELETE request): free-form.
pub type Generic = Map<String, Value>;

/// Operator JWT claims.
pub type OperatorClaims = Claims<Operator>;
/// Account JWT claims.
pub type AccountClaims = Claims<Account>;
/// User JWT claims.
pub type UserClaims = Claims<User>;
/// Activation JWT claims.
pub type ActivationClaims = Claims<Activation>;
/// Generic JWT claims.
pub type GenericClaims = Claims<Generic>;

impl AccountClaims {
    /// The account signing keys as plain key strings.
    pub fn signing_key_strings(&self) -> impl Iterator<Item = &str> {
        self.nats.signing_keys.iter().map(AccountSigningKey::key)
    }
}
