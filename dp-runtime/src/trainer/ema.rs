//! An exponential moving average of the parameters (Polyak averaging as De et al. 2022 use it for
//! DP-SGD): evaluated and returned instead of the raw parameters.
//!
//! **Privacy.** The average is a function of the released noisy iterates only, so it is
//! post-processing and costs no privacy. It never enters a gradient: the steps read and update the
//! raw parameters exactly as without it (tested bit for bit in `tests/trainer_ema.rs`).

use crate::error::{Error, Result};
use crate::model::DpModel;

/// The average `a ← d_t·a + (1 − d_t)·θ` after every step, with the warm-up
/// `d_t = min(decay, (1 + t)/(10 + t))` (t = updates so far), so that early averages are not
/// dominated by the initialisation; it starts at the initial parameters.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    updates: u64,
    average: Vec<f32>,
}

impl Ema {
    /// An average with `decay` in [0, 1), starting at `params`.
    pub fn new(decay: f64, params: &[f32]) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::invalid("ema", format!("decay {decay} must be in [0, 1)")));
        }
        Ok(Ema { decay, updates: 0, average: params.to_vec() })
    }

    /// The decay of the next update.
    pub fn next_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds the parameters after a step into the average.
    pub fn update(&mut self, params: &[f32]) {
        let d = self.advance();
        for (a, &p) in self.average.iter_mut().zip(params) {
            *a = fold(*a, p, d);
        }
    }

    /// The decay of the next update, counting the update: for an average a device holds and folds
    /// (`DeviceTraining::fold_average`), whose copy [`average_mut`](Self::average_mut) receives.
    pub fn advance(&mut self) -> f64 {
        let d = self.next_decay();
        self.updates += 1;
        d
    }

    /// The averaged parameters.
    pub fn average(&self) -> &[f32] {
        &self.average
    }

    /// The averaged parameters, to be overwritten with a device's copy.
    pub fn average_mut(&mut self) -> &mut [f32] {
        &mut self.average
    }

    /// Exchanges the average and `params`; a second call restores both.
    pub fn swap(&mut self, params: &mut [f32]) {
        params.swap_with_slice(&mut self.average);
    }
}

/// One coordinate of an update: `d·a + (1 − d)·θ` in f64, stored as f32 (a device's fold computes
/// exactly this).
pub fn fold(average: f32, param: f32, decay: f64) -> f32 {
    (decay * average as f64 + (1.0 - decay) * param as f64) as f32
}

/// `f(model)` with the model holding the average when there is one (the raw parameters are put back
/// afterwards); plain `f(model)` otherwise.
pub fn with_average<M: DpModel, R>(ema: Option<&mut Ema>, model: &mut M, f: impl FnOnce(&M) -> R) -> R {
    match ema {
        None => f(model),
        Some(ema) => {
            ema.swap(model.params_mut());
            let result = f(model);
            ema.swap(model.params_mut());
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_fixed_decay() {
        let mut ema = Ema::new(0.5, &[0.0]).unwrap();
        // d_0 = min(0.5, 1/10) = 0.1: a = 0.1·0 + 0.9·1.
        ema.update(&[1.0]);
        assert!((ema.average()[0] - 0.9).abs() < 1e-7);
        // d_1 = min(0.5, 2/11).
        let d1 = 2.0 / 11.0;
        ema.update(&[2.0]);
        assert!((ema.average()[0] as f64 - (d1 * 0.9 + (1.0 - d1) * 2.0)).abs() < 1e-6);
        // Late updates use the decay itself.
        for _ in 0..100 {
            ema.update(&[4.0]);
        }
        assert_eq!(ema.next_decay(), 0.5);
        assert!((ema.average()[0] - 4.0).abs() < 1e-6);
    }

    #[test]
    fn swapping_twice_restores_the_raw_parameters() {
        let mut ema = Ema::new(0.9, &[1.0, 2.0]).unwrap();
        let mut params = vec![5.0, 6.0];
        ema.swap(&mut params);
        assert_eq!(params, vec![1.0, 2.0]);
        ema.swap(&mut params);
        assert_eq!(params, vec![5.0, 6.0]);
        assert_eq!(ema.average(), &[1.0, 2.0]);
    }

    #[test]
    fn decay_outside_the_unit_interval_is_an_error() {
        for bad in [-0.1, 1.0, f64::NAN] {
            assert!(Ema::new(bad, &[0.0]).unwrap_err().to_string().contains("ema"));
        }
    }
}
