//! The web UI in a real headless Chromium (through chromedriver) against a real `updraft
//! standalone` on 127.0.0.1: sign in with the printed password, filter the DAG list, unpause
//! with the switch, trigger with a param from the form, watch the grid turn green, read a task
//! log, clear a task and watch its second try tail its log live; a viewer finds no action
//! buttons and its forged action POSTs are refused; a POST without a CSRF token is rejected; an
//! admin creates and deletes a variable through the forms and the confirmation dialog; no page
//! violates the Content-Security-Policy or throws a script error; the keyboard alone signs in
//! and flips a switch; no page scrolls sideways in a phone-sized window; dark mode follows the
//! system setting.
//!
//! Needs `chromium` and `chromedriver` (scripts/browser.sh installs them; scripts/test.sh
//! runs it). Without them the tests skip with a notice, except in CI, where they fail.

use super::*;
use std::time::Duration;
use updraft_webdriver::{Browser, Options, Standalone, find_browser};

/// How long a page element or a redirect may take to appear.
const WAIT: Duration = Duration::from_secs(30);
/// How long a run of a few `echo` tasks may take from trigger to success.
const RUN_WAIT: Duration = Duration::from_secs(120);

/// A DAG of our own: a tag no example has, a param, two quick tasks. `say` waits until the
/// file `$HOME/release_say` exists (the test's home), so a test can look at a running task.
const BROWSER_DAG: &str = "\
dag_id: browser_check
description: Two echo tasks for the browser tests
schedule: null
start_date: 2024-01-01
tags: [e2e]
params:
  greeting:
    default: hello
    type: string
    description: What the first task prints
default_args:
  execution_timeout: 3m
tasks:
  - task_id: say
    bash_command: |
      while [ ! -f \"$HOME/release_say\" ]; do sleep 0.2; done
      echo \"{{ params.greeting }} from the browser test\"
  - task_id: after
    upstream: say
    bash_command: echo done
";

/// A browser and the server it talks to; every step panics with the page, its URL and the
/// server log when it fails, so a red test says what the browser saw.
struct Ui {
    b: Browser,
    s: Standalone,
}

impl Ui {
    /// `None` (skip) outside CI when no browser is installed.
    fn start(home: &Home) -> Option<Ui> {
        if find_browser().is_none() {
            let msg = "chromium/chromedriver not found: run `eval \"export $(scripts/browser.sh | \
                       tail -n 1)\"` (scripts/test.sh does)";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let s = Standalone::start(Path::new(env!("CARGO_BIN_EXE_updraft")), home.path(), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let b = Browser::launch(&Options::default()).unwrap_or_else(|e| panic!("{e}"));
        b.record_page_errors().unwrap_or_else(|e| panic!("{e}"));
        Some(Ui { b, s })
    }

    fn fail(&self, msg: &str) -> ! {
        let url = self.b.current_url().unwrap_or_default();
        let source = self.b.source().unwrap_or_default();
        let log = self.s.log();
        let tail: String = {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        // A picture of what the browser showed, kept after the test (CI can upload the folder).
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures");
        let name = std::thread::current()
            .name()
            .unwrap_or("browser")
            .replace("::", "-");
        let shot = shot.join(format!("{name}.png"));
        let saved = std::fs::create_dir_all(shot.parent().unwrap()).is_ok()
            && self
                .b
                .screenshot()
                .is_ok_and(|png| std::fs::write(&shot, png).is_ok());
        let shot = if saved {
            format!("screenshot: {}", shot.display())
        } else {
            "no screenshot".to_string()
        };
        panic!(
            "{msg}\n{shot}\n--- page {url} ---\n{source}\n--- standalone log (tail) ---\n{tail}"
        );
    }

    fn ok<T>(&self, r: updraft_webdriver::Result<T>) -> T {
        r.unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    fn go(&self, path: &str) {
        self.ok(self.b.goto(&self.s.at(path)));
    }

    fn path(&self) -> String {
        let url = self.ok(self.b.current_url());
        url.strip_prefix(self.s.url.trim_end_matches('/'))
            .unwrap_or(&url)
            .to_string()
    }

    fn wait_for(&self, css: &str) -> updraft_webdriver::Element<'_> {
        self.ok(self.b.wait_for(css, WAIT))
    }

    fn click(&self, css: &str) {
        let e = self.wait_for(css);
        self.ok(e.click());
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css);
        self.ok(e.clear());
        self.ok(e.send_keys(text));
    }

    fn count(&self, css: &str) -> usize {
        self.ok(self.b.find_all(css)).len()
    }

    /// The text of the flash message the last redirect left, once it shows.
    fn flash(&self) -> String {
        self.ok(self.wait_for(".flash").text())
    }

    /// Waits until `pred` holds for the DAG rows shown (after a submit the page reloads).
    fn wait_dag_rows(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.ok(self.b.wait(what, WAIT, |b| {
            let rows = b.find_all("table.dags tr[data-dag-id]")?;
            let ids = rows
                .iter()
                .map(|r| r.attr("data-dag-id").map(Option::unwrap_or_default))
                .collect::<updraft_webdriver::Result<Vec<_>>>()?;
            Ok(pred(&ids).then_some(ids))
        }))
    }

    /// Signs in on the login form the browser shows now; waits for the page behind it.
    fn sign_in(&self, username: &str, password: &str) {
        self.type_into("input#username", username);
        self.type_into("input#password", password);
        self.click("form.login-form button[type=submit]");
        self.ok(self
            .b
            .wait_for_url("the page after signing in", WAIT, |u| !u.contains("/login")));
    }

    /// Runs `fetch(path, init)` in the page; returns the final status and the response text.
    fn fetch(&self, path: &str, init: Value) -> (u16, String) {
        let v = self.ok(self.b.execute_async(
            "const [path, init, done] = arguments;
             fetch(path, Object.assign({credentials: 'same-origin', redirect: 'follow'}, init))
               .then(r => r.text().then(t => done({status: r.status, text: t})))
               .catch(e => done({status: 0, text: String(e)}));",
            vec![Value::from(path), init],
        ));
        (
            v["status"].as_u64().unwrap_or(0) as u16,
            v["text"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Fails when the current page reported a CSP violation or a script error.
    fn no_page_errors(&self, what: &str) {
        // Let queued events (violation reports are asynchronous) run before reading them.
        self.ok(self.b.execute_async(
            "const done = arguments[0]; requestAnimationFrame(() => setTimeout(done, 0));",
            vec![],
        ));
        let errors = self.ok(self.b.page_errors());
        if !errors.is_empty() {
            self.fail(&format!(
                "{what} reported errors in the browser: {errors:#?}"
            ));
        }
    }

    /// The page's CSRF token (`<main data-csrf>`).
    fn csrf(&self) -> String {
        self.ok(self.wait_for("main[data-csrf]").attr("data-csrf"))
            .unwrap_or_default()
    }
}

/// Whether a task log holds a line the task printed ending in `text` (not the logged command
/// that prints it).
fn task_printed(log: &str, text: &str) -> bool {
    log.lines()
        .any(|l| l.trim_end().ends_with(text) && !l.contains("echo"))
}

/// A form body for `fetch`.
fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
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

fn post_init(body: &str) -> Value {
    serde_json::json!({
        "method": "POST",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "body": body,
    })
}

/// Waits until standalone's DAG processor has stored `dag_id` (the DAG list shows it).
fn wait_for_dag(ui: &Ui, dag_id: &str) {
    ui.ok(ui.b.wait(&format!("DAG {dag_id} in the list"), WAIT, |b| {
        b.goto(&ui.s.at(&format!("/dags?search={dag_id}")))?;
        Ok((!b
            .find_all(&format!("tr[data-dag-id=\"{dag_id}\"]"))?
            .is_empty())
        .then_some(()))
    }));
}

fn runs_of(ui: &Ui, dag_id: &str) -> Vec<Value> {
    let out = ui.ok(ui
        .s
        .updraft_ok(&["dags", "list-runs", dag_id, "-o", "json"]));
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn admin_signs_in_filters_unpauses_triggers_and_reruns_a_task() {
    let home = Home::new();
    let Some(ui) = Ui::start(&home) else { return };
    home.dag("browser_check.yaml", BROWSER_DAG);

    // Standalone printed both the URL and the password it generated.
    let printed = ui.s.log();
    assert!(printed.contains(&ui.s.url), "{printed}");
    assert!(printed.contains(&ui.s.password), "{printed}");
    // The printed URL sends an anonymous visitor to the login form.
    ui.ok(ui.b.goto(&ui.s.url));
    ui.wait_for("input#username");
    assert!(ui.path().starts_with("/login"), "{}", ui.path());
    // A wrong password keeps the visitor out, with a message.
    ui.sign_in_expecting_error("admin", "not the password");
    ui.sign_in("admin", &ui.s.password);
    assert!(ui.path().starts_with("/dags"), "{}", ui.path());
    ui.wait_for("table.dags");
    assert!(ui.ok(ui.wait_for("header .who").text()).contains("admin"));

    wait_for_dag(&ui, "browser_check");

    // Search: only DAG ids containing the text.
    ui.go("/dags");
    ui.type_into("form.filters input[name=search]", "bash");
    ui.click("form.filters button[type=submit]");
    let rows = ui.wait_dag_rows("the search to apply", |ids| {
        !ids.is_empty() && ids.iter().all(|i| i.contains("bash"))
    });
    assert_eq!(rows, ["example_bash"]);
    assert!(ui.path().contains("search=bash"), "{}", ui.path());

    // Tag: our DAG's tag shows only it; the examples' tag hides it.
    ui.go("/dags");
    ui.click("form.filters select[name=tag] option[value=e2e]");
    ui.click("form.filters button[type=submit]");
    let rows = ui.wait_dag_rows("the e2e tag filter", |ids| ids == ["browser_check"]);
    assert_eq!(rows, ["browser_check"]);
    ui.go("/dags");
    ui.click("tr[data-dag-id=example_bash] a.tag");
    let rows = ui.wait_dag_rows("the example tag filter", |ids| {
        ids.len() > 1 && !ids.iter().any(|i| i == "browser_check")
    });
    assert!(rows.iter().all(|i| i.starts_with("example_")), "{rows:?}");

    // The switch unpauses the DAG, and the page says so after reloading.
    ui.go("/dags?tag=e2e");
    let switch = "tr[data-dag-id=browser_check] button[data-action=pause]";
    assert_eq!(
        ui.ok(ui.wait_for(switch).attr("aria-checked")).as_deref(),
        Some("false"),
        "a new DAG starts paused"
    );
    ui.click(switch);
    let flash = ui.flash();
    assert!(flash.contains("browser_check unpaused"), "{flash}");
    ui.go("/dags?tag=e2e");
    assert_eq!(
        ui.ok(ui.wait_for(switch).attr("aria-checked")).as_deref(),
        Some("true")
    );

    // Trigger from the row's button, with a param typed into the generated form.
    ui.click("tr[data-dag-id=browser_check] a[href$='/trigger']");
    ui.wait_for("form.trigger-form");
    assert!(
        ui.path().ends_with("/dags/browser_check/trigger"),
        "{}",
        ui.path()
    );
    ui.type_into("form.trigger-form input[name='param.greeting']", "Grüße");
    ui.click("form.trigger-form button[type=submit]");
    let url = ui.ok(ui.b.wait_for_url("the new run's page", WAIT, |u| {
        u.contains("/dags/browser_check/runs/")
    }));
    let runs = runs_of(&ui, "browser_check");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["conf"]["greeting"], "Grüße", "{runs:?}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    assert!(
        url.ends_with(&enc(&run_id)),
        "{url} is not the page of {run_id}"
    );

    // The grid shows `say` running (it waits for its release file), then turns green by
    // itself once released: its live fragment is replaced in place, the page never reloads.
    ui.go("/dags/browser_check");
    ui.ok(ui.b.wait("`say` running on the grid", RUN_WAIT, |b| {
        let running = !b
            .find_all("table.grid a.cell.state-running[href*='/tasks/say']")?
            .is_empty();
        if !running {
            b.goto(&ui.s.at("/dags/browser_check"))?;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(running.then_some(()))
    }));
    assert_eq!(ui.count("table.grid a.run-bar.state-success"), 0);
    ui.ok(ui.b.execute(
        "window.notReloaded = true; document.querySelector('.grid-live').dataset.old = '1';",
        vec![],
    ));
    std::fs::write(home.path().join("release_say"), "").unwrap();
    ui.ok(ui.b.wait("the grid to turn green", RUN_WAIT, |b| {
        let cells = b.find_all("table.grid a.cell.state-success")?;
        let runs = b.find_all("table.grid a.run-bar.state-success")?;
        Ok((cells.len() == 2 && runs.len() == 1).then_some(()))
    }));
    let same_page = ui.ok(ui.b.execute(
        "return [window.notReloaded === true, document.querySelectorAll('.grid-live[data-old]').length];",
        vec![],
    ));
    assert_eq!(
        same_page,
        serde_json::json!([true, 0]),
        "[same page, stale grids]"
    );

    // A cell opens its task instance; the log shows what the task printed with the param.
    ui.click("table.grid a.cell[href*='/tasks/say']");
    ui.wait_for("#log-lines");
    assert!(
        ui.path().starts_with(&format!(
            "/dags/browser_check/runs/{}/tasks/say",
            enc(&run_id)
        )),
        "{}",
        ui.path()
    );
    let log = ui.ok(ui.b.wait("the greeting in the log", WAIT, |b| {
        let text = b.find("#log-lines")?.text()?;
        Ok(task_printed(&text, "Grüße from the browser test").then_some(text))
    }));
    assert!(!log.contains("{{"), "the command was rendered: {log}");
    let ti_page = ui.path();

    // Clear the task (and, by default, its downstream): a preview first, then the rerun.
    ui.click("button[data-action=clear-task]");
    ui.wait_for("table.preview");
    let mut preview: Vec<String> = ui
        .ok(ui.b.find_all("table.preview tr[data-preview-task]"))
        .iter()
        .map(|r| ui.ok(r.attr("data-preview-task")).unwrap_or_default())
        .collect();
    preview.sort();
    assert_eq!(preview, ["after", "say"], "what the clear would change");
    // Try 2 will wait for its release file again, to be watched while it runs.
    let release = home.path().join("release_say");
    std::fs::remove_file(&release).unwrap();
    ui.click("table.preview ~ form button.primary, form button.primary");
    let flash = ui.flash();
    assert!(!flash.is_empty());
    assert_eq!(ui.count(".flash-error"), 0, "{flash}");
    // The page of the running try tails its log: once released, the greeting appears in place.
    ui.ok(ui
        .b
        .wait("try 2 of `say` running, its log live", RUN_WAIT, |b| {
            b.goto(&ui.s.at(&ti_page))?;
            let live = !b.find_all("#log-lines[data-live=true]")?.is_empty()
                && !b
                    .find_all("table.tries tr[data-try='2'] .state-running")?
                    .is_empty();
            if !live {
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(live.then_some(()))
        }));
    let before = ui.ok(ui.wait_for("#log-lines").text());
    assert!(
        !task_printed(&before, "Grüße from the browser test"),
        "{before}"
    );
    ui.ok(ui.b.execute("window.notReloaded = true;", vec![]));
    std::fs::write(&release, "").unwrap();
    ui.ok(ui.b.wait("the greeting in the live log", RUN_WAIT, |b| {
        let text = b.find("#log-lines")?.text()?;
        Ok(task_printed(&text, "Grüße from the browser test").then_some(()))
    }));
    assert_eq!(
        ui.ok(ui.b.execute("return window.notReloaded === true;", vec![])),
        Value::Bool(true),
        "the page reloaded instead of tailing the log"
    );
    // Try 2 succeeds; the page shows it (reloaded while waiting).
    ui.ok(ui.b.wait("try 2 of `say` to succeed", RUN_WAIT, |b| {
        b.goto(&ui.s.at(&ti_page))?;
        let done = !b
            .find_all("table.tries tr[data-try='2'] .state-success")?
            .is_empty();
        if !done {
            std::thread::sleep(Duration::from_millis(400));
        }
        Ok(done.then_some(()))
    }));
    assert_eq!(ui.count("table.tries tr[data-try]"), 2);
    let log = ui.ok(ui.wait_for("#log-lines").text());
    assert!(task_printed(&log, "Grüße from the browser test"), "{log}");
    ui.go("/dags/browser_check");
    ui.ok(ui.b.wait("the grid green after the rerun", RUN_WAIT, |b| {
        let cells = b.find_all("table.grid a.cell.state-success")?;
        Ok((cells.len() == 2).then_some(()))
    }));

    // Every page an admin reaches renders without a Content-Security-Policy violation or a
    // script error (only a real browser enforces the policy and runs the scripts).
    let run_page = format!("/dags/browser_check/runs/{}", enc(&run_id));
    let pages = [
        "/dags".to_string(),
        "/import-errors".into(),
        "/dags/browser_check".into(),
        "/dags/browser_check/graph".into(),
        "/dags/browser_check/runs".into(),
        "/dags/browser_check/details".into(),
        "/dags/browser_check/code".into(),
        run_page.clone(),
        format!("{run_page}/tasks/say"),
        "/dags/browser_check/trigger".into(),
        "/runs".into(),
        "/variables".into(),
        "/variables/new".into(),
        "/connections".into(),
        "/connections/new".into(),
        "/pools".into(),
        "/pools/new".into(),
        "/users".into(),
        "/audit-log".into(),
        "/health".into(),
    ];
    for page in &pages {
        ui.go(page);
        ui.wait_for("main#main");
        assert!(
            ui.path().starts_with(page.as_str()),
            "{page} went to {}",
            ui.path()
        );
        ui.no_page_errors(page);
    }

    // A POST without the CSRF token is refused, even for an admin, and changes nothing; the
    // same POST with the page's token (as a header) goes through.
    ui.go("/dags?tag=e2e");
    let pause = form_body(&[("paused", "true")]);
    let (status, _) = ui.fetch("/dags/browser_check/pause", post_init(&pause));
    assert_eq!(status, 403, "a POST without a CSRF token");
    let (status, _) = ui.fetch(
        "/dags/browser_check/pause",
        post_init(&form_body(&[("paused", "true"), ("csrf_token", "forged")])),
    );
    assert_eq!(status, 403, "a POST with a wrong CSRF token");
    ui.go("/dags?tag=e2e");
    assert_eq!(
        ui.ok(ui.wait_for(switch).attr("aria-checked")).as_deref(),
        Some("true"),
        "refused POSTs left the DAG unpaused"
    );
    let mut init = post_init(&pause);
    init["headers"]["X-CSRF-Token"] = Value::from(ui.csrf());
    let (status, _) = ui.fetch("/dags/browser_check/pause", init);
    assert_eq!(
        status, 200,
        "the same POST with the token (after its redirect)"
    );
    ui.go("/dags?tag=e2e");
    assert_eq!(
        ui.ok(ui.wait_for(switch).attr("aria-checked")).as_deref(),
        Some("false")
    );
}

#[test]
fn viewer_finds_no_actions_and_forged_actions_are_refused() {
    let home = Home::new();
    let Some(ui) = Ui::start(&home) else { return };
    home.write("release_say", "");
    home.dag("browser_check.yaml", BROWSER_DAG);
    ui.ok(ui.s.updraft_ok(&[
        "users",
        "create",
        "--username",
        "vera",
        "--role",
        "viewer",
        "--email",
        "vera@example.com",
        "--password",
        "viewer-password-1",
    ]));

    ui.go("/dags");
    ui.wait_for("input#username");
    ui.sign_in("vera", "viewer-password-1");
    assert!(ui.ok(ui.wait_for("header .who").text()).contains("vera"));
    wait_for_dag(&ui, "browser_check");
    // Something to look at, made outside the UI: an unpaused DAG with one green run.
    ui.ok(ui.s.updraft_ok(&["dags", "unpause", "browser_check"]));
    let run_id = ui
        .ok(ui
            .s
            .updraft_ok(&["dags", "trigger", "browser_check", "-l", "2024-01-02"]))
        .trim()
        .to_string();
    ui.ok(ui
        .b
        .wait("the CLI-triggered run to succeed", RUN_WAIT, |_| {
            let done = runs_of(&ui, "browser_check")
                .iter()
                .any(|r| r["run_id"] == run_id.as_str() && r["state"] == "success");
            if !done {
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(done.then_some(()))
        }));
    let run_page = format!("/dags/browser_check/runs/{}", enc(&run_id));
    let ti_page = format!("{run_page}/tasks/say");

    // No switch, trigger button or any other action anywhere a viewer can go; what the
    // viewer may read is there.
    let no_actions = |what: &str| {
        assert_eq!(ui.count("[data-action]"), 0, "action buttons on {what}");
        assert_eq!(ui.count("a[href$='/trigger']"), 0, "trigger link on {what}");
        assert_eq!(
            ui.count("main form[method=post]"),
            0,
            "a POST form on {what}"
        );
        ui.no_page_errors(what);
    };
    ui.go("/dags");
    ui.wait_for("tr[data-dag-id=browser_check] span.toggle.on");
    no_actions("the DAG list");
    ui.go("/dags/browser_check");
    ui.wait_for("table.grid a.cell.state-success");
    no_actions("the grid");
    ui.go(&run_page);
    ui.wait_for("table.run-details");
    no_actions("the run page");
    ui.go(&ti_page);
    let log = ui.ok(ui.wait_for("#log-lines").text());
    assert!(task_printed(&log, "hello from the browser test"), "{log}");
    no_actions("the task instance page");
    for admin_page in ["/variables", "/connections", "/users"] {
        assert_eq!(
            ui.count(&format!("header nav a[href='{admin_page}']")),
            0,
            "{admin_page} in a viewer's menu"
        );
    }
    let (status, _) = ui.fetch("/users", serde_json::json!({}));
    assert_eq!(status, 403, "the users page for a viewer");

    // Forged actions with the viewer's own valid CSRF token: refused, nothing changes.
    let csrf = ui.csrf();
    assert!(!csrf.is_empty());
    let refused = |path: &str, fields: &[(&str, &str)]| {
        let mut fields = fields.to_vec();
        fields.push(("csrf_token", &csrf));
        let (status, text) = ui.fetch(path, post_init(&form_body(&fields)));
        assert!(
            status == 403 || text.contains("flash-error"),
            "POST {path} as a viewer was not refused: {status}\n{text}"
        );
    };
    refused("/dags/browser_check/pause", &[("paused", "true")]);
    refused("/dags/browser_check/trigger", &[("param.greeting", "x")]);
    refused(
        &format!("{run_page}/tasks/say/clear"),
        &[("downstream", "true"), ("confirm", "1")],
    );
    refused(&format!("{run_page}/state"), &[("state", "failed")]);
    ui.go(&ti_page);
    ui.wait_for("table.tries");
    assert_eq!(
        ui.count("table.tries tr[data-try]"),
        1,
        "a forged clear made a try"
    );
    assert_eq!(
        ui.count("table.tries tr[data-try='1'] .state-success"),
        1,
        "a forged clear changed the task"
    );
    ui.go("/dags/browser_check/trigger");
    assert_eq!(
        ui.count("form.trigger-form"),
        0,
        "the trigger form is shown to a viewer"
    );
    ui.go("/dags");
    ui.wait_for("tr[data-dag-id=browser_check] span.toggle.on");
    let runs = runs_of(&ui, "browser_check");
    assert_eq!(
        runs.len(),
        1,
        "a viewer's forged trigger made a run: {runs:?}"
    );
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let dags = ui.ok(ui.s.updraft_ok(&["dags", "list", "-o", "json"]));
    let dags: Value = serde_json::from_str(&dags).unwrap();
    let dag = dags
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dag_id"] == "browser_check")
        .cloned()
        .unwrap_or_default();
    assert_eq!(dag["is_paused"], false, "{dag}");

    // Signing out ends the session: the next page asks to sign in again.
    ui.click("header form.who button[type=submit]");
    ui.ok(ui
        .b
        .wait_for_url("the login page after signing out", WAIT, |u| {
            u.contains("/login")
        }));
    ui.go("/dags");
    ui.wait_for("input#username");
    assert!(ui.path().starts_with("/login"), "{}", ui.path());
}

impl Ui {
    /// Signs in with wrong credentials; the login form comes back with an error.
    fn sign_in_expecting_error(&self, username: &str, password: &str) {
        self.type_into("input#username", username);
        self.type_into("input#password", password);
        self.click("form.login-form button[type=submit]");
        let msg = self.ok(self.wait_for("form.login-form .flash-error").text());
        assert!(!msg.is_empty());
        assert!(self.path().starts_with("/login"), "{}", self.path());
    }
}

#[test]
fn admin_creates_and_deletes_a_variable_through_the_forms() {
    let home = Home::new();
    let Some(ui) = Ui::start(&home) else { return };
    ui.go("/variables");
    ui.wait_for("input#username");
    ui.sign_in("admin", &ui.s.password);
    assert!(
        ui.path().starts_with("/variables"),
        "back where the login began: {}",
        ui.path()
    );

    // Create: the form's value is stored as typed, and shown escaped.
    let value = "s3://bucket/<raw>&\"quoted\"";
    ui.click("a[href='/variables/new']");
    ui.type_into("form input[name=key]", "browser_var");
    ui.type_into("form textarea[name=value]", value);
    ui.type_into("form input[name=description]", "made in a browser");
    ui.click("form button.primary");
    let row = ui.wait_for("tr[data-key=browser_var]");
    let text = ui.ok(row.text());
    assert!(text.contains(value), "{text}");
    let stored = ui.ok(ui.s.updraft_ok(&["variables", "get", "browser_var"]));
    assert_eq!(stored.trim_end(), value);

    // Delete asks first: Cancel keeps the variable, OK deletes it.
    let delete = "tr[data-key=browser_var] button.danger";
    ui.click(delete);
    let question = ui.ok(ui
        .b
        .wait("the confirmation", WAIT, |b| Ok(b.alert_text().ok())));
    assert!(question.contains("browser_var"), "{question}");
    ui.ok(ui.b.dismiss_alert());
    ui.wait_for("tr[data-key=browser_var]");
    ui.ok(ui.s.updraft_ok(&["variables", "get", "browser_var"]));
    ui.click(delete);
    ui.ok(ui
        .b
        .wait("the confirmation", WAIT, |b| Ok(b.alert_text().ok())));
    ui.ok(ui.b.accept_alert());
    ui.ok(ui.b.wait("the row to go", WAIT, |b| {
        Ok(b.find_all("tr[data-key=browser_var]")?
            .is_empty()
            .then_some(()))
    }));
    let out = ui.ok(ui.s.updraft(&["variables", "get", "browser_var"]));
    assert!(!out.status.success(), "the variable is still stored");
}

#[test]
fn keyboard_only_sign_in_and_switch_a_narrow_window_and_dark_mode() {
    use updraft_webdriver::keys::{ENTER, SPACE, TAB};
    let home = Home::new();
    let Some(ui) = Ui::start(&home) else { return };
    home.dag("browser_check.yaml", BROWSER_DAG);

    // The login form has the focus on arrival: type, Tab, type, Enter.
    ui.go("/dags");
    ui.wait_for("input#username");
    ui.ok(ui.b.press("admin"));
    ui.ok(ui.b.press(TAB));
    ui.ok(ui.b.press(&ui.s.password));
    ui.ok(ui.b.press(ENTER));
    ui.ok(ui
        .b
        .wait_for_url("the page after signing in", WAIT, |u| !u.contains("/login")));
    wait_for_dag(&ui, "browser_check");

    // The first Tab reaches the skip link; Tabs reach the pause switch and Space flips it.
    ui.go("/dags?tag=e2e");
    ui.wait_for("tr[data-dag-id=browser_check]");
    ui.ok(ui.b.press(TAB));
    let focused = |css: &str| -> bool {
        ui.ok(ui.b.execute(
            "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
            vec![Value::from(css)],
        )) == Value::Bool(true)
    };
    assert!(
        focused("a.skip"),
        "the first Tab does not reach the skip link"
    );
    let switch = "tr[data-dag-id=browser_check] button[data-action=pause]";
    let mut tabs = 1;
    while !focused(switch) {
        assert!(tabs < 80, "80 Tabs did not reach the pause switch");
        ui.ok(ui.b.press(TAB));
        tabs += 1;
    }
    ui.ok(ui.b.press(SPACE));
    let flash = ui.flash();
    assert!(flash.contains("browser_check unpaused"), "{flash}");

    // A phone-sized window: no page scrolls sideways as a whole (wide tables scroll inside
    // their own box).
    ui.ok(ui.b.set_window_size(390, 844));
    for page in [
        "/dags",
        "/dags/browser_check",
        "/dags/browser_check/graph",
        "/dags/browser_check/runs",
        "/dags/browser_check/details",
        "/dags/browser_check/trigger",
        "/variables",
        "/connections",
        "/pools",
        "/users",
        "/audit-log",
        "/health",
    ] {
        ui.go(page);
        ui.wait_for("main#main");
        let widths = ui.ok(ui.b.execute(
            "const d = document.documentElement; return [d.scrollWidth, d.clientWidth];",
            vec![],
        ));
        let (scroll, client) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        if scroll > client + 1 {
            // Name the outermost elements that stick out, to say what to fix.
            let culprits = ui.ok(ui.b.execute(
                "const w = document.documentElement.clientWidth; const out = [];
                 for (const e of document.querySelectorAll('body *')) {
                   const r = e.getBoundingClientRect();
                   const free = ['absolute', 'fixed'].includes(getComputedStyle(e).position);
                   if (r.right > w + 1 && (free || !(e.parentElement && e.parentElement.getBoundingClientRect().right > w + 1)))
                     out.push(e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ').join('.') : '') + ' right=' + Math.round(r.right));
                 }
                 return out.slice(0, 10);",
                vec![],
            ));
            panic!("{page} is {scroll}px wide in a {client}px window; sticking out: {culprits}");
        }
    }

    // Dark or light follows the system setting.
    let brightness = |scheme: &str| -> f64 {
        ui.ok(ui.b.cdp(
            "Emulation.setEmulatedMedia",
            serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        ));
        ui.go("/dags");
        ui.wait_for("main#main");
        let rgb = ui.ok(ui.b.execute(
            "return getComputedStyle(document.body).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number);",
            vec![],
        ));
        let c: Vec<f64> = rgb
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255.0
    };
    let (light, dark) = (brightness("light"), brightness("dark"));
    assert!(
        light > 0.8 && dark < 0.3,
        "background brightness: light {light}, dark {dark}"
    );
}
