//! Noise drawn beforehand (alongside the clipped sum) gives exactly the update of noise drawn
//! coordinate by coordinate from the same stream.

use dp_runtime::noise::GaussianNoise;
use dp_runtime::optim::{NoisyGradient, Optimizer, Sgd, StepInfo};

const AT: StepInfo = StepInfo { step: 0, total_steps: 1 };

#[test]
fn drawn_noise_equals_streamed_noise_bit_for_bit() {
    let sum: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin()).collect();
    let start: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.11).cos()).collect();

    let mut streamed = start.clone();
    let mut stream = GaussianNoise::new(dp_runtime::rng::seeded(9));
    Sgd::new(0.5).step(&mut streamed, NoisyGradient::new(&sum, Some(&mut stream), 1.3, 64.0), AT);

    let mut drawn = vec![0.0f64; sum.len()];
    GaussianNoise::new(dp_runtime::rng::seeded(9)).fill(&mut drawn);
    let mut beforehand = start.clone();
    Sgd::new(0.5).step(&mut beforehand, NoisyGradient::with_drawn_noise(&sum, &drawn, 1.3, 64.0), AT);

    assert_eq!(streamed, beforehand);
    assert_ne!(streamed, start, "the update moved the parameters");
    // And the noise is really there: without it the result differs.
    let mut silent = start.clone();
    Sgd::new(0.5).step(&mut silent, NoisyGradient::new(&sum, None, 0.0, 64.0), AT);
    assert_ne!(silent, beforehand);
}

#[test]
#[should_panic(expected = "one drawn normal per gradient coordinate")]
fn drawn_noise_must_cover_every_coordinate() {
    let _ = NoisyGradient::with_drawn_noise(&[1.0, 2.0], &[0.5], 1.0, 1.0);
}
