//! lstm.cu's fused recurrences (`dp_lstm_forward_fused`, `dp_lstm_backward_fused`; harness
//! `lstmforwardseq`, `lstmbackwardseq`) against the host reference's `lstm_forward` and
//! `lstm_backward` run step by step, a recurrent product and a launch of the gates at every time step:
//! bit for bit, in f32 and in bf16 (the products' operands rounded, with the buffers stored as the
//! compiler stores them and with every buffer in bf16). The kernels' products sum in double, so the
//! whole recurrence agrees exactly; an f32 accumulation, or any of the four roundings dropped, fails
//! them. The harness runs the kernels' own phase functions with one thread; the block's waits between
//! the phases are not emulated.

use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{
    DeviceOps, LstmBackwardStep, LstmDims, LstmForwardStep, LstmSaved, Precision, Region, Span,
};

use super::harness;
use super::stored::{draw, in_arena, run_with_ids, stored};

/// The harness's `op` with `inputs` on stdin, its buffers whose bits are set in `bf16` held in bf16.
fn run(op: &str, args: &[usize], inputs: &[&[f32]], bf16: u32) -> Vec<f32> {
    let args: Vec<String> = args.iter().map(usize::to_string).collect();
    run_with_ids(&harness().expect("checked by the caller"), op, &args, &[], inputs, bf16)
}

/// A host reference in `precision`, storing in bf16 when `storing` (in bf16 the GPU's default).
fn host(precision: Precision, storing: bool) -> HostDevice {
    let mut host = HostDevice::new();
    host.set_precision(precision);
    host.set_bf16_storage(storing);
    host
}

/// (precision, storing in bf16, the buffers held in bf16): f32; bf16 products over f32 buffers (the
/// products must round what they read); bf16 stored as the compiler stores it; every buffer in bf16.
fn cases(as_compiled: u32, all: u32) -> [(Precision, bool, u32); 4] {
    [
        (Precision::F32, false, 0),
        (Precision::Bf16, false, 0),
        (Precision::Bf16, true, as_compiled),
        (Precision::Bf16, true, all),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// Buffers forward: gates, cells, hprev, out, hidden, recurrent; backward: gates, cells, dout,
// recurrent, cell_grad, step_delta, delta. As the compiler stores them: out and hidden in the
// precision; dout and step_delta.
const FORWARD_STORED: u32 = 0b01_1000;
const BACKWARD_STORED: u32 = 0b010_0100;

#[test]
fn fused_lstm_recurrences_equal_the_host_reference_step_by_step() {
    if harness().is_none() {
        return;
    }
    let (n, steps, h) = (3, 6, 5);
    let dims = LstmDims { steps, input: 2, hidden: h };
    let (seq, units) = (n * steps * h, n * h);
    let w_hh = draw(51, 4 * h * h, 0.6);
    let bias = draw(52, 4 * h, 0.5);
    // Forward: the input projections in the gates; every other buffer garbage the recurrence overwrites
    // before it reads it (NaN: a read too early shows).
    let gates = draw(53, 4 * seq, 1.5);
    let nan_seq = vec![f32::NAN; seq];
    let (hidden, recurrent) = (vec![f32::NAN; units], vec![f32::NAN; 4 * units]);
    let forward: [&[f32]; 6] = [&gates, &nan_seq, &nan_seq, &nan_seq, &hidden, &recurrent];
    let mut outputs = Vec::new();
    for (precision, storing, mask) in cases(FORWARD_STORED, 0b11_1111) {
        {
            let case = format!("forward, {precision:?}, bf16 buffers {mask:#b}");
            let round = usize::from(precision == Precision::Bf16);
            let with_weights: Vec<&[f32]> = forward.iter().copied().chain([bias.as_slice(), &w_hh]).collect();
            let device = run("lstmforwardseq", &[n, steps, h, round], &with_weights, mask);
            let mut host = host(precision, storing);
            let s = in_arena(&mut host, &forward, mask);
            host.set(Region::Params, [bias.clone(), w_hh.clone()].concat());
            let step = LstmForwardStep {
                saved: LstmSaved { gates: s[0], cells: s[1], hprev: s[2] },
                out: s[3],
                hidden: s[4],
                recurrent: s[5],
                bias: Span::new(Region::Params, 0, 4 * h),
            };
            host.lstm_forward(&step, Span::new(Region::Params, 4 * h, 4 * h * h), &dims, n).unwrap();
            let want: Vec<f32> = s[..5].iter().flat_map(|&span| stored(&mut host, span)).collect();
            assert_eq!(bits(&device), bits(&want), "{case}");
            assert!(device.iter().all(|v| v.is_finite()), "{case}: read a value before it was written");
            outputs.push(device);
        }
    }
    assert_ne!(bits(&outputs[0]), bits(&outputs[1]), "bf16 changed nothing in the forward");

    // Backward: the gates activated, the cells and the output gradient drawn; the rest garbage.
    let gates: Vec<f32> = draw(54, 4 * seq, 2.0).iter().map(|g| 1.0 / (1.0 + (-g).exp())).collect();
    let (cells, dout) = (draw(55, seq, 1.0), draw(56, seq, 1.0));
    let (recurrent, cell_grad) = (vec![f32::NAN; units], vec![f32::NAN; units]);
    let (step_delta, delta) = (vec![f32::NAN; 4 * units], vec![f32::NAN; 4 * seq]);
    let backward: [&[f32]; 7] = [&gates, &cells, &dout, &recurrent, &cell_grad, &step_delta, &delta];
    let mut outputs = Vec::new();
    for (precision, storing, mask) in cases(BACKWARD_STORED, 0b111_1111) {
        {
            let case = format!("backward, {precision:?}, bf16 buffers {mask:#b}");
            let round = usize::from(precision == Precision::Bf16);
            let with_weight: Vec<&[f32]> = backward.iter().copied().chain([w_hh.as_slice()]).collect();
            let device = run("lstmbackwardseq", &[n, steps, h, round], &with_weight, mask);
            let mut host = host(precision, storing);
            let s = in_arena(&mut host, &backward, mask);
            host.set(Region::Params, w_hh.clone());
            let step = LstmBackwardStep {
                gates: s[0],
                cells: s[1],
                dout: s[2],
                recurrent: s[3],
                cell_grad: s[4],
                step_delta: s[5],
                delta: s[6],
            };
            host.lstm_backward(&step, Span::new(Region::Params, 0, 4 * h * h), &dims, n).unwrap();
            let want: Vec<f32> = s[4..].iter().flat_map(|&span| stored(&mut host, span)).collect();
            assert_eq!(bits(&device), bits(&want), "{case}");
            assert!(device.iter().all(|v| v.is_finite()), "{case}: read a value before it was written");
            outputs.push(device);
        }
    }
    assert_ne!(bits(&outputs[0]), bits(&outputs[1]), "bf16 changed nothing in the backward");
}
