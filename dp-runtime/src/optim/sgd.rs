//! Stochastic gradient descent with optional momentum (heavy-ball or Nesterov) and L2 weight decay,
//! with PyTorch's update rules (`torch.optim.SGD`, dampening 0).

use super::{check_state, NoisyGradient, Optimizer, OptimizerState, Schedule, StepInfo};
use crate::error::Result;

/// SGD: v ← μv + (g + λp); p ← p − lr·v (or p − lr·(g + λp + μv) with Nesterov); plain p − lr·g for μ = 0.
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    schedule: Schedule,
    velocity: Vec<f32>,
    updates: u64,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            velocity: Vec::new(),
            updates: 0,
        }
    }

    /// Heavy-ball momentum μ.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Nesterov momentum (needs μ > 0).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 weight decay λ added to the gradient.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The learning-rate schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn on_device(&self, at: StepInfo) -> Option<crate::device::DeviceOptimizer> {
        Some(crate::device::DeviceOptimizer::Sgd(crate::device::DeviceSgd {
            lr: self.learning_rate(at),
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        }))
    }

    fn learning_rate(&self, at: StepInfo) -> f64 {
        self.schedule.rate(self.lr, at.step, at.total_steps)
    }

    fn step(&mut self, params: &mut [f32], gradient: NoisyGradient<'_>, at: StepInfo) {
        assert_eq!(params.len(), gradient.len(), "one gradient value per trained parameter");
        let lr = self.learning_rate(at);
        let (mu, wd) = (self.momentum, self.weight_decay);
        self.updates += 1;
        if mu == 0.0 {
            gradient.for_each_chunk(|range, gradient| {
                for (p, &g) in params[range].iter_mut().zip(gradient) {
                    let g = g + wd * *p as f64;
                    *p = (*p as f64 - lr * g) as f32;
                }
            });
            return;
        }
        let first = self.velocity.is_empty();
        if first {
            self.velocity = vec![0.0; params.len()];
        }
        let (velocity, nesterov) = (&mut self.velocity, self.nesterov);
        gradient.for_each_chunk(|range, gradient| {
            for ((p, v), &g) in params[range.clone()].iter_mut().zip(&mut velocity[range]).zip(gradient) {
                let g = g + wd * *p as f64;
                // PyTorch starts the buffer at the first gradient.
                let velocity = if first { g } else { mu * *v as f64 + g };
                *v = velocity as f32;
                let direction = if nesterov { g + mu * velocity } else { velocity };
                *p = (*p as f64 - lr * direction) as f32;
            }
        });
    }

    fn state(&self) -> OptimizerState {
        let buffers = if self.velocity.is_empty() {
            Vec::new()
        } else {
            vec![("momentum".to_string(), self.velocity.clone())]
        };
        OptimizerState { kind: "sgd".into(), updates: self.updates, buffers }
    }

    fn load_state(&mut self, state: OptimizerState, params: usize) -> Result<()> {
        let expected: &[&str] = if self.momentum == 0.0 { &[] } else { &["momentum"] };
        check_state(&state, "sgd", expected, params)?;
        self.updates = state.updates;
        self.velocity =
            state.buffers.into_iter().find(|(n, _)| n == "momentum").map(|(_, b)| b).unwrap_or_default();
        Ok(())
    }
}
