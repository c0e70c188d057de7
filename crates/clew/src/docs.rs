//! `clew docs` and `clew flow`: the system as its traces describe it, written as Markdown pages
//! (with Mermaid diagrams) that a team can publish next to its code, and the same pages as a
//! self-contained HTML snapshot (diagrams drawn as SVG) to open in a browser or serve as files.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::client::get_text;

async fn get_json(server: &str, path: &str, query: &[(&str, String)]) -> Result<Value, ExitCode> {
    let text = get_text(server, path, query).await?;
    serde_json::from_str(&text).map_err(|error| {
        eprintln!("error: {path} did not answer JSON: {error}");
        ExitCode::FAILURE
    })
}

/// `clew flow` without arguments: the entry operations, busiest first.
pub async fn list_entries(server: &str, lookback: &str, json: bool) -> anyhow::Result<ExitCode> {
    let entries = match get_json(server, "/api/v1/flows", &[("lookback", lookback.to_string())]).await {
        Ok(value) => value,
        Err(code) => return Ok(code),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>9}  {:>7}  ENTRY OPERATION", "REQUESTS", "ERRORS");
    for e in entries["entries"].as_array().into_iter().flatten() {
        println!(
            "{:>9}  {:>7}  {} {}",
            e["requests"].as_i64().unwrap_or(0),
            e["errors"].as_i64().unwrap_or(0),
            e["service"].as_str().unwrap_or(""),
            e["operation"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A file name for an entry operation: lower-case letters, digits and dashes.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(80).collect()
}

fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A Markdown page as a standalone HTML page: tables kept, links to `.md` pages pointed at their
/// `.html` twins, and each Mermaid diagram replaced by the next of `diagrams` (an SVG drawn by
/// the server; the diagram's text when there is none).
fn html_page(title: &str, markdown: &str, diagrams: Vec<String>) -> String {
    use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
    let mut diagrams = diagrams.into_iter();
    let mut in_diagram = false;
    let mut events = Vec::new();
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(ref language))) if language.as_ref() == "mermaid" => {
                in_diagram = true;
                match diagrams.next() {
                    Some(svg) => events.push(Event::Html(format!("<figure class=\"diagram\">{svg}</figure>\n").into())),
                    None => {
                        in_diagram = false;
                        events.push(event);
                    }
                }
            }
            Event::End(TagEnd::CodeBlock) if in_diagram => in_diagram = false,
            _ if in_diagram => {}
            Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
                // A relative link names no scheme before its path.
                let relative = !dest_url.split(['/', '?', '#']).next().is_some_and(|first| first.contains(':'));
                let web = dest_url.starts_with("https://") || dest_url.starts_with("http://");
                let dest_url = match dest_url.strip_suffix(".md") {
                    Some(page) if relative => format!("{page}.html").into(),
                    _ if relative || web => dest_url,
                    _ => "#".into(),
                };
                events.push(Event::Start(Tag::Link { link_type, dest_url, title, id }));
            }
            // No images: the page loads nothing; the description stays as text.
            Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => {}
            // Names and values in the pages come from spans: markup in them is shown as text,
            // never run.
            Event::Html(markup) | Event::InlineHtml(markup) => events.push(Event::Text(markup)),
            other => events.push(other),
        }
    }
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events.into_iter());
    let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;color:#1f2328;margin:0}\
main{max-width:1100px;margin:0 auto;padding:24px}\
table{border-collapse:collapse;margin:12px 0}th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left}\
th{background:#f6f8fa}code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f8fa;padding:12px;overflow:auto}\
figure.diagram{margin:12px 0;overflow:auto;border:1px solid #d0d7de}";

/// A name from the traces as a Markdown table cell: on one line, its bars escaped.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// Writes a page as Markdown (`name`.md) and as HTML (`name`.html).
fn write_page(dir: &Path, name: &str, title: &str, markdown: &str, diagrams: Vec<String>) -> anyhow::Result<()> {
    write_file(dir, &format!("{name}.md"), markdown)?;
    write_file(dir, &format!("{name}.html"), &html_page(title, markdown, diagrams))
}

/// `clew docs`: index.md (services and owners, entry points, dependencies, critical operations,
/// versions) and one page per entry operation under flows/; each also as HTML.
pub async fn write(server: &str, lookback: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let window = || ("lookback", lookback.to_string());
    let markdown = || ("format", "markdown".to_string());
    let coverage = match get_json(server, "/api/v1/coverage", &[window()]).await {
        Ok(value) => value,
        Err(code) => return Ok(code),
    };
    let entries = match get_json(server, "/api/v1/flows", &[window()]).await {
        Ok(value) => value,
        Err(code) => return Ok(code),
    };
    let entries: Vec<(String, String, i64)> = entries["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| matches!(e["kind"].as_str(), Some("server" | "consumer")))
        .map(|e| {
            (
                e["service"].as_str().unwrap_or("").to_string(),
                e["operation"].as_str().unwrap_or("").to_string(),
                e["requests"].as_i64().unwrap_or(0),
            )
        })
        .take(100)
        .collect();
    std::fs::create_dir_all(out.join("flows"))?;

    let progress = indicatif::ProgressBar::new(entries.len() as u64 + 1);
    progress.set_style(indicatif::ProgressStyle::with_template("{msg:32!} {bar:30} {pos}/{len}")?);
    progress.set_message("index");
    let mut index = String::from("# The system, as its traces describe it\n\n");
    let _ = writeln!(
        index,
        "Written by `clew docs` from the traces of the last {lookback} ({} traces). Every number below comes from them.\n",
        coverage["summary"]["traces"]
    );
    index.push_str("## Services and owners\n\n| Service | Team | Status | Spans | Quality |\n|---|---|---|---|---|\n");
    for s in coverage["services"].as_array().into_iter().flatten() {
        let _ = writeln!(
            index,
            "| {} | {} | {} | {} | {} |",
            cell(s["service"].as_str().unwrap_or("")),
            cell(s["team"].as_str().unwrap_or("unknown")),
            s["status"].as_str().unwrap_or("").replace('_', " "),
            s["spans"],
            s["quality_score"].as_u64().map_or(String::new(), |q| q.to_string()),
        );
    }
    index.push_str("\n## Entry points\n\n| Entry operation | Requests | Flow |\n|---|---|---|\n");
    let mut pages = Vec::new();
    for (service, operation, requests) in &entries {
        let file = slug(&format!("{service} {operation}"));
        let _ = writeln!(index, "| {} | {requests} | [flow](flows/{file}.md) |", cell(&format!("{service} {operation}")));
        pages.push((service, operation, file));
    }
    let graph = get_text(server, "/api/v1/service-graph", &[window(), ("format", "mermaid".into())]).await;
    let graph_table = get_text(server, "/api/v1/service-graph", &[window(), markdown()]).await;
    if let (Ok(graph), Ok(table)) = (graph, graph_table) {
        let _ = write!(index, "\n## Dependencies\n\n```mermaid\n{}\n```\n\n{table}\n", graph.trim_end());
    }
    if let Ok(critical) = get_text(server, "/api/v1/critical-operations", &[window(), markdown()]).await {
        let _ = write!(
            index,
            "\n{}\n",
            critical.replacen("# Critical user operations", "## Critical user operations", 1).replace("\n## ", "\n### ")
        );
    }
    for key in ["service.version", "telemetry.sdk.version"] {
        if let Ok(directory) = get_text(server, &format!("/api/v1/directory/{key}"), &[window(), markdown()]).await {
            let _ = write!(
                index,
                "\n## Versions: {key}\n\n{}\n",
                directory.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n").trim()
            );
        }
    }
    let svg = |path: &'static str, query: Vec<(&'static str, String)>| async move {
        let query: Vec<(&str, String)> = query.into_iter().chain([("format", "svg".to_string())]).collect();
        get_text(server, path, &query).await.ok().into_iter().collect::<Vec<_>>()
    };
    let graph_svg = svg("/api/v1/service-graph", vec![window()]).await;
    write_page(out, "index", "The system, as its traces describe it", &index, graph_svg)?;
    progress.inc(1);
    for (service, operation, file) in pages {
        progress.set_message(format!("{service} {operation}"));
        let query = [window(), markdown(), ("service", service.clone()), ("operation", operation.clone())];
        match get_text(server, "/api/v1/flow", &query).await {
            Ok(page) => {
                let flow_svg = svg("/api/v1/flow", vec![window(), ("service", service.clone()), ("operation", operation.clone())]).await;
                let page = format!("{page}\n[All entry points](../index.md)\n");
                write_page(&out.join("flows"), &file, &format!("{service} {operation}"), &page, flow_svg)?;
            }
            Err(code) => return Ok(code),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    println!("wrote index.md and index.html ({} entry operations) to {}", entries.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_draw_diagrams_link_html_and_show_markup_from_spans_as_text() {
        let markdown = "# Flow\n\n```mermaid\ngraph LR\n  a-->b\n```\n\n| Service | Note |\n|---|---|\n| <img src=x onerror=alert(1)> | [flow](flows/a.md) |\n\n\
                        <script>alert(2)</script>\n\n[site](https://example.com/readme.md) [x](javascript:alert(3)) [m](mailto:a.md) \
                        ![remote](https://example.com/pixel.png)\n\n```mermaid\ngraph LR\n  c-->d\n```\n";
        let html = html_page("a <b>", markdown, vec!["<svg id=\"drawn\"></svg>".into()]);
        assert!(html.contains("<figure class=\"diagram\"><svg id=\"drawn\"></svg></figure>"));
        assert!(!html.contains("a--&gt;b"), "the drawn diagram replaces its text");
        assert!(html.contains("c--&gt;d"), "a diagram without a drawing stays as text");
        assert!(html.contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"), "{html}");
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
        assert!(html.contains("href=\"flows/a.html\"") && html.contains("href=\"https://example.com/readme.md\""));
        assert!(html.contains("<title>a &lt;b&gt;</title>"));
        assert!(!html.contains("javascript:") && !html.contains("mailto:") && !html.contains("<img"), "{html}");
        assert!(html.contains("remote"), "an image's description stays");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
