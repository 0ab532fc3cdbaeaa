//! The audit log: one JSON line per write decision (accepted, refused, deleted, purged) on
//! every path, to a file (`audit { file }`, append-only, reopened when the server restarts on
//! SIGHUP, so log rotation works with a plain `mv` + `kill -HUP`) and/or a NATS subject
//! (`audit { subject }`).
//!
//! Records go through a bounded queue ([`QUEUE`] lines) to one writer task, so a slow disk or a
//! flood of refused writes never blocks a request and never grows memory: a record that finds
//! the queue full is dropped and counted (`nas_audit_dropped_total`, and a warning once a
//! second). Background merges (PACK replies, a primary's pack, LOOKUP answers) repeat the same
//! accounts every interval; for them only decisions that change the store or refuse a JWT are
//! recorded, not "already held" and "older than held".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, OncePerSecond};

/// Lines waiting for the writer at most.
pub const QUEUE: usize = 4096;

static DROP_LOG: OncePerSecond = OncePerSecond::new();

/// One write decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// RFC 3339 UTC.
    pub time: String,
    /// `http`, `nats_update`, `pack_merge`, `primary`, `nats_lookup`, `http_delete`,
    /// `nats_delete`, `expiry_purge`, `activation`.
    pub path: &'static str,
    /// Remote address (HTTP), subject (NATS), primary URL (replica), or empty.
    pub origin: String,
    /// The account key (or activation hash id); empty when the request could not be read.
    pub account: String,
    /// `iat` of the JWT or request (0 when unreadable).
    pub iat: i64,
    /// `jti` of the JWT or request.
    pub jti: String,
    /// `iss` of the JWT or request.
    pub issuer: String,
    /// `created`, `updated`, `unchanged`, `deleted`, `purged`, `refused`, `stale`, `error`.
    pub outcome: &'static str,
    /// Why, for anything but a plain success.
    pub reason: String,
}

impl AuditRecord {
    /// A record for `token` (read without verifying: a refused token is described as sent).
    pub fn about(path: &'static str, origin: &str, token: &[u8], outcome: &'static str) -> Self {
        let claims = nas_jwt::jwt::peek_payload(token).unwrap_or_default();
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        AuditRecord {
            time: crate::view::rfc3339_now(),
            path,
            origin: origin.to_owned(),
            account: text("sub"),
            iat: claims.get("iat").and_then(|v| v.as_i64()).unwrap_or(0),
            jti: text("jti"),
            issuer: text("iss"),
            outcome,
            reason: String::new(),
        }
    }

    /// The same record with a reason.
    pub fn because(mut self, reason: impl std::fmt::Display) -> Self {
        self.reason = reason.to_string();
        self
    }

    /// The same record naming `account` (when the token's subject is not what was acted on).
    pub fn for_account(mut self, account: &str) -> Self {
        self.account = account.to_owned();
        self
    }
}

/// Where audit records go; cheap to clone. [`Audit::off`] records nothing.
#[derive(Clone, Default)]
pub struct Audit {
    /// The writer's queue and the metrics that count what it drops.
    queue: Option<(mpsc::Sender<AuditRecord>, Arc<Metrics>)>,
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit file {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Audit {
    /// No audit log.
    pub fn off() -> Audit {
        Audit::default()
    }

    /// Opens the configured sinks and starts the writer; `Audit::off` when there are none.
    pub fn start(
        file: Option<&Path>,
        nats: Option<(async_nats::Client, String)>,
        metrics: Arc<Metrics>,
    ) -> Result<Audit, AuditError> {
        if file.is_none() && nats.is_none() {
            return Ok(Audit::off());
        }
        let file = file.map(open_append).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_records(rx, file, nats));
        Ok(Audit {
            queue: Some((tx, metrics)),
        })
    }

    /// Whether records go anywhere (callers skip building them otherwise: a PACK merge of a
    /// large store would describe every line for nothing).
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `record`; drops it (counted) when the writer is behind.
    pub fn record(&self, record: AuditRecord) {
        let Some((queue, metrics)) = &self.queue else {
            return;
        };
        if queue.try_send(record).is_err() {
            metrics.audit_dropped.inc();
            if DROP_LOG.admit() {
                tracing::warn!("audit queue full ({QUEUE} lines): records are being dropped");
            }
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError {
            path: path.to_owned(),
            source,
        })
}

/// The writer: each record is one line, written with one `write` call to a file opened for
/// appending (so lines of several instances sharing a file do not interleave) and published.
async fn write_records(
    mut rx: mpsc::Receiver<AuditRecord>,
    mut file: Option<std::fs::File>,
    nats: Option<(async_nats::Client, String)>,
) {
    while let Some(record) = rx.recv().await {
        let Ok(mut line) = serde_json::to_vec(&record) else {
            continue;
        };
        line.push(b'\n');
        if let Some(f) = &mut file {
            if let Err(e) = f.write_all(&line) {
                tracing::error!("audit file write failed: {e}");
            }
        }
        if let Some((client, subject)) = &nats {
            line.pop();
            if let Err(e) = client.publish(subject.clone(), line.into()).await {
                tracing::warn!("audit publish failed: {e}");
            }
        }
    }
}
