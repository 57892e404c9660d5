//! `--html FILE`: the run as one self-contained page (inline CSS and SVG,
//! no script, font, image or link to anything outside it): each version's
//! p50 and p99 per second, the percentile spectrum on HdrHistogram's log
//! axis of 1/(1−p), the summary and cost tables, and the run's parameters.
//! Everything that came from outside (URLs, version names) is escaped.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use html_escape::encode_text;

use super::record::Recorder;
use super::report::{target_name, Report};
use crate::statistics::Interval;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 340.0;
/// Left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (64.0, 32.0, 16.0, 44.0);
/// One colour per series, in series order (colour-blind-safe set).
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#555555", "#f0e442",
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg{background:#fafafa;border:1px solid #e4e4e4}svg text{font:11px sans-serif;fill:#444}\
.grid{stroke:#e4e4e4}.axis{stroke:#888}.legend span{display:inline-block;margin-right:16px}\
.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:5px}\
.warn{color:#b00}";

/// One line of a chart, in data coordinates.
struct Line {
    label: String,
    colour: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// How the x axis is labelled.
enum XAxis {
    /// Seconds of the run.
    Seconds(f64),
    /// log10(1/(1−p)) up to this many nines.
    Nines(f64),
}

/// The page for `report`, whose histograms are in `recorder`.
pub fn render(report: &Report, recorder: &Recorder) -> String {
    let mut out = String::new();
    let p = &report.parameters;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>switchyard load: {}</title><style>{STYLE}</style></head><body>\n",
        encode_text(&p.url)
    );
    let _ = writeln!(
        out,
        "<h1>switchyard load: {} {}</h1><p>{} loop{}, {} connections, started {}</p>",
        encode_text(&p.method),
        encode_text(&p.url),
        p.mode,
        p.rate
            .map_or_else(String::new, |r| format!(" at {r} req/s")),
        p.connections,
        encode_text(&report.started)
    );
    summary_table(&mut out, report);
    costs(&mut out, report);

    let colour = |i: usize| COLOURS[i % COLOURS.len()];
    let mut timeline = Vec::new();
    let mut spectrum = Vec::new();
    for (i, ((target, version), series)) in recorder.series.iter().enumerate() {
        if series.latency.is_empty() {
            continue;
        }
        let name = series_name(*target, version);
        for (quantile, dashed) in [(0.5, false), (0.99, true)] {
            timeline.push(Line {
                label: format!("{name} p{}", quantile * 100.0),
                colour: colour(i),
                dashed,
                points: series
                    .timeline
                    .iter()
                    .map(|(second, h)| (*second as f64 + 0.5, ms(h.value_at_quantile(quantile))))
                    .collect(),
            });
        }
        spectrum.push(Line {
            label: name,
            colour: colour(i),
            dashed: false,
            points: spectrum_points(&series.latency),
        });
    }
    out.push_str("<h2>Latency over time (p50 solid, p99 dashed; by second of the run)</h2>\n");
    legend(&mut out, &timeline);
    let seconds = report.achieved.seconds.max(p.duration_s).max(1.0);
    chart(&mut out, "timeline", &timeline, &XAxis::Seconds(seconds));
    out.push_str("<h2>Percentile spectrum</h2>\n");
    legend(&mut out, &spectrum);
    let nines = spectrum
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| *x))
        .fold(2.0_f64, f64::max)
        .ceil();
    chart(&mut out, "spectrum", &spectrum, &XAxis::Nines(nines));
    parameters(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn series_name(target: usize, version: &str) -> String {
    if target == 0 {
        version.to_owned()
    } else {
        format!("{}:{version}", target_name(target))
    }
}

/// (log10(1/(1−p)), ms) along HdrHistogram's percentile iteration; the
/// last point (p = 1) sits at the last finite tick, as the plotter draws it.
fn spectrum_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let last_x = (h.len() as f64).log10().max(0.0);
    h.iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q < 1.0 {
                (1.0 / (1.0 - q)).log10().min(last_x)
            } else {
                last_x
            };
            (x, ms(v.value_iterated_to()))
        })
        .collect()
}

fn legend(out: &mut String, lines: &[Line]) {
    out.push_str("<div class=\"legend\">");
    for line in lines {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span>",
            line.colour,
            encode_text(&line.label)
        );
    }
    out.push_str("</div>\n");
}

/// A step of 1, 2 or 5 × 10^k giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn nines_label(n: f64) -> String {
    if n < 0.5 {
        return "0%".into();
    }
    let percent = 100.0 * (1.0 - 10f64.powf(-n));
    let decimals = (n as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

fn chart(out: &mut String, name: &str, lines: &[Line], x_axis: &XAxis) {
    let (left, right, top, bottom) = MARGIN;
    let (plot_w, plot_h) = (WIDTH - left - right, HEIGHT - top - bottom);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(_, y)| *y))
        .fold(0.0_f64, f64::max);
    let step = nice_step(y_max.max(0.001));
    let y_top = (y_max / step).ceil().max(1.0) * step;
    let x_max = match x_axis {
        XAxis::Seconds(s) | XAxis::Nines(s) => s.max(1.0),
    };
    let sx = |x: f64| left + plot_w * (x / x_max).clamp(0.0, 1.0);
    let sy = |y: f64| top + plot_h * (1.0 - (y / y_top).clamp(0.0, 1.0));
    let _ = writeln!(
        out,
        "<svg data-chart=\"{name}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
    );
    // Horizontal grid and y labels (ms).
    let decimals = if step < 1.0 { 3 } else { 0 };
    let mut y = 0.0;
    while y <= y_top + step / 2.0 {
        let at = sy(y);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{y:.decimals$}</text>",
            left + plot_w,
            left - 6.0,
            at + 4.0
        );
        y += step;
    }
    // Vertical grid and x labels.
    let ticks: Vec<(f64, String)> = match x_axis {
        XAxis::Seconds(s) => {
            let step = nice_step(*s);
            (0..=((s / step).floor() as usize))
                .map(|i| (i as f64 * step, format!("{}s", i as f64 * step)))
                .collect()
        }
        XAxis::Nines(n) => (0..=(*n as usize))
            .map(|i| (i as f64, nines_label(i as f64)))
            .collect(),
    };
    for (x, label) in ticks {
        let at = sx(x);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{top}\" y2=\"{:.1}\"/><text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            top + plot_h,
            top + plot_h + 16.0
        );
    }
    let (x_title, y_title) = match x_axis {
        XAxis::Seconds(_) => ("second of the run", "latency ms"),
        XAxis::Nines(_) => ("percentile (log scale of 1/(1−p))", "latency ms"),
    };
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_title}</text><text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{y_title}</text>",
        left + plot_w / 2.0,
        HEIGHT - 6.0,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    for line in lines {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline data-series=\"{}\" data-points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{} points=\"{}\"/>",
            html_escape::encode_double_quoted_attribute(&line.label),
            points.len(),
            line.colour,
            if line.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            },
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
}

fn summary_table(out: &mut String, report: &Report) {
    let a = &report.achieved;
    let _ = writeln!(
        out,
        "<p>{} requests in {:.2} s: {:.0} req/s. Generator: {:.2} s CPU, {:.1} µs per request.</p>",
        a.requests,
        a.seconds,
        a.rate,
        report.generator.cpu_seconds,
        report.generator.cpu_per_request_us
    );
    if !a.rate_held {
        let _ = writeln!(
            out,
            "<p class=\"warn\">The generator could not hold the rate: {} sends ({:.1} %) were more than 2 ms late; the latencies include its own queueing.</p>",
            a.late_sends,
            a.late_fraction * 100.0
        );
    }
    out.push_str("<table data-table=\"series\"><tr><th>target</th><th>version</th><th>requests</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>\n");
    for s in &report.series {
        let l = &s.latency_ms;
        let _ = writeln!(
            out,
            "<tr data-version=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{} ({:.2} %)</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>",
            html_escape::encode_double_quoted_attribute(&s.version),
            s.target,
            encode_text(&s.version),
            s.requests,
            s.errors,
            s.error_rate * 100.0,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
    }
    out.push_str("</table>\n");
}

fn interval(i: Option<Interval>, unit: &str, decimals: usize) -> String {
    i.map_or_else(
        || "–".into(),
        |i| {
            format!(
                "{:.decimals$}{unit} ({:.decimals$} to {:.decimals$})",
                i.estimate, i.low, i.high
            )
        },
    )
}

fn costs(out: &mut String, report: &Report) {
    if report.cost.is_empty() && report.overhead.is_none() {
        return;
    }
    out.push_str("<h2>Cost against the baseline (95 % intervals)</h2>\n<table data-table=\"cost\"><tr><th>version</th><th>median shift ms</th><th>Mann–Whitney p</th><th>p50 ratio</th><th>p99 ratio</th><th>error rate difference</th></tr>\n");
    for c in &report.cost {
        let _ = writeln!(
            out,
            "<tr data-version=\"{}\"><td>{} vs {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            html_escape::encode_double_quoted_attribute(&c.version),
            encode_text(&c.version),
            encode_text(&c.baseline),
            interval(c.shift_ms, "", 3),
            c.mann_whitney_p.map_or_else(|| "–".into(), |p| format!("{p:.3}")),
            interval(c.p50_ratio, "×", 3),
            interval(c.p99_ratio, "×", 3),
            interval(
                c.error_rate_difference.map(|e| e.map(|v| v * 100.0)),
                " pts",
                2
            ),
        );
    }
    if let Some(o) = &report.overhead {
        let _ = writeln!(
            out,
            "<tr data-version=\"compare\"><td>URL vs compared URL</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>–</td></tr>",
            interval(o.added_ms, "", 3),
            o.mann_whitney_p.map_or_else(|| "–".into(), |p| format!("{p:.3}")),
            interval(o.p50_ratio, "×", 3),
            interval(o.p99_ratio, "×", 3),
        );
    }
    out.push_str("</table>\n<ul>");
    for c in &report.cost {
        let _ = write!(out, "<li>{}</li>", encode_text(&c.summary));
    }
    if let Some(o) = &report.overhead {
        let _ = write!(out, "<li>{}</li>", encode_text(&o.summary));
    }
    out.push_str("</ul>\n");
}

fn parameters(out: &mut String, report: &Report) {
    let p = &report.parameters;
    let optional = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let rows = [
        ("url", p.url.clone()),
        ("compare", optional(p.compare.clone())),
        ("mode", p.mode.to_owned()),
        ("rate", optional(p.rate.map(|r| format!("{r} req/s")))),
        ("connections", p.connections.to_string()),
        ("threads", p.threads.to_string()),
        ("duration", format!("{} s", p.duration_s)),
        ("warm-up", format!("{} s", p.warmup_s)),
        ("requests", optional(p.requests.map(|r| r.to_string()))),
        ("timeout", format!("{} ms", p.timeout_ms)),
        ("method", p.method.clone()),
        ("protocol", p.protocol.to_owned()),
        ("baseline", p.baseline.clone()),
        ("block", p.block.to_string()),
        ("schema", report.schema.to_owned()),
    ];
    out.push_str("<h2>Parameters</h2>\n<table data-table=\"parameters\">");
    for (name, value) in rows {
        let _ = write!(
            out,
            "<tr><th>{name}</th><td>{}</td></tr>",
            encode_text(&value)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_labels() {
        assert_eq!(nice_step(23.0), 5.0);
        assert_eq!(nice_step(0.8), 0.2);
        assert_eq!(nice_step(1000.0), 200.0);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
    }

    #[test]
    fn the_spectrum_ends_at_the_last_tick_with_the_max() {
        let mut h = super::super::record::histogram();
        for us in 1..=1000u64 {
            let _ = h.record(us * 100);
        }
        let points = spectrum_points(&h);
        assert_eq!(points.first().map(|p| p.0), Some(0.0));
        let last = points.last().copied().expect("points");
        assert!((last.0 - 3.0).abs() < 1e-9, "{last:?}");
        assert!((last.1 - 100.0).abs() < 0.1, "{last:?}");
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }
}
