//! Adam (Kingma & Ba 2015) and AdamW (decoupled weight decay, Loshchilov & Hutter 2019), with
//! PyTorch's update rules (`torch.optim.Adam` / `AdamW`, bias-corrected, ε outside the square root).

use super::{check_state, NoisyGradient, Optimizer, OptimizerState, Schedule, StepInfo};
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
        let t = self.updates.min(i32::MAX as u64) as i32;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let correction1 = 1.0 - b1.powi(t);
        let root_correction2 = (1.0 - b2.powi(t)).sqrt();
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
