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
