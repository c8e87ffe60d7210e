// Progressive enhancement for Updraft's pages. Every page works without this file; it adds
// confirmations, live refresh of parts that change while runs progress, and small helpers.
// Loaded with `defer` under a Content-Security-Policy that forbids inline scripts.
"use strict";

(function () {
  const csrf = () => (document.querySelector("main[data-csrf]") || {}).dataset?.csrf || "";

  // <form data-confirm="Really?"> asks before submitting.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    const question = form.dataset && form.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // <div data-refresh="/url" data-interval="3000" data-live="true"> is replaced by the HTML at
  // /url every interval while it says it is live (the server stops the refresh by answering
  // with data-live="false", e.g. once every run finished).
  function refresh(el) {
    const url = el.dataset.refresh;
    const interval = parseInt(el.dataset.interval || "3000", 10);
    const tick = async () => {
      if (el.dataset.live !== "true" || !document.body.contains(el)) return;
      if (document.visibilityState === "visible") {
        try {
          const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
          if (response.ok) {
            const html = await response.text();
            const template = document.createElement("template");
            template.innerHTML = html.trim();
            const fresh = template.content.firstElementChild;
            if (fresh) {
              el.replaceWith(fresh);
              el = fresh;
              document.dispatchEvent(new CustomEvent("updraft:refreshed", { detail: el }));
            }
          }
        } catch (_) { /* the next tick tries again */ }
      }
      window.setTimeout(tick, interval);
    };
    window.setTimeout(tick, interval);
  }
  document.querySelectorAll("[data-refresh]").forEach(refresh);

  // Exposed for page scripts added later (log tail, graph highlighting).
  window.updraft = { csrf, refresh };
})();

// Task instance page: the log's live tail and its search box.
// <pre data-log-url data-token data-live="true"> polls data-log-url&token=… (plain text, the next
// token in X-Continuation-Token, X-Log-Live: false once the try finished) and appends the new
// lines. <input data-log-filter="id"> hides the lines of that <pre> without the typed text and
// marks the matches.
(function () {
  const pre = document.querySelector("pre[data-log-url]");
  if (!pre) return;
  const filterBox = document.querySelector("input[data-log-filter]");

  function lineNode(text) {
    const span = document.createElement("span");
    span.className = "log-line";
    span.dataset.text = text;
    span.textContent = text + "\n";
    return span;
  }

  function mark(span, needle) {
    const text = span.dataset.text ?? span.textContent.replace(/\n$/, "");
    span.dataset.text = text;
    const at = needle ? text.toLowerCase().indexOf(needle) : -1;
    span.hidden = Boolean(needle) && at < 0;
    span.textContent = "";
    if (at < 0) { span.textContent = text + "\n"; return; }
    let rest = text, lower = text.toLowerCase();
    while (true) {
      const i = lower.indexOf(needle);
      if (i < 0) break;
      span.append(rest.slice(0, i));
      const m = document.createElement("mark");
      m.textContent = rest.slice(i, i + needle.length);
      span.append(m);
      rest = rest.slice(i + needle.length);
      lower = lower.slice(i + needle.length);
    }
    span.append(rest + "\n");
  }

  function applyFilter() {
    const needle = (filterBox && filterBox.value.trim().toLowerCase()) || "";
    pre.querySelectorAll(".log-line").forEach((s) => mark(s, needle));
  }
  if (filterBox) filterBox.addEventListener("input", applyFilter);

  if (pre.dataset.live !== "true") return;
  const interval = 2000;
  const tick = async () => {
    if (pre.dataset.live !== "true") return;
    if (document.visibilityState === "visible") {
      try {
        const q = pre.dataset.q ? "&q=" + encodeURIComponent(pre.dataset.q) : "";
        const url = pre.dataset.logUrl + "&token=" + encodeURIComponent(pre.dataset.token || "") + q;
        const response = await fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
        if (response.ok) {
          const text = await response.text();
          const next = response.headers.get("X-Continuation-Token");
          if (next) pre.dataset.token = next;
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          const needle = (filterBox && filterBox.value.trim().toLowerCase()) || "";
          text.split("\n").filter((l) => l.length > 0).forEach((l) => {
            const span = lineNode(l);
            if (needle) mark(span, needle);
            pre.append(span);
          });
          if (atBottom) pre.scrollTop = pre.scrollHeight;
          if (response.headers.get("X-Log-Live") === "false") {
            pre.dataset.live = "false";
            const note = document.getElementById("log-live-note");
            if (note) note.textContent = "This try has finished.";
            return;
          }
        }
      } catch (_) { /* the next tick tries again */ }
    }
    window.setTimeout(tick, interval);
  };
  window.setTimeout(tick, interval);
})();
