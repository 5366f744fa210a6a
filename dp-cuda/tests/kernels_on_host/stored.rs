//! What the bf16 storage tests share (docs/GPU.md, "bf16 storage"): the harness run with some of an
//! operation's buffers held in bf16 (`DP_HARNESS_BF16`), the host reference storing in bf16
//! (`HostDevice` in `Precision::Bf16` with `set_bf16_storage(true)`, the same buffers' arena spans
//! marked `OfPrecision`), what each holds, and the comparisons of the two: bit for bit, or to the
//! output's rounding of a value within a tolerance of the host's unrounded one.

use dp_kernels::activation::Activation;
use dp_kernels::gemm_bf16::round_to_bf16;
use dp_runtime::device::host::HostDevice;
use dp_runtime::device::{DeviceError, Precision, Region, Span, Stored};

use super::{f32s, run_stored, values};

/// Every activation.
pub(super) const ACTIVATIONS: [Activation; 7] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Gelu,
    Activation::Silu,
    Activation::GeluExact,
];

/// Whether bit `k` of `mask` is set: the harness's `k`-th buffer, and the host's `k`-th arena span, in
/// bf16.
pub(super) fn in_bf16(mask: u32, k: usize) -> bool {
    mask >> k & 1 == 1
}

/// The harness's operation `op` with `args`, `ids` (u32s, if any) then `inputs` (f32s) on stdin, the
/// buffers whose bits are set in `mask` held in bf16; its output as f32s.
pub(super) fn run_with_ids(
    exe: &std::path::Path,
    op: &str,
    args: &[impl ToString],
    ids: &[u32],
    inputs: &[&[f32]],
    mask: u32,
) -> Vec<f32> {
    let all: Vec<String> =
        std::iter::once(op.to_string()).chain(args.iter().map(ToString::to_string)).collect();
    let input: Vec<u8> = ids
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(inputs.iter().flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes())))
        .collect();
    f32s(&run_stored(exe, &all, &input, mask))
}

/// The harness's operation `op` with `args`, `inputs` on stdin, the buffers of `mask`'s bits in bf16.
pub(super) fn run_op(
    exe: &std::path::Path,
    op: &str,
    args: &[impl ToString],
    inputs: &[&[f32]],
    mask: u32,
) -> Vec<f32> {
    run_with_ids(exe, op, args, &[], inputs, mask)
}

/// A host reference storing the arena's `OfPrecision` spans in bf16.
pub(super) fn storing_bf16() -> HostDevice {
    let mut host = HostDevice::new();
    host.set_precision(Precision::Bf16);
    host.set_bf16_storage(true);
    host
}

/// `buffers` laid end to end in the host's arena, buffer k's span marked `of_precision` (stored in
/// bf16) when bit k of `mask` is set, as the harness holds its k-th buffer.
pub(super) fn in_arena(host: &mut HostDevice, buffers: &[&[f32]], mask: u32) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut at = 0;
    for (k, b) in buffers.iter().enumerate() {
        let span = Span::new(Region::Arena, at, b.len());
        spans.push(if in_bf16(mask, k) { span.of_precision() } else { span });
        at += b.len();
    }
    host.set(Region::Arena, buffers.concat());
    spans
}

/// A host reference storing in bf16 whose arena holds `buffers` one after another, the `k`-th span
/// marked `OfPrecision` where bit `k` of `mask` is set ([`in_arena`]); and the spans.
pub(super) fn host_storing_bf16(buffers: &[&[f32]], mask: u32) -> (HostDevice, Vec<Span>) {
    let mut host = storing_bf16();
    let spans = in_arena(&mut host, buffers, mask);
    (host, spans)
}

/// What the host holds in `s`: its bf16 store for an `of_precision` arena span, else the span's
/// region.
pub(super) fn stored(host: &mut HostDevice, s: Span) -> Vec<f32> {
    let range = s.offset..s.offset + s.len;
    match s.stored {
        Stored::F32 => host.get(s.region)[range].to_vec(),
        Stored::OfPrecision => host.arena_bf16()[range].to_vec(),
    }
}

/// Runs `call` on [`host_storing_bf16`]`(buffers, mask)`; span `out`'s values after it, from the store
/// it lives in.
pub(super) fn on_host(
    buffers: &[&[f32]],
    mask: u32,
    out: usize,
    call: impl FnOnce(&mut HostDevice, &[Span]) -> Result<(), DeviceError>,
) -> Vec<f32> {
    let (mut host, spans) = host_storing_bf16(buffers, mask);
    call(&mut host, &spans).unwrap();
    stored(&mut host, spans[out])
}

/// `buffers` with those of `mask`'s bits rounded to bf16: what the kernels and the host read from them.
pub(super) fn as_read(buffers: &[&[f32]], mask: u32) -> Vec<Vec<f32>> {
    let round = |k: usize, v: f32| if in_bf16(mask, k) { round_to_bf16(v) } else { v };
    buffers.iter().enumerate().map(|(k, b)| b.iter().map(|&v| round(k, v)).collect()).collect()
}

/// The host reference storing in bf16 (`buffers` held as `mask` says, span `out` written by `call`),
/// and the same call's output before it is stored: on what the stored inputs hold, all in f32.
pub(super) fn stored_and_unrounded(
    buffers: &[&[f32]],
    mask: u32,
    out: usize,
    call: impl Fn(&mut HostDevice, &[Span]) -> Result<(), DeviceError>,
) -> (Vec<f32>, Vec<f32>) {
    let read = as_read(buffers, mask);
    let read: Vec<&[f32]> = read.iter().map(Vec::as_slice).collect();
    (on_host(buffers, mask, out, &call), on_host(&read, 0, out, &call))
}

/// Each device value is the host's `stored` one, or (where the harness computes or sums in another
/// order or with another libm than the host) the output's rounding, to bf16 when `bf16`, of a value
/// within `tolerance(i)` of the host's `unrounded` one; NaN where the host has NaN. The host's stored
/// value is its unrounded one rounded once.
pub(super) fn assert_within_rounding(
    device: &[f32],
    (stored, unrounded): (&[f32], &[f32]),
    bf16: bool,
    tolerance: impl Fn(usize) -> f32,
    what: &str,
) {
    let round = |v: f32| if bf16 { round_to_bf16(v) } else { v };
    assert_eq!(device.len(), stored.len(), "{what}: lengths");
    for (i, ((&d, &s), &u)) in device.iter().zip(stored).zip(unrounded).enumerate() {
        if s.is_nan() {
            assert!(d.is_nan(), "{what}: value {i} is {d}, host NaN");
            continue;
        }
        assert_eq!(s.to_bits(), round(u).to_bits(), "{what}: the host stores value {i} rounded once");
        let (low, high) = (round(u - tolerance(i)), round(u + tolerance(i)));
        let close = d.to_bits() == s.to_bits() || (low <= d && d <= high);
        assert!(close, "{what}: value {i} is {d}, host {s} (unrounded {u}, within [{low}, {high}])");
    }
}

/// The device's values are the host's, bit for bit (a NaN too).
pub(super) fn assert_bits(device: &[f32], host: &[f32], what: &str) {
    assert_eq!(device.len(), host.len(), "{what}: lengths");
    for (i, (d, h)) in device.iter().zip(host).enumerate() {
        assert_eq!(
            d.to_bits(),
            h.to_bits(),
            "{what}: value {i} is {d} ({:#010x}), host {h} ({:#010x})",
            d.to_bits(),
            h.to_bits()
        );
    }
}

/// `n` values over [-0.5, 0.5) with their full f32 precision (most change when rounded to bf16): each
/// of [`values`] rounded to f32, less 0.5.
pub(super) fn spread(seed: u64, n: usize) -> Vec<f32> {
    values(seed, n).map(|u| u as f32 - 0.5).collect()
}

/// `len` values over [-scale/2, scale/2): each of [`values`] less 0.5, times `scale`, rounded to f32.
pub(super) fn draw(seed: u64, len: usize, scale: f64) -> Vec<f32> {
    values(seed, len).map(|u| ((u - 0.5) * scale) as f32).collect()
}
