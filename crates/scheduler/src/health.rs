//! The scheduler's liveness: a heartbeat the loop renews on every iteration, and a tiny HTTP
//! server answering `GET /health` for Kubernetes probes.
//!
//! The loop wakes at least every 10 seconds even when idle (its own heartbeat and lease timers)
//! and every 2 seconds while it stands by for the lease, so a heartbeat older than the threshold
//! means the loop is stuck (a store call that never returns, a blocked runtime), not idle.
//! `/health` then answers 503 and the kubelet restarts the container.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// When the scheduler loop last made progress. Cheap to clone; every clone sees the same beat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last: Arc<Mutex<Instant>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that beat just now.
    pub fn new() -> Self {
        Heartbeat {
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// The loop made progress now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Records progress at `at` (tests use it to stage a stalled loop).
    pub fn beat_at(&self, at: Instant) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the loop made progress within `threshold` of `now`.
    pub fn check(&self, threshold: Duration, now: Instant) -> Health {
        let age = now.saturating_duration_since(self.last());
        if age <= threshold {
            Health::Healthy { age }
        } else {
            Health::Stalled { age }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy { age: Duration },
    Stalled { age: Duration },
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy { .. })
    }
}

/// Serves `GET /health` on `listener` until `shutdown` turns true: 200 while `heartbeat` is
/// within `threshold`, 503 once it is older; any other path is 404.
pub async fn serve(
    listener: TcpListener,
    heartbeat: Heartbeat,
    threshold: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "health check: cannot accept a connection");
                        continue;
                    }
                };
                let heartbeat = heartbeat.clone();
                tokio::spawn(async move {
                    let answer = respond(stream, &heartbeat, threshold);
                    // a probe that hangs up or stalls must not hold a task forever
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
                });
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

async fn respond(
    mut stream: TcpStream,
    heartbeat: &Heartbeat,
    threshold: Duration,
) -> std::io::Result<()> {
    // Only the request line matters; read until the end of the headers or 8 KiB.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf);
    let mut parts = request.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/health") => {
            let health = heartbeat.check(threshold, Instant::now());
            let (status, word, age) = match health {
                Health::Healthy { age } => ("200 OK", "healthy", age),
                Health::Stalled { age } => ("503 Service Unavailable", "unhealthy", age),
            };
            if !health.is_healthy() {
                tracing::warn!(
                    since_s = age.as_secs_f64(),
                    "health check failed: the scheduler loop made no progress"
                );
            }
            (
                status,
                format!(
                    "{{\"status\":\"{word}\",\"seconds_since_progress\":{:.3},\"threshold_seconds\":{:.3}}}\n",
                    age.as_secs_f64(),
                    threshold.as_secs_f64()
                ),
            )
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "{\"detail\":\"not found\"}\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "{\"detail\":\"method not allowed\"}\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    async fn server(
        hb: Heartbeat,
        threshold: Duration,
    ) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, hb, threshold, rx));
        (addr, tx)
    }

    #[test]
    fn check_compares_the_last_beat_with_the_threshold() {
        let hb = Heartbeat::new();
        let t0 = Instant::now();
        hb.beat_at(t0);
        let threshold = Duration::from_secs(30);
        assert!(
            hb.check(threshold, t0 + Duration::from_secs(30))
                .is_healthy()
        );
        assert_eq!(
            hb.check(threshold, t0 + Duration::from_secs(31)),
            Health::Stalled {
                age: Duration::from_secs(31)
            }
        );
        // a beat from a clone is seen by every clone
        hb.clone().beat_at(t0 + Duration::from_secs(31));
        assert!(
            hb.check(threshold, t0 + Duration::from_secs(31))
                .is_healthy()
        );
    }

    #[tokio::test]
    async fn a_stalled_loop_fails_the_probe_and_a_new_beat_heals_it() {
        let hb = Heartbeat::new();
        let (addr, _stop) = server(hb.clone(), Duration::from_secs(30)).await;

        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"status\":\"healthy\""), "{body}");

        // the loop's last progress was a minute ago
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("the clock is past one minute");
        hb.beat_at(stale);
        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"status\":\"unhealthy\""), "{body}");

        hb.beat();
        assert_eq!(get(addr, "/health").await.0, 200);
        assert_eq!(get(addr, "/other").await.0, 404);
    }

    #[tokio::test]
    async fn the_scheduler_loop_renews_its_heartbeat() {
        use crate::{Mode, Scheduler, SchedulerOptions};
        use updraft_store::testing::{Backend, TestDb};

        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        db.store.migrate().await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut cfg = updraft_config::Config::with_defaults(home.path().to_path_buf());
        cfg.database.url = db.url().to_string();
        // the DAGs rescan wakes the loop often, so progress shows quickly
        cfg.scheduler.dag_dir_list_interval = Duration::from_millis(20);
        std::fs::create_dir_all(&cfg.core.dags_folder).unwrap();
        let scheduler = Scheduler::new(SchedulerOptions {
            store: db.store.clone(),
            config: cfg,
            hostname: "test-host".into(),
            mode: Mode::Service,
            process_dags: true,
            take_lease: true,
        });
        let hb = scheduler.heartbeat();
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("the clock is past one minute");
        hb.beat_at(stale);
        let threshold = Duration::from_secs(30);
        assert!(!hb.check(threshold, Instant::now()).is_healthy());

        let (tx, rx) = watch::channel(false);
        let running = tokio::spawn(scheduler.run(rx));
        // the loop beats on its own; waiting for it is bounded, the assertion is on the beat
        let healed = tokio::time::timeout(Duration::from_secs(20), async {
            while hb.last() == stale {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            healed.is_ok(),
            "the scheduler loop never renewed its heartbeat"
        );
        assert!(hb.check(threshold, Instant::now()).is_healthy());
        tx.send(true).unwrap();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_standby_scheduler_keeps_beating_while_another_holds_the_lease() {
        use crate::runtime::{LEASE_NAME, LEASE_TTL};
        use crate::{Mode, Scheduler, SchedulerOptions};
        use updraft_store::testing::{Backend, TestDb};

        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        db.store.migrate().await.unwrap();
        // another host's scheduler is active
        assert!(
            db.store
                .acquire_lease(LEASE_NAME, "other-host:1:x", LEASE_TTL, chrono::Utc::now())
                .await
                .unwrap()
        );
        let home = tempfile::tempdir().unwrap();
        let mut cfg = updraft_config::Config::with_defaults(home.path().to_path_buf());
        cfg.database.url = db.url().to_string();
        let scheduler = Scheduler::new(SchedulerOptions {
            store: db.store.clone(),
            config: cfg,
            hostname: "test-host".into(),
            mode: Mode::Service,
            process_dags: false,
            take_lease: true,
        });
        let hb = scheduler.heartbeat();
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .expect("the clock is past one minute");
        hb.beat_at(stale);
        let (tx, rx) = watch::channel(false);
        let running = tokio::spawn(scheduler.run(rx));
        // the first attempt beats at once; the retries every two seconds beat again
        let mut beats = Vec::new();
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            let mut last = stale;
            while beats.len() < 2 {
                let now = hb.last();
                if now != last {
                    beats.push(now);
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the standby scheduler stopped beating: {beats:?}"
        );
        assert_eq!(
            db.store.lease_holder(LEASE_NAME).await.unwrap().as_deref(),
            Some("other-host:1:x"),
            "the standby must not take a live lease"
        );
        tx.send(true).unwrap();
        // standing by ends with an error when shut down
        assert!(running.await.unwrap().is_err());
    }
}
