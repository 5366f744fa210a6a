//! bf16 storage in norm.cu's, sequence.cu's and lstm.cu's kernels: group norm forward and backward,
//! the embedding over a sequence (gather, norms, scatter-add), sums and broadcasts over time and the
//! LSTM's forward and backward steps, with their buffers held in bf16 on the host harness.
//!
//! Each of norm.cu's, sequence.cu's and lstm.cu's per-value functions runs on the harness with the
//! buffers a device program may store in bf16 held in bf16 (`DP_HARNESS_BF16`), and is compared with
//! the host reference storing in bf16 (`Precision::Bf16`, `set_bf16_storage(true)`), whose
//! corresponding arena spans are marked `of_precision()`: the mix the compiler emits (docs/GPU.md,
//! "bf16 storage"), both types on either side of a primitive "mixed by caller" (sums and broadcasts
//! over time), and every arena buffer in bf16 (each kernel takes any mix). Each test also checks that
//! the storage changed something, so that a harness or host ignoring it cannot pass.

use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{
    DeviceOps, GroupNormDims, LstmBackwardStep, LstmDims, LstmForwardStep, LstmSaved, Region, Span,
};

use super::stored::{draw, in_arena, run_with_ids, stored, storing_bf16};
use super::{assert_near_largest, bits, harness, values};

/// The harness's `op` on `args` with `ids` (u32s, if any) then `inputs` (f32s) on stdin, its buffers
/// whose bits are set in `bf16` held in bf16.
fn run(op: &str, args: &[String], ids: &[u32], inputs: &[&[f32]], bf16: u32) -> Vec<f32> {
    run_with_ids(&harness().expect("checked by the caller"), op, args, ids, inputs, bf16)
}

fn strings(args: &[usize]) -> Vec<String> {
    args.iter().map(usize::to_string).collect()
}

/// Group norm forward then backward (norm.cu, harness `groupnorm`; buffers x, dy, y, mean, rstd, dx,
/// affine) with the values in bf16 (x an activation, or the f32 batch) and the statistics and affine
/// gradients f32, as the compiler stores them, and with every buffer in bf16; weight and bias are
/// parameters. An output stored in f32 within the f32 test's tolerance (1e-5 of its largest
/// magnitude; the harness and the CPU's kernel add their f64 sums in other orders), one stored in bf16
/// bit for bit: those sums agree to far below an f32's last bit (every output here is the host's bit
/// for bit, measured), and a bf16 step of slack would pass a kernel that truncates to bf16 instead of
/// rounding. NaN where the host has NaN.
#[test]
fn group_norm_stores_as_the_host_reference_storing_bf16() {
    if harness().is_none() {
        return;
    }
    const VALUES_BF16: u32 = 0b10_0111; // x, dy, y, dx
    const DY_Y_DX_BF16: u32 = 0b10_0110; // x from the batch, f32
    const ALL_BF16: u32 = 0b111_1111;
    for (channels, groups, plane, n) in [(16, 4, 100, 5), (6, 3, 49, 7), (8, 1, 1, 3), (4, 4, 33, 2)] {
        let dims = GroupNormDims { channels, plane, groups };
        let (len, stats) = (n * dims.input_len(), n * groups);
        let mut x: Vec<f32> =
            values(channels as u64 * 5 + plane as u64, len).map(|u| (3.0 + 2.0 * u) as f32).collect();
        let weight: Vec<f32> = values(11, channels).map(|u| (0.5 + u) as f32).collect();
        let bias = draw(12, channels, 1.0);
        let mut dy = draw(13, len, 1.0);
        x[(n / 2) * dims.input_len() + dims.input_len() / 2] = f32::NAN;
        if n > 1 {
            dy[(n - 1) * dims.input_len()] = f32::NAN;
        }
        let args = strings(&[channels, plane, groups, n]);
        let as_f32 = run("groupnorm", &args, &[], &[&x, &weight, &bias, &dy], 0);
        for mask in [VALUES_BF16, DY_Y_DX_BF16, ALL_BF16] {
            let case = format!("C={channels} G={groups} plane={plane} n={n} bf16 {mask:#b}");
            let device = run("groupnorm", &args, &[], &[&x, &weight, &bias, &dy], mask);
            let mut host = storing_bf16();
            let (nan, affine) = (vec![f32::NAN; len], vec![f32::NAN; n * 2 * channels]);
            let s = in_arena(&mut host, &[&x, &dy, &nan, &nan[..stats], &nan[..stats], &nan, &affine], mask);
            host.set(Region::Params, [weight.as_slice(), &bias].concat());
            let (w, b) =
                (Span::new(Region::Params, 0, channels), Span::new(Region::Params, channels, channels));
            host.group_norm_forward(s[0], &dims, n, w, b, s[2], s[3], s[4]).unwrap();
            host.group_norm_backward(s[0], s[1], w, s[3], s[4], &dims, n, s[5], s[6]).unwrap();
            let mut at = 0;
            for (name, k) in [("y", 2), ("mean", 3), ("rstd", 4), ("dx", 5), ("affine", 6)] {
                let want = stored(&mut host, s[k]);
                let got = &device[at..at + want.len()];
                at += want.len();
                let what = format!("{name} {case}");
                match mask >> k & 1 {
                    1 => assert_eq!(bits(got), bits(&want), "{what}"),
                    _ => assert_near_largest(&want, got, 1e-5, &what),
                }
            }
            assert_eq!(at, device.len(), "{case}");
            assert_ne!(bits(&device), bits(&as_f32), "{case}: the storage changed the outputs");
        }
    }
}

/// The embedding over a sequence (sequence.cu; harness `embgather`, `embnorms`, `embscatter`): the
/// gathered rows stored in bf16 (bit for bit, an id outside the vocabulary NaN), and the norms
/// (within 1e-5, the harness sums a token's rows in f32, the host in f64) and the scatter-add (bit
/// for bit; factors 0 over NaN rows; into the f32 gradient) of an output gradient stored in bf16.
#[test]
fn embedding_over_a_sequence_stores_as_the_host_reference_storing_bf16() {
    if harness().is_none() {
        return;
    }
    let (n, steps, vocab, dim, groups, group) = (5, 9, 6, 4, 2, 1);
    let mut ids: Vec<u32> = values(21, n * steps).map(|u| (u * vocab as f64) as u32).collect();
    ids[7] = vocab as u32 + 3;
    let table = draw(22, vocab * dim, 1.0);
    let mut delta = draw(23, n * steps * dim, 1.0);
    let tokens = |host: &mut HostDevice| {
        host.set_tokens(ids.clone());
        Span::new(Region::Tokens, 0, ids.len())
    };

    let args = strings(&[n, steps, vocab, dim]);
    let rows = run("embgather", &args, &ids, &[&table], 1);
    let mut host = storing_bf16();
    let id_span = tokens(&mut host);
    host.set(Region::Params, table.clone());
    let out = in_arena(&mut host, &[&vec![f32::NAN; n * steps * dim]], 1)[0];
    host.embedding_forward(id_span, Span::new(Region::Params, 0, table.len()), n, steps, vocab, dim, out)
        .unwrap();
    assert_eq!(bits(&rows), bits(&stored(&mut host, out)), "gather");
    assert!(rows[7 * dim..8 * dim].iter().all(|v| v.is_nan()), "the row of an id outside the vocabulary");
    assert_ne!(bits(&rows), bits(&run("embgather", &args, &ids, &[&table], 0)), "gather: stored in bf16");

    let norms_of = |bf16: u32| run("embnorms", &strings(&[n, steps, dim]), &ids, &[&delta], bf16);
    let norms = norms_of(1);
    let mut host = storing_bf16();
    let id_span = tokens(&mut host);
    let d = in_arena(&mut host, &[&delta], 1)[0];
    host.set(Region::SqNorms, vec![f32::NAN; n * groups]);
    let sq = Span::new(Region::SqNorms, 0, n * groups);
    host.embedding_norms(id_span, d, n, steps, dim, sq, groups, group).unwrap();
    for (i, norm) in norms.iter().enumerate() {
        let reference = host.get(Region::SqNorms)[i * groups + group];
        assert!(
            (norm - reference).abs() <= 1e-5 * reference.abs(),
            "example {i}: harness {norm}, host {reference}"
        );
    }
    assert_ne!(bits(&norms), bits(&norms_of(0)), "norms: δ read as stored in bf16");

    let mut factors: Vec<f32> = values(24, n * groups).map(|u| u as f32).collect();
    factors[2 * groups + group] = 0.0;
    delta[2 * steps * dim..3 * steps * dim].fill(f32::NAN);
    let grad: Vec<f32> = values(25, vocab * dim).map(|u| u as f32).collect();
    for has in [1usize, 0] {
        let delta = match has {
            1 => delta.clone(),
            _ => delta.iter().map(|v| if v.is_nan() { 0.25 } else { *v }).collect(),
        };
        let args = strings(&[n, steps, vocab, dim, has, groups, group]);
        let scatter = |bf16: u32| run("embscatter", &args, &ids, &[&delta, &factors, &grad], bf16);
        let out = scatter(1);
        let mut host = storing_bf16();
        let id_span = tokens(&mut host);
        let d = in_arena(&mut host, &[&delta], 1)[0];
        host.set(Region::Factors, factors.clone());
        host.set(Region::Grad, grad.clone());
        let f = (has == 1).then_some((Span::new(Region::Factors, 0, n * groups), groups, group));
        let g = Span::new(Region::Grad, 0, grad.len());
        host.embedding_scatter(id_span, d, n, steps, vocab, dim, f, g).unwrap();
        assert_eq!(bits(&out), bits(host.get(Region::Grad)), "scatter, has_factors {has}");
        assert!(out.iter().all(|v| v.is_finite()), "a factor-0 example's NaN rows are never read");
        assert_ne!(bits(&out), bits(&scatter(0)), "scatter, has_factors {has}: δ read as stored in bf16");
    }
}

/// Sums and broadcasts over time (sequence.cu; harness `seqsums`, `seqbroadcast`; buffers src, dst),
/// mixed by caller: each of src and dst in f32 and in bf16, bit for bit.
#[test]
fn sums_and_broadcasts_over_time_store_as_the_host_reference_storing_bf16() {
    if harness().is_none() {
        return;
    }
    for (n, steps, cols) in [(3, 7, 5), (1, 256, 100), (4, 1, 3)] {
        let scale = 1.0 / steps as f32;
        let src = draw(steps as u64, n * steps * cols, 1.0);
        let args = vec![n.to_string(), steps.to_string(), cols.to_string(), format!("{scale:e}")];
        let mut as_f32 = None;
        for mask in 0..4u32 {
            let case = format!("{steps} steps, bf16 {mask:#b}");
            let sums = run("seqsums", &args, &[], &[&src], mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[&src, &vec![f32::NAN; n * cols]], mask);
            host.sequence_sums(s[0], n, steps, cols, scale, s[1]).unwrap();
            assert_eq!(bits(&sums), bits(&stored(&mut host, s[1])), "sums over {case}");

            let src = &src[..n * cols];
            let broadcast = run("seqbroadcast", &args, &[], &[src], mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &[src, &vec![f32::NAN; n * steps * cols]], mask);
            host.sequence_broadcast(s[0], n, steps, cols, scale, s[1]).unwrap();
            assert_eq!(bits(&broadcast), bits(&stored(&mut host, s[1])), "broadcast over {case}");
            let outputs = (bits(&sums), bits(&broadcast));
            match &as_f32 {
                None => as_f32 = Some(outputs),
                Some((sums, broadcast)) => {
                    assert_ne!(&outputs.0, sums, "sums over {case}: the storage changed them");
                    assert_ne!(&outputs.1, broadcast, "broadcast over {case}: the storage changed it");
                }
            }
        }
    }
}

/// An LSTM's forward and backward steps (lstm.cu; harness `lstmforward`, `lstmbackward`) with the
/// hidden states (out) and their gradients (dout) in bf16 and the rest f32, as the compiler stored them
/// until the recurrent product's operand was stored in the precision too; with that operand (hidden,
/// step_delta) in bf16 as well, as it stores them now; and with every arena buffer in bf16; the bias
/// is a parameter. Bit for bit, as the f32 test; t = 0 and the last step read no NaN they must not.
#[test]
fn lstm_steps_store_as_the_host_reference_storing_bf16() {
    if harness().is_none() {
        return;
    }
    const OUT_BF16: u32 = 0b00_1000; // gates, cells, hprev, out, hidden, recurrent
    const DOUT_BF16: u32 = 0b000_0100; // gates, cells, dout, recurrent, cell_grad, step_delta, delta
                                       // As the compiler stores them now: out and hidden; dout and step_delta.
    const OUT_HIDDEN_BF16: u32 = 0b01_1000;
    const DOUT_STEP_DELTA_BF16: u32 = 0b010_0100;
    let (n, steps, h) = (3, 5, 4);
    let dims = LstmDims { steps, input: 2, hidden: h };
    let (seq, units) = (n * steps * h, n * h);
    for t in [0, 3, steps - 1] {
        let args = strings(&[n, steps, h, t]);
        let mut gates = draw(31 + t as u64, 4 * seq, 4.0);
        let cells = draw(32, seq, 3.0);
        let (hprev, out) = (draw(33, seq, 1.0), draw(34, seq, 1.0));
        let (mut hidden, mut recurrent) = (draw(35, units, 2.0), draw(36, 4 * units, 2.0));
        let bias = draw(37, 4 * h, 1.0);
        if t == 0 {
            hidden.fill(f32::NAN);
            recurrent.fill(f32::NAN);
        }
        let inputs: [&[f32]; 6] = [&gates, &cells, &hprev, &out, &hidden, &recurrent];
        let with_bias: Vec<&[f32]> = inputs.iter().copied().chain([bias.as_slice()]).collect();
        let as_f32 = run("lstmforward", &args, &[], &with_bias, 0);
        for mask in [OUT_BF16, OUT_HIDDEN_BF16, 0b11_1111] {
            let case = format!("forward step {t}, bf16 {mask:#b}");
            let device = run("lstmforward", &args, &[], &with_bias, mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &inputs, mask);
            host.set(Region::Params, bias.clone());
            let step = LstmForwardStep {
                saved: LstmSaved { gates: s[0], cells: s[1], hprev: s[2] },
                out: s[3],
                hidden: s[4],
                recurrent: s[5],
                bias: Span::new(Region::Params, 0, bias.len()),
            };
            host.lstm_forward_step(&step, &dims, n, t).unwrap();
            let want: Vec<f32> = s[..5].iter().flat_map(|&span| stored(&mut host, span)).collect();
            assert_eq!(bits(&device), bits(&want), "{case}");
            assert!(device.iter().all(|v| v.is_finite()), "{case} read nothing it must not");
            assert_ne!(bits(&device), bits(&as_f32), "{case}: the storage changed the outputs");
        }

        gates.iter_mut().for_each(|g| *g = 1.0 / (1.0 + (-*g).exp()));
        let dout = draw(38, seq, 1.0);
        let (mut dh, mut cell_grad) = (draw(39, units, 1.0), draw(40, units, 1.0));
        let (step_delta, delta) = (vec![f32::NAN; 4 * units], vec![f32::NAN; 4 * seq]);
        if t + 1 == steps {
            dh.fill(f32::NAN);
            cell_grad.fill(f32::NAN);
        }
        let inputs: [&[f32]; 7] = [&gates, &cells, &dout, &dh, &cell_grad, &step_delta, &delta];
        let as_f32 = run("lstmbackward", &args, &[], &inputs, 0);
        for mask in [DOUT_BF16, DOUT_STEP_DELTA_BF16, 0b111_1111] {
            let case = format!("backward step {t}, bf16 {mask:#b}");
            let device = run("lstmbackward", &args, &[], &inputs, mask);
            let mut host = storing_bf16();
            let s = in_arena(&mut host, &inputs, mask);
            let step = LstmBackwardStep {
                gates: s[0],
                cells: s[1],
                dout: s[2],
                recurrent: s[3],
                cell_grad: s[4],
                step_delta: s[5],
                delta: s[6],
            };
            host.lstm_backward_step(&step, &dims, n, t).unwrap();
            let want: Vec<f32> = s[4..].iter().flat_map(|&span| stored(&mut host, span)).collect();
            assert_eq!(bits(&device), bits(&want), "{case}");
            let (from_step, delta_out) = device.split_at(5 * units);
            assert!(from_step.iter().all(|v| v.is_finite()), "{case} read nothing it must not");
            for (row, values) in delta_out.chunks(4 * h).enumerate() {
                assert_eq!(values.iter().all(|v| v.is_finite()), row % steps == t, "{case}: δ row {row}");
            }
            assert_ne!(bits(&device), bits(&as_f32), "{case}: the storage changed the outputs");
        }
    }
}
