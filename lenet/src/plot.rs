//! SVG figures with plotters: the training curves (`--plot`, d2l's animator
//! drawn once into a file) and the first layer's filters before and after
//! training (`--filters`, as the seed shows them).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{LenetError, Result};
use crate::train::EpochMetrics;

fn plot_err(path: &Path) -> impl Fn(String) -> LenetError + '_ {
    move |detail| LenetError::Plot { path: path.to_path_buf(), detail }
}

/// A curve: its legend, colour and value per epoch.
type Series = (&'static str, RGBColor, fn(&EpochMetrics) -> f64);

/// Loss, train accuracy and test accuracy per epoch, one chart.
pub fn curves(path: &Path, title: &str, epochs: &[EpochMetrics]) -> Result<()> {
    let err = plot_err(path);
    if epochs.is_empty() {
        return Err(err("no epochs to plot".into()));
    }
    let first = epochs[0].epoch as f64;
    let last = epochs[epochs.len() - 1].epoch as f64;
    let (x0, x1) = if first < last { (first, last) } else { (first - 0.5, first + 0.5) };
    let top = epochs.iter().map(|m| m.loss).fold(1.0_f64, f64::max) * 1.05;
    let top = if top.is_finite() { top } else { 1.05 };

    let root = SVGBackend::new(path, (720, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0.0..top)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| err(e.to_string()))?;

    let series: [Series; 3] = [
        ("train loss", BLUE, |m| m.loss),
        ("train acc", MAGENTA, |m| m.train_acc),
        ("test acc", GREEN, |m| m.test_acc),
    ];
    for (label, color, value) in series {
        let points: Vec<(f64, f64)> = epochs.iter().map(|m| (m.epoch as f64, value(m))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// conv1's filters ([K, 1, 5, 5] flattened: 6 in LeNet-5, 20 and 30 in the
/// other models) before and after training as grey-scale tiles, one row
/// each; each row is scaled to its own range.
pub fn filters(path: &Path, before: &[f32], after: &[f32]) -> Result<()> {
    let err = plot_err(path);
    const SIDE: usize = 5;
    const MAX_K: usize = 64;
    #[allow(non_snake_case)] // K: the filter count, as in the shape [K, 1, 5, 5]
    let K = before.len() / (SIDE * SIDE);
    if K == 0 || K > MAX_K || before.len() != K * SIDE * SIDE || after.len() != before.len() {
        return Err(err(format!(
            "expected the same whole number of 5x5 filters (1 to {MAX_K}) before and after, got {} and {} weights",
            before.len(),
            after.len()
        )));
    }
    let root = SVGBackend::new(path, (K as u32 * 110 + 120, 2 * 110 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root.titled("conv1 filters", ("sans-serif", 18)).map_err(|e| err(e.to_string()))?;
    let (labels, tiles) = root.split_horizontally(120);
    let label_rows = labels.split_evenly((2, 1));
    let tile_rows = tiles.split_evenly((2, K));
    for (row, (name, weights)) in [("before", before), ("after", after)].into_iter().enumerate() {
        label_rows[row].draw(&Text::new(name, (10, 45), ("sans-serif", 16))).map_err(|e| err(e.to_string()))?;
        let lo = weights.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for k in 0..K {
            let area = &tile_rows[row * K + k];
            let cell = 18;
            for (i, &w) in weights[k * SIDE * SIDE..(k + 1) * SIDE * SIDE].iter().enumerate() {
                let grey = (255.0 * (w - lo) / span).round().clamp(0.0, 255.0) as u8;
                let (r, c) = ((i / SIDE) as i32, (i % SIDE) as i32);
                let top_left = (8 + c * cell, 8 + r * cell);
                let bottom_right = (8 + (c + 1) * cell, 8 + (r + 1) * cell);
                area.draw(&Rectangle::new([top_left, bottom_right], RGBColor(grey, grey, grey).filled()))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}
