//! The API server inside the binary: `updraft api-server`, and the pieces `standalone` shares
//! (listener, token secret, the first admin account).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use updraft_config::Config;
use updraft_store::{DynStore, NewUser};

/// File holding the generated token secret when `api.secret_key` is empty.
const SECRET_FILE: &str = "api_secret_key";
/// File holding the password `standalone` generated for `admin`.
pub const ADMIN_PASSWORD_FILE: &str = "standalone_admin_password.txt";

/// Writes `contents` to a new file readable only by its owner; fails if the file exists.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// `api.secret_key`, or the generated key in `$UPDRAFT_HOME/api_secret_key` (created on first use).
/// The value is never logged.
pub fn secret_key(cfg: &Config) -> Result<Vec<u8>> {
    if !cfg.api.secret_key.is_empty() {
        return Ok(cfg.api.secret_key.as_bytes().to_vec());
    }
    let path = cfg.home.join(SECRET_FILE);
    if !path.exists() {
        std::fs::create_dir_all(&cfg.home)
            .with_context(|| format!("cannot create {}", cfg.home.display()))?;
        let key = updraft_crypto::fernet::Key::generate().to_base64();
        match write_private(&path, &key) {
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            r => r.with_context(|| format!("cannot write {}", path.display()))?,
        }
    }
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let key = key.trim();
    anyhow::ensure!(
        key.len() >= 32,
        "{} holds a secret shorter than 32 characters; delete it to generate a new one",
        path.display()
    );
    Ok(key.as_bytes().to_vec())
}

/// Creates `admin` with a generated password when no such user exists, prints the password
/// once and saves it to `$UPDRAFT_HOME/standalone_admin_password.txt` (mode 0600).
pub async fn ensure_standalone_admin(cfg: &Config, store: &DynStore) -> Result<()> {
    if store.get_user("admin").await?.is_some() {
        return Ok(());
    }
    let password = updraft_crypto::password::generate();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || updraft_crypto::password::hash(&password)).await?
    };
    let path = cfg.home.join(ADMIN_PASSWORD_FILE);
    // A stale file from an earlier database would show a password that no longer works.
    let _ = std::fs::remove_file(&path);
    // The password is kept safe before the user exists, but the file appears under its name
    // only once the user does: whoever waits for the file can log in as soon as it is there.
    let pending = cfg.home.join(format!("{ADMIN_PASSWORD_FILE}.new"));
    write_private(&pending, &format!("{password}\n"))
        .with_context(|| format!("cannot write {}", pending.display()))?;
    if let Err(e) = store
        .create_user(&NewUser {
            username: "admin".into(),
            password_hash: hash,
            role: "admin".into(),
            email: None,
            first_name: None,
            last_name: None,
        })
        .await
    {
        let _ = std::fs::remove_file(&pending);
        return Err(e).context("cannot create the admin user");
    }
    std::fs::rename(&pending, &path).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "updraft: created user `admin` (role admin) with password: {password}\n  \
         (saved to {}, readable only by you)",
        path.display()
    );
    Ok(())
}

/// Binds `--host`/`--port`, falling back to `api.host`/`api.port`.
pub async fn bind(cfg: &Config, host: Option<String>, port: Option<u16>) -> Result<TcpListener> {
    let host = host.unwrap_or_else(|| cfg.api.host.clone());
    let port = port.unwrap_or(cfg.api.port);
    TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))
}

/// Starts serving the API on `listener` until `shutdown`.
pub fn spawn(
    cfg: &Config,
    store: DynStore,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<std::io::Result<()>>> {
    let state = updraft_api::AppState::new(store, Arc::new(cfg.clone()), secret_key(cfg)?);
    if let Ok(addr) = listener.local_addr() {
        eprintln!("  web ui:      http://{addr}/");
        eprintln!("  api:         http://{addr}/api/v2");
    }
    Ok(tokio::spawn(updraft_api::serve_router(
        listener,
        updraft_web::app(state),
        shutdown,
    )))
}

/// `updraft api-server`.
pub async fn api_server(cfg: Config, host: Option<String>, port: Option<u16>) -> Result<()> {
    let store = crate::engine::open_store(&cfg).await?;
    store
        .check()
        .await
        .context("the database is not ready (run `updraft db migrate`)")?;
    let listener = bind(&cfg, host, port).await?;
    eprintln!("updraft api-server {}", env!("CARGO_PKG_VERSION"));
    let server = spawn(&cfg, store, listener, crate::engine::shutdown_signal())?;
    server.await?.context("api server failed")?;
    tracing::info!("stopped");
    Ok(())
}
