//! SVG plots of benchmark results: percentile distributions (the shape HdrHistogram's plotter
//! draws: latency against 1/(1-percentile) on a log axis) and a latency-over-time timeline.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Points of a percentile distribution: (1/(1-q), latency in µs), up to the 99.999th.
fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| {
            (
                v.quantile_iterated_to(),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .filter(|&(q, _)| q < 0.99999)
        .map(|(q, us)| (1.0 / (1.0 - q), us.max(0.001)))
        .collect()
}

/// Draws each named histogram's percentile distribution on one chart.
pub fn percentiles(
    path: &Path,
    title: &str,
    series: &[(String, &Histogram<u64>)],
) -> Result<(), String> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (name.clone(), distribution(h)))
        .collect();
    let max_us = lines
        .iter()
        .flat_map(|(_, l)| l.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((1.0f64..100_000.0).log_scale(), 0.0..max_us * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 1.0 / x);
                format!("{p:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
                    + "%"
            })
            .draw()?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("{}: {e}", path.display()))
}

/// Draws every request's latency at its intended send time, with a vertical line at each
/// marked event (a leader kill).
pub fn timeline(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    marks: &[f64],
) -> Result<(), String> {
    let end_s = points.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let max_ms = points.iter().map(|p| p.1).fold(1.0f64, f64::max);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..end_s, (0.01f64..max_ms * 1.5).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("intended send time (s)")
            .y_desc("latency (ms)")
            .draw()?;
        for &m in marks {
            chart.draw_series(LineSeries::new(
                [(m, 0.01), (m, max_ms * 1.5)],
                COLOURS[1].stroke_width(1),
            ))?;
        }
        chart.draw_series(
            points
                .iter()
                .map(|&(t, ms)| Circle::new((t, ms.max(0.01)), 1, COLOURS[0].filled())),
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::histogram;

    #[test]
    fn a_percentile_chart_has_a_line_and_a_legend_entry_per_series() {
        let dir = tempfile::tempdir().unwrap();
        let (mut fast, mut slow) = (histogram(), histogram());
        for i in 1..=10_000u64 {
            fast.record(i * 10).unwrap();
            slow.record(i * 1000).unwrap();
        }
        let path = dir.path().join("p.svg");
        percentiles(
            &path,
            "test",
            &[("fast side".into(), &fast), ("slow side".into(), &slow)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("fast side") && svg.contains("slow side"));
        // Each series is drawn in its own colour.
        let lines: Vec<&str> = svg.lines().filter(|l| l.contains("<polyline")).collect();
        assert!(lines.iter().any(|l| l.contains("#1F77B4")), "{svg}");
        assert!(lines.iter().any(|l| l.contains("#D62728")), "{svg}");
    }

    #[test]
    fn a_timeline_has_a_point_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let points: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 0.1, 0.5 + i as f64)).collect();
        let path = dir.path().join("t.svg");
        timeline(&path, "test", &points, &[1.0, 2.5]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert_eq!(svg.matches("<circle").count(), 50);
    }
}
