//! bf16 storage in dense.cu's kernels: the bias and activation, an activation and its backward from
//! the output, the three losses, the linear ghost norms, the row scaling, the column sums, the add, the
//! embedding averaged over a sequence and the count of non-finite values, with their buffers held in
//! bf16 on the host harness.
//!
//! Each of dense.cu's per-value functions runs on the harness (`dense WHAT ...`) with every mix of its
//! `dp_values` buffers in f32 and bf16 (`DP_HARNESS_BF16`): mask 0 is the f32 test, the others hold
//! the activations, outputs and gradients a device program may store in bf16 in bf16 (docs/GPU.md,
//! "bf16 storage"), including the mixes "by caller" (an activation or ghost norm reading the f32
//! batch, a clipped sum's f32 scratch written from a bf16 row, a column sum of the f32 scratch or of a
//! bf16 output gradient) and every buffer in bf16 (each kernel takes any mix). Each run is checked
//! twice:
//! - against the host reference storing in bf16 (`Precision::Bf16`, `set_bf16_storage(true)`), its
//!   arena spans marked `of_precision()` where the harness holds the buffer in bf16: bit for bit where
//!   both compute the same f32 operations in the same order, else within a stated tolerance (CUDA's
//!   libm, which the harness's C library stands for, against dp-kernels' own exp, sigmoid, tanh and
//!   erf) plus one bf16 step where the value is stored in bf16 (two f32 values a few ulps apart may
//!   round to neighbouring bf16 values);
//! - against itself in f32: what a bf16 buffer holds after the operation is exactly the f32
//!   operation on the inputs as stored, rounded once (`round_to_bf16`), so nothing is rounded twice
//!   or accumulated through a bf16 buffer even where the host reference's libm differs; and that
//!   a mix with some buffer in bf16 stores something else than all in f32 (so that a harness ignoring
//!   the storage cannot pass).

use dp_kernels::activation::Activation;
use dp_kernels::gemm_bf16::round_to_bf16;
use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{DeviceLoss, DeviceOps, Region, RowScale, Span};

use super::stored::{assert_bits, draw, in_arena, run_with_ids, stored, storing_bf16, ACTIVATIONS};
use super::{bits, harness, values};

/// One input of a harness operation, in stdin order: its values and the bit of `DP_HARNESS_BF16` of
/// the buffer that holds it (`None`: an f32 array, a `float *` of the kernel).
type Input<'a> = (&'a [f32], Option<u32>);

fn held_in_bf16(bit: Option<u32>, mask: u32) -> bool {
    bit.is_some_and(|b| mask >> b & 1 == 1)
}

fn rounded(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| round_to_bf16(v)).collect()
}

/// `dense WHAT ARGS` with `ids` then `inputs` on stdin, the buffers whose bits are set in `mask` in
/// bf16; its output as f32s.
fn dense(what: &str, args: &[usize], ids: &[u32], inputs: &[Input], mask: u32) -> Vec<f32> {
    let exe = harness().expect("checked by the caller");
    let mut all = vec![what.to_string()];
    all.extend(args.iter().map(usize::to_string));
    let floats: Vec<&[f32]> = inputs.iter().map(|&(v, _)| v).collect();
    run_with_ids(&exe, "dense", &all, ids, &floats, mask)
}

/// `dense WHAT ARGS` with the buffers of `mask` in bf16, after checking that it stores exactly what
/// the operation on f32 buffers holding the same (rounded) inputs computes, each output of a bf16
/// buffer rounded once: `outputs` are the output's parts in order, their lengths and buffer bits.
fn dense_stored(
    what: &str,
    args: &[usize],
    ids: &[u32],
    inputs: &[Input],
    outputs: &[(usize, Option<u32>)],
    mask: u32,
) -> Vec<f32> {
    let stored = dense(what, args, ids, inputs, mask);
    let as_held: Vec<Vec<f32>> = inputs
        .iter()
        .map(|&(v, bit)| if held_in_bf16(bit, mask) { rounded(v) } else { v.to_vec() })
        .collect();
    let f32_inputs: Vec<Input> = as_held.iter().map(|v| (v.as_slice(), None)).collect();
    let mut expected = dense(what, args, ids, &f32_inputs, 0);
    let mut at = 0;
    for &(len, bit) in outputs {
        if held_in_bf16(bit, mask) {
            let part = rounded(&expected[at..at + len]);
            expected[at..at + len].copy_from_slice(&part);
        }
        at += len;
    }
    assert_eq!(at, stored.len(), "{what} {args:?}: output length");
    let differing = bits(&stored).iter().zip(bits(&expected)).filter(|(s, e)| **s != *e).count();
    assert_eq!(
        differing, 0,
        "{what} {args:?} bf16 {mask:#b}: not the f32 operation on the stored inputs rounded once"
    );
    if mask != 0 {
        let as_f32 = dense(what, args, ids, inputs, 0);
        assert_ne!(
            bits(&stored),
            bits(&as_f32),
            "{what} {args:?} bf16 {mask:#b}: the storage changed nothing"
        );
    }
    stored
}

/// A region of the host holding `values`, and its span.
fn region(host: &mut HostDevice, region: Region, values: &[f32]) -> Span {
    host.set(region, values.to_vec());
    Span::new(region, 0, values.len())
}

/// NaN exactly where the host has NaN; every other value within `tolerance · (1 + |host|)` and, when
/// stored in bf16, one bf16 step (2⁻⁷ of the larger magnitude) more.
fn near(what: &str, device: &[f32], host: &[f32], tolerance: f32, in_bf16: bool) {
    assert_eq!(device.len(), host.len(), "{what}: lengths");
    for (k, (d, h)) in device.iter().zip(host).enumerate() {
        let step = if in_bf16 { d.abs().max(h.abs()) / 128.0 } else { 0.0 };
        let ok = if h.is_nan() {
            d.is_nan()
        } else if h.is_infinite() {
            d == h
        } else {
            (d - h).abs() <= tolerance * (1.0 + h.abs()) + step
        };
        assert!(ok, "{what}[{k}]: device {d}, host {h}");
    }
}

/// `len` values over (−scale/2, scale/2) with NaN, both infinities, zeros of both signs, a bf16 tie
/// and values next to one among the first.
fn with_specials(seed: u64, len: usize, scale: f64) -> Vec<f32> {
    let mut v = draw(seed, len, scale);
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0xbf81_8000),
        f32::from_bits(0x3f80_7fff),
    ];
    v[..specials.len()].copy_from_slice(&specials);
    v
}

/// The tolerance of an activation's f32 value against the host's: 0 (bit for bit) where no libm
/// function is involved, else the transformer test's 2e-6 relative to 1 + |value| (CUDA's tanhf,
/// expf and erff against dp-kernels' own).
fn activation_tolerance(act: Activation) -> f32 {
    match act {
        Activation::Identity | Activation::Relu => 0.0,
        _ => 2e-6,
    }
}

/// `bias_activation` (harness `biasact`; buffer y, the bias a parameter) and `activation` (`act`;
/// buffers x, y: x an activation or the f32 batch) for every activation, with and without a bias:
/// bit for bit for identity and ReLU, within the activation's tolerance for the others.
#[test]
fn bias_activation_and_activation_store_as_the_host_reference() {
    if harness().is_none() {
        return;
    }
    let (rows, cols) = (37, 11);
    let y = with_specials(1, rows * cols, 12.0);
    let bias = draw(2, cols, 1.0);
    for act in ACTIVATIONS {
        let code = dp_cuda::dense::activation_code(act) as usize;
        let tolerance = activation_tolerance(act);
        for has_bias in [true, false] {
            let mut inputs: Vec<Input> = vec![(&y, Some(0))];
            if has_bias {
                inputs.push((&bias, None));
            }
            for mask in 0..2 {
                let case = format!("biasact {act:?} bias {has_bias} bf16 {mask:#b}");
                let args = [rows, cols, has_bias as usize, code];
                let device = dense_stored("biasact", &args, &[], &inputs, &[(rows * cols, Some(0))], mask);
                let mut host = storing_bf16();
                let s = in_arena(&mut host, &[&y], mask);
                let b = has_bias.then(|| region(&mut host, Region::Params, &bias));
                host.bias_activation(s[0], b, rows, cols, act).unwrap();
                let want = stored(&mut host, s[0]);
                if tolerance == 0.0 {
                    assert_bits(&device, &want, &case);
                } else {
                    near(&case, &device, &want, tolerance, mask == 1);
                }
            }
        }

        let len = rows * cols;
        for mask in 0..4 {
            let case = format!("act {act:?} bf16 {mask:#b}");
            let device = dense_stored("act", &[len, code], &[], &[(&y, Some(0))], &[(len, Some(1))], mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[&y, &vec![f32::NAN; len]], mask);
            host.activation(s[0], s[1], len, act).unwrap();
            let want = stored(&mut host, s[1]);
            if tolerance == 0.0 {
                assert_bits(&device, &want, &case);
            } else {
                near(&case, &device, &want, tolerance, mask >> 1 == 1);
            }
        }
    }
}

/// `activation_backward` (harness `actback`; buffers grad, y) for the activations whose derivative
/// the output gives, outputs in each one's range (and NaN, 0 and a subnormal): bit for bit, in every mix (but y alone in
/// bf16 for the identity, which reads no y).
#[test]
fn activation_backward_stores_as_the_host_reference_bit_for_bit() {
    if harness().is_none() {
        return;
    }
    let len = 503;
    let grad = with_specials(3, len, 4.0);
    for act in [Activation::Identity, Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
        let code = dp_cuda::dense::activation_code(act) as usize;
        let mut y: Vec<f32> = values(4, len)
            .map(|u| match act {
                Activation::Tanh => (2.0 * u - 1.0) as f32,
                Activation::Sigmoid => u as f32,
                _ => ((u - 0.5) * 6.0) as f32,
            })
            .collect();
        // A subnormal output, which bf16 storage flushes to 0 (ReLU's derivative then 0, not 1).
        (y[9], y[10], y[11]) = (f32::NAN, 0.0, 1e-40);
        // The identity's derivative reads no y: y alone in bf16 would change nothing.
        let masks: &[u32] = if act == Activation::Identity { &[0, 1, 3] } else { &[0, 1, 2, 3] };
        for &mask in masks {
            let case = format!("actback {act:?} bf16 {mask:#b}");
            let inputs: [Input; 2] = [(&grad, Some(0)), (&y, Some(1))];
            let device = dense_stored("actback", &[len, code], &[], &inputs, &[(len, Some(0))], mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[&grad, &y], mask);
            host.activation_backward(s[0], s[1], len, act).unwrap();
            assert_bits(&device, &stored(&mut host, s[0]), &case);
        }
    }
}

/// The three losses (harness `softmaxce`, `bce`, `mse`; buffers the outputs and the gradient, labels
/// and losses f32), in every mix: the softmax cross-entropy and the squared error bit for bit (the
/// gradient written once per value, its exponential computed again rather than read back from a
/// bf16 buffer), the binary cross-entropy's losses bit for bit and its gradient within 2e-6 (CUDA's
/// sigmoid against dp-kernels'). A label that is not a class index gives a NaN loss and gradient row.
#[test]
fn losses_store_their_gradients_as_the_host_reference() {
    if harness().is_none() {
        return;
    }
    let (rows, classes) = (41, 10);
    let mut logits = draw(5, rows * classes, 16.0);
    logits[2 * classes..3 * classes].fill(0.75); // a row of equal logits
    logits[3 * classes..4 * classes].iter_mut().for_each(|v| *v += 90.0); // large logits: the max subtracted
    let labels: Vec<f32> = values(6, rows).map(|u| (u * classes as f64).floor() as f32).collect();
    let targets = draw(7, rows * classes, 3.0);
    let bce_labels: Vec<f32> = values(8, rows).map(|u| (u < 0.5) as u8 as f32).collect();
    let cases = [
        ("softmaxce", vec![rows, classes], DeviceLoss::SoftmaxCrossEntropy { classes }, classes, &labels),
        ("bce", vec![rows], DeviceLoss::BinaryCrossEntropyWithLogits, 1, &bce_labels),
        ("mse", vec![rows, classes], DeviceLoss::MeanSquaredError { outputs: classes }, classes, &targets),
    ];
    for (what, args, loss, width, labels) in cases {
        let outputs = &logits[..rows * width];
        let inputs: [Input; 2] = [(outputs, Some(0)), (labels, None)];
        for mask in 0..4 {
            let case = format!("{what} bf16 {mask:#b}");
            let parts = [(rows, None), (rows * width, Some(1))];
            let device = dense_stored(what, &args, &[], &inputs, &parts, mask);
            let (losses, grad) = device.split_at(rows);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[outputs, &vec![f32::NAN; rows * width]], mask);
            let l = region(&mut host, Region::Labels, labels);
            let out = region(&mut host, Region::Losses, &vec![f32::NAN; rows]);
            host.loss(loss, s[0], l, rows, out, s[1]).unwrap();
            assert_bits(losses, &stored(&mut host, out), &format!("{case} losses"));
            let want = stored(&mut host, s[1]);
            match what {
                "bce" => near(&format!("{case} grad"), grad, &want, 2e-6, mask >> 1 == 1),
                _ => assert_bits(grad, &want, &format!("{case} grad")),
            }
        }
    }

    // Labels that are not class indices: that row NaN, the others as before (the host reference
    // refuses them; the runtime validates labels when it loads them).
    let mut bad = labels.clone();
    (bad[1], bad[4], bad[6]) = (classes as f32, 2.5, -1.0);
    let valid = dense("softmaxce", &[rows, classes], &[], &[(&logits, Some(0)), (&labels, None)], 0b11);
    let invalid = dense("softmaxce", &[rows, classes], &[], &[(&logits, Some(0)), (&bad, None)], 0b11);
    for i in 0..rows {
        let row = |out: &[f32]| {
            let grad = &out[rows + i * classes..rows + (i + 1) * classes];
            [&out[i..i + 1], grad].concat()
        };
        if [1, 4, 6].contains(&i) {
            assert!(row(&invalid).iter().all(|v| v.is_nan()), "row {i} of an invalid label is NaN");
        } else {
            assert_eq!(bits(&row(&invalid)), bits(&row(&valid)), "row {i}");
        }
    }
}

/// `linear_ghost_norms` (harness `ghostnorms`; buffers a, delta: a an activation or the f32 batch,
/// the norms f32): with one thread per example bit for bit (the host sums each row in order in f32),
/// with a block of 128 threads, whose shares add in another order, within 1e-6 relative (sums of
/// squares do not cancel).
#[test]
fn linear_ghost_norms_equal_the_host_reference() {
    if harness().is_none() {
        return;
    }
    let (rows, inputs, outputs, groups, group) = (23, 300, 17, 3, 1);
    let mut a = draw(9, rows * inputs, 4.0);
    let delta = draw(10, rows * outputs, 0.02);
    a[5 * inputs + 3] = f32::NAN;
    for has_bias in [true, false] {
        for mask in 0..4 {
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[&a, &delta], mask);
            let sq = region(&mut host, Region::SqNorms, &vec![f32::NAN; rows * groups]);
            host.linear_ghost_norms(s[0], s[1], rows, inputs, outputs, has_bias, sq, groups, group).unwrap();
            let want: Vec<f32> = stored(&mut host, sq).chunks(groups).map(|g| g[group]).collect();
            let inputs_of: [Input; 2] = [(&a, Some(0)), (&delta, Some(1))];
            for threads in [1, 128] {
                let case = format!("bias {has_bias} bf16 {mask:#b} threads {threads}");
                let args = [rows, inputs, outputs, has_bias as usize, threads];
                let device = dense_stored("ghostnorms", &args, &[], &inputs_of, &[(rows, None)], mask);
                if threads == 1 {
                    assert_bits(&device, &want, &case);
                } else {
                    for (k, (d, h)) in device.iter().zip(&want).enumerate() {
                        let ok = if h.is_nan() { d.is_nan() } else { (d - h).abs() <= 1e-6 * h.abs() };
                        assert!(ok, "{case}[{k}]: device {d}, host {h}");
                    }
                }
            }
        }
    }
}

/// `scale_rows` (harness `scalerows`; buffers src, dst: src an output gradient, an activation or the
/// batch, dst the f32 clipping scratch, or any mix), by factor and as a copy, one position and three
/// per example, exact zeros for an example whose factor is 0 (over its NaN rows): bit for bit.
#[test]
fn scale_rows_store_as_the_host_reference_bit_for_bit() {
    if harness().is_none() {
        return;
    }
    let (cols, groups, group) = (13, 2, 1);
    for positions in [1, 3] {
        let rows = 6 * positions;
        let mut src = with_specials(11, rows * cols, 10.0);
        let mut factors: Vec<f32> = values(12, rows / positions * groups).map(|u| u as f32).collect();
        factors[2 * groups + group] = 0.0;
        src[2 * positions * cols..3 * positions * cols].fill(f32::NAN);
        for scale in [RowScale::ByFactor, RowScale::Copy] {
            let by_factor = matches!(scale, RowScale::ByFactor) as usize;
            for mask in 0..4 {
                let case = format!("positions {positions} {scale:?} bf16 {mask:#b}");
                let args = [rows, positions, cols, groups, group, by_factor];
                let inputs: [Input; 2] = [(&src, Some(0)), (&factors, None)];
                let device = dense_stored("scalerows", &args, &[], &inputs, &[(rows * cols, Some(1))], mask);
                let mut host = storing_bf16();
                let s = in_arena(&mut host, &[&src, &vec![f32::NAN; rows * cols]], mask);
                let f = region(&mut host, Region::Factors, &factors);
                host.scale_rows(s[0], s[1], rows, positions, cols, f, groups, group, scale).unwrap();
                assert_bits(&device, &stored(&mut host, s[1]), &case);
                let zero_rows = &device[2 * positions * cols..3 * positions * cols];
                assert!(
                    zero_rows.iter().all(|v| v.to_bits() == 0),
                    "{case}: a factor-0 example's rows are +0"
                );
            }
        }
    }
}

/// `column_sums_add` (harness `colsums`; buffer src, the f32 clipping scratch or a bf16 output
/// gradient; dst the f32 gradient): each column summed in order in double and added, bit for bit.
#[test]
fn column_sums_add_to_the_gradient_as_the_host_reference_bit_for_bit() {
    if harness().is_none() {
        return;
    }
    for (rows, cols) in [(300, 7), (1, 5), (64, 129)] {
        let src: Vec<f32> = values(13 + rows as u64, rows * cols).map(|u| ((u - 0.3) * 7.0) as f32).collect();
        let grad = draw(14, cols, 1.0);
        for mask in 0..2 {
            let case = format!("{rows}x{cols} bf16 {mask:#b}");
            let inputs: [Input; 2] = [(&src, Some(0)), (&grad, None)];
            let device = dense_stored("colsums", &[rows, cols], &[], &inputs, &[(cols, None)], mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[&src], mask);
            let g = region(&mut host, Region::Grad, &grad);
            host.column_sums_add(s[0], rows, cols, g).unwrap();
            assert_bits(&device, &stored(&mut host, g), &case);
        }
    }
}

/// `add_into` (harness `addinto`; buffers dst, src: one gradient into another), in every mix: one read
/// and one store of each value, bit for bit.
#[test]
fn add_into_stores_as_the_host_reference_bit_for_bit() {
    if harness().is_none() {
        return;
    }
    let len = 777;
    let dst = with_specials(15, len, 3.0);
    let src = draw(16, len, 0.01);
    for mask in 0..4 {
        let case = format!("bf16 {mask:#b}");
        let inputs: [Input; 2] = [(&dst, Some(0)), (&src, Some(1))];
        let device = dense_stored("addinto", &[len], &[], &inputs, &[(len, Some(0))], mask);
        let mut host = storing_bf16();
        let s = in_arena(&mut host, &[&dst, &src], mask);
        host.add_into(s[0], s[1], len).unwrap();
        assert_bits(&device, &stored(&mut host, s[0]), &case);
    }
}

/// The embedding averaged over a sequence (harness `embmean`, `embmeannorms`, `embmeanscatter`; the
/// buffers its output and its output gradient, the table, factors and gradient f32), bit for bit:
/// the forward (an id outside the vocabulary giving a NaN row), the norms (ids repeated within an
/// example; the squares summed in double as the host sums them) and the scatter-add into the
/// gradient (with factors, one 0 over a NaN row, and without; an id outside the vocabulary skipped).
#[test]
fn embedding_mean_stores_as_the_host_reference_bit_for_bit() {
    if harness().is_none() {
        return;
    }
    let (n, steps, vocab, dim, groups, group) = (6, 9, 7, 5, 2, 1);
    let mut ids: Vec<u32> = values(17, n * steps).map(|u| (u * vocab as f64) as u32).collect();
    let table = draw(18, vocab * dim, 3.0);
    let mut delta = draw(19, n * dim, 5.0);
    let mut factors: Vec<f32> = values(20, n * groups).map(|u| u as f32).collect();
    let grad = draw(21, vocab * dim, 1.0);
    let tokens = |host: &mut HostDevice, ids: &[u32]| {
        host.set_tokens(ids.to_vec());
        Span::new(Region::Tokens, 0, ids.len())
    };

    for mask in 0..2 {
        let case = format!("norms bf16 {mask:#b}");
        let device =
            dense_stored("embmeannorms", &[n, steps, dim], &ids, &[(&delta, Some(0))], &[(n, None)], mask);
        let mut host = storing_bf16();
        let t = tokens(&mut host, &ids);
        let s = in_arena(&mut host, &[&delta], mask);
        let sq = region(&mut host, Region::SqNorms, &vec![f32::NAN; n * groups]);
        host.embedding_mean_norms(t, s[0], n, steps, dim, sq, groups, group).unwrap();
        let want: Vec<f32> = stored(&mut host, sq).chunks(groups).map(|g| g[group]).collect();
        assert_bits(&device, &want, &case);
    }
    for i in 0..n {
        let example = &ids[i * steps..(i + 1) * steps];
        assert!(
            example.iter().enumerate().any(|(t, v)| example[..t].contains(v)),
            "example {i} repeats an id"
        );
    }

    ids[steps + 4] = vocab as u32 + 2;
    for mask in 0..2 {
        let case = format!("forward bf16 {mask:#b}");
        let device = dense_stored(
            "embmean",
            &[n, steps, vocab, dim],
            &ids,
            &[(&table, None)],
            &[(n * dim, Some(0))],
            mask,
        );
        let mut host = storing_bf16();
        let t = tokens(&mut host, &ids);
        let p = region(&mut host, Region::Params, &table);
        let s = in_arena(&mut host, &[&vec![f32::NAN; n * dim]], mask);
        host.embedding_mean_forward(t, p, n, steps, vocab, dim, s[0]).unwrap();
        assert_bits(&device, &stored(&mut host, s[0]), &case);
        assert!(device[dim..2 * dim].iter().all(|v| v.is_nan()), "{case}: the example with an id outside");
    }

    factors[3 * groups + group] = 0.0;
    delta[3 * dim..4 * dim].fill(f32::NAN);
    let finite: Vec<f32> = delta.iter().map(|v| if v.is_nan() { 0.25 } else { *v }).collect();
    for has_factors in [true, false] {
        let delta = if has_factors { &delta } else { &finite };
        for mask in 0..2 {
            let case = format!("scatter factors {has_factors} bf16 {mask:#b}");
            let mut inputs: Vec<Input> = vec![(delta, Some(0))];
            if has_factors {
                inputs.push((&factors, None));
            }
            inputs.push((&grad, None));
            let args = [n, steps, vocab, dim, has_factors as usize, groups, group];
            let device = dense_stored("embmeanscatter", &args, &ids, &inputs, &[(vocab * dim, None)], mask);
            let mut host = storing_bf16();
            let t = tokens(&mut host, &ids);
            let s = in_arena(&mut host, &[delta], mask);
            let f = has_factors.then(|| (region(&mut host, Region::Factors, &factors), groups, group));
            let g = region(&mut host, Region::Grad, &grad);
            host.embedding_mean_scatter(t, s[0], n, steps, vocab, dim, f, g).unwrap();
            assert_bits(&device, &stored(&mut host, g), &case);
            assert!(
                device.iter().all(|v| v.is_finite()),
                "{case}: a factor-0 example's NaN row is never read"
            );
        }
    }
}

/// `count_non_finite` (harness `nonfinite`; buffer the values) counts what the buffer holds: the
/// infinities and NaNs, and in bf16 also the finite f32 values that round to an infinity (f32::MAX
/// does), as the host's bf16 store holds them.
#[test]
fn count_non_finite_counts_what_the_buffer_holds() {
    if harness().is_none() {
        return;
    }
    let mut v = with_specials(22, 1000, 8.0);
    v[100..104].copy_from_slice(&[
        f32::MAX,
        -f32::MAX,
        f32::from_bits(0x7f7f_8000),
        f32::from_bits(0x7f7f_7fff),
    ]);
    v[200] = f32::from_bits(0xffc0_0001);
    for mask in 0..2 {
        let device = dense_stored("nonfinite", &[v.len()], &[], &[(&v, Some(0))], &[(1, None)], mask);
        let mut host = storing_bf16();
        let s = in_arena(&mut host, &[&v], mask);
        let want = stored(&mut host, s[0]).iter().filter(|x| !x.is_finite()).count() as u32;
        assert_eq!(device[0].to_bits(), want, "bf16 {mask:#b}");
        assert_eq!(
            want,
            if mask == 1 { 7 } else { 4 },
            "bf16 {mask:#b}: the values rounding to infinity count"
        );
    }
}
