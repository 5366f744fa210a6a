//! bf16 storage in attention.cu's and transformer.cu's kernels (docs/GPU.md, "bf16 storage"): their
//! per-value functions run by the host harness on buffers held in bf16 (`DP_HARNESS_BF16`), against the
//! host reference storing in bf16 (`HostDevice` in `Precision::Bf16` with `set_bf16_storage(true)`,
//! the same buffers' spans marked `OfPrecision`):
//! - the softmax in place on bf16 scores and its backward on bf16 probabilities and gradients: each
//!   value the host's, or, where the harness's sums and expf differ from the host's within the f32
//!   test's tolerance, the bf16 rounding of a value within that tolerance of the host's unrounded one
//!   (so an intermediate stored through the bf16 row, rounded twice, fails);
//! - the fill, bit for bit;
//! - an activation's backward from its input (every activation; within the f32 test's tolerance, as
//!   above), the strided copy, the patches both ways and the scaled add (bit for bit), each in every
//!   mix of f32 and bf16 arguments (the batch, f32, is copied, permuted or read where an activation is).

use dp_runtime::device::{DeviceOps, PatchDims};

use super::stored::{
    as_read, assert_bits, assert_within_rounding, draw, in_bf16, on_host, run_op, spread,
    stored_and_unrounded, ACTIVATIONS,
};
use super::{harness, values};

#[test]
fn the_attention_softmax_and_its_backward_on_bf16_buffers_equal_the_host_reference_to_rounding() {
    let Some(exe) = harness() else { return };
    for (blocks, steps) in [(3, 5), (2, 37), (4, 1), (1, 64)] {
        let len = blocks * steps * steps;
        let scale = 1.0 / (steps as f32).sqrt();
        let mut scores = draw(steps as u64 + 70, len, 40.0);
        // A NaN score in block 0's last row, a huge one in its first (finite in bf16 too).
        scores[steps * steps - 1] = f32::NAN;
        scores[0] = 3.0e38;
        for causal in [false, true] {
            let args = [
                blocks.to_string(),
                steps.to_string(),
                format!("{scale:e}"),
                usize::from(causal).to_string(),
            ];
            let what = format!("softmax {blocks}×{steps}² causal {causal}, bf16 scores");
            let device = run_op(&exe, "attnsoftmax", &args, &[&scores], 1);
            let host = stored_and_unrounded(&[&scores], 1, 0, |h, s| {
                h.attention_softmax(s[0], blocks, steps, scale, causal)
            });
            // The f32 test's tolerance; masked columns (host 0) exactly 0.
            let tolerance = |i: usize| 1e-6 * host.1[i].abs();
            assert_within_rounding(&device, (&host.0, &host.1), true, tolerance, &what);

            // The backward from these probabilities and a spread gradient, both in bf16 (the only mix
            // a device program makes: both are attention's own `OfPrecision` buffers).
            let dp = draw(steps as u64 + 80, len, 1.0);
            let what = format!(
                "softmax backward {blocks}×{steps}² causal {causal}, bf16 probabilities and gradient"
            );
            let back = run_op(&exe, "attnsoftmaxback", &args[..3], &[&device, &dp], 0b11);
            let host = stored_and_unrounded(&[&device, &dp], 0b11, 1, |h, s| {
                h.attention_softmax_backward(s[0], s[1], blocks, steps, scale)
            });
            // The f32 test's bound, from the values both read: the dot's rounding, relative to the terms
            // it sums, times p.
            let read = as_read(&[&device, &dp], 0b11);
            let (p, g) = (&read[0], &read[1]);
            let terms: Vec<f32> = p
                .chunks(steps)
                .zip(g.chunks(steps))
                .map(|(p, g)| p.iter().zip(g).map(|(p, g)| (p * g).abs()).sum())
                .collect();
            let tolerance = |i: usize| 1e-6 * scale * p[i].abs() * (g[i].abs() + terms[i / steps]);
            assert_within_rounding(&back, (&host.0, &host.1), true, tolerance, &what);
        }
    }
}

#[test]
fn a_fill_of_a_bf16_buffer_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 301;
    let dst = spread(90, len);
    // 1 (the row of ones attention fills) and values bf16 rounds: to nearest, and to infinity.
    for value in [1.0f32, 1.0 / 3.0, -2.7e-3, f32::MAX] {
        for mask in [0, 1] {
            let device = run_op(&exe, "fill", &[len.to_string(), format!("{value:e}")], &[&dst], mask);
            let host = on_host(&[&dst], mask, 0, |h, s| h.fill(s[0], len, value));
            assert_bits(&device, &host, &format!("fill with {value}, bf16 buffers {mask:#b}"));
        }
    }
}

#[test]
fn an_activation_backward_from_its_input_on_bf16_buffers_equals_the_host_reference_to_rounding() {
    let Some(exe) = harness() else { return };
    let len = 2001;
    let mut x: Vec<f32> = values(91, len).map(|u| (u as f32 - 0.5) * 16.0).collect();
    (x[0], x[1], x[2], x[3]) = (0.0, f32::NAN, f32::INFINITY, -0.3);
    let grad: Vec<f32> = values(92, len).map(|u| u as f32 - 0.25).collect();
    for act in ACTIVATIONS {
        let code = dp_cuda::dense::activation_code(act);
        // Bit 0 the gradient (the output, in place), bit 1 the input (the batch's f32 or an activation).
        for mask in 0..4 {
            let what = format!("{act:?}, bf16 buffers {mask:#b}");
            let device = run_op(&exe, "actinput", &[len.to_string(), code.to_string()], &[&grad, &x], mask);
            let host = stored_and_unrounded(&[&grad, &x], mask, 0, |h, s| {
                h.activation_backward_from_input(s[0], s[1], len, act)
            });
            // The f32 test's tolerance (the harness's libm against dp-kernels' own).
            let tolerance = |i: usize| 2e-6 * (1.0 + host.1[i].abs());
            assert_within_rounding(&device, (&host.0, &host.1), in_bf16(mask, 0), tolerance, &what);
        }
    }
}

#[test]
fn strided_copies_and_patches_between_f32_and_bf16_buffers_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    // Bit 0 the source (the batch's f32, or a layer's output), bit 1 the destination: every mix.
    for (rows, cols, ss, ds) in [(3, 5, 35, 5), (3, 5, 5, 35), (4, 6, 6, 6)] {
        let (src_len, dst_len) = ((rows - 1) * ss + cols, (rows - 1) * ds + cols);
        let src: Vec<f32> = values(93, src_len).map(|u| u as f32).collect();
        let dst: Vec<f32> = values(94, dst_len).map(|u| -(u as f32)).collect();
        for mask in 0..4 {
            let args = [rows, cols, ss, ds, src_len, dst_len].map(|v| v.to_string());
            let device = run_op(&exe, "copystrided", &args, &[&src, &dst], mask);
            let host = on_host(&[&src, &dst], mask, 1, |h, s| h.copy_strided(s[0], ss, s[1], ds, rows, cols));
            let what = format!("copy of {rows}×{cols}, strides {ss}, {ds}, bf16 buffers {mask:#b}");
            assert_bits(&device, &host, &what);
            assert!(device.iter().any(|&v| v > 0.0), "{what}: the copy wrote");
        }
    }
    for (dims, n) in [
        (PatchDims { channels: 2, height: 8, width: 8, size: 4 }, 3),
        (PatchDims { channels: 3, height: 6, width: 9, size: 3 }, 1),
    ] {
        let len = n * dims.len();
        let x = spread(95, len);
        let unwritten = vec![f32::NAN; len];
        let (c, h, w, p) = (dims.channels, dims.height, dims.width, dims.size);
        for mask in 0..4 {
            for forward in [true, false] {
                let args = [c, h, w, p, n, usize::from(forward)].map(|v| v.to_string());
                let device = run_op(&exe, "patches", &args, &[&x], mask);
                let host = on_host(&[&x, &unwritten], mask, 1, |hd, s| match forward {
                    true => hd.patches_forward(s[0], &dims, n, s[1]),
                    false => hd.patches_backward(s[0], &dims, n, s[1]),
                });
                assert_bits(
                    &device,
                    &host,
                    &format!("patches of {dims:?} forward {forward}, bf16 buffers {mask:#b}"),
                );
            }
        }
    }
}

#[test]
fn a_scaled_add_between_f32_and_bf16_buffers_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let len = 1001;
    let dst = spread(96, len);
    let src: Vec<f32> = values(97, len).map(|u| (u as f32 - 0.5) * 3.0).collect();
    for scale in [2.0f32, 0.125, 1.0 / 3.0] {
        // Bit 0 the destination (read and written), bit 1 the source: every mix.
        for mask in 0..4 {
            let device =
                run_op(&exe, "addscaled", &[len.to_string(), format!("{scale:e}")], &[&dst, &src], mask);
            let host = on_host(&[&dst, &src], mask, 0, |h, s| h.add_scaled_into(s[0], s[1], len, scale));
            assert_bits(&device, &host, &format!("scale {scale}, bf16 buffers {mask:#b}"));
        }
    }
}
