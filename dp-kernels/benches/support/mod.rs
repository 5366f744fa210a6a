//! What the kernel benches share: timing a call by the median of repeated timings.

use std::time::Instant;

/// Median seconds per call of `f`, over `timings` timings of `reps` calls each, after 3 warm-up calls.
pub fn median_seconds_per_call(timings: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut seconds: Vec<f64> = (0..timings)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds[timings / 2]
}

/// A square-input, ungrouped, undilated conv: the shapes of the built-in models. Not every bench
/// has convs, hence the allow.
#[allow(dead_code)]
pub fn square_conv(
    in_c: usize,
    side: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> dp_kernels::conv::Conv2dGeometry {
    dp_kernels::conv::Conv2dGeometry {
        in_c,
        in_h: side,
        in_w: side,
        out_c,
        kh: k,
        kw: k,
        stride,
        padding,
        dilation: 1,
        groups: 1,
    }
}
