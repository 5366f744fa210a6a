//! Progress display: an indicatif bar with loss, accuracy and ε when stderr is a terminal; one line
//! per epoch on stderr otherwise; nothing with `quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::EpochReport;

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

    /// One step done; `loss` is the running mean training loss of the epoch.
    pub fn step(&self, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if bar.position() % 16 == 0 {
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
    }

    /// An epoch finished.
    pub fn epoch(&self, report: &EpochReport) {
        let accuracy = report.accuracy.map(|a| format!(" accuracy {:.2}%", a * 100.0)).unwrap_or_default();
        let line = format!(
            "epoch {} step {} loss {:.4}{accuracy} epsilon {:.3}",
            report.epoch, report.steps, report.train_loss, report.epsilon
        );
        if let Some(bar) = &self.bar {
            bar.println(&line);
            bar.set_message(format!("loss {:.4}{accuracy} ε {:.3}", report.train_loss, report.epsilon));
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    /// Training ended.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
