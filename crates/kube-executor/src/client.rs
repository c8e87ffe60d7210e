//! A small client for the pod calls the executor makes: create, delete, list by label, watch.
//! HTTPS through reqwest with rustls; credentials from a kubeconfig (token, token file or client
//! certificate; `exec` plugins are not supported) or from the pod's service account.

use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("kubernetes api: {0}")]
    Http(#[from] reqwest::Error),
    #[error("kubernetes api answered {code}: {message}")]
    Status { code: u16, message: String },
    /// The resourceVersion a watch started from is too old: relist.
    #[error("resource version too old (410 Gone)")]
    Gone,
    #[error("kubernetes api sent bad json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Whether retrying later may succeed (429, 5xx, connection trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http(_) => true,
            Error::Status { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// Where the API server is and how to authenticate.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// A long-polling client for watches (no overall timeout).
    watch_http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The kubeconfig context's namespace, or the service account's.
    pub default_namespace: String,
}

/// One event of a watch.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// Only the resourceVersion is meaningful.
    Bookmark(String),
}

impl Client {
    /// From a kubeconfig file's current context.
    pub fn from_kubeconfig(path: &Path) -> Result<Client, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_kubeconfig_str(&text, dir)
    }

    /// From kubeconfig text; relative file paths in it are read from `dir`.
    pub fn from_kubeconfig_str(text: &str, dir: &Path) -> Result<Client, Error> {
        let cfg: Value =
            serde_yaml::from_str(text).map_err(|e| Error::Config(format!("not YAML: {e}")))?;
        let cur = cfg
            .get("current-context")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("no current-context".into()))?;
        let named = |list: &str, name: &str, field: &str| -> Result<Value, Error> {
            cfg.get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|e| e.get(field))
                .cloned()
                .ok_or_else(|| Error::Config(format!("{list}: no entry named {name}")))
        };
        let ctx = named("contexts", cur, "context")?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let cluster = named(
            "clusters",
            &s(&ctx, "cluster").ok_or_else(|| Error::Config("context without cluster".into()))?,
            "cluster",
        )?;
        let user = match s(&ctx, "user") {
            Some(u) => named("users", &u, "user")?,
            None => Value::Null,
        };
        if user.get("exec").is_some() || user.get("auth-provider").is_some() {
            return Err(Error::Config(
                "exec and auth-provider credentials are not supported; use a token or a client certificate".into(),
            ));
        }
        let read = |data: Option<String>, file: Option<String>| -> Result<Option<Vec<u8>>, Error> {
            if let Some(d) = data {
                return base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map(Some)
                    .map_err(|e| Error::Config(format!("bad base64: {e}")));
            }
            match file {
                Some(f) => {
                    let p = dir.join(f);
                    std::fs::read(&p)
                        .map(Some)
                        .map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))
                }
                None => Ok(None),
            }
        };
        let ca = read(
            s(&cluster, "certificate-authority-data"),
            s(&cluster, "certificate-authority"),
        )?;
        let insecure = cluster
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let cert = read(
            s(&user, "client-certificate-data"),
            s(&user, "client-certificate"),
        )?;
        let key = read(s(&user, "client-key-data"), s(&user, "client-key"))?;
        let token = match (s(&user, "token"), s(&user, "tokenFile")) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(
                std::fs::read_to_string(dir.join(&f))
                    .map_err(|e| Error::Config(format!("cannot read {f}: {e}")))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        let identity = match (cert, key) {
            (Some(mut c), Some(k)) => {
                c.push(b'\n');
                c.extend(k);
                Some(c)
            }
            _ => None,
        };
        Self::new(
            &s(&cluster, "server").ok_or_else(|| Error::Config("cluster without server".into()))?,
            ca.as_deref(),
            insecure,
            token,
            identity.as_deref(),
            s(&ctx, "namespace").unwrap_or_else(|| "default".into()),
        )
    }

    /// From the pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    pub fn in_cluster() -> Result<Client, Error> {
        let dir = PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount");
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| Error::Config("not in a cluster: KUBERNETES_SERVICE_HOST unset".into()))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let rd = |f: &str| {
            std::fs::read(dir.join(f))
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", dir.join(f).display())))
        };
        let token = String::from_utf8_lossy(&rd("token")?).trim().to_string();
        let ns = rd("namespace")
            .map(|n| String::from_utf8_lossy(&n).trim().to_string())
            .unwrap_or_else(|_| "default".into());
        Self::new(
            &format!("https://{host}:{port}"),
            Some(&rd("ca.crt")?),
            false,
            Some(token),
            None,
            ns,
        )
    }

    fn new(
        server: &str,
        ca_pem: Option<&[u8]>,
        insecure: bool,
        token: Option<String>,
        identity_pem: Option<&[u8]>,
        default_namespace: String,
    ) -> Result<Client, Error> {
        let build = |timeout: Option<Duration>| -> Result<reqwest::Client, Error> {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .connect_timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64);
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            if let Some(ca) = ca_pem {
                for c in reqwest::Certificate::from_pem_bundle(ca)
                    .map_err(|e| Error::Config(format!("bad certificate authority: {e}")))?
                {
                    b = b.add_root_certificate(c);
                }
            }
            if insecure {
                b = b.danger_accept_invalid_certs(true);
            }
            if let Some(id) = identity_pem {
                b = b.identity(
                    reqwest::Identity::from_pem(id)
                        .map_err(|e| Error::Config(format!("bad client certificate: {e}")))?,
                );
            }
            b.build().map_err(|e| Error::Config(e.to_string()))
        };
        Ok(Client {
            http: build(Some(Duration::from_secs(30)))?,
            watch_http: build(None)?,
            base: server.trim_end_matches('/').to_string(),
            token,
            default_namespace,
        })
    }

    fn req(
        &self,
        http: &reqwest::Client,
        m: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let r = http.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = r.send().await?;
        let code = resp.status().as_u16();
        let body = resp.bytes().await?;
        if code >= 300 {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(if code == 410 {
                Error::Gone
            } else {
                Error::Status { code, message }
            });
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// GET any path (e.g. `/version`).
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.send(self.req(&self.http, reqwest::Method::GET, path))
            .await
    }

    /// POST any object to a collection path (e.g. a namespace to `/api/v1/namespaces`).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.send(self.req(&self.http, reqwest::Method::POST, path).json(body))
            .await
    }

    /// Merge-patches any object (e.g. a Node's `/status`).
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.send(
            self.req(&self.http, reqwest::Method::PATCH, path)
                .header("Content-Type", "application/merge-patch+json")
                .body(serde_json::to_vec(body)?),
        )
        .await
    }

    /// POST a pod; returns the created object.
    pub async fn create_pod(&self, ns: &str, pod: &Value) -> Result<Value, Error> {
        self.send(
            self.req(
                &self.http,
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{ns}/pods"),
            )
            .json(pod),
        )
        .await
    }

    /// Deletes a pod; a pod already gone is no error (`Ok(false)`).
    pub async fn delete_pod(&self, ns: &str, name: &str) -> Result<bool, Error> {
        let r = self.req(
            &self.http,
            reqwest::Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
        );
        match self.send(r).await {
            Ok(_) => Ok(true),
            Err(Error::Status { code: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads one pod; `None` when absent.
    pub async fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Value>, Error> {
        match self
            .get(&format!("/api/v1/namespaces/{ns}/pods/{name}"))
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::Status { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a pod's status through the `/status` subresource (what a kubelet does).
    pub async fn patch_pod_status(
        &self,
        ns: &str,
        name: &str,
        status: &Value,
    ) -> Result<Value, Error> {
        self.send(
            self.req(
                &self.http,
                reqwest::Method::PATCH,
                &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
            )
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&serde_json::json!({"status": status}))?),
        )
        .await
    }

    /// Lists pods matching a label selector; returns the items and the list's resourceVersion.
    pub async fn list_pods(&self, ns: &str, selector: &str) -> Result<(Vec<Value>, String), Error> {
        let v = self
            .send(
                self.req(
                    &self.http,
                    reqwest::Method::GET,
                    &format!("/api/v1/namespaces/{ns}/pods"),
                )
                .query(&[("labelSelector", selector)]),
            )
            .await?;
        let rv = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let items = match v.get("items") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        Ok((items, rv))
    }

    /// Starts a watch of pods matching `selector` from `resource_version`; the server ends it
    /// after `timeout` (then watch again from the last resourceVersion seen).
    pub async fn watch_pods(
        &self,
        ns: &str,
        selector: &str,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<Watch, Error> {
        let resp = self
            .req(
                &self.watch_http,
                reqwest::Method::GET,
                &format!("/api/v1/namespaces/{ns}/pods"),
            )
            .query(&[
                ("watch", "1"),
                ("labelSelector", selector),
                ("resourceVersion", resource_version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", &timeout.as_secs().max(1).to_string()),
            ])
            .send()
            .await?;
        let code = resp.status().as_u16();
        if code == 410 {
            return Err(Error::Gone);
        }
        if code >= 300 {
            let message = resp.text().await.unwrap_or_default();
            return Err(Error::Status { code, message });
        }
        Ok(Watch {
            resp,
            buf: Vec::new(),
        })
    }
}

impl Client {
    /// Opens the log of a pod's container, followed (the stream stays open while the container
    /// runs), every line prefixed with its RFC 3339 timestamp and a space, from `since_time`
    /// (RFC 3339, whole seconds) when given. The API server proxies it from the node's kubelet.
    pub async fn pod_log(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        since_time: Option<&str>,
    ) -> Result<LogStream, Error> {
        let mut q: Vec<(&str, &str)> = vec![
            ("container", container),
            ("follow", "true"),
            ("timestamps", "true"),
        ];
        if let Some(t) = since_time {
            q.push(("sinceTime", t));
        }
        let resp = self
            .req(
                &self.watch_http,
                reqwest::Method::GET,
                &format!("/api/v1/namespaces/{ns}/pods/{name}/log"),
            )
            .query(&q)
            .send()
            .await?;
        let code = resp.status().as_u16();
        if code >= 300 {
            let body = resp.bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(Error::Status { code, message });
        }
        Ok(LogStream { resp })
    }
}

/// An open container log.
pub struct LogStream {
    resp: reqwest::Response,
}

impl LogStream {
    /// The next bytes; `Ok(None)` when the stream ended.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.resp.chunk().await?.map(|b| b.to_vec()))
    }
}

/// An open watch: newline-delimited JSON events.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event; `Ok(None)` when the server closed the watch.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, Error> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: Value = serde_json::from_slice(&line)?;
                return parse_event(v).map(Some);
            }
            match self.resp.chunk().await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return Ok(None),
            }
        }
    }
}

fn parse_event(mut v: Value) -> Result<WatchEvent, Error> {
    let obj = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    match v.get("type").and_then(Value::as_str) {
        Some("ADDED") => Ok(WatchEvent::Added(obj)),
        Some("MODIFIED") => Ok(WatchEvent::Modified(obj)),
        Some("DELETED") => Ok(WatchEvent::Deleted(obj)),
        Some("BOOKMARK") => Ok(WatchEvent::Bookmark(
            obj.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )),
        _ => {
            let code = obj.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            if code == 410 {
                return Err(Error::Gone);
            }
            Err(Error::Status {
                code,
                message: obj
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("watch error")
                    .to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_errors_name_the_problem() {
        let dir = Path::new(".");
        let e = Client::from_kubeconfig_str("kind: Config", dir)
            .err()
            .unwrap();
        assert!(e.to_string().contains("no current-context"), "{e}");
        let e = Client::from_kubeconfig_str(
            "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]",
            dir,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("exec"), "{e}");
        let c = Client::from_kubeconfig_str(
            "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u, namespace: jobs}}]\nclusters: [{name: c, cluster: {server: 'https://x:6443/', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: abc}}]",
            dir,
        )
        .unwrap();
        assert_eq!(c.default_namespace, "jobs");
        assert_eq!(c.base, "https://x:6443");
        assert_eq!(c.token.as_deref(), Some("abc"));
    }

    #[test]
    fn watch_events_parse_and_gone_is_typed() {
        let e = parse_event(
            serde_json::json!({"type": "ERROR", "object": {"kind": "Status",
            "code": 410, "reason": "Expired", "message": "too old resource version: 1 (500)"}}),
        );
        assert!(matches!(e, Err(Error::Gone)));
        let b = parse_event(serde_json::json!({"type": "BOOKMARK",
            "object": {"metadata": {"resourceVersion": "42"}}}))
        .unwrap();
        assert!(matches!(b, WatchEvent::Bookmark(rv) if rv == "42"));
    }
}
