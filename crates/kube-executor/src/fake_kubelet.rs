//! Test support (feature `testing`): a **fake kubelet** that serves container logs, so that
//! `GET pods/{name}/log` through a real kube-apiserver works without a node.
//!
//! The API server answers a pod's log by proxying to the kubelet of the pod's node: HTTPS to the
//! node's address (`status.addresses`, here `InternalIP 127.0.0.1`) on its
//! `status.daemonEndpoints.kubeletEndpoint.Port`, path `/containerLogs/{ns}/{pod}/{container}`
//! with the caller's `follow`, `timestamps` and `sinceTime`. [`FakeKubelet::start`] listens with
//! a self-signed certificate (made with the `openssl` command; the test API server does not
//! verify kubelets), [`FakeKubelet::register_node`] creates the Node object pointing at it, and
//! [`FakeKubelet::bind`] puts a pod on that node as a scheduler would. Tests then write the
//! container's output with [`FakeKubelet::push`] and end it with [`FakeKubelet::exit`]; a
//! followed stream sends lines as they are pushed and ends when the container exits.
//!
//! It implements only that one endpoint, HTTP/1.1 with one request per connection, and nothing
//! of a real kubelet's behaviour beyond it (no exec, no attach, no rotation of log files).

use crate::client::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Default)]
struct Container {
    lines: Vec<(DateTime<Utc>, String)>,
    exited: bool,
}

#[derive(Default)]
struct State {
    logs: HashMap<(String, String, String), Container>,
    requests: Vec<String>,
}

/// The fake kubelet; cheap to clone. Serves until the runtime ends.
#[derive(Clone)]
pub struct FakeKubelet {
    port: u16,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeKubelet {
    /// Listens on 127.0.0.1 (a free port) with a fresh self-signed certificate.
    pub async fn start() -> std::io::Result<FakeKubelet> {
        let (cert, key) = self_signed()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let k = FakeKubelet {
            port: listener.local_addr()?.port(),
            state: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        let me = k.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let me = me.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = me.serve(tls).await;
                    }
                });
            }
        });
        Ok(k)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates Node `name` whose kubelet is this server.
    pub async fn register_node(&self, c: &Client, name: &str) -> Result<(), crate::client::Error> {
        c.post(
            "/api/v1/nodes",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
        )
        .await?;
        c.patch(
            &format!("/api/v1/nodes/{name}/status"),
            &json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubelet",
                    "lastHeartbeatTime": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                    "lastTransitionTime": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)}]
            }}),
        )
        .await?;
        Ok(())
    }

    /// Binds pod `ns/pod` to node `node` (what the scheduler would do).
    pub async fn bind(
        &self,
        c: &Client,
        ns: &str,
        pod: &str,
        node: &str,
    ) -> Result<(), crate::client::Error> {
        c.post(
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/binding"),
            &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}}),
        )
        .await?;
        Ok(())
    }

    /// The container prints `line`.
    pub fn push(&self, ns: &str, pod: &str, container: &str, line: &str) {
        let mut s = self.state.lock().expect("not poisoned");
        s.logs
            .entry((ns.into(), pod.into(), container.into()))
            .or_default()
            .lines
            .push((Utc::now(), line.to_string()));
        drop(s);
        self.changed.notify_waiters();
    }

    /// The container exits: followed streams end.
    pub fn exit(&self, ns: &str, pod: &str, container: &str) {
        let mut s = self.state.lock().expect("not poisoned");
        s.logs
            .entry((ns.into(), pod.into(), container.into()))
            .or_default()
            .exited = true;
        drop(s);
        self.changed.notify_waiters();
    }

    /// The paths (with queries) the API server asked for.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("not poisoned").requests.clone()
    }

    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        mut io: S,
    ) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = io.read(&mut buf).await?;
            if n == 0 || head.len() > 64 * 1024 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        self.state
            .lock()
            .expect("not poisoned")
            .requests
            .push(target.clone());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["containerLogs", ns, pod, container] = parts[..] else {
            io.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        };
        let key = (ns.to_string(), pod.to_string(), container.to_string());
        let follow = q.get("follow").is_some_and(|v| v == "true");
        let timestamps = q.get("timestamps").is_some_and(|v| v == "true");
        let since: Option<DateTime<Utc>> = q
            .get("sinceTime")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        io.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await?;
        io.flush().await?;
        let mut sent = 0;
        loop {
            let notified = self.changed.notified();
            let (chunk, exited) = {
                let s = self.state.lock().expect("not poisoned");
                let c = s.logs.get(&key);
                let lines = c.map(|c| &c.lines[..]).unwrap_or(&[]);
                let mut out = String::new();
                for (ts, text) in &lines[sent..] {
                    if since.is_some_and(|s| *ts < s) {
                        continue;
                    }
                    if timestamps {
                        out.push_str(&ts.to_rfc3339_opts(SecondsFormat::Nanos, true));
                        out.push(' ');
                    }
                    out.push_str(text);
                    out.push('\n');
                }
                sent = lines.len();
                (out, c.is_some_and(|c| c.exited))
            };
            if !chunk.is_empty() {
                io.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await?;
                io.flush().await?;
            }
            if !follow || exited {
                break;
            }
            notified.await;
        }
        io.write_all(b"0\r\n\r\n").await?;
        io.flush().await?;
        io.shutdown().await
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A self-signed certificate for 127.0.0.1 and its PKCS#8 key, both DER, from `openssl`.
fn self_signed() -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("fake-kubelet-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let run = |args: &[&str]| -> std::io::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ])?;
    run(&[
        "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
    ])?;
    run(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
    ])?;
    let cert = std::fs::read(dir.join("cert.der"))?;
    let key = std::fs::read(dir.join("key.der"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((cert, key))
}
