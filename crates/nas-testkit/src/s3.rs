//! A real S3-compatible server: moto_server (PyPI `moto[server]`).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::discover::{require_moto_server, ServiceBinary};
use crate::net::{http_request, HttpResponse};
use crate::process::Supervised;

/// moto imports a lot of Python; give it more time on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Region to configure S3 clients with (moto accepts any).
pub const S3_REGION: &str = "us-east-1";
/// Access key id to configure S3 clients with (moto accepts any).
pub const S3_ACCESS_KEY_ID: &str = "testing";
/// Secret access key to configure S3 clients with (moto accepts any).
pub const S3_SECRET_ACCESS_KEY: &str = "testing";

/// moto does not verify signatures, but treats requests without an
/// `Authorization` header as anonymous and answers 403 for private objects.
const DUMMY_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

fn s3_ready(port: u16, _log: &str) -> bool {
    http_request(port, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200)
}

/// moto's S3 app with one request handled at a time. moto checks `If-Match` /
/// `If-None-Match` and then writes without a lock, so on its threaded server two conditional
/// writes of one object can both succeed (seen: a lost update in the compare-and-swap
/// conformance test under load). Real S3 checks and writes atomically; serializing requests
/// gives the tests that guarantee. Connections stay concurrent (keep-alive works).
pub const SERIALIZED_MOTO: &str = r#"
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True, request_handler=MotoRequestHandler)
"#;

/// A running moto_server (S3 API) on `127.0.0.1:<ephemeral port>`, killed on
/// drop.
///
/// moto keeps everything in memory: [`restart`](Self::restart) (and
/// [`reset`](Self::reset)) lose all buckets and objects. Use path-style
/// addressing (`http://127.0.0.1:PORT/bucket/key`). moto 5.2.5 honours
/// conditional writes: `PUT` with `If-None-Match: *` on an existing key and
/// `If-Match: <stale etag>` both answer 412 `PreconditionFailed`
/// (`If-Match` on a missing key answers 404 `NoSuchKey`).
pub struct S3Server {
    // Declared first so the process is killed before the directory is removed.
    proc: Supervised,
    port: u16,
    bin: ServiceBinary,
    dir: TempDir,
}

impl S3Server {
    /// Starts moto's S3 app on `127.0.0.1:PORT` (see `SERIALIZED_MOTO`), waiting (up to
    /// 30 s) until `GET /` answers 200. Panics with an install hint if moto is missing.
    pub fn start() -> S3Server {
        let bin = require_moto_server();
        // The venv's python next to moto_server runs the serialized app; without one (another
        // install layout) moto_server itself is started.
        let python = bin.path.with_file_name("python");
        let serialized = python.is_file();
        let dir = tempfile::Builder::new()
            .prefix("nas-testkit-s3-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        let dir_path = dir.path().to_path_buf();
        let args_for = |port: u16| -> Vec<OsString> {
            if serialized {
                vec![
                    "-c".into(),
                    SERIALIZED_MOTO.into(),
                    "127.0.0.1".into(),
                    port.to_string().into(),
                ]
            } else {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string().into(),
                ]
            }
        };
        let program = if serialized { &python } else { &bin.path };
        let mut proc = Supervised::new(
            "moto_server",
            program,
            &dir_path,
            dir_path.join("moto_server.log"),
            START_TIMEOUT,
        );
        proc.env("PYTHONUNBUFFERED", "1");
        let port = proc.start_on_free_port(&args_for, &s3_ready);
        S3Server {
            proc,
            port,
            bin,
            dir,
        }
    }

    /// Endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The moto_server binary (version = moto's version).
    pub fn binary(&self) -> &ServiceBinary {
        &self.bin
    }

    /// The server's temporary (working) directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Raw, unsigned HTTP request to the server (path-style, e.g.
    /// `/bucket/key`). A dummy `Authorization` header (which moto requires for
    /// non-public objects but does not verify) and
    /// `Content-Type: application/octet-stream` are added unless given.
    /// Panics on connection errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !has("authorization") {
            all.push(("Authorization", DUMMY_AUTH));
        }
        if !has("content-type") {
            all.push(("Content-Type", "application/octet-stream"));
        }
        http_request(self.port, method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {} {path}: {e}", self.endpoint()))
    }

    /// Creates `bucket` (panics unless moto answers 200).
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.request("PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(r.status, 200, "create bucket {bucket}: {}", r.text());
    }

    /// Drops all state (buckets, objects) without restarting
    /// (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let r = self.request("POST", "/moto-api/reset", &[], b"");
        assert_eq!(r.status, 200, "moto reset: {}", r.text());
    }

    /// The server's stdout+stderr so far (all runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Kills the server (SIGKILL) and reaps it; a no-op when stopped.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// (Re)starts moto on the same port, killing it first if running.
    /// **All buckets and objects are lost** (moto is in-memory).
    pub fn restart(&mut self) {
        self.proc.restart_same_port(self.port, &s3_ready);
    }
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("moto", &self.bin.version)
            .field("endpoint", &self.endpoint())
            .finish()
    }
}
