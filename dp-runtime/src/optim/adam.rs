//! Adam (Kingma & Ba 2015) and AdamW (decoupled weight decay, Loshchilov & Hutter 2019), with
//! PyTorch's update rules (`torch.optim.Adam` / `AdamW`, bias-corrected, ε outside the square root).

use super::{check_state, NoisyGradient, Optimizer, OptimizerState, Schedule, StepInfo};
use crate::device::{DeviceAdam, DeviceOptimizer};
use crate::error::Result;

/// Adam or AdamW.
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    schedule: Schedule,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    updates: u64,
}

impl Adam {
    /// Adam with learning rate `lr`, β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            schedule: Schedule::Constant,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            updates: 0,
        }
    }

    /// AdamW: Adam with decoupled weight decay λ (p ← p − lr·λ·p before the Adam step); PyTorch's
    /// default λ is 0.01.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Adam { weight_decay, decoupled: true, ..Adam::new(lr) }
    }

    /// The moment decay rates β₁, β₂.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// The denominator's ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// L2 weight decay added to the gradient (Adam), or the decoupled decay (AdamW).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The learning-rate schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The bias corrections of update `update` (counting from 1): 1 − β₁ᵗ and √(1 − β₂ᵗ), in f64
    /// (t capped at `i32::MAX`). A device's Adam takes them from here, so that its arithmetic is this
    /// step's bit for bit.
    pub fn bias_corrections(beta1: f64, beta2: f64, update: u64) -> (f64, f64) {
        let t = update.min(i32::MAX as u64) as i32;
        (1.0 - beta1.powi(t), (1.0 - beta2.powi(t)).sqrt())
    }

    fn name(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
}

impl Optimizer for Adam {
    fn kind(&self) -> &'static str {
        self.name()
    }

    fn on_device(&self, at: StepInfo) -> Option<DeviceOptimizer> {
        Some(DeviceOptimizer::Adam(DeviceAdam {
            lr: self.learning_rate(at),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
        }))
    }

    fn learning_rate(&self, at: StepInfo) -> f64 {
        self.schedule.rate(self.lr, at.step, at.total_steps)
    }

    fn step(&mut self, params: &mut [f32], gradient: NoisyGradient<'_>, at: StepInfo) {
        assert_eq!(params.len(), gradient.len(), "one gradient value per trained parameter");
        let lr = self.learning_rate(at);
        if self.exp_avg.is_empty() {
            self.exp_avg = vec![0.0; params.len()];
            self.exp_avg_sq = vec![0.0; params.len()];
        }
        self.updates += 1;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let (correction1, root_correction2) = Adam::bias_corrections(b1, b2, self.updates);
        let decoupled = self.decoupled;
        let (exp_avg, exp_avg_sq) = (&mut self.exp_avg, &mut self.exp_avg_sq);
        gradient.for_each_chunk(|range, gradient| {
            let state = exp_avg[range.clone()].iter_mut().zip(&mut exp_avg_sq[range.clone()]);
            for ((p, (m, v)), &g) in params[range].iter_mut().zip(state).zip(gradient) {
                let mut param = *p as f64;
                let g = if decoupled {
                    param *= 1.0 - lr * wd;
                    g
                } else {
                    g + wd * param
                };
                let m_new = b1 * *m as f64 + (1.0 - b1) * g;
                let v_new = b2 * *v as f64 + (1.0 - b2) * g * g;
                *m = m_new as f32;
                *v = v_new as f32;
                let denom = v_new.sqrt() / root_correction2 + eps;
                *p = (param - lr / correction1 * m_new / denom) as f32;
            }
        });
    }

    fn state(&self) -> OptimizerState {
        let buffers = if self.exp_avg.is_empty() {
            Vec::new()
        } else {
            vec![
                ("exp_avg".to_string(), self.exp_avg.clone()),
                ("exp_avg_sq".to_string(), self.exp_avg_sq.clone()),
            ]
        };
        OptimizerState { kind: self.name().into(), updates: self.updates, buffers }
    }

    fn load_state(&mut self, state: OptimizerState, params: usize) -> Result<()> {
        check_state(&state, self.name(), &["exp_avg", "exp_avg_sq"], params)?;
        self.updates = state.updates;
        let take = |name: &str| {
            state.buffers.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).unwrap_or_default()
        };
        self.exp_avg = take("exp_avg");
        self.exp_avg_sq = take("exp_avg_sq");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device is given every setting, the scheduled rate of the step and the checkpoint name.
    #[test]
    fn a_device_is_given_every_setting_and_the_scheduled_rate() {
        let adamw = Adam::adamw(0.1, 0.05)
            .betas(0.8, 0.99)
            .eps(1e-6)
            .schedule(Schedule::Step { every: 2, gamma: 0.5 });
        let at = StepInfo { step: 4, total_steps: 10 };
        let described = adamw.on_device(at).unwrap();
        let expected =
            DeviceAdam { lr: 0.025, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.05, decoupled: true };
        assert_eq!(described, DeviceOptimizer::Adam(expected));
        assert_eq!(described.kind(), adamw.kind());
        let adam = Adam::new(1e-3).weight_decay(1e-4);
        assert_eq!(adam.on_device(at).unwrap().kind(), "adam");
    }

    /// The corrections the step uses: t's powers in f64, t capped at i32::MAX.
    #[test]
    fn bias_corrections_are_those_of_update_t() {
        assert_eq!(Adam::bias_corrections(0.9, 0.999, 1), (1.0 - 0.9, (1.0f64 - 0.999).sqrt()));
        let (c1, c2) = Adam::bias_corrections(0.9, 0.999, 3);
        assert_eq!((c1, c2), (1.0 - 0.9f64.powi(3), (1.0 - 0.999f64.powi(3)).sqrt()));
        assert_eq!(
            Adam::bias_corrections(0.9, 0.999, u64::MAX),
            Adam::bias_corrections(0.9, 0.999, i32::MAX as u64)
        );
    }
}
