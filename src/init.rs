//! `nats-account-server init`: a complete, working test setup without nsc.

use std::io::Write;
use std::path::{Path, PathBuf};

use nas_jwt::creds::format_creds;
use nas_jwt::{encode, AccountClaims, KeyRole, OperatorClaims, SigningKey, UserClaims};

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the setup in `dir` (which must not exist yet).
pub async fn run(dir: &Path, port: u16, nats_port: u16) -> Result<(), String> {
    if dir.exists() {
        return Err(format!(
            "{} already exists; choose another --dir",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir.join("keys")).map_err(|e| e.to_string())?;
    let dir = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    let now = nas_jwt::unix_now();
    let sign = |e: nas_jwt::EncodeError| e.to_string();

    let operator = SigningKey::generate(KeyRole::Operator);
    let operator_sk = SigningKey::generate(KeyRole::Operator);
    let sys = SigningKey::generate(KeyRole::Account);
    let app = SigningKey::generate(KeyRole::Account);
    let sys_user = SigningKey::generate(KeyRole::User);
    let app_user = SigningKey::generate(KeyRole::User);

    let mut op = OperatorClaims::new(operator.public_key().as_str(), "QuickstartOperator");
    op.nats.signing_keys = vec![operator_sk.public_key().as_str().to_owned()];
    op.nats.system_account = sys.public_key().as_str().to_owned();
    op.nats.account_server_url = format!("http://localhost:{port}/jwt/v1");
    let op_jwt = encode(&mut op, &operator, now).map_err(sign)?;
    let mut sys_claims = AccountClaims::new_account(sys.public_key().as_str(), "SYS");
    let sys_jwt = encode(&mut sys_claims, &operator_sk, now).map_err(sign)?;
    let mut app_claims = AccountClaims::new_account(app.public_key().as_str(), "APP");
    let app_jwt = encode(&mut app_claims, &operator_sk, now).map_err(sign)?;
    let mut u = UserClaims::new_user(sys_user.public_key().as_str(), "sys");
    let sys_user_jwt = encode(&mut u, &sys, now).map_err(sign)?;
    let mut u = UserClaims::new_user(app_user.public_key().as_str(), "app");
    let app_user_jwt = encode(&mut u, &app, now).map_err(sign)?;

    for (name, key) in [
        ("operator", &operator),
        ("operator_signing_key", &operator_sk),
        ("SYS", &sys),
        ("APP", &app),
    ] {
        write(
            &dir.join("keys").join(format!("{name}.nk")),
            &format!("{}\n", key.seed()),
            true,
        )?;
    }
    write(&dir.join("operator.jwt"), &op_jwt, false)?;
    write(&dir.join("SYS.jwt"), &sys_jwt, false)?;
    write(&dir.join("APP.jwt"), &app_jwt, false)?;
    write(
        &dir.join("sys.creds"),
        &format_creds(&sys_user_jwt, sys_user.seed()),
        true,
    )?;
    write(
        &dir.join("app.creds"),
        &format_creds(&app_user_jwt, app_user.seed()),
        true,
    )?;

    let store: PathBuf = dir.join("jwt");
    write(
        &dir.join("nas.conf"),
        &format!(
            "# nats-account-server config made by `nats-account-server init` (test keys only)\n\
             operatorjwtpath: \"{op}\"\nsystemaccountjwtpath: \"{sysf}\"\n\
             http {{ host: \"localhost\", port: {port} }}\nstore {{ dir: \"{store}\" }}\n",
            op = dir.join("operator.jwt").display(),
            sysf = dir.join("SYS.jwt").display(),
            store = store.display(),
        ),
        false,
    )?;
    write(
        &dir.join("nats-server.conf"),
        &format!(
            "# nats-server config made by `nats-account-server init` (test keys only)\n\
             listen: 127.0.0.1:{nats_port}\noperator: \"{op}\"\nsystem_account: {sys}\n\
             resolver: URL(http://localhost:{port}/jwt/v1/accounts/)\n",
            op = dir.join("operator.jwt").display(),
            sys = sys.public_key(),
        ),
        false,
    )?;

    // The accounts go into the store through the same rule as every other write.
    let trust =
        nas_jwt::OperatorTrust::from_operator_jwt(op_jwt.as_bytes()).map_err(|e| e.to_string())?;
    let backend = nas_store::dir::DirBackend::open(
        &store,
        nas_store::dir::DirOptions {
            sharded: false,
            read_only: false,
            watch: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let store = nas_store::Store::new(std::sync::Arc::new(backend));
    for jwt in [&sys_jwt, &app_jwt] {
        let verified = trust
            .verify_account(jwt.as_bytes(), None, now)
            .map_err(|e| e.to_string())?;
        let meta = nas_store::TokenMeta {
            jti: verified.claims.jti.clone(),
            iat: verified.claims.iat,
            exp: verified.claims.exp,
        };
        store
            .put_account_if_newer(
                &verified.claims.sub,
                bytes::Bytes::from(verified.token),
                &meta,
            )
            .await
            .map_err(|e| e.to_string())?;
    }

    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "nats-account-server".into());
    println!(
        "Created a test setup in {} (the keys in it are for testing only).",
        dir.display()
    );
    println!("  operator      {}", operator.public_key());
    println!(
        "  account SYS   {}  user creds: {}",
        sys.public_key(),
        dir.join("sys.creds").display()
    );
    println!(
        "  account APP   {}  user creds: {}",
        app.public_key(),
        dir.join("app.creds").display()
    );
    println!();
    println!("Next, in two terminals:");
    println!("  {exe} -c {}", dir.join("nas.conf").display());
    println!(
        "  nats-server -c {}",
        dir.join("nats-server.conf").display()
    );
    println!();
    println!("Then connect as the APP user, e.g. with the nats CLI:");
    println!(
        "  nats --server nats://127.0.0.1:{nats_port} --creds {} pub hello world",
        dir.join("app.creds").display()
    );
    Ok(())
}
