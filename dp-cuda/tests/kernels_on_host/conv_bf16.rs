//! bf16 storage in conv.cu's kernels (docs/GPU.md, "bf16 storage"): their per-value functions run by
//! the host harness on buffers held in bf16 (`DP_HARNESS_BF16`), against the host reference storing in
//! bf16 (`HostDevice` in `Precision::Bf16` with `set_bf16_storage(true)`, the same buffers' arena spans
//! marked `OfPrecision`), in every mix of f32 and bf16 of the buffers a kernel takes as `dp_values`
//! (the batch, f32, is read where an activation is; the kept gradients are f32, or an embedding's bf16
//! output gradient):
//! - im2col and col2im, max pooling (its argmax always f32; values that tie only once rounded to bf16,
//!   −∞ and NaN) and average pooling with their backwards, the kept weighted sum (factor-0 examples
//!   over NaN rows skipped), the global average pool's backward and the channel bias with the identity
//!   and ReLU: bit for bit;
//! - the channel bias with the other activations (dp-kernels' fast tanh and sigmoid against libm's),
//!   the row sums, the kept squared norms (without and with a bias) and the global average pool (the
//!   warp's and block's sums, in their shuffles' order, against the host's sequential ones): each value
//!   the host's, or the output's rounding of a value within the f32 tolerance of the host's unrounded
//!   one (so an output left unrounded, or rounded twice, fails).

use dp_kernels::activation::Activation;
use dp_runtime::device::{Conv2dGeometry, DeviceOps, Region, Span};

use super::stored::{
    as_read, assert_bits, assert_within_rounding, host_storing_bf16, in_bf16, on_host, run_op, spread,
    stored, stored_and_unrounded, ACTIVATIONS,
};
use super::{conv_geometries, harness, pool_geometries, values};

/// im2col from the input (an activation, or the f32 batch) into the patches, and col2im from the
/// patches' gradient into the input's, in every mix of f32 and bf16: bit for bit; so are the patches
/// with the batch folded into their columns and an output gradient's examples side by side.
#[test]
fn im2col_and_col2im_between_f32_and_bf16_buffers_equal_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 2;
    let grouped = Conv2dGeometry { in_c: 4, out_c: 6, groups: 2, ..conv_geometries()[1] };
    for geom in conv_geometries().into_iter().chain([grouped]) {
        geom.assert_valid();
        let args =
            [geom.in_c, geom.in_h, geom.in_w, geom.kh, geom.kw, geom.stride, geom.padding, geom.dilation, n];
        let (inputs, patches) = (n * geom.input_len(), n * geom.patches_len());
        let x = spread(geom.in_h as u64 * 31 + geom.kh as u64, inputs);
        let g = spread(geom.in_w as u64 * 17 + 3, patches);
        for mask in 0..4 {
            let cols = run_op(&exe, "im2col", &args, &[&x], mask);
            let host =
                on_host(&[&x, &vec![f32::NAN; patches]], mask, 1, |h, s| h.im2col(s[0], &geom, n, s[1]));
            assert_bits(&cols, &host, &format!("im2col {geom:?} bf16 buffers {mask:#b}"));

            let dx = run_op(&exe, "col2im", &args, &[&g], mask);
            let host =
                on_host(&[&g, &vec![f32::NAN; inputs]], mask, 1, |h, s| h.col2im(s[0], &geom, n, s[1]));
            assert_bits(&dx, &host, &format!("col2im {geom:?} bf16 buffers {mask:#b}"));

            let folded_args = [&args[..], &[0, 0, 1, 0]].concat();
            let folded = run_op(&exe, "im2colfolded", &folded_args, &[&x, &vec![1.0; n]], mask);
            let host = on_host(&[&x, &vec![f32::NAN; patches]], mask, 1, |h, s| {
                h.im2col_folded(s[0], &geom, n, None, s[1])
            });
            assert_bits(&folded, &host, &format!("im2col_folded {geom:?} bf16 buffers {mask:#b}"));

            // An f32 output gradient into a block stored in the precision, and every other mix.
            let (rows, outputs) = (geom.out_c, n * geom.output_len());
            let dy = spread(geom.kw as u64 * 13 + 5, outputs);
            let fold_args = [n, rows, geom.positions(), 0, 0, 1, 0];
            let side_by_side = run_op(&exe, "fold", &fold_args, &[&dy, &vec![1.0; n]], mask);
            let host = on_host(&[&dy, &vec![f32::NAN; outputs]], mask, 1, |h, s| {
                h.fold_examples(s[0], (n, rows, geom.positions()), None, s[1])
            });
            assert_bits(&side_by_side, &host, &format!("fold_examples {geom:?} bf16 buffers {mask:#b}"));
        }
    }
}

/// Max pooling over values that tie only once rounded to bf16 (the first of the stored ties wins), with
/// −∞ and NaN; its argmax always f32, the input and output of either type; its backward and average
/// pooling's both ways, in every mix: bit for bit.
#[test]
fn pooling_between_f32_and_bf16_buffers_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let n = 2;
    for geom in pool_geometries() {
        let args = [geom.channels, geom.in_h, geom.in_w, geom.kernel, geom.stride, geom.padding, n];
        let (inputs, outputs) = (n * geom.input_len(), n * geom.output_len());
        // A few levels, each moved by less than half a bf16 step: distinct in f32, tied in bf16.
        let x: Vec<f32> = (0..inputs)
            .map(|k| match k % 53 {
                5 => f32::NEG_INFINITY,
                11 => f32::NAN,
                _ => (k * 7919 % 3) as f32 + (k * 5 % 11) as f32 * 1e-4,
            })
            .collect();
        let dy = spread(geom.in_w as u64 * 13 + 1, outputs);
        let avg_x = spread(geom.in_h as u64 * 7 + 5, inputs);
        let nans = |len| vec![f32::NAN; len];
        for mask in 0..4 {
            let what = format!("{geom:?} bf16 buffers {mask:#b}");
            let out = run_op(&exe, "maxpool", &args, &[&x], mask);
            let (y, argmax) = out.split_at(outputs);
            // The argmax, a third arena buffer, always f32.
            let (mut host, s) = host_storing_bf16(&[&x, &nans(outputs), &nans(outputs)], mask);
            host.max_pool_forward(s[0], &geom, n, s[1], s[2]).unwrap();
            assert_bits(y, &stored(&mut host, s[1]), &format!("max pool {what}"));
            assert_bits(argmax, &stored(&mut host, s[2]), &format!("max pool argmax {what}"));
            assert!(y.iter().any(|v| v.is_nan()), "a window with a NaN");

            let dx = run_op(&exe, "maxpoolback", &args, &[&dy, argmax], mask);
            let (mut host, s) = host_storing_bf16(&[&dy, &nans(inputs), argmax], mask);
            host.max_pool_backward(s[0], s[2], &geom, n, s[1]).unwrap();
            assert_bits(&dx, &stored(&mut host, s[1]), &format!("max pool backward {what}"));

            let y = run_op(&exe, "avgpool", &args, &[&avg_x], mask);
            let host =
                on_host(&[&avg_x, &nans(outputs)], mask, 1, |h, s| h.avg_pool_forward(s[0], &geom, n, s[1]));
            assert_bits(&y, &host, &format!("avg pool {what}"));

            let dx = run_op(&exe, "avgpoolback", &args, &[&dy], mask);
            let host =
                on_host(&[&dy, &nans(inputs)], mask, 1, |h, s| h.avg_pool_backward(s[0], &geom, n, s[1]));
            assert_bits(&dx, &host, &format!("avg pool backward {what}"));
        }
        // The ties: in bf16 the argmax is the first of the rounded maxima, not the f32 one.
        let f32_argmax = &run_op(&exe, "maxpool", &args, &[&x], 0)[outputs..];
        let bf16_argmax = &run_op(&exe, "maxpool", &args, &[&x], 1)[outputs..];
        assert_ne!(super::bits(f32_argmax), super::bits(bf16_argmax), "{geom:?}: ties only in bf16");
    }
}

/// The kept weighted sum from f32 kept gradients or an embedding's bf16 output gradient, into an f32
/// gradient (and, as any span may be, a bf16 one), with and without factors (factor-0 examples over
/// NaN rows skipped): bit for bit.
#[test]
fn the_kept_weighted_sum_of_f32_and_bf16_kept_gradients_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    let (n, len, groups, group) = (7, 301, 3, 1);
    let mut src = spread(3, n * len);
    let mut factors: Vec<f32> = values(9, n * groups).map(|u| u as f32).collect();
    for i in [2, 5] {
        factors[i * groups + group] = 0.0;
        src[i * len..(i + 1) * len].fill(f32::NAN);
    }
    let dst: Vec<f32> = values(4, len).map(|u| u as f32).collect();
    for has in [1usize, 0] {
        for mask in 0..4 {
            let out = run_op(&exe, "keptsum", &[n, len, has, groups, group], &[&src, &factors, &dst], mask);
            let host = on_host(&[&src, &dst], mask, 1, |h, s| {
                h.set(Region::Factors, factors.clone());
                let f = (has == 1).then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
                h.kept_weighted_sum(s[0], n, len, f, s[1])
            });
            assert_bits(&out, &host, &format!("kept weighted sum has_factors {has} bf16 buffers {mask:#b}"));
            assert_eq!(out.iter().all(|v| v.is_finite()), has == 1, "NaN rows only without factors");
        }
    }
}

/// The global average pool's backward from a bf16 or f32 gradient into one of either type (dividing
/// as the host divides): bit for bit, over planes whose reciprocal is inexact.
#[test]
fn the_global_average_pool_backward_between_f32_and_bf16_buffers_equals_the_host_reference_bit_for_bit() {
    let Some(exe) = harness() else { return };
    for (n, channels, plane) in [(3, 5, 49), (2, 3, 1), (2, 7, 1000), (4, 2, 3)] {
        let planes = n * channels;
        let dy = spread(plane as u64 + 21, planes);
        for mask in 0..4 {
            let dx = run_op(&exe, "globalpoolback", &[planes, plane], &[&dy], mask);
            let host = on_host(&[&dy, &vec![f32::NAN; planes * plane]], mask, 1, |h, s| {
                h.global_avg_pool_backward(s[0], n, channels, plane, s[1])
            });
            assert_bits(
                &dx,
                &host,
                &format!("global avg pool backward {n}x{channels}x{plane} bf16 buffers {mask:#b}"),
            );
        }
    }
}

/// A conv's output in f32 or bf16 after its channel bias (f32 parameters, or none) and activation,
/// in place: the identity and ReLU bit for bit; the others within the f32 tolerance of the host's
/// unrounded value (dp-kernels' fast tanh and sigmoid against the harness's libm), then rounded.
#[test]
fn the_channel_bias_and_activation_of_an_f32_or_bf16_output_equals_the_host_reference() {
    let Some(exe) = harness() else { return };
    let (n, channels, positions) = (3, 5, 37);
    let len = n * channels * positions;
    let mut y: Vec<f32> = values(51, len).map(|u| (u as f32 - 0.5) * 12.0).collect();
    (y[0], y[1], y[2]) = (f32::NAN, f32::INFINITY, -0.0);
    let bias = spread(52, channels);
    for act in ACTIVATIONS {
        let code = dp_cuda::dense::activation_code(act) as usize;
        for has_bias in [1usize, 0] {
            for mask in 0..2 {
                let what = format!("channel bias {act:?} has_bias {has_bias} bf16 output {mask:#b}");
                let device =
                    run_op(&exe, "chanbias", &[n, channels, positions, has_bias, code], &[&y, &bias], mask);
                let (stored, unrounded) = stored_and_unrounded(&[&y], mask, 0, |h, s| {
                    h.set(Region::Params, bias.clone());
                    let b = (has_bias == 1).then_some(Span::new(Region::Params, 0, channels));
                    h.channel_bias_activation(s[0], b, n, channels, positions, act)
                });
                if matches!(act, Activation::Identity | Activation::Relu) {
                    assert_bits(&device, &stored, &what);
                } else {
                    let tolerance = |i: usize| 2e-6 * (1.0 + unrounded[i].abs());
                    assert_within_rounding(
                        &device,
                        (&stored, &unrounded),
                        in_bf16(mask, 0),
                        tolerance,
                        &what,
                    );
                }
            }
        }
    }
}

/// Row sums (a conv's bias gradients) from a bf16 or f32 output gradient into f32 kept sums (or bf16):
/// a warp's lane shares against the host's sums in double, within 1e-5 of the row's absolute sum.
#[test]
fn row_sums_between_f32_and_bf16_buffers_equal_the_host_reference_to_rounding() {
    let Some(exe) = harness() else { return };
    for (rows, cols) in [(40, 1), (30, 49), (9, 784), (5, 33)] {
        let src = spread(cols as u64 + 61, rows * cols);
        for mask in 0..4 {
            let what = format!("row sums {rows}x{cols} bf16 buffers {mask:#b}");
            let device = run_op(&exe, "rowsums", &[rows, cols], &[&src], mask);
            let host = stored_and_unrounded(&[&src, &vec![f32::NAN; rows]], mask, 1, |h, s| {
                h.row_sums(s[0], rows, cols, s[1])
            });
            let read = as_read(&[&src], mask).remove(0);
            let tolerance =
                |r: usize| 1e-5 * read[r * cols..(r + 1) * cols].iter().map(|v| v.abs()).sum::<f32>();
            assert_within_rounding(&device, (&host.0, &host.1), in_bf16(mask, 1), tolerance, &what);
        }
    }
}

/// Each example's squared norm of its kept gradients into f32 `SqNorms`: f32 kept weight and bias
/// gradients, or an embedding's bf16 output gradient without a bias (and every other mix), a block's
/// thread shares against the host's sums in double, within 1e-5; the other groups' norms kept.
#[test]
fn kept_squared_norms_of_f32_and_bf16_kept_gradients_equal_the_host_reference_to_rounding() {
    let Some(exe) = harness() else { return };
    let (n, groups, group) = (5, 3, 2);
    // Past 4 × 1024 values each of a block's 1024 threads loads four at a time (dp_square_share).
    for (weight_len, bias_len) in [(300, 7), (600, 0), (3, 300), (1, 0), (4 * 1024 + 5, 0), (10_000, 9)] {
        let weight = spread(weight_len as u64 + 71, n * weight_len);
        let bias = spread(bias_len as u64 + 72, n * bias_len);
        let sq_norms = vec![7.0f32; n * groups];
        let masks = if bias_len == 0 { 0..2 } else { 0..4 };
        for mask in masks {
            let what = format!("kept norms weight {weight_len} bias {bias_len} bf16 buffers {mask:#b}");
            let args = [n, weight_len, bias_len, groups, group];
            let device = run_op(&exe, "keptnorms", &args, &[&weight, &bias, &sq_norms], mask);
            let norms_on_host = |buffers: &[&[f32]], mask: u32| {
                let (mut host, s) = host_storing_bf16(buffers, mask);
                host.set(Region::SqNorms, sq_norms.clone());
                let b = (bias_len > 0).then_some((s[1], bias_len));
                host.kept_sq_norms(
                    s[0],
                    weight_len,
                    b,
                    n,
                    Span::new(Region::SqNorms, 0, n * groups),
                    groups,
                    group,
                )
                .unwrap();
                host.get(Region::SqNorms).to_vec()
            };
            let stored = norms_on_host(&[&weight, &bias], mask);
            let read = as_read(&[&weight, &bias], mask);
            let unrounded = norms_on_host(&[&read[0], &read[1]], 0);
            // Sums of squares: the absolute sum is the value.
            let tolerance = |i: usize| 1e-5 * unrounded[i];
            assert_within_rounding(&device, (&stored, &unrounded), false, tolerance, &what);
            let others_kept = device.iter().enumerate().all(|(k, &v)| k % groups == group || v == 7.0);
            assert!(others_kept, "{what}: other groups' norms kept");
        }
    }
}

/// The global average pool from a bf16 activation (or the f32 batch) into an output of either type:
/// a warp's lane shares against the host's sequential sum, within 1e-5 of the plane's absolute mean.
#[test]
fn the_global_average_pool_between_f32_and_bf16_buffers_equals_the_host_reference_to_rounding() {
    let Some(exe) = harness() else { return };
    for (n, channels, plane) in [(3, 5, 49), (2, 3, 1), (2, 7, 1000), (4, 2, 3)] {
        let planes = n * channels;
        let x = spread(plane as u64 + 81, planes * plane);
        for mask in 0..4 {
            let what = format!("global avg pool {n}x{channels}x{plane} bf16 buffers {mask:#b}");
            let device = run_op(&exe, "globalpool", &[planes, plane], &[&x], mask);
            let host = stored_and_unrounded(&[&x, &vec![f32::NAN; planes]], mask, 1, |h, s| {
                h.global_avg_pool_forward(s[0], n, channels, plane, s[1])
            });
            let read = as_read(&[&x], mask).remove(0);
            let tolerance = |u: usize| {
                1e-5 * read[u * plane..(u + 1) * plane].iter().map(|v| v.abs()).sum::<f32>() / plane as f32
            };
            assert_within_rounding(&device, (&host.0, &host.1), in_bf16(mask, 1), tolerance, &what);
        }
    }
}
