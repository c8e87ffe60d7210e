//! Markdown from DAG files (`doc_md`) as HTML that is safe to put in a page: raw HTML blocks
//! and inline HTML are shown as text, and links or images whose address could run code
//! (`javascript:`, `data:`, `vbscript:`, ...) lose their address.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};

/// `source` rendered as HTML with no markup of its own passing through.
pub fn to_safe_html(source: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let events = Parser::new_ext(source, options).map(|event| match event {
        // Raw HTML becomes text, which the writer escapes.
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

/// Relative addresses, fragments and `http`, `https`, `mailto` links are kept; any other
/// scheme becomes `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let trimmed: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme_end = trimmed.find(':');
    let path_start = trimmed.find(['/', '?', '#']);
    let has_scheme = match (scheme_end, path_start) {
        (Some(c), Some(p)) => c < p,
        (Some(_), None) => true,
        _ => false,
    };
    if !has_scheme
        || ["http:", "https:", "mailto:"]
            .iter()
            .any(|s| trimmed.starts_with(s))
    {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_html() {
        let html = to_safe_html(
            "# Daily ETL\n\nLoads **orders** into `warehouse`.\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(html.contains("<h1>Daily ETL</h1>"), "{html}");
        assert!(html.contains("<strong>orders</strong>"));
        assert!(html.contains("<code>warehouse</code>"));
        assert!(html.contains("<li>one</li>"));
        assert!(html.contains("<table>"));
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = to_safe_html(
            "<script>alert(1)</script>\n\nText with <img src=x onerror=alert(2)> inline.\n\n<div onclick=\"x()\">block</div>\n",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<div"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn links_that_could_run_code_lose_their_address() {
        let html = to_safe_html(
            "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](< javascript:x>) ![d](data:text/html,x) [e](vbscript:x)",
        );
        assert!(!html.to_ascii_lowercase().contains("script:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        let kept = to_safe_html(
            "[a](https://example.com/x?y=1) [b](/dags/x) [c](#top) [d](mailto:a@b.c) [e](docs/a:b)",
        );
        assert!(
            kept.contains("href=\"https://example.com/x?y=1\""),
            "{kept}"
        );
        assert!(kept.contains("href=\"/dags/x\""));
        assert!(kept.contains("href=\"#top\""));
        assert!(kept.contains("href=\"mailto:a@b.c\""));
        assert!(kept.contains("href=\"docs/a:b\""));
    }
}
