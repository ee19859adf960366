//! SVG plots for the benchmarks: one chart of named series over time, drawn by `plotters` so the
//! benches' figures can be looked at, not only read.

use plotters::prelude::*;
use std::path::Path;

/// One line on a chart: `(x, y)` points in the order they were measured.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points }
    }
}

/// What a chart shows: its title and the names of its axes.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes `series` as a line chart to `path` (SVG, 900x420).
pub fn write_svg(path: &Path, chart: Chart<'_>, series: &[Series]) -> anyhow::Result<()> {
    let (x_max, y_max) = extent(series);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut context = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    context.configure_mesh().x_desc(chart.x_label).y_desc(chart.y_label).draw().map_err(plot_error)?;
    for (index, line) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        context
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    context
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The axes' upper bounds: the largest x and y over all series, 5% headroom on y, never zero.
fn extent(series: &[Series]) -> (f64, f64) {
    let points = series.iter().flat_map(|line| line.points.iter());
    let (x_max, y_max) = points.fold((0.0f64, 0.0f64), |(x, y), &(px, py)| (x.max(px), y.max(py)));
    (if x_max > 0.0 { x_max } else { 1.0 }, if y_max > 0.0 { y_max * 1.05 } else { 1.0 })
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_written_with_its_title_and_every_series_name() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("plots").join("chart.svg");
        let series = [
            Series::new("engine", vec![(0.0, 10.0), (1.0, 30.0), (2.0, 20.0)]),
            Series::new("old worker", vec![(0.0, 5.0), (2.0, 6.0)]),
        ];
        let chart = Chart { title: "throughput", x_label: "s", y_label: "entries/s" };
        write_svg(&path, chart, &series)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.starts_with("<svg"), "not an SVG: {}", &svg[..svg.len().min(80)]);
        for text in ["throughput", "engine", "old worker", "entries/s"] {
            assert!(svg.contains(text), "{text} missing from the plot");
        }
        assert!(svg.matches("<polyline").count() >= 2, "a line per series");
        Ok(())
    }

    #[test]
    fn an_empty_chart_still_has_axes() -> anyhow::Result<()> {
        assert_eq!(extent(&[]), (1.0, 1.0));
        assert_eq!(extent(&[Series::new("a", vec![(2.0, 10.0)])]), (2.0, 10.5));
        Ok(())
    }
}
