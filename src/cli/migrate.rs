//! `migrate --from <store> --to <store>`: copies every tombstone, account and activation from
//! one backend to another through the accept rule and the destination's newer-wins policy.
//!
//! Order: tombstones first (so a deleted account's older JWTs stay out of the destination),
//! then accounts, then activations (whose issuing accounts must have passed the accept rule).
//! Every write is a newer-wins write, so a run repeated over the same stores changes nothing,
//! and an interrupted run is completed by running it again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use nas_jwt::{AnyClaims, OperatorTrust};
use nas_server::accept::Accepter;
use nas_server::config::StoreConfig;
use nas_store::{Backend, DeleteOutcome, Namespace, PutOutcome, Store, TokenMeta};
use serde_json::{json, Value};

use super::overlay::MigrationBackend;
use super::store_url::{self, StoreSpec};
use super::{CliError, EXIT_REFUSED, EXIT_USAGE};

/// The end of `migrate --help`: the store URLs, resuming, exit codes.
pub const AFTER_HELP: &str = "\
STORE URLS:
  dir:<path>[?shard=true]            a directory (the Go server's layout); shard=true: sharded
  nsc:<path>                         an nsc operator folder (source only; read-only)
  redis://[user:pass@]host:port[/db][?prefix=nas:&timeout=<ms>]     (rediss:// for TLS;
                                     timeout: bound of each call, default 30000 ms)
  redis+cluster://[user:pass@]host:port,host:port[?prefix=nas:&groups=16&timeout=<ms>]
                                     a Redis Cluster, any of its nodes as seeds (rediss+cluster://
                                     for TLS); groups must match the store's (default 16)
  s3://<bucket>[/<prefix>][?endpoint=<url>&region=<r>&pathstyle=true&allowhttp=true&timeout=<ms>]
                                     credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY;
                                     no /<prefix>: the default prefix nas:
  postgres://user[:pass]@host:port/db[?table=nas&pool=8&timeout=<ms>&<libpq parameters>]
  config:<file>                      the store { } block of that config file (its operatorjwtpath
                                     is the default --operator)

WHAT IS COPIED:
  Tombstones first: each delete request must still be one the operator signed for that account;
  the destination deletes older JWTs and keeps the tombstone, so older JWTs stay out. Then every
  account JWT, checked by the accept rule (the reason of a refused POST is printed), written only
  if newer than what the destination holds (newer-wins). Then activations, whose issuing account
  must have passed the accept rule.

RESUMING:
  Every write is newer-wins, so running the same migration again changes nothing that is already
  there: an interrupted migration is completed by running it again.

EXIT CODES:
  0 everything copied or already there; 1 something was refused; 2 usage error, or a store
  could not be read or written.";

/// `migrate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The store to copy from (see STORE URLS below).
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// The store to copy into (not nsc: an nsc folder is read-only).
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Operator JWT file whose accept rule every account must pass (default: operatorjwtpath of
    /// a config: store, or the operator of an nsc: source). Required one way or the other.
    #[arg(long, value_name = "OPERATOR.JWT")]
    pub operator: Option<PathBuf>,
    /// Decide everything as a real run would, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Accounts handled at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Print one line per tombstone, account and activation on standard error (its kind, key
    /// and what was done with it).
    #[arg(short, long)]
    pub verbose: bool,
}

/// What happened to one item.
#[derive(Debug, Clone)]
enum Outcome {
    Copied,
    Unchanged,
    /// The destination holds something newer (a JWT, a same-second winner, a tombstone issued
    /// later).
    SkippedOlder,
    /// The destination holds a tombstone issued at or after the JWT.
    SkippedDeleted,
    Refused(String),
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::Unchanged => "unchanged",
            Outcome::SkippedOlder => "skipped-older",
            Outcome::SkippedDeleted => "skipped-deleted",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// The three kinds of things migrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Tombstone,
    Account,
    Activation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tombstone => "tombstone",
            Kind::Account => "account",
            Kind::Activation => "activation",
        }
    }
}

/// The counts of one kind.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    copied: usize,
    unchanged: usize,
    skipped_older: usize,
    skipped_deleted: usize,
    refused: usize,
    failed: usize,
}

/// Everything a run did.
#[derive(Debug, Default)]
struct Summary {
    counts: HashMap<Kind, Counts>,
    /// `(kind, key, reason)` of each refused item, sorted.
    refused: Vec<(Kind, String, String)>,
    /// `(kind, key, error)` of each item the stores failed on, sorted.
    failed: Vec<(Kind, String, String)>,
}

impl Summary {
    fn add(&mut self, kind: Kind, key: String, outcome: Outcome) {
        let c = self.counts.entry(kind).or_default();
        match outcome {
            Outcome::Copied => c.copied += 1,
            Outcome::Unchanged => c.unchanged += 1,
            Outcome::SkippedOlder => c.skipped_older += 1,
            Outcome::SkippedDeleted => c.skipped_deleted += 1,
            Outcome::Refused(reason) => {
                c.refused += 1;
                self.refused.push((kind, key, reason));
            }
            Outcome::Failed(error) => {
                c.failed += 1;
                self.failed.push((kind, key, error));
            }
        }
    }

    fn counts(&self, kind: Kind) -> Counts {
        self.counts.get(&kind).copied().unwrap_or_default()
    }
}

/// The keys found at the source.
struct Listing {
    tombstones: Vec<String>,
    accounts: Vec<String>,
    activations: Vec<String>,
}

impl Listing {
    async fn read(backend: &Arc<dyn Backend>) -> Result<Listing, CliError> {
        Ok(Listing {
            tombstones: list(backend, Namespace::Tombstones).await?,
            accounts: list(backend, Namespace::Accounts).await?,
            activations: list(backend, Namespace::Activations).await?,
        })
    }

    fn len(&self) -> usize {
        self.tombstones.len() + self.accounts.len() + self.activations.len()
    }
}

async fn list(backend: &Arc<dyn Backend>, ns: Namespace) -> Result<Vec<String>, CliError> {
    let fail =
        |e: nas_store::StoreError| CliError::Io(format!("listing the source's {}: {e}", ns.name()));
    let mut stream = backend.list(ns).await.map_err(fail)?;
    let mut keys = Vec::new();
    while let Some(key) = stream.next().await {
        let key = key.map_err(fail)?;
        let valid = match ns {
            Namespace::Activations => nas_store::is_valid_hash_id(&key),
            _ => nas_jwt::is_valid_public_key(&key, nas_jwt::KeyRole::Account),
        };
        // A backend over foreign files may hold names that are neither.
        if valid {
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// One run's stores, rule and output.
struct Migration {
    src: Store,
    dst: Store,
    trust: OperatorTrust,
    accepter: Accepter,
    bar: ProgressBar,
    verbose: bool,
    concurrency: usize,
    /// Accounts that passed the accept rule: their keys and signing keys (the issuers
    /// activations may have).
    issuers: Mutex<HashMap<String, Vec<String>>>,
}

/// Runs `migrate`.
pub async fn run(args: &MigrateArgs) -> ExitCode {
    match migrate(args).await {
        Ok(summary) => {
            if args.json {
                println!("{}", to_json(args, &summary));
            } else {
                print_human(args, &summary);
            }
            if !summary.failed.is_empty() {
                ExitCode::from(EXIT_USAGE)
            } else if !summary.refused.is_empty() {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => e.exit("migrate"),
    }
}

async fn migrate(args: &MigrateArgs) -> Result<Summary, CliError> {
    let (from, to) = (parse(&args.from)?, parse(&args.to)?);
    check_stores(&from.store, &to.store)?;
    let operator = args
        .operator
        .clone()
        .or(from.operator)
        .or(to.operator)
        .ok_or_else(|| {
            CliError::Usage(
                "refusing to migrate without an operator: every account is checked by the accept rule; pass --operator <operator.jwt> or use a config: store that names operatorjwtpath".into(),
            )
        })?;
    let trust = super::load_operator(&operator)?;
    let src_raw = open(&from.store, &args.from).await?;
    let dst_raw = open_destination(&to.store, args).await?;
    let listing = Listing::read(&src_raw).await?;
    let migration = Migration {
        src: Store::new(Arc::new(MigrationBackend::new(src_raw, false))),
        dst: Store::new(Arc::new(MigrationBackend::new(dst_raw, args.dry_run))),
        accepter: super::accepter(trust.clone()),
        trust,
        bar: super::progress(listing.len() as u64, "migrating"),
        verbose: args.verbose,
        concurrency: usize::from(args.concurrency),
        issuers: Mutex::new(HashMap::new()),
    };
    let summary = migration.run(listing).await;
    migration.bar.finish_and_clear();
    Ok(summary)
}

fn parse(url: &str) -> Result<StoreSpec, CliError> {
    store_url::parse(url).map_err(|e| CliError::Usage(e.to_string()))
}

/// Refuses what cannot work before anything is opened.
fn check_stores(from: &StoreConfig, to: &StoreConfig) -> Result<(), CliError> {
    if let StoreConfig::Nsc(_) = to {
        return Err(CliError::Usage(
            "an nsc folder is read-only: it can be a source only (change it with nsc)".into(),
        ));
    }
    if let StoreConfig::Dir(d) = from {
        if !d.dir.is_dir() {
            return Err(CliError::Io(format!(
                "the source directory {} does not exist",
                d.dir.display()
            )));
        }
    }
    if from == to {
        return Err(CliError::Usage(
            "--from and --to name the same store".into(),
        ));
    }
    Ok(())
}

async fn open(store: &StoreConfig, url: &str) -> Result<Arc<dyn Backend>, CliError> {
    nas_server::backend::open_backend(store)
        .await
        .map_err(|e| CliError::Io(format!("store {}: {e}", redact(url))))
}

/// The destination backend, which must be writable. A dry run into a directory that does not
/// exist yet reads an empty store instead of creating the directory.
async fn open_destination(
    store: &StoreConfig,
    args: &MigrateArgs,
) -> Result<Arc<dyn Backend>, CliError> {
    let backend: Arc<dyn Backend> = match store {
        StoreConfig::Dir(d) if args.dry_run && !d.dir.exists() => {
            Arc::new(nas_store::memory::MemoryBackend::new())
        }
        store => open(store, &args.to).await?,
    };
    if backend.read_only() {
        return Err(CliError::Usage(format!(
            "the destination {} is read-only",
            redact(&args.to)
        )));
    }
    Ok(backend)
}

/// A store URL without its password.
fn redact(url: &str) -> String {
    if url.starts_with("postgres") {
        nas_store::redact_dsn(url)
    } else {
        nas_store::redact_url(url)
    }
}

impl Migration {
    async fn run(&self, listing: Listing) -> Summary {
        let mut summary = Summary::default();
        for key in listing.tombstones {
            let outcome = self.tombstone(&key).await;
            self.record(&mut summary, Kind::Tombstone, key, outcome);
        }
        let mut accounts = futures::stream::iter(listing.accounts)
            .map(|key| async move {
                let outcome = self.account(&key).await;
                (key, outcome)
            })
            .buffer_unordered(self.concurrency);
        while let Some((key, outcome)) = accounts.next().await {
            self.record(&mut summary, Kind::Account, key, outcome);
        }
        drop(accounts);
        for id in listing.activations {
            let outcome = self.activation(&id).await;
            self.record(&mut summary, Kind::Activation, id, outcome);
        }
        summary.refused.sort();
        summary.failed.sort();
        summary
    }

    fn record(&self, summary: &mut Summary, kind: Kind, key: String, outcome: Option<Outcome>) {
        self.bar.inc(1);
        // `None`: the item vanished from the source meanwhile; nothing to copy.
        let Some(outcome) = outcome else { return };
        if self.verbose {
            let detail = match &outcome {
                Outcome::Refused(why) | Outcome::Failed(why) => format!(": {why}"),
                _ => String::new(),
            };
            let line = format!("{} {key} {}{detail}", kind.name(), outcome.label());
            self.bar.suspend(|| eprintln!("{line}"));
        }
        summary.add(kind, key, outcome);
    }

    /// One account: the accept rule (as for a POST to `/jwt/v1/accounts/KEY`), then a
    /// newer-wins write.
    async fn account(&self, key: &str) -> Option<Outcome> {
        let bytes = match self.src.get_account(key).await {
            Ok(bytes) => bytes?,
            Err(e) => return Some(Outcome::Failed(format!("reading the source: {e}"))),
        };
        let verified = match self.accepter.check(Some(key), &bytes, nas_jwt::unix_now()) {
            Ok(v) => v,
            Err(e) => return Some(Outcome::Refused(super::refusal_text(&e))),
        };
        let claims = &verified.claims;
        let signing_keys = claims.signing_key_strings().map(str::to_owned).collect();
        self.lock_issuers().insert(key.to_owned(), signing_keys);
        let meta = TokenMeta {
            jti: claims.jti.clone(),
            iat: claims.iat,
            exp: claims.exp,
        };
        let token = Bytes::from(verified.token.clone());
        Some(
            match self.dst.put_account_if_newer(key, token, &meta).await {
                Ok(PutOutcome::Created | PutOutcome::Replaced { .. }) => Outcome::Copied,
                Ok(PutOutcome::Unchanged) => Outcome::Unchanged,
                Ok(PutOutcome::Stale { .. } | PutOutcome::TieLost { .. }) => Outcome::SkippedOlder,
                Ok(PutOutcome::Deleted { .. }) => Outcome::SkippedDeleted,
                Err(e) => Outcome::Failed(format!("writing the destination: {e}")),
            },
        )
    }

    fn lock_issuers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        // Nothing panics while holding the lock.
        self.issuers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One tombstone: its delete request must still be one the operator signed for this key;
    /// it is then applied at the destination by the store's delete rule.
    async fn tombstone(&self, key: &str) -> Option<Outcome> {
        let request = match self.src.get_tombstone(key).await {
            Ok(request) => request?,
            Err(e) => return Some(Outcome::Failed(format!("reading the source: {e}"))),
        };
        let iat = match check_delete_request(&self.trust, key, &request) {
            Ok(iat) => iat,
            Err(reason) => return Some(Outcome::Refused(reason)),
        };
        Some(
            self.apply_tombstone(key, request, iat)
                .await
                .unwrap_or_else(Outcome::Failed),
        )
    }

    async fn apply_tombstone(
        &self,
        key: &str,
        request: Bytes,
        iat: i64,
    ) -> Result<Outcome, String> {
        let stored = self
            .dst
            .get_tombstone(key)
            .await
            .map_err(|e| format!("reading the destination: {e}"))?;
        if let Some(stored) = stored {
            if stored == request {
                return Ok(Outcome::Unchanged);
            }
            let stored_iat = TokenMeta::read(&stored).map(|m| m.iat).unwrap_or(0);
            if stored_iat >= iat {
                return Ok(Outcome::SkippedOlder);
            }
        }
        match self.dst.delete_account_by(key, request, iat).await {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::Absent) => Ok(Outcome::Copied),
            Ok(DeleteOutcome::Stale { .. }) => Ok(Outcome::SkippedOlder),
            Err(e) => Err(format!("writing the destination: {e}")),
        }
    }

    /// One activation: the checks of POST /jwt/v1/activations (its issuing account must be one
    /// that passed the accept rule in this run), then a newer-wins write.
    async fn activation(&self, id: &str) -> Option<Outcome> {
        let bytes = match self.src.get_activation(id).await {
            Ok(bytes) => bytes?,
            Err(e) => return Some(Outcome::Failed(format!("reading the source: {e}"))),
        };
        let (token, iat) = match self.check_activation(id, &bytes) {
            Ok(checked) => checked,
            Err(reason) => return Some(Outcome::Refused(reason)),
        };
        Some(
            match self.dst.put_activation_if_newer(id, token, iat).await {
                Ok(PutOutcome::Created | PutOutcome::Replaced { .. }) => Outcome::Copied,
                Ok(PutOutcome::Unchanged) => Outcome::Unchanged,
                Ok(_) => Outcome::SkippedOlder,
                Err(e) => Outcome::Failed(format!("writing the destination: {e}")),
            },
        )
    }

    fn check_activation(&self, id: &str, bytes: &[u8]) -> Result<(Bytes, i64), String> {
        use nas_server::activation::ActivationError as E;
        let (token, claims) = nas_jwt::decode(bytes)
            .and_then(|j| j.into_activation())
            .map_err(|_| E::Malformed.to_string())?;
        if !nas_jwt::is_valid_public_key(&claims.sub, nas_jwt::KeyRole::Account) {
            return Err(E::BadSubject.to_string());
        }
        let hash = nas_jwt::activation_hash_id(&claims).map_err(|_| E::BadHash.to_string())?;
        if hash != id {
            return Err(format!(
                "stored under hash id {id}, but its hash id is {hash}"
            ));
        }
        let account = if claims.nats.issuer_account.is_empty() {
            &claims.iss
        } else {
            &claims.nats.issuer_account
        };
        let known = self
            .lock_issuers()
            .get(account)
            .is_some_and(|keys| claims.iss == *account || keys.contains(&claims.iss));
        if !known {
            return Err(E::UnknownIssuer(claims.iss.clone()).to_string());
        }
        let now = nas_jwt::unix_now();
        if claims.exp > 0 && now > claims.exp {
            return Err(E::Expired.to_string());
        }
        if claims.nbf > now {
            return Err(E::NotYetValid.to_string());
        }
        Ok((Bytes::from(token), claims.iat))
    }
}

/// The checks of the delete rule a stored request must still pass, with its messages: a
/// self-signed generic claim of the operator listing `key`, not the system account. Not its
/// time checks: a tombstone keeps the request after it expired. Returns the request's `iat`.
fn check_delete_request(trust: &OperatorTrust, key: &str, request: &[u8]) -> Result<i64, String> {
    use nas_server::delete::{DeleteError, DeleteRefusal};
    let fail = |requester: &str, refusal| {
        let requester = requester.to_owned();
        DeleteError { requester, refusal }.to_string()
    };
    let jwt = nas_jwt::decode_generic(request.trim_ascii())
        .map_err(|e| fail("", DeleteRefusal::Undecodable(e)))?;
    let claims = jwt.claims();
    let requester = claims.sub();
    if claims.iss() != claims.sub() {
        return Err(fail(requester, DeleteRefusal::NotSelfSigned));
    }
    if !trust.trusts_delete_request(claims.iss(), claims.sub()) {
        return Err(fail(requester, DeleteRefusal::NotTrusted));
    }
    let AnyClaims::Generic(generic) = claims else {
        return Err(fail(requester, DeleteRefusal::Malformed));
    };
    let listed = match generic.nats.get("accounts") {
        Some(Value::Array(accounts)) => accounts.iter().any(|a| a.as_str() == Some(key)),
        _ => return Err(fail(requester, DeleteRefusal::Malformed)),
    };
    if !listed {
        return Err(fail(requester, DeleteRefusal::NotListed(key.to_owned())));
    }
    if trust.system_account() == Some(key) {
        return Err(fail(requester, DeleteRefusal::SystemAccount));
    }
    Ok(claims.iat())
}

fn counts_json(c: Counts) -> Value {
    json!({
        "copied": c.copied,
        "unchanged": c.unchanged,
        "skipped_older": c.skipped_older,
        "skipped_deleted": c.skipped_deleted,
        "refused": c.refused,
        "failed": c.failed,
    })
}

fn items_json(items: &[(Kind, String, String)], what: &str) -> Value {
    items
        .iter()
        .map(|(kind, key, text)| json!({ "kind": kind.name(), "key": key, what: text }))
        .collect()
}

fn to_json(args: &MigrateArgs, s: &Summary) -> Value {
    json!({
        "from": redact(&args.from),
        "to": redact(&args.to),
        "dry_run": args.dry_run,
        "tombstones": counts_json(s.counts(Kind::Tombstone)),
        "accounts": counts_json(s.counts(Kind::Account)),
        "activations": counts_json(s.counts(Kind::Activation)),
        "refused": items_json(&s.refused, "reason"),
        "failed": items_json(&s.failed, "error"),
    })
}

fn print_human(args: &MigrateArgs, s: &Summary) {
    let dry = if args.dry_run {
        " (dry run: nothing was written)"
    } else {
        ""
    };
    println!("{} -> {}{dry}", redact(&args.from), redact(&args.to));
    println!(
        "{:<12}{:>8}{:>11}{:>15}{:>17}{:>9}{:>8}",
        "", "copied", "unchanged", "skipped-older", "skipped-deleted", "refused", "failed"
    );
    for kind in [Kind::Tombstone, Kind::Account, Kind::Activation] {
        let c = s.counts(kind);
        println!(
            "{:<12}{:>8}{:>11}{:>15}{:>17}{:>9}{:>8}",
            format!("{}s", kind.name()),
            c.copied,
            c.unchanged,
            c.skipped_older,
            c.skipped_deleted,
            c.refused,
            c.failed
        );
    }
    for (title, items) in [("refused", &s.refused), ("failed", &s.failed)] {
        if !items.is_empty() {
            println!("{title}:");
        }
        for (kind, key, text) in items.iter() {
            println!("  {} {key}: {text}", kind.name());
        }
    }
}
