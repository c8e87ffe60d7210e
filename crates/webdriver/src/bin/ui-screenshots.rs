//! Screenshots of the web UI's main pages for the README and docs: a standalone with the demo
//! data ([`updraft_webdriver::demo`]), headless Chromium in light mode, one PNG per page
//! (1280 px wide, as tall as the content up to 720 px).
//!
//!   ui-screenshots --updraft target/debug/updraft --out docs/screenshots
//!
//! scripts/screenshots.sh builds and runs it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use updraft_webdriver::{Browser, Options, Standalone, demo};

fn main() {
    if let Err(e) = run() {
        eprintln!("ui-screenshots: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut updraft = None;
    let mut out = PathBuf::from("docs/screenshots");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--updraft" => updraft = args.next().map(PathBuf::from),
            "--out" => {
                out = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--out needs a directory")?
            }
            _ => return Err(format!("unknown argument `{a}` (--updraft PATH --out DIR)").into()),
        }
    }
    let updraft = updraft.ok_or("--updraft PATH is required")?;
    std::fs::create_dir_all(&out)?;
    let home = tempfile::Builder::new()
        .prefix("updraft-screens-")
        .tempdir()?;
    let server = Standalone::start(&updraft, home.path(), &[])?;
    let browser = Browser::launch(&Options {
        width: 1280,
        height: 800,
        color_scheme: Some("light"),
    })?;
    server.sign_in(&browser, "admin", &server.password)?;
    eprintln!("ui-screenshots: running the demo DAGs on {}", server.url);
    let data = demo::populate(&server, &browser)?;
    let demo_run = data
        .last_run("demo_pipeline")
        .ok_or("no demo run")?
        .to_string();
    let bash_run = data
        .last_run("example_bash")
        .ok_or("no example_bash run")?
        .to_string();
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    // A failed run's page has more to show than a green one: take the red run for the Gantt.
    let failed_run = data
        .runs
        .iter()
        .filter(|(d, _)| d == "demo_pipeline")
        .nth(2)
        .map(|(_, r)| r.clone())
        .unwrap_or_else(|| demo_run.clone());
    let pages: Vec<(&str, String)> = vec![
        ("dags", "/dags".into()),
        ("grid", "/dags/demo_pipeline".into()),
        (
            "graph",
            format!("/dags/demo_pipeline/graph?run_id={}", enc(&failed_run)),
        ),
        ("runs", "/dags/demo_pipeline/runs".into()),
        ("details", "/dags/demo_pipeline/details".into()),
        (
            "run_gantt",
            format!("/dags/demo_pipeline/runs/{}", enc(&failed_run)),
        ),
        (
            "task_log",
            format!("/dags/example_bash/runs/{}/tasks/greet", enc(&bash_run)),
        ),
        ("trigger", "/dags/demo_pipeline/trigger".into()),
        ("variables", "/variables".into()),
        ("connections", "/connections".into()),
        ("pools", "/pools".into()),
        ("users", "/users".into()),
        ("audit_log", "/audit-log".into()),
        ("health", "/health".into()),
    ];
    for (name, path) in pages {
        browser.goto(&server.at(&path))?;
        browser.wait_for("main#main", Duration::from_secs(30))?;
        // Pages whose point is below the fold show it, with a little of what is above.
        let (anchor, above) = match name {
            "run_gantt" => (".gantt-wrap", 60),
            "task_log" => (".log-section", 140),
            _ => ("", 0),
        };
        // Short pages get a shorter picture: the viewport ends a little below the content.
        // From the top (or from a little above the anchor) to the end of the content.
        let span = browser.execute(
            "const a = arguments[0] && document.querySelector(arguments[0]);
             const top = a ? a.getBoundingClientRect().top + window.scrollY - arguments[1] : 0;
             return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom + window.scrollY - top);",
            vec![anchor.into(), above.into()],
        )?;
        let height = (span.as_f64().unwrap_or(720.0) as u32 + 24).clamp(360, 720);
        browser.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        browser.execute(
            "const a = arguments[0] && document.querySelector(arguments[0]);
             window.scrollTo(0, a ? Math.max(0, a.getBoundingClientRect().top + window.scrollY - arguments[1]) : 0);
             return document.readyState;",
            vec![anchor.into(), above.into()],
        )?;
        let png = browser.screenshot()?;
        let file = out.join(format!("{name}.png"));
        std::fs::write(&file, &png)?;
        eprintln!(
            "ui-screenshots: {} ({} KB) <- {path}",
            file.display(),
            png.len() / 1024
        );
    }
    Ok(())
}
