//! The `simulate --chart` timeline as a self-contained SVG: which vendor served when,
//! failures, queue depth and cumulative spend, one panel each on a shared time axis.

use std::fmt::Write;

/// One sample of the timeline.
#[derive(Debug, Clone)]
pub struct Point {
    /// Seconds from the start.
    pub t: f64,
    /// The current vendor.
    pub vendor: String,
    /// Queued and leased messages.
    pub queue_depth: u64,
    /// Failed attempts so far.
    pub failures: u64,
    /// Spend so far.
    pub spend: f64,
}

const WIDTH: f64 = 900.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 110.0;
const GAP: f64 = 30.0;
/// A panel's label, points and colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, &'a str);

const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the timeline; `switches` are marked as vertical lines.
pub fn render(points: &[Point], switches: &[(f64, String)]) -> String {
    let t_max = points.iter().map(|p| p.t).fold(1.0_f64, f64::max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot_w * (t / t_max);
    let mut vendors: Vec<&str> = Vec::new();
    for p in points {
        if !vendors.contains(&p.vendor.as_str()) {
            vendors.push(&p.vendor);
        }
    }
    let color =
        |v: &str| PALETTE[vendors.iter().position(|n| *n == v).unwrap_or(0) % PALETTE.len()];
    let height = 40.0 + 4.0 * (PANEL + GAP) + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="15">sms-gateway simulation timeline</text>"#
    );

    // Panel 1: the serving vendor as coloured bands.
    let top = 40.0;
    let _ = write!(
        svg,
        r#"<text x="8" y="{}">vendor</text>"#,
        top + PANEL / 2.0
    );
    for pair in points.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{}" fill="{}"/>"#,
            x(a.t),
            (x(b.t) - x(a.t)).max(0.5),
            PANEL * 0.6,
            color(&a.vendor)
        );
    }
    for (i, v) in vendors.iter().enumerate() {
        let lx = LEFT + 10.0 + 110.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            top + PANEL * 0.7,
            color(v),
            lx + 16.0,
            top + PANEL * 0.7 + 11.0,
            escape(v)
        );
    }

    // Panels 2-4: line series.
    let failures_per_s: Vec<(f64, f64)> = points
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-3);
            (
                w[1].t,
                (w[1].failures.saturating_sub(w[0].failures)) as f64 / dt,
            )
        })
        .collect();
    let series: [Series<'_>; 3] = [
        ("failures/s", failures_per_s, "#d62728"),
        (
            "queue depth",
            points.iter().map(|p| (p.t, p.queue_depth as f64)).collect(),
            "#1f77b4",
        ),
        (
            "spend",
            points.iter().map(|p| (p.t, p.spend)).collect(),
            "#2ca02c",
        ),
    ];
    for (i, (label, data, stroke)) in series.iter().enumerate() {
        let top = 40.0 + (i as f64 + 1.0) * (PANEL + GAP);
        let bottom = top + PANEL;
        let max = data
            .iter()
            .map(|(_, v)| *v)
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        let y = |v: f64| bottom - PANEL * (v / max);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#999"/><line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#999"/>"##,
            WIDTH - RIGHT
        );
        let _ = write!(
            svg,
            r#"<text x="8" y="{}">{label}</text>"#,
            top + PANEL / 2.0
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            top + 10.0,
            fmt_num(max)
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{bottom}" text-anchor="end">0</text>"#,
            LEFT - 4.0
        );
        let path: Vec<String> = data
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{stroke}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
    }

    // Switches across every panel, and the time axis.
    let bottom = 40.0 + 4.0 * (PANEL + GAP) - GAP;
    for (t, label) in switches {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="40" x2="{0:.1}" y2="{bottom}" stroke="#555" stroke-dasharray="4 3"><title>{1}</title></line>"##,
            x(*t),
            escape(label)
        );
    }
    let steps = 10;
    for k in 0..=steps {
        let t = t_max * f64::from(k) / f64::from(steps);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t:.0}s</text>"#,
            x(t),
            bottom + 18.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_vendor_and_switch() {
        let points: Vec<Point> = (0u32..20)
            .map(|i| Point {
                t: f64::from(i) * 0.5,
                vendor: if i < 10 {
                    "aliyun".into()
                } else {
                    "tencent".into()
                },
                queue_depth: if i == 12 { 40 } else { 0 },
                failures: u64::from(i / 5),
                spend: f64::from(i) * 0.045,
            })
            .collect();
        let svg = render(&points, &[(5.0, "aliyun → tencent".into())]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">aliyun<") && svg.contains(">tencent<"));
        assert!(svg.contains("aliyun → tencent"));
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
