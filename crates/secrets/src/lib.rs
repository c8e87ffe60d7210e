//! Variables and connections as tasks, templates and the CLI see them: Airflow's lookup order
//! (environment, then mounted secret files, then the metastore) and Fernet encryption at rest.
//!
//! Encryption happens here, above the store: the store keeps whatever text it is given.
//!
//! How a stored value is known to be encrypted:
//! - connections carry `is_encrypted` / `is_extra_encrypted`, as in Airflow;
//! - variables have no flag in the store, so a variable value is encrypted exactly when it is a
//!   Fernet token. With a key configured every write stores a token. On read, a value that
//!   authenticates under a configured key is decrypted; a value that does not have a token's
//!   shape (version byte 0x80, base64url, whole AES blocks) is plain text written before a key
//!   existed; a value with a token's shape that no key authenticates is an error, never returned
//!   as if it were the clear value, because that means its key was removed too early.

pub mod connection;

pub use connection::ConnectionValue;

use base64::Engine;
use std::collections::HashMap;
use std::path::PathBuf;
use updraft_crypto::fernet::MultiFernet;
use updraft_store::{Connection, DynStore};

pub const ENV_VAR_PREFIXES: [&str; 2] = ["UPDRAFT_VAR_", "AIRFLOW_VAR_"];
pub const ENV_CONN_PREFIXES: [&str; 2] = ["UPDRAFT_CONN_", "AIRFLOW_CONN_"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] updraft_store::Error),
    #[error("invalid core.fernet_key: {0}")]
    Key(updraft_crypto::Error),
    #[error(
        "{what} is encrypted but no configured fernet key decrypts it: add the key it was encrypted with to core.fernet_key"
    )]
    Undecryptable { what: String },
    #[error("{what} is encrypted but core.fernet_key is empty")]
    NoKey { what: String },
    #[error("{what} does not decrypt to UTF-8 text")]
    NotUtf8 { what: String },
    #[error("connection `{conn_id}` is not valid: {reason}")]
    InvalidConnection { conn_id: String, reason: String },
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counts of re-encrypted values after [`Secrets::rotate`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    pub variables: usize,
    pub connections: usize,
}

/// Resolves and writes variables and connections.
pub struct Secrets {
    store: DynStore,
    fernet: Option<MultiFernet>,
    files_dir: Option<PathBuf>,
    env: HashMap<String, String>,
}

impl Secrets {
    /// `fernet_key` is `core.fernet_key` (comma-separated, the first encrypts; empty stores
    /// clear text); `files_dir` is `secrets.files_dir`. The process environment is read once,
    /// here.
    pub fn new(store: DynStore, fernet_key: &str, files_dir: Option<PathBuf>) -> Result<Secrets> {
        Self::with_env(store, fernet_key, files_dir, std::env::vars().collect())
    }

    /// Like [`Secrets::new`] with an explicit environment: tests, and the REST API, which passes
    /// none because it serves the metastore only.
    pub fn with_env(
        store: DynStore,
        fernet_key: &str,
        files_dir: Option<PathBuf>,
        env: HashMap<String, String>,
    ) -> Result<Secrets> {
        let fernet = if fernet_key.trim().is_empty() {
            None
        } else {
            Some(MultiFernet::from_config(fernet_key).map_err(Error::Key)?)
        };
        Ok(Secrets {
            store,
            fernet,
            files_dir,
            env,
        })
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Whether values are encrypted when written.
    pub fn encrypts(&self) -> bool {
        self.fernet.is_some()
    }

    fn env_value(&self, prefixes: [&str; 2], id: &str) -> Option<String> {
        let upper = id.to_uppercase();
        prefixes
            .iter()
            .find_map(|p| self.env.get(&format!("{p}{upper}")).cloned())
    }

    fn file_value(&self, sub: &str, id: &str) -> Result<Option<String>> {
        let Some(dir) = &self.files_dir else {
            return Ok(None);
        };
        // A key that names another path is never looked up: mounted files are one flat folder.
        if id.is_empty() || id.contains(['/', '\\']) || id == "." || id == ".." {
            return Ok(None);
        }
        for path in [dir.join(sub).join(id), dir.join(id)] {
            match std::fs::read_to_string(&path) {
                // Files written by tools usually end with a newline that is not part of the value.
                Ok(text) => return Ok(Some(text.strip_suffix('\n').unwrap_or(&text).to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {}
                Err(e) => {
                    return Err(Error::File {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// A variable: `UPDRAFT_VAR_<KEY>` / `AIRFLOW_VAR_<KEY>`, then the file `<files_dir>/variables/<key>`
    /// or `<files_dir>/<key>`, then the metastore (decrypted).
    pub async fn variable(&self, key: &str) -> Result<Option<String>> {
        if let Some(v) = self.env_value(ENV_VAR_PREFIXES, key) {
            return Ok(Some(v));
        }
        if let Some(v) = self.file_value("variables", key)? {
            return Ok(Some(v));
        }
        self.stored_variable(key).await
    }

    /// The environment's or a secret file's value of a variable, without asking the metastore
    /// (for callers that preloaded the metastore's variables, like template rendering).
    pub fn variable_override(&self, key: &str) -> Result<Option<String>> {
        if let Some(v) = self.env_value(ENV_VAR_PREFIXES, key) {
            return Ok(Some(v));
        }
        self.file_value("variables", key)
    }

    /// Every stored variable decrypted, by key.
    pub async fn stored_variables(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for v in self.store.list_variables().await? {
            let clear = self.decrypt_variable(&v.key, &v.value)?;
            out.insert(v.key, clear);
        }
        Ok(out)
    }

    /// The metastore's value only, decrypted (what `variables get` of a stored key shows).
    pub async fn stored_variable(&self, key: &str) -> Result<Option<String>> {
        Ok(match self.store.get_variable(key).await? {
            Some(v) => Some(self.decrypt_variable(key, &v.value)?),
            None => None,
        })
    }

    /// Decrypts a raw stored variable value by the rule in the crate documentation.
    pub fn decrypt_variable(&self, key: &str, raw: &str) -> Result<String> {
        self.open(&format!("variable `{key}`"), raw, looks_like_token(raw))
    }

    fn open(&self, what: &str, raw: &str, encrypted: bool) -> Result<String> {
        if !encrypted {
            return Ok(raw.to_string());
        }
        let Some(fernet) = &self.fernet else {
            return Err(Error::NoKey { what: what.into() });
        };
        let clear = fernet
            .decrypt(raw)
            .map_err(|_| Error::Undecryptable { what: what.into() })?;
        String::from_utf8(clear).map_err(|_| Error::NotUtf8 { what: what.into() })
    }

    fn seal(&self, clear: &str) -> (String, bool) {
        match &self.fernet {
            Some(f) => (f.encrypt(clear.as_bytes()), true),
            None => (clear.to_string(), false),
        }
    }

    /// Stores a variable, encrypted when a key is configured.
    pub async fn set_variable(
        &self,
        key: &str,
        value: &str,
        description: Option<&str>,
    ) -> Result<()> {
        let (sealed, _) = self.seal(value);
        self.store.set_variable(key, &sealed, description).await?;
        Ok(())
    }

    /// Stores a new variable like [`Secrets::set_variable`], unless the key exists: false, and
    /// nothing written, when it does.
    pub async fn create_variable(
        &self,
        key: &str,
        value: &str,
        description: Option<&str>,
    ) -> Result<bool> {
        let (sealed, _) = self.seal(value);
        Ok(self
            .store
            .create_variable(key, &sealed, description)
            .await?)
    }

    /// Every stored variable as `(key, clear value, description)`, ordered like the store.
    pub async fn list_variables(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let mut out = Vec::new();
        for v in self.store.list_variables().await? {
            let clear = self.decrypt_variable(&v.key, &v.value)?;
            out.push((v.key, clear, v.description));
        }
        Ok(out)
    }

    /// A connection: `UPDRAFT_CONN_<ID>` / `AIRFLOW_CONN_<ID>` (URI or JSON), then the file
    /// `<files_dir>/connections/<id>` or `<files_dir>/<id>` (URI or JSON), then the metastore.
    pub async fn connection(&self, conn_id: &str) -> Result<Option<ConnectionValue>> {
        if let Some(text) = self.env_value(ENV_CONN_PREFIXES, conn_id) {
            return ConnectionValue::parse(conn_id, &text).map(Some);
        }
        if let Some(text) = self.file_value("connections", conn_id)? {
            return ConnectionValue::parse(conn_id, &text).map(Some);
        }
        self.stored_connection(conn_id).await
    }

    /// The metastore's connection only, decrypted.
    pub async fn stored_connection(&self, conn_id: &str) -> Result<Option<ConnectionValue>> {
        match self.store.get_connection(conn_id).await? {
            Some(c) => self.decrypt_connection(c).map(Some),
            None => Ok(None),
        }
    }

    /// Every stored connection (not the environment's, like Airflow), decrypted.
    pub async fn list_connections(&self) -> Result<Vec<ConnectionValue>> {
        let mut out = Vec::new();
        for c in self.store.list_connections().await? {
            out.push(self.decrypt_connection(c)?);
        }
        Ok(out)
    }

    pub fn decrypt_connection(&self, c: Connection) -> Result<ConnectionValue> {
        let what = |field: &str| format!("the {field} of connection `{}`", c.conn_id);
        let password = match &c.password {
            Some(p) => Some(self.open(&what("password"), p, c.is_encrypted)?),
            None => None,
        };
        let extra = match &c.extra {
            Some(e) => Some(self.open(&what("extra"), e, c.is_extra_encrypted)?),
            None => None,
        };
        Ok(ConnectionValue {
            conn_id: c.conn_id,
            conn_type: c.conn_type,
            description: c.description,
            host: c.host,
            schema: c.schema,
            login: c.login,
            password,
            port: c.port,
            extra,
        })
    }

    /// Stores a connection; password and extra are encrypted with the first key when one is
    /// configured.
    pub async fn set_connection(&self, c: &ConnectionValue) -> Result<()> {
        self.store
            .set_connection(&self.sealed_connection(c))
            .await?;
        Ok(())
    }

    /// Stores a new connection like [`Secrets::set_connection`], unless the conn_id exists:
    /// false, and nothing written, when it does.
    pub async fn create_connection(&self, c: &ConnectionValue) -> Result<bool> {
        Ok(self
            .store
            .create_connection(&self.sealed_connection(c))
            .await?)
    }

    fn sealed_connection(&self, c: &ConnectionValue) -> Connection {
        let password = c.password.as_deref().map(|p| self.seal(p));
        let extra = c.extra.as_deref().map(|e| self.seal(e));
        Connection {
            conn_id: c.conn_id.clone(),
            conn_type: c.conn_type.clone(),
            description: c.description.clone(),
            host: c.host.clone(),
            schema: c.schema.clone(),
            login: c.login.clone(),
            is_encrypted: password.as_ref().is_some_and(|p| p.1),
            is_extra_encrypted: extra.as_ref().is_some_and(|e| e.1),
            password: password.map(|p| p.0),
            port: c.port,
            extra: extra.map(|e| e.0),
        }
    }

    /// Re-encrypts every stored variable and connection with the first key (values stored in
    /// clear text are encrypted too). Needs a key.
    pub async fn rotate(&self) -> Result<Rotated> {
        if self.fernet.is_none() {
            return Err(Error::Key(updraft_crypto::Error::NoKeys));
        }
        let mut n = Rotated::default();
        for v in self.store.list_variables().await? {
            let clear = self.decrypt_variable(&v.key, &v.value)?;
            self.set_variable(&v.key, &clear, v.description.as_deref())
                .await?;
            n.variables += 1;
        }
        for c in self.store.list_connections().await? {
            let clear = self.decrypt_connection(c)?;
            self.set_connection(&clear).await?;
            n.connections += 1;
        }
        Ok(n)
    }
}

/// A Fernet token's shape: url-safe base64 of version 0x80, 8-byte time, 16-byte IV, whole AES
/// blocks, 32-byte HMAC.
pub fn looks_like_token(text: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE.decode(text.trim()) else {
        return false;
    };
    bytes.len() >= 1 + 8 + 16 + 16 + 32 && bytes[0] == 0x80 && (bytes.len() - 57) % 16 == 0
}
