//! First paint of the web UI's main pages in headless Chromium on loopback: a standalone with
//! the demo data ([`updraft_webdriver::demo`]), each page loaded `--rounds` times after one
//! warm-up load, first with the browser cache warm (as for a user moving between pages), then
//! with the cache disabled. Per page it prints the medians and maxima of the server's answer
//! time (request sent → first byte, Navigation Timing), first paint and first contentful paint
//! (Paint Timing), and the load event, all in milliseconds from the start of the navigation.
//!
//!   ui-bench --updraft target/release/updraft [--rounds 15] [--json bench/ui-last-run.json]
//!
//! bench/ui.sh builds and runs it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use updraft_webdriver::{Browser, Options, Standalone, demo};

fn main() {
    if let Err(e) = run() {
        eprintln!("ui-bench: {e}");
        std::process::exit(1);
    }
}

/// The timings of the page just loaded; paint entries can land a moment after `load`.
const PROBE: &str = "
const nav = performance.getEntriesByType('navigation')[0];
const paint = {};
for (const p of performance.getEntriesByType('paint')) paint[p.name] = p.startTime;
if (!nav || nav.loadEventEnd === 0 || paint['first-contentful-paint'] === undefined) return null;
return {
  ttfb: nav.responseStart - nav.requestStart,
  response_end: nav.responseEnd,
  first_paint: paint['first-paint'] === undefined ? null : paint['first-paint'],
  fcp: paint['first-contentful-paint'],
  dom_content_loaded: nav.domContentLoadedEventEnd,
  load: nav.loadEventEnd,
  bytes: nav.decodedBodySize,
};";

const METRICS: &[(&str, &str)] = &[
    ("ttfb", "server"),
    ("first_paint", "FP"),
    ("fcp", "FCP"),
    ("load", "load"),
];

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut updraft = None;
    let mut rounds = 15usize;
    let mut json_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--updraft" => updraft = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().ok_or("--rounds needs a number")?.parse()?,
            "--json" => json_out = args.next().map(PathBuf::from),
            _ => {
                return Err(format!(
                    "unknown argument `{a}` (--updraft PATH --rounds N --json FILE)"
                )
                .into());
            }
        }
    }
    let updraft = updraft.ok_or("--updraft PATH is required")?;
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let home = tempfile::Builder::new()
        .prefix("updraft-ui-bench-")
        .tempdir()?;
    let server = Standalone::start(&updraft, home.path(), &[])?;
    let browser = Browser::launch(&Options::default())?;
    server.sign_in(&browser, "admin", &server.password)?;
    eprintln!("ui-bench: running the demo DAGs on {}", server.url);
    let data = demo::populate(&server, &browser)?;
    let run = data.last_run("demo_pipeline").ok_or("no demo run")?;
    let bash_run = data.last_run("example_bash").ok_or("no example_bash run")?;
    let pages: Vec<(&str, String)> = vec![
        ("DAGs list", "/dags".into()),
        ("grid", "/dags/demo_pipeline".into()),
        ("graph", "/dags/demo_pipeline/graph".into()),
        ("runs", "/dags/demo_pipeline/runs".into()),
        (
            "run + Gantt",
            format!("/dags/demo_pipeline/runs/{}", enc(run)),
        ),
        (
            "task log",
            format!("/dags/example_bash/runs/{}/tasks/greet", enc(bash_run)),
        ),
        ("trigger form", "/dags/demo_pipeline/trigger".into()),
        ("variables", "/variables".into()),
        ("connections", "/connections".into()),
        ("pools", "/pools".into()),
        ("users", "/users".into()),
        ("audit log", "/audit-log".into()),
        ("health", "/health".into()),
    ];

    // Warm: styles and script from the browser cache, as when moving between pages. Cold: the
    // cache disabled, every load fetches the page's CSS and script again.
    let (warm, worst_warm) = measure(&browser, &server, &pages, rounds, "warm cache")?;
    browser.cdp("Network.enable", json!({}))?;
    browser.cdp("Network.setCacheDisabled", json!({"cacheDisabled": true}))?;
    let (cold, worst_cold) = measure(&browser, &server, &pages, rounds, "cache disabled")?;
    println!(
        "worst median first contentful paint: {worst_warm:.1} ms warm, {worst_cold:.1} ms cold \
         (target: first paint <= 300 ms on loopback)"
    );
    if let Some(file) = json_out {
        let doc = json!({
            "when": unix_now(),
            "rounds": rounds,
            "chromium": browser_version(),
            "warm": warm,
            "cold": cold,
        });
        std::fs::write(&file, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("ui-bench: wrote {}", file.display());
    }
    Ok(())
}

/// Loads every page `rounds` times after one warm-up load; prints a table and returns its rows
/// and the worst median first contentful paint.
fn measure(
    browser: &Browser,
    server: &Standalone,
    pages: &[(&str, String)],
    rounds: usize,
    label: &str,
) -> Result<(Vec<Value>, f64), Box<dyn std::error::Error>> {
    println!("{label}:");
    println!(
        "{:<14} {:>15} {:>15} {:>15} {:>15} {:>8}",
        "page (ms)", "server med/max", "FP med/max", "FCP med/max", "load med/max", "KB"
    );
    let mut report = Vec::new();
    let mut worst_fcp = 0f64;
    for (name, path) in pages {
        let url = server.at(path);
        let mut samples: Vec<Value> = Vec::new();
        for round in 0..=rounds {
            browser.goto(&url)?;
            let t = browser.wait(
                &format!("paint timings of {path}"),
                Duration::from_secs(10),
                |b| {
                    let v = b.execute(PROBE, vec![])?;
                    Ok((!v.is_null()).then_some(v))
                },
            )?;
            if browser.current_url()?.contains("/login") {
                return Err(format!("{path} sent the browser to the login page").into());
            }
            if round > 0 {
                samples.push(t);
            }
        }
        let mut row = json!({"page": name, "path": path, "rounds": rounds});
        let mut cells = Vec::new();
        for (key, _) in METRICS {
            let mut xs: Vec<f64> = samples.iter().filter_map(|s| s[key].as_f64()).collect();
            xs.sort_by(f64::total_cmp);
            let (med, max) = if xs.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (xs[xs.len() / 2], xs[xs.len() - 1])
            };
            if *key == "fcp" {
                worst_fcp = worst_fcp.max(med);
            }
            row[*key] = json!({"median": round1(med), "max": round1(max)});
            cells.push(format!("{:>7.1}/{:<7.1}", med, max));
        }
        let kb = samples
            .first()
            .and_then(|s| s["bytes"].as_f64())
            .unwrap_or(0.0)
            / 1024.0;
        row["html_kb"] = json!(round1(kb));
        println!("{:<14} {} {:>8.1}", name, cells.join(" "), kb);
        report.push(row);
    }
    Ok((report, worst_fcp))
}

fn round1(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        Value::Null
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Seconds since the epoch (the bench has no date library).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn browser_version() -> String {
    updraft_webdriver::find_browser()
        .and_then(|(_, chromium)| {
            std::process::Command::new(chromium)
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
