//! The plot of a training run: test accuracy (left axis, %) and ε (right axis) against epochs, as an
//! SVG drawn with `plotters` and written atomically.

use std::path::Path;

use dp_runtime::checkpoint::write_atomically;
use dp_runtime::trainer::EpochReport;
use dp_runtime::{Error, Result};
use plotters::prelude::*;

/// Width and height of the SVG in pixels.
pub const SIZE: (u32, u32) = (800, 480);

/// Draws test accuracy and ε per epoch of `epochs` into an SVG document. A non-private run (ε
/// infinite) gets the accuracy curve only.
pub fn render(title: &str, epochs: &[EpochReport]) -> std::result::Result<String, String> {
    let accuracy: Vec<(f64, f64)> =
        epochs.iter().filter_map(|e| e.accuracy.map(|a| (e.epoch as f64, a * 100.0))).collect();
    let epsilon: Vec<(f64, f64)> =
        epochs.iter().filter(|e| e.epsilon.is_finite()).map(|e| (e.epoch as f64, e.epsilon)).collect();
    let last_epoch = epochs.iter().map(|e| e.epoch).max().unwrap_or(1) as f64;
    let x_range = 0.0..last_epoch.max(1.0);
    let epsilon_max = epsilon.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .right_y_label_area_size(56)
            .build_cartesian_2d(x_range.clone(), 0.0..100.0)
            .map_err(|e| err(&e))?
            .set_secondary_coord(x_range, 0.0..epsilon_max);
        chart.configure_mesh().x_desc("epoch").y_desc("test accuracy (%)").draw().map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(accuracy.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("test accuracy")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart.draw_series(accuracy.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(|e| err(&e))?;
        if !epsilon.is_empty() {
            chart.configure_secondary_axes().y_desc("epsilon").draw().map_err(|e| err(&e))?;
            chart
                .draw_secondary_series(LineSeries::new(epsilon.iter().copied(), RED.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label("epsilon")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Renders the plot of `epochs` and writes it to `path` (atomically).
pub fn write_accuracy_epsilon(path: &Path, title: &str, epochs: &[EpochReport]) -> Result<()> {
    let svg = render(title, epochs).map_err(|message| Error::format(path, "plot", message))?;
    write_atomically(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, accuracy: f64, epsilon: f64) -> EpochReport {
        EpochReport {
            epoch,
            steps: epoch as u64 * 10,
            epsilon,
            eval_loss: Some(0.4),
            accuracy: Some(accuracy),
            diagnostics: None,
        }
    }

    fn curves(svg: &str, colour: &str) -> usize {
        svg.split("<polyline").skip(1).filter(|p| p.split('>').next().unwrap().contains(colour)).count()
    }

    #[test]
    fn the_svg_has_both_curves_and_their_labels() {
        let svg = render("ffnn", &[epoch(1, 0.8, 0.5), epoch(2, 0.82, 0.7), epoch(3, 0.84, 0.9)]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in ["test accuracy (%)", "epsilon", "epoch", "ffnn"] {
            assert!(svg.contains(text), "missing {text}");
        }
        // Each curve and its legend mark: one polyline in its colour.
        assert_eq!(curves(&svg, "#0000FF"), 2, "accuracy");
        assert_eq!(curves(&svg, "#FF0000"), 2, "epsilon");
    }

    #[test]
    fn a_non_private_run_has_no_epsilon_curve() {
        let svg = render("baseline", &[epoch(1, 0.9, f64::INFINITY), epoch(2, 0.95, f64::INFINITY)]).unwrap();
        assert!(!svg.contains("epsilon"));
        assert_eq!(curves(&svg, "#0000FF"), 2);
        assert_eq!(curves(&svg, "#FF0000"), 0);
    }
}
