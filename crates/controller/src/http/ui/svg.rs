//! The page's drawings, as inline SVG with presentation attributes and classes only (the CSP
//! allows no inline style): a certificate expiry timeline and small line charts.

use maud::{Markup, html};

/// One bar of the timeline: a label and when it ends.
#[derive(Debug)]
pub struct Span {
    pub label: String,
    pub ends: i64,
}

const WIDTH: f64 = 900.0;
const LABEL: f64 = 260.0;
const ROW: f64 = 22.0;

/// Every span as a bar from now to its end, on an axis from now to the latest end (at least
/// 90 days), coloured by how soon it ends; lines mark the warning and critical thresholds.
pub fn timeline(spans: &[Span], now: i64, warning: i64, critical: i64) -> Markup {
    let horizon = spans
        .iter()
        .map(|s| s.ends - now)
        .max()
        .unwrap_or(0)
        .max(90 * 86_400) as f64;
    let x = |t: i64| LABEL + (WIDTH - LABEL - 10.0) * ((t - now).max(0) as f64 / horizon);
    let height = ROW * spans.len() as f64 + 30.0;
    let days = (horizon / 86_400.0).round() as i64;
    html! {
        svg id="certificate-timeline" role="img" width=(WIDTH) height=(height)
            viewBox=(format!("0 0 {WIDTH} {height}")) xmlns="http://www.w3.org/2000/svg" {
            title { "Certificate expiry, from now to " (days) " days ahead" }
            @for (i, s) in spans.iter().enumerate() {
                @let y = 6.0 + ROW * i as f64;
                @let left = s.ends - now;
                @let class = if left < critical { "bar-crit" } else if left < warning { "bar-warn" } else { "bar-ok" };
                text x="4" y=(y + 12.0) { (s.label) }
                rect class=(class) x=(LABEL) y=(y) width=((x(s.ends) - LABEL).max(2.0)) height=(ROW - 8.0) {
                    title { (s.label) ": " (super::ago(now, s.ends)) }
                }
            }
            @let base = height - 22.0;
            line class="axis" x1=(LABEL) y1=(base) x2=(WIDTH - 10.0) y2=(base) {}
            line class="now" x1=(x(now + critical)) y1="0" x2=(x(now + critical)) y2=(base) {}
            line class="now" x1=(x(now + warning)) y1="0" x2=(x(now + warning)) y2=(base) {}
            text x=(LABEL - 4.0) y=(height - 6.0) text-anchor="end" { "now" }
            text x=(x(now + critical) + 2.0) y=(height - 6.0) { (critical / 86_400) "d" }
            text x=(x(now + warning) + 2.0) y=(height - 6.0) { (warning / 86_400) "d" }
            text x=(WIDTH - 60.0) y=(height - 6.0) { (days) " days" }
        }
    }
}

/// A small line chart of `points` (time, value) with values from 0 to `max`.
pub fn chart(id: &str, title: &str, points: &[(i64, f64)], max: f64, unit: &str) -> Markup {
    const W: f64 = 360.0;
    const H: f64 = 110.0;
    const TOP: f64 = 18.0;
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => (0, 0),
    };
    let span = (last - first).max(1) as f64;
    let max = if max > 0.0 { max } else { 1.0 };
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = 4.0 + (W - 8.0) * ((t - first) as f64 / span);
            let y = H - 4.0 - (H - TOP - 8.0) * (v / max).clamp(0.0, 1.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let latest = points.last().map(|p| p.1);
    html! {
        svg id=(id) role="img" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}"))
            xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            text x="4" y="13" {
                (title)
                @if let Some(v) = latest { ": " (format!("{v:.1}")) (unit) }
                @else { ": no samples yet" }
            }
            line class="axis" x1="4" y1=(H - 4.0) x2=(W - 4.0) y2=(H - 4.0) {}
            @if path.len() > 1 {
                polyline class="line" points=(path.join(" ")) {}
            }
        }
    }
}
