//! SVG charts with plotters: for each op, GFLOP/s per shape grouped by
//! backend (log scale, value above each bar); and a roofline (log-log) with
//! the measured ceilings and every kernel as a point.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{HarnessError, Result};
use crate::markdown::sig;
use crate::ops::{Family, Op};
use crate::results::{Record, Report};

const NAIVE: RGBColor = RGBColor(140, 140, 140);
const IM2COL: RGBColor = RGBColor(31, 119, 180);
const OPENCL: RGBColor = RGBColor(230, 120, 20);
/// Same-run peers (PyTorch), beside our backends in every chart.
const PYTORCH: RGBColor = RGBColor(44, 160, 44);
const CANDLE: RGBColor = RGBColor(214, 39, 40);
const OTHER: RGBColor = RGBColor(148, 103, 189);

fn color(backend: &str) -> RGBColor {
    match backend {
        "naive" => NAIVE,
        "im2col" => IM2COL,
        "opencl" => OPENCL,
        "pytorch" => PYTORCH,
        "candle" => CANDLE,
        _ => OTHER,
    }
}

/// Axis tick labels: no trailing ".0" clutter on log axes.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn chart_error(path: &Path, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Chart { path: path.to_path_buf(), detail: e.to_string() }
}

/// Tick positions for a log axis over [lo, hi]: 1-2-5 in each decade for
/// short ranges, 1-3 for medium ones, decades for long ones.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let steps: &[f64] = if decades <= 3.0 {
        &[1.0, 2.0, 5.0]
    } else if decades <= 5.0 {
        &[1.0, 3.0]
    } else {
        &[1.0]
    };
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    (first..=last)
        .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// The widest log axis a chart draws: values spanning more than this many
/// decades are not measurements (and their tick loop would not end).
const MAX_DECADES: f64 = 24.0;

/// Bounds of a log axis covering `values` with some room. Non-positive and
/// non-finite values are not drawn; a range wider than [`MAX_DECADES`] (or one
/// whose bounds overflow, as 1e308 x 3 does) is an error, never a hang.
fn log_range(values: impl Iterator<Item = f64>, below: f64, above: f64) -> Result<(f64, f64), String> {
    let (lo, hi) =
        values.filter(|v| *v > 0.0 && v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok((0.1, 10.0));
    }
    let (lo, hi) = (lo / below, hi * above);
    let decades = (hi / lo).log10();
    if lo > 0.0 && hi.is_finite() && decades <= MAX_DECADES {
        Ok((lo, hi))
    } else {
        Err(format!("values from {lo:e} to {hi:e} span more than {MAX_DECADES} decades: not a measurement"))
    }
}

/// GFLOP/s per shape, one bar per backend, for `op`. Returns the file's
/// path, or None when the report has no record of `op`.
pub fn op_chart(report: &Report, op: Op, dir: &Path) -> Result<Option<PathBuf>> {
    let records: Vec<&Record> = report.records.iter().filter(|r| r.op == op.name()).collect();
    if records.is_empty() {
        return Ok(None);
    }
    let mut shapes: Vec<&str> = Vec::new();
    let mut kinds: Vec<&str> = Vec::new();
    for r in &records {
        if !shapes.contains(&r.shape.as_str()) {
            shapes.push(&r.shape);
        }
        if !kinds.contains(&r.backend.as_str()) {
            kinds.push(&r.backend);
        }
    }
    let path = dir.join(format!("{}.svg", op.name()));
    let width = (180 + 130 * shapes.len() as u32).max(700);
    {
        let root = SVGBackend::new(&path, (width, 520)).into_drawing_area();
        draw_bars(&root, op, &records, &shapes, &kinds, report.threads).map_err(|e| chart_error(&path, e))?;
        root.present().map_err(|e| chart_error(&path, e))?;
    }
    Ok(Some(path))
}

fn draw_bars(
    root: &DrawingArea<SVGBackend, Shift>,
    op: Op,
    records: &[&Record],
    shapes: &[&str],
    kinds: &[&str],
    threads: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (lo, hi) = log_range(records.iter().map(|r| r.gflops), 2.0, 3.0)?;
    let title = format!("{}: GFLOP/s per shape ({threads} CPU threads)", op.title());
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..shapes.len() as f64, (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("GFLOP/s (log scale)")
        .y_label_formatter(&tick)
        .draw()?;
    let slot = 0.8 / kinds.len() as f64;
    for (j, kind) in kinds.iter().enumerate() {
        let bars: Vec<(f64, f64)> = shapes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                records
                    .iter()
                    .find(|r| r.shape == *s && r.backend == *kind)
                    .map(|r| (i as f64 + 0.1 + j as f64 * slot, r.gflops))
            })
            .collect();
        let fill = color(kind);
        chart
            .draw_series(bars.iter().map(|&(x, v)| Rectangle::new([(x, lo), (x + slot * 0.92, v)], fill.filled())))?
            .label(*kind)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        let style = TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(bars.iter().map(|&(x, v)| Text::new(sig(v), (x + slot * 0.46, v * 1.04), style.clone())))?;
    }
    // Shape names under their groups, in pixel coordinates of the root.
    let label = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, s) in shapes.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        root.draw(&Text::new(s.to_string(), (px, py + 8), label.clone()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn family_of(op: &str) -> Family {
    Op::parse(op).map(Op::family).unwrap_or(Family::Conv)
}

/// The roofline: CPU roof from the sgemm and copy ceilings, the OpenCL
/// GEMM ceiling, and every record as a point (colour: backend, marker: op
/// family: conv a filled circle, pooling a triangle, linear a cross, batch
/// norm and dropout a hollow circle).
pub fn roofline(report: &Report, dir: &Path) -> Result<Option<PathBuf>> {
    if report.records.is_empty() {
        return Ok(None);
    }
    let path = dir.join("roofline.svg");
    {
        let root = SVGBackend::new(&path, (1100, 680)).into_drawing_area();
        draw_roofline(&root, report).map_err(|e| chart_error(&path, e))?;
        root.present().map_err(|e| chart_error(&path, e))?;
    }
    Ok(Some(path))
}

fn draw_roofline(
    root: &DrawingArea<SVGBackend, Shift>,
    report: &Report,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let peak = report.ceilings.sgemm.rate;
    let bw = report.ceilings.copy.rate;
    let cl = report.ceilings.opencl_gemm.as_ref().map(|c| c.rate);
    let ridge = peak / bw;
    let (x_lo, x_hi) = log_range(report.records.iter().map(|r| r.intensity).chain([ridge]), 2.0, 2.0)?;
    let (y_lo, y_hi) = log_range(report.records.iter().map(|r| r.gflops).chain([peak]), 2.0, 2.0)?;
    let title = format!("Roofline: sgemm {} GFLOP/s, copy {} GB/s ({} threads)", sig(peak), sig(bw), report.threads);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale().with_key_points(log_ticks(x_lo, x_hi)),
            (y_lo..y_hi).log_scale().with_key_points(log_ticks(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .x_desc("arithmetic intensity (FLOP / byte, log)")
        .y_desc("GFLOP/s (log)")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
    let roof = [(x_lo, x_lo * bw), (ridge, peak), (x_hi, peak)];
    chart
        .draw_series(LineSeries::new(roof, BLACK.stroke_width(2)))?
        .label("CPU roof: min(sgemm, AI x copy)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    if let Some(cl) = cl {
        let ridge_cl = cl / bw;
        let cl_roof = [(x_lo, x_lo * bw), (ridge_cl, cl), (x_hi, cl)];
        chart
            .draw_series(DashedLineSeries::new(cl_roof, 6, 4, OPENCL.stroke_width(2)))?
            .label(format!("OpenCL GEMM ceiling {} GFLOP/s", sig(cl)))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], OPENCL.stroke_width(2)));
    }
    let mut kinds: Vec<&str> = Vec::new();
    for r in &report.records {
        if !kinds.contains(&r.backend.as_str()) {
            kinds.push(&r.backend);
        }
    }
    for kind in kinds {
        let fill = color(kind);
        let points = report.records.iter().filter(|r| r.backend == kind);
        chart
            .draw_series(points.map(|r| -> DynElement<SVGBackend, (f64, f64)> {
                let at = (r.intensity, r.gflops);
                match family_of(&r.op) {
                    Family::Conv => Circle::new(at, 5, fill.filled()).into_dyn(),
                    Family::Pool => TriangleMarker::new(at, 7, fill.filled()).into_dyn(),
                    Family::Linear => Cross::new(at, 5, fill.stroke_width(2)).into_dyn(),
                    // Hollow: batch norm and dropout sit near pooling's
                    // intensity, and a filled marker would hide theirs.
                    Family::Norm => Circle::new(at, 5, fill.stroke_width(2)).into_dyn(),
                }
            }))?
            .label(format!("{kind}: conv o, pool ^, linear x, norm/dropout hollow o"))
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, fill.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Every chart of `report` into `dir`; returns the files written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for op in Op::ALL {
        written.extend(op_chart(report, op, dir)?);
    }
    written.extend(roofline(report, dir)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::sample_report;

    #[test]
    fn log_ticks_adapt_to_the_range() {
        assert_eq!(log_ticks(0.15, 3.2), [0.2, 0.5, 1.0, 2.0]);
        assert_eq!(log_ticks(0.5, 600.0), [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]);
        assert_eq!(log_ticks(0.01, 1e4), [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]);
    }

    /// Runs `write_all` on its own thread; None when it did not finish in
    /// two minutes (a hang detector for the tick loop, not a speed test:
    /// a correct run takes milliseconds).
    fn write_all_or_hang(report: Report, dir: PathBuf) -> Option<Result<Vec<PathBuf>>> {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(write_all(&report, &dir));
        });
        receive.recv_timeout(std::time::Duration::from_secs(120)).ok()
    }

    #[test]
    fn absurd_values_are_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("harness-charts-absurd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (gflops, intensity) in [(1e308, 1.0), (1.0, 1e308), (1e-300, 1.0)] {
            let mut report = sample_report(&[("naive", 40.0), ("im2col", 2.0)]);
            report.records[1].gflops = gflops;
            report.records[1].intensity = intensity;
            match write_all_or_hang(report, dir.clone()) {
                None => panic!("write_all hung on gflops {gflops:e}, intensity {intensity:e}"),
                Some(Ok(files)) => panic!("write_all drew gflops {gflops:e}, intensity {intensity:e}: {files:?}"),
                Some(Err(e)) => assert!(e.to_string().contains("decades"), "{e}"),
            }
        }
        // Non-finite values are left out of the axes and the run still draws.
        let mut report = sample_report(&[("naive", 40.0), ("im2col", 2.0)]);
        report.records[1].gflops = f64::NAN;
        report.records[0].intensity = f64::INFINITY;
        assert!(matches!(write_all_or_hang(report, dir.clone()), Some(Ok(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn charts_are_written_with_labels() {
        let dir = std::env::temp_dir().join(format!("harness-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = sample_report(&[("naive", 40.0), ("im2col", 2.0), ("opencl", 4.0), ("pytorch", 1.0)]);
        let files = write_all(&report, &dir).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["conv-fwd.svg", "roofline.svg"]);
        let bars = std::fs::read_to_string(dir.join("conv-fwd.svg")).unwrap();
        assert!(bars.contains("lenet-c2") && bars.contains("im2col") && bars.contains("61.4"), "{bars}");
        let roof = std::fs::read_to_string(dir.join("roofline.svg")).unwrap();
        assert!(roof.contains("CPU roof") && roof.contains("<circle"));
        // The peer is marked in its own colour on the roofline and the bars.
        assert!(roof.contains("pytorch: conv o, pool ^, linear x, norm/dropout hollow o"), "{roof}");
        assert!(roof.contains("#2CA02C"), "{roof}");
        assert!(bars.contains("#2CA02C"), "{bars}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_new_ops_get_their_own_titled_charts() {
        let dir = std::env::temp_dir().join(format!("harness-charts-new-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut report = sample_report(&[("naive", 40.0), ("im2col", 2.0)]);
        for r in report.records.clone() {
            report.records.push(Record { op: "avgpool-fwd".into(), shape: "lenet-p1".into(), ..r.clone() });
            report.records.push(Record { op: "bn-bwd".into(), shape: "lenet-bn3".into(), intensity: 0.5, ..r });
        }
        let files = write_all(&report, &dir).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["conv-fwd.svg", "avgpool-fwd.svg", "bn-bwd.svg", "roofline.svg"]);
        let bn = std::fs::read_to_string(dir.join("bn-bwd.svg")).unwrap();
        assert!(bn.contains("batch norm, training backward") && bn.contains("lenet-bn3"), "{bn}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
