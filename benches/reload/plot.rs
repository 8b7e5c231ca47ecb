//! The SVG plot (`reload.svg`): for each load mode, ok requests per second (naive restart,
//! hotswap, and direct as the ceiling) and failed requests per 100 ms (naive restart, hotswap)
//! over the load's duration, from the load client's 100 ms buckets, with a thin vertical at the
//! moment each restart or reload was asked for.

use std::path::Path;

use crate::cli::Opts;
use crate::load;
use crate::scenarios::{Mode, Row, Scenario};

/// One line of a plot panel.
struct Line {
    name: &'static str,
    color: plotters::style::RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
    /// Reload moments, drawn as thin verticals.
    marks: Vec<f64>,
}

pub fn plot(rows: &[Row], opts: &Opts, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "naive restart vs hotswap: {} clients, {} restarts/reloads in {:?} (thin verticals: the moment each was asked for)",
            opts.clients, opts.reloads, opts.duration
        ),
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let styles = [
        ("direct (no reload)", Scenario::Direct, RGBColor(150, 150, 150), 1),
        ("naive restart", Scenario::Naive, RGBColor(230, 120, 20), 2),
        ("hotswap", Scenario::hotswap(1, 1), RGBColor(30, 90, 200), 2),
    ];
    // Whole buckets inside the load's duration (the last one is cut short).
    let whole = (opts.duration.as_millis() / load::BUCKET.as_millis()) as usize;
    let x_max = opts.duration.as_secs_f64();
    type Pick = fn(&load::Bucket) -> u64;
    let kinds: [(&str, Pick, f64); 2] = [
        ("ok req/s (per 100 ms bucket × 10)", |b| b.ok, 10.0),
        ("failed requests per 100 ms", |b| b.failed, 1.0),
    ];
    for (col, mode) in [Mode::NewConn, Mode::KeepAlive].into_iter().enumerate() {
        for (row_i, (what, pick, scale)) in kinds.iter().enumerate() {
            let lines: Vec<Line> = styles
                .iter()
                .filter(|(_, s, _, _)| row_i == 0 || *s != Scenario::Direct)
                .filter_map(|(name, scenario, color, width)| {
                    let r =
                        rows.iter().find(|r| &r.scenario == scenario && r.mode == Some(mode))?;
                    let l = r.load.as_ref()?;
                    let start = l.started_at?;
                    Some(Line {
                        name,
                        color: *color,
                        width: *width,
                        points: l
                            .timeline
                            .iter()
                            .take(whole)
                            .enumerate()
                            .map(|(i, b)| ((i as f64 + 0.5) * 0.1, pick(b) as f64 * scale))
                            .collect(),
                        marks: r
                            .reloads
                            .iter()
                            .map(|x| x.at.saturating_duration_since(start).as_secs_f64())
                            .collect(),
                    })
                })
                .collect();
            let y_max = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|(_, y)| *y))
                .fold(0.0f64, f64::max)
                .max(if row_i == 0 { 100.0 } else { 5.0 })
                * 1.1;
            let mut chart = ChartBuilder::on(&panels[row_i * 2 + col])
                .caption(format!("{} — {what}", mode.name()), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
            chart
                .configure_mesh()
                .x_desc("seconds since the load started")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for line in &lines {
                for m in &line.marks {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(*m, 0.0), (*m, y_max)],
                        line.color.mix(0.5).stroke_width(1),
                    )))?;
                }
                let style = line.color.stroke_width(line.width);
                chart
                    .draw_series(LineSeries::new(line.points.iter().copied(), style))?
                    .label(line.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
