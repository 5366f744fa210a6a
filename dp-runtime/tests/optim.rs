//! Optimizers against updates computed by hand from PyTorch's formulas, and the fused noise pass.

use dp_runtime::noise::GaussianNoise;
use dp_runtime::optim::{Adam, NoisyGradient, Optimizer, Schedule, Sgd, StepInfo, GRADIENT_CHUNK};
use dp_runtime::rng::seeded;

const AT: StepInfo = StepInfo { step: 0, total_steps: 10 };

fn step(opt: &mut dyn Optimizer, params: &mut [f32], sum: &[f32], batch: f64) {
    opt.step(params, NoisyGradient::new(sum, None, 0.0, batch), AT);
}

fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_divides_by_the_expected_batch() {
    let mut p = [1.0f32, 2.0];
    step(&mut Sgd::new(0.1), &mut p, &[0.4, -0.8], 2.0);
    close(&p, &[1.0 - 0.1 * 0.2, 2.0 + 0.1 * 0.4]);
}

#[test]
fn momentum_and_nesterov_follow_pytorch() {
    let (g1, g2) = ([0.5f32], [-0.25f32]);
    let mut p = [1.0f32];
    let mut opt = Sgd::new(0.1).momentum(0.9);
    step(&mut opt, &mut p, &g1, 1.0);
    step(&mut opt, &mut p, &g2, 1.0);
    // v1 = 0.5, p1 = 1 − 0.05; v2 = 0.9·0.5 − 0.25 = 0.2, p2 = p1 − 0.02.
    close(&p, &[1.0 - 0.05 - 0.02]);

    let mut p = [1.0f32];
    let mut opt = Sgd::new(0.1).momentum(0.9).nesterov(true);
    step(&mut opt, &mut p, &g1, 1.0);
    step(&mut opt, &mut p, &g2, 1.0);
    // Step 1: v = 0.5, direction 0.5 + 0.45 = 0.95; step 2: v = 0.2, direction −0.25 + 0.18 = −0.07.
    close(&p, &[1.0 - 0.095 + 0.007]);

    let mut p = [2.0f32];
    step(&mut Sgd::new(0.1).weight_decay(0.5), &mut p, &[0.0], 1.0);
    close(&p, &[2.0 - 0.1 * 1.0]);
}

#[test]
fn adam_and_adamw_follow_pytorch() {
    let (lr, b1, b2, eps) = (0.01f64, 0.9f64, 0.999f64, 1e-8f64);
    let grads = [0.3f64, -0.1];
    let mut p = [0.5f32];
    let mut opt = Adam::new(lr);
    let (mut m, mut v, mut expected) = (0.0f64, 0.0f64, 0.5f64);
    for (t, &g) in grads.iter().enumerate() {
        step(&mut opt, &mut p, &[g as f32], 1.0);
        let t = t as i32 + 1;
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        expected -= lr * (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps);
    }
    close(&p, &[expected]);

    // AdamW: decoupled decay before the Adam step; first Adam step moves by lr·sign(g).
    let mut p = [2.0f32];
    let mut opt = Adam::adamw(0.01, 0.1);
    step(&mut opt, &mut p, &[0.4], 1.0);
    close(&p, &[2.0 * (1.0 - 0.01 * 0.1) - 0.01 * 0.4 / (0.4 + 1e-8)]);
    assert_eq!(opt.kind(), "adamw");
}

#[test]
fn noise_is_added_in_the_same_pass() {
    let sum = [0.2f32, -0.4, 0.6];
    let (noise_std, batch, lr) = (1.7, 4.0, 0.5);
    let mut p = [0.0f32; 3];
    let mut noise = GaussianNoise::new(seeded(9));
    let mut replay = GaussianNoise::new(seeded(9));
    Sgd::new(lr).step(&mut p, NoisyGradient::new(&sum, Some(&mut noise), noise_std, batch), AT);
    let expected: Vec<f64> =
        sum.iter().map(|&s| -lr * (s as f64 + noise_std * replay.standard_normal()) / batch).collect();
    close(&p, &expected);
}

#[test]
fn schedules_drive_the_learning_rate() {
    let opt = Sgd::new(1.0).schedule(Schedule::Cosine { final_fraction: 0.1 });
    assert!((opt.learning_rate(StepInfo { step: 10, total_steps: 10 }) - 0.1).abs() < 1e-12);
    let mut p = [0.0f32];
    let mut opt = Sgd::new(1.0).schedule(Schedule::Step { every: 1, gamma: 0.5 });
    opt.step(&mut p, NoisyGradient::new(&[1.0], None, 0.0, 1.0), StepInfo { step: 2, total_steps: 5 });
    close(&p, &[-0.25]);
}

#[test]
fn optimizer_state_round_trips() {
    let mut opt = Adam::new(0.1);
    let mut p = [1.0f32, 2.0];
    step(&mut opt, &mut p, &[0.1, 0.2], 1.0);
    let state = opt.state();
    assert_eq!(state.updates, 1);
    let mut other = Adam::new(0.1);
    other.load_state(state.clone(), 2).unwrap();
    assert_eq!(other.state(), state);
    assert!(Sgd::new(0.1).load_state(state.clone(), 2).is_err());
    assert!(Adam::new(0.1).load_state(state, 3).is_err());
}

#[test]
fn chunks_give_exactly_the_values_of_the_stream_for_every_noise_source() {
    // Lengths below, at and past a chunk, and one with a partial last chunk.
    for len in [0, 1, GRADIENT_CHUNK, 3 * GRADIENT_CHUNK + 17] {
        let sum: Vec<f32> = (0..len).map(|j| (j as f32 * 0.37).sin()).collect();
        let z: Vec<f64> = (0..len).map(|j| (j as f64 * 0.11).cos()).collect();
        let released: Vec<f64> = sum.iter().zip(&z).map(|(&s, &z)| s as f64 + 1.3 * z).collect();
        let (mut noise, mut replay) = (GaussianNoise::new(seeded(4)), GaussianNoise::new(seeded(4)));
        let sources: [[NoisyGradient<'_>; 2]; 4] = [
            [NoisyGradient::new(&sum, None, 0.0, 7.0), NoisyGradient::new(&sum, None, 0.0, 7.0)],
            [
                NoisyGradient::new(&sum, Some(&mut noise), 1.3, 7.0),
                NoisyGradient::new(&sum, Some(&mut replay), 1.3, 7.0),
            ],
            [
                NoisyGradient::with_drawn_noise(&sum, &z, 1.3, 7.0),
                NoisyGradient::with_drawn_noise(&sum, &z, 1.3, 7.0),
            ],
            [NoisyGradient::released(&released, 7.0), NoisyGradient::released(&released, 7.0)],
        ];
        for (source, [chunked, streamed]) in sources.into_iter().enumerate() {
            let mut got = Vec::new();
            chunked.for_each_chunk(|range, values| {
                assert_eq!(range, got.len()..got.len() + values.len());
                assert!(values.len() <= GRADIENT_CHUNK);
                got.extend_from_slice(values);
            });
            let want: Vec<f64> = streamed.values().collect();
            assert_eq!(got, want, "source {source}, {len} coordinates");
        }
    }
}
