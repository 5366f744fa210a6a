//! Learning-rate schedules: a factor on the base learning rate as a function of the step.

/// A learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The rate multiplied by `gamma` every `every` steps (PyTorch's `StepLR`).
    Step {
        /// Steps between two drops.
        every: u64,
        /// Factor of each drop.
        gamma: f64,
    },
    /// Cosine decay from the base rate to `final_fraction` of it over the plan's steps
    /// (PyTorch's `CosineAnnealingLR` with `eta_min = final_fraction · lr`).
    Cosine {
        /// The final rate as a fraction of the base rate.
        final_fraction: f64,
    },
}

impl Schedule {
    /// The learning rate at `step` (steps completed before this one) of `total_steps`.
    pub fn rate(&self, base: f64, step: u64, total_steps: u64) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                let drops = step.checked_div(every).unwrap_or(0);
                base * gamma.powi(drops.min(i32::MAX as u64) as i32)
            }
            Schedule::Cosine { final_fraction } => {
                let progress =
                    if total_steps == 0 { 1.0 } else { (step as f64 / total_steps as f64).min(1.0) };
                let floor = base * final_fraction;
                floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_their_formulas() {
        assert_eq!(Schedule::Constant.rate(0.1, 50, 100), 0.1);
        let step = Schedule::Step { every: 10, gamma: 0.5 };
        assert_eq!(step.rate(1.0, 9, 100), 1.0);
        assert_eq!(step.rate(1.0, 25, 100), 0.25);
        let cos = Schedule::Cosine { final_fraction: 0.0 };
        assert!((cos.rate(1.0, 0, 100) - 1.0).abs() < 1e-15);
        assert!((cos.rate(1.0, 50, 100) - 0.5).abs() < 1e-15);
        assert!(cos.rate(1.0, 100, 100).abs() < 1e-15);
    }
}
