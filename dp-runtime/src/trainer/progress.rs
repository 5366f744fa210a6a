//! Progress display: an indicatif bar when stderr is a terminal; one line per epoch on stderr
//! otherwise; nothing with `quiet`.
//!
//! Private by default: the bar and the epoch lines carry steps, ε and evaluation-set metrics only.
//! Training-set statistics (running training loss, non-finite counts, realised batch sizes) are shown
//! only when the caller passes them — with non-private diagnostics on — and every line or message that
//! carries them says `(not private)`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::{Diagnostics, EpochReport};

/// The marker of every displayed value that is not covered by the privacy guarantee.
pub const NOT_PRIVATE: &str = "(not private)";

/// The display of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// A display for `total_steps` steps, of which `done` are already taken (resume).
    pub fn new(total_steps: u64, done: u64, quiet: bool) -> Self {
        if quiet {
            return Progress { bar: None, lines: false };
        }
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, lines: true };
        }
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(done);
        Progress { bar: Some(bar), lines: false }
    }

    /// One step done. `running_train_loss` is the epoch's running mean training loss: pass it only
    /// with non-private diagnostics on (it is a statistic of the training data, shown marked).
    pub fn step(&self, running_train_loss: Option<f64>) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if let Some(loss) = running_train_loss {
                if bar.position() % 16 == 0 {
                    bar.set_message(format!("train loss {loss:.4} {NOT_PRIVATE}"));
                }
            }
        }
    }

    /// An epoch finished: one line of private values, and one more, marked, for its diagnostics.
    pub fn epoch(&self, report: &EpochReport) {
        let private = private_line(report);
        let diagnostics = report.diagnostics.as_ref().map(|d| diagnostics_line(report.epoch, d));
        if let Some(bar) = &self.bar {
            bar.println(&private);
            if let Some(line) = &diagnostics {
                bar.println(line);
            }
            bar.set_message(format!("ε {:.3}{}", report.epsilon, eval_metrics(report)));
        } else if self.lines {
            eprintln!("{private}");
            if let Some(line) = &diagnostics {
                eprintln!("{line}");
            }
        }
    }

    /// Training ended.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// The evaluation-set metrics of an epoch, with a leading space, or nothing without an evaluation set.
fn eval_metrics(report: &EpochReport) -> String {
    let loss = report.eval_loss.map(|l| format!(" eval loss {l:.4}")).unwrap_or_default();
    let accuracy = report.accuracy.map(|a| format!(" eval accuracy {:.2}%", a * 100.0)).unwrap_or_default();
    format!("{loss}{accuracy}")
}

/// The line of an epoch's private values: steps, ε, evaluation-set metrics.
pub fn private_line(report: &EpochReport) -> String {
    format!(
        "epoch {} step {} epsilon {:.3}{}",
        report.epoch,
        report.steps,
        report.epsilon,
        eval_metrics(report)
    )
}

/// The line of an epoch's training-data statistics, marked as not private.
pub fn diagnostics_line(epoch: usize, diagnostics: &Diagnostics) -> String {
    let accuracy =
        diagnostics.train_accuracy.map(|a| format!(" train accuracy {:.2}%", a * 100.0)).unwrap_or_default();
    format!(
        "epoch {epoch} {NOT_PRIVATE}: train loss {:.4}{accuracy} non-finite examples {} mean batch size {:.1}",
        diagnostics.train_loss, diagnostics.non_finite_examples, diagnostics.mean_batch_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(diagnostics: Option<Diagnostics>) -> EpochReport {
        EpochReport {
            epoch: 2,
            steps: 40,
            epsilon: 1.25,
            eval_loss: Some(0.5),
            accuracy: Some(0.9),
            diagnostics,
        }
    }

    #[test]
    fn the_private_line_carries_no_training_statistics() {
        let line = private_line(&epoch(None));
        assert_eq!(line, "epoch 2 step 40 epsilon 1.250 eval loss 0.5000 eval accuracy 90.00%");
        assert!(!line.contains("train"));
    }

    #[test]
    fn every_diagnostics_line_says_not_private() {
        let diagnostics = Diagnostics {
            train_loss: 0.25,
            train_accuracy: Some(0.75),
            non_finite_examples: 3,
            mean_batch_size: 19.5,
        };
        let line = diagnostics_line(2, &diagnostics);
        assert!(line.contains(NOT_PRIVATE) && line.contains("train loss 0.2500"), "{line}");
        assert!(line.contains("non-finite examples 3") && line.contains("mean batch size 19.5"), "{line}");
        assert!(!private_line(&epoch(Some(diagnostics))).contains("train"));
    }
}
