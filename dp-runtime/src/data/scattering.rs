//! The 2-D scattering transform (Mallat 2012; Bruna & Mallat 2013) as Kymatio's `Scattering2D`
//! computes it, with J scales, L angles and two orders: a fixed, non-trainable feature map that
//! Tramèr & Boneh (ICLR 2021) put in front of small private models.
//!
//! A `m×n` image becomes `K = 1 + J·L + L²·J(J−1)/2` channels of `(m/2^J)×(n/2^J)`: for J = 2, L = 8
//! on 28×28 MNIST, 81 channels of 7×7. Channel order: the low-pass average S0, then the first order
//! S1 for each wavelet (j1, θ1) (j1-major), then the second order S2 for each pair (j1, θ1, j2 > j1, θ2).
//!
//! The computation follows Kymatio's (kymatio/scattering2d: `filter_bank.py`, `core/scattering2d.py`):
//! reflect-pad the image by 2^J on each side, take its FFT, multiply by the Fourier transform of a
//! filter, subsample in the Fourier domain (the mean of the aliased blocks, which is spatial
//! subsampling), inverse FFT, modulus; repeat from the modulus for the second order; each path ends
//! with the low-pass filter φ, subsampled to the scale 2^J, and loses one border pixel of padding.
//! The filters are Morlet wavelets ψ_{j,θ} (σ = 0.8·2^j, ξ = 3π/4 / 2^j, slant 4/L, angle
//! (⌊L/2⌋ − 1 − θ)π/L) and a Gaussian φ (σ = 0.8·2^(J−1)), periodised over 5×5 copies of the padded
//! grid; the real part of their FFT is used, at lower resolutions periodised in the Fourier domain.
//!
//! **Privacy.** The transform is a fixed function of one example: no parameter is fitted and no other
//! row is read, so applying it to every example before training is privacy-neutral (removing one
//! example changes only that example's features). See docs/PRIVACY.md.

use std::f64::consts::PI;
use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::data::Dataset;
use crate::error::{Error, Result};

/// Kymatio's normalisation of the Gabor filters divides by `2·3.1415·σ²/slant` (a truncated π); kept
/// so that the features equal Kymatio's.
#[allow(clippy::approx_constant)] // deliberately Kymatio's truncated value, not π
const KYMATIO_PI: f64 = 3.1415;

/// The scattering transform of `height×width` single-channel images, with its filters and FFT plans.
pub struct Scattering2d {
    height: usize,
    width: usize,
    scales: usize,
    angles: usize,
    /// Padded grid: `height + 2^(J+1)` by `width + 2^(J+1)`.
    padded: (usize, usize),
    /// ψ_{j,θ} in the Fourier domain, at every resolution `res` (grid divided by 2^res), index j·L + θ.
    wavelets: Vec<Filter>,
    /// φ in the Fourier domain at every resolution 0..=J.
    low_pass: Filter,
    /// 2-D FFT plans per resolution 0..=J.
    plans: Vec<Fft2d>,
}

/// A real filter in the Fourier domain at each resolution (row-major, grid divided by 2^res).
struct Filter {
    scale: usize,
    levels: Vec<Vec<f32>>,
}

impl Scattering2d {
    /// The transform with `scales` = J ≥ 1 and `angles` = L ≥ 1 for images of `height×width`, both
    /// multiples of 2^J, larger than 2^J (the reflect padding).
    pub fn new(height: usize, width: usize, scales: usize, angles: usize) -> Result<Self> {
        if scales == 0 || scales > 6 || angles == 0 || angles > 64 {
            return Err(Error::invalid(
                "scattering",
                format!("J = {scales} and L = {angles}: J must be in 1..=6 and L in 1..=64"),
            ));
        }
        let step = 1 << scales;
        for (name, size) in [("height", height), ("width", width)] {
            if size <= step || !size.is_multiple_of(step) {
                return Err(Error::invalid(
                    "scattering",
                    format!("image {name} {size} must be a multiple of 2^J = {step} larger than it"),
                ));
            }
        }
        let padded = (height + 2 * step, width + 2 * step);
        let (m, n) = padded;
        let mut wavelets = Vec::with_capacity(scales * angles);
        for j in 0..scales {
            for theta in 0..angles {
                // Kymatio: (int(L - L/2 - 1) - θ)·π/L, truncated toward zero.
                let first = (angles as f64 - angles as f64 / 2.0 - 1.0).trunc();
                let angle = (first - theta as f64) * PI / angles as f64;
                let sigma = 0.8 * (1u32 << j) as f64;
                let xi = 0.75 * PI / (1u32 << j) as f64;
                let spatial = morlet(m, n, sigma, angle, xi, 4.0 / angles as f64);
                wavelets.push(Filter::from_spatial(&spatial, m, n, j, scales));
            }
        }
        let phi = gabor(m, n, 0.8 * (1u32 << (scales - 1)) as f64, 0.0, 0.0, 1.0);
        let low_pass = Filter::from_spatial(&phi, m, n, scales, scales);
        let mut planner = FftPlanner::new();
        let plans = (0..=scales).map(|res| Fft2d::new(&mut planner, m >> res, n >> res)).collect();
        Ok(Scattering2d { height, width, scales, angles, padded, wavelets, low_pass, plans })
    }

    /// Channels per image: 1 + J·L + L²·J(J−1)/2.
    pub fn channels(&self) -> usize {
        let (j, l) = (self.scales, self.angles);
        1 + j * l + l * l * j * (j - 1) / 2
    }

    /// The shape of one image's features: `[channels, height/2^J, width/2^J]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [self.channels(), self.height >> self.scales, self.width >> self.scales]
    }

    /// The features of one image (`height·width` values, row-major) into `out` (`output_shape`
    /// values, channel-major). `work` is scratch reused between calls.
    pub fn transform(&self, image: &[f32], out: &mut [f32], work: &mut Work) {
        assert_eq!(image.len(), self.height * self.width, "image size");
        assert_eq!(out.len(), self.output_shape().iter().product::<usize>(), "output size");
        let (m, n) = self.padded;
        let big_j = self.scales;
        let [_, out_h, out_w] = self.output_shape();
        let plane = out_h * out_w;
        work.ensure(m * n, self.plans.iter().map(Fft2d::scratch_len).max().unwrap_or(0));

        // U0 = FFT(pad(x)).
        reflect_pad(image, self.height, self.width, 1 << big_j, &mut work.signal);
        self.plans[0].forward(&mut work.signal, &mut work.scratch);
        // The spectra kept across paths live outside `work` while it is lent to the passes.
        let mut u0 = std::mem::take(&mut work.first);
        let mut u1 = std::mem::take(&mut work.second);
        u0.clear();
        u0.extend_from_slice(&work.signal[..m * n]);
        let mut channel = 0;
        // S0.
        self.low_pass_output(&u0, 0, &mut out[..plane], work);
        channel += 1;
        // First order, then the second order of each first-order path.
        let first = self.scales * self.angles;
        let mut second_channel = 1 + first;
        for (n1, psi1) in self.wavelets.iter().enumerate() {
            let j1 = psi1.scale;
            self.wavelet_modulus(&u0, 0, psi1, j1, work);
            u1.clear();
            u1.extend_from_slice(&work.signal[..(m >> j1) * (n >> j1)]);
            self.low_pass_output(&u1, j1, &mut out[channel * plane..(channel + 1) * plane], work);
            channel += 1;
            for psi2 in &self.wavelets[n1 - n1 % self.angles..] {
                if psi2.scale <= j1 {
                    continue;
                }
                self.wavelet_modulus(&u1, j1, psi2, psi2.scale, work);
                // U2 moves to the spare buffer; the low-pass pass needs `signal` for itself.
                std::mem::swap(&mut work.signal, &mut work.spare);
                let u2 = std::mem::take(&mut work.spare);
                self.low_pass_output(
                    &u2,
                    psi2.scale,
                    &mut out[second_channel * plane..(second_channel + 1) * plane],
                    work,
                );
                work.spare = u2;
                second_channel += 1;
            }
        }
        work.first = u0;
        work.second = u1;
        debug_assert_eq!(second_channel, self.channels());
    }

    /// FFT(|IFFT(subsample(u ⊙ ψ))|) at resolution `to`, into `work.signal`: `u` is the FFT of a
    /// signal at resolution `from`.
    fn wavelet_modulus(&self, u: &[Complex<f32>], from: usize, psi: &Filter, to: usize, work: &mut Work) {
        let (m, n) = (self.padded.0 >> from, self.padded.1 >> from);
        multiply(u, &psi.levels[from], &mut work.product);
        subsample_fourier(&work.product, m, n, 1 << (to - from), &mut work.signal);
        let plan = &self.plans[to];
        plan.inverse(&mut work.signal, &mut work.scratch);
        for v in work.signal[..plan.rows * plan.cols].iter_mut() {
            *v = Complex::new(v.norm(), 0.0);
        }
        plan.forward(&mut work.signal, &mut work.scratch);
    }

    /// The real part of IFFT(subsample(u ⊙ φ)) at resolution J, without its one-pixel border, into
    /// `out`; `u` is the FFT of a signal at resolution `from`.
    fn low_pass_output(&self, u: &[Complex<f32>], from: usize, out: &mut [f32], work: &mut Work) {
        let (m, n) = (self.padded.0 >> from, self.padded.1 >> from);
        multiply(u, &self.low_pass.levels[from], &mut work.product);
        subsample_fourier(&work.product, m, n, 1 << (self.scales - from), &mut work.signal);
        let plan = &self.plans[self.scales];
        plan.inverse(&mut work.signal, &mut work.scratch);
        let (rows, cols) = (plan.rows, plan.cols);
        let out_w = cols - 2;
        for r in 1..rows - 1 {
            for c in 1..cols - 1 {
                out[(r - 1) * out_w + (c - 1)] = work.signal[r * cols + c].re;
            }
        }
    }

    /// Replaces every example of `data` (shape `[1, height, width]`) by its features (shape
    /// [`output_shape`](Self::output_shape)), in parallel over examples. Each example's features
    /// depend on that example alone.
    pub fn transform_dataset(&self, data: &Dataset<f32>) -> Result<Dataset<f32>> {
        if data.example_shape != [1, self.height, self.width] {
            return Err(Error::invalid(
                "scattering",
                format!(
                    "examples of shape {:?}, the transform takes [1, {}, {}]",
                    data.example_shape, self.height, self.width
                ),
            ));
        }
        let in_len = self.height * self.width;
        let shape = self.output_shape();
        let out_len: usize = shape.iter().product();
        let mut features = vec![0.0f32; data.len() * out_len];
        features
            .par_chunks_mut(out_len)
            .zip(data.inputs.par_chunks(in_len))
            .for_each_init(Work::default, |work, (out, image)| self.transform(image, out, work));
        Dataset::new(features, data.labels.clone(), shape.to_vec(), data.label_len)
    }

    /// The real Fourier transform of ψ_{j,θ} at resolution `res` (test access to the filter bank).
    pub fn wavelet_fourier(&self, j: usize, theta: usize, res: usize) -> &[f32] {
        &self.wavelets[j * self.angles + theta].levels[res]
    }

    /// The real Fourier transform of φ at resolution `res`.
    pub fn low_pass_fourier(&self, res: usize) -> &[f32] {
        &self.low_pass.levels[res]
    }

    /// The padded grid `(rows, cols)` at resolution 0.
    pub fn padded_size(&self) -> (usize, usize) {
        self.padded
    }
}

/// Scratch buffers of one transform call (one per thread).
#[derive(Default)]
pub struct Work {
    signal: Vec<Complex<f32>>,
    product: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// The FFT of the padded image, and of the current first-order modulus.
    first: Vec<Complex<f32>>,
    second: Vec<Complex<f32>>,
    /// The current second-order modulus' FFT.
    spare: Vec<Complex<f32>>,
}

impl Work {
    /// Room for a `len`-value grid; the scratch holds a transposed grid and then the FFTs' own scratch.
    fn ensure(&mut self, len: usize, fft_scratch: usize) {
        for (buffer, size) in [
            (&mut self.signal, len),
            (&mut self.spare, len),
            (&mut self.product, len),
            (&mut self.scratch, len + fft_scratch),
        ] {
            if buffer.len() < size {
                buffer.resize(size, Complex::new(0.0, 0.0));
            }
        }
    }
}

impl Filter {
    /// The real part of the FFT of `spatial` (an `m×n` complex filter, computed in f64), periodised
    /// to resolutions 0..=`levels`.
    fn from_spatial(spatial: &[Complex<f64>], m: usize, n: usize, scale: usize, levels: usize) -> Filter {
        let mut planner = FftPlanner::<f64>::new();
        let mut buffer = spatial.to_vec();
        fft2_f64(&mut planner, &mut buffer, m, n);
        let fourier: Vec<f64> = buffer.iter().map(|c| c.re).collect();
        let levels = (0..=levels).map(|res| periodize_fourier(&fourier, m, n, res)).collect();
        Filter { scale, levels }
    }
}

/// Kymatio's `periodize_filter_fft`: the frequencies of an `m×n` filter that survive subsampling by
/// 2^res (the outer quarters are zeroed), folded onto the `(m/2^res)×(n/2^res)` grid.
fn periodize_fourier(x: &[f64], m: usize, n: usize, res: usize) -> Vec<f32> {
    let k = 1usize << res;
    let (mr, nr) = (m / k, n / k);
    let band = |size: usize, i: usize| {
        let start = (size as f64 * 2f64.powi(-(res as i32) - 1)) as usize;
        let len = (size as f64 * (1.0 - 2f64.powi(-(res as i32)))) as usize;
        i >= start && i < start + len
    };
    let mut crop = vec![0.0f64; mr * nr];
    for r in 0..m {
        if band(m, r) {
            continue;
        }
        for c in 0..n {
            if band(n, c) {
                continue;
            }
            crop[(r % mr) * nr + c % nr] += x[r * n + c];
        }
    }
    crop.into_iter().map(|v| v as f32).collect()
}

/// Kymatio's `gabor_2d`: exp(−xᵀ R D R⁻¹ x / 2σ² + i ξ (x cos θ + y sin θ)), D = diag(1, slant²), summed
/// over 5×5 periods of the `m×n` grid and divided by 2πσ²/slant (with Kymatio's π, `KYMATIO_PI`).
pub fn gabor(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<Complex<f64>> {
    let (cos, sin) = (theta.cos(), theta.sin());
    // R D R⁻¹ with R the rotation by θ.
    let s2 = slant * slant;
    let a = (cos * cos + s2 * sin * sin) / (2.0 * sigma * sigma);
    let b = ((1.0 - s2) * cos * sin) / (2.0 * sigma * sigma);
    let d = (sin * sin + s2 * cos * cos) / (2.0 * sigma * sigma);
    let mut out = vec![Complex::new(0.0, 0.0); m * n];
    for ex in -2i64..=2 {
        for ey in -2i64..=2 {
            for r in 0..m {
                let x = (r as i64 + ex * m as i64) as f64;
                for c in 0..n {
                    let y = (c as i64 + ey * n as i64) as f64;
                    let envelope = -(a * x * x + 2.0 * b * x * y + d * y * y);
                    let phase = xi * (x * cos + y * sin);
                    out[r * n + c] += Complex::new(envelope, phase).exp();
                }
            }
        }
    }
    let norm = 2.0 * KYMATIO_PI * sigma * sigma / slant;
    out.iter_mut().for_each(|v| *v /= norm);
    out
}

/// Kymatio's `morlet_2d`: the Gabor filter minus the multiple of its envelope that gives it zero mean.
pub fn morlet(m: usize, n: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<Complex<f64>> {
    let wave = gabor(m, n, sigma, theta, xi, slant);
    let envelope = gabor(m, n, sigma, theta, 0.0, slant);
    let k = wave.iter().sum::<Complex<f64>>() / envelope.iter().sum::<Complex<f64>>();
    wave.iter().zip(&envelope).map(|(w, e)| w - k * e).collect()
}

/// Reflect padding (the edge pixel is not repeated) of a `h×w` image by `pad` on each side.
fn reflect_pad(image: &[f32], h: usize, w: usize, pad: usize, out: &mut [Complex<f32>]) {
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let reflect = |i: isize, size: usize| -> usize {
        let size = size as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= size { 2 * (size - 1) - i } else { i }) as usize
    };
    for r in 0..ph {
        let src_r = reflect(r as isize - pad as isize, h);
        for c in 0..pw {
            let src_c = reflect(c as isize - pad as isize, w);
            out[r * pw + c] = Complex::new(image[src_r * w + src_c], 0.0);
        }
    }
}

fn multiply(u: &[Complex<f32>], filter: &[f32], out: &mut [Complex<f32>]) {
    for ((o, &a), &f) in out.iter_mut().zip(u).zip(filter) {
        *o = a * f;
    }
}

/// Kymatio's `subsample_fourier`: the mean of the k×k aliased blocks of an `m×n` spectrum, which is
/// the spectrum of the signal subsampled by k in each direction.
fn subsample_fourier(x: &[Complex<f32>], m: usize, n: usize, k: usize, out: &mut [Complex<f32>]) {
    let (mr, nr) = (m / k, n / k);
    out[..mr * nr].iter_mut().for_each(|v| *v = Complex::new(0.0, 0.0));
    for r in 0..m {
        for c in 0..n {
            out[(r % mr) * nr + c % nr] += x[r * n + c];
        }
    }
    let scale = 1.0 / (k * k) as f32;
    out[..mr * nr].iter_mut().for_each(|v| *v *= scale);
}

/// A 2-D FFT of a row-major `rows×cols` grid: row transforms, then column transforms through a
/// transpose. The inverse is normalised (divides by rows·cols), as numpy's and torch's `ifft2`.
struct Fft2d {
    rows: usize,
    cols: usize,
    row_forward: Arc<dyn Fft<f32>>,
    row_inverse: Arc<dyn Fft<f32>>,
    col_forward: Arc<dyn Fft<f32>>,
    col_inverse: Arc<dyn Fft<f32>>,
}

impl Fft2d {
    fn new(planner: &mut FftPlanner<f32>, rows: usize, cols: usize) -> Self {
        Fft2d {
            rows,
            cols,
            row_forward: planner.plan_fft_forward(cols),
            row_inverse: planner.plan_fft_inverse(cols),
            col_forward: planner.plan_fft_forward(rows),
            col_inverse: planner.plan_fft_inverse(rows),
        }
    }

    /// Scratch the row and column FFTs need beyond the transposed grid.
    fn scratch_len(&self) -> usize {
        self.row_forward
            .get_inplace_scratch_len()
            .max(self.row_inverse.get_inplace_scratch_len())
            .max(self.col_forward.get_inplace_scratch_len())
            .max(self.col_inverse.get_inplace_scratch_len())
    }

    fn forward(&self, data: &mut [Complex<f32>], scratch: &mut [Complex<f32>]) {
        self.run(data, scratch, &self.row_forward, &self.col_forward);
    }

    fn inverse(&self, data: &mut [Complex<f32>], scratch: &mut [Complex<f32>]) {
        self.run(data, scratch, &self.row_inverse, &self.col_inverse);
        let scale = 1.0 / (self.rows * self.cols) as f32;
        data[..self.rows * self.cols].iter_mut().for_each(|v| *v *= scale);
    }

    fn run(
        &self,
        data: &mut [Complex<f32>],
        scratch: &mut [Complex<f32>],
        rows: &Arc<dyn Fft<f32>>,
        cols: &Arc<dyn Fft<f32>>,
    ) {
        let len = self.rows * self.cols;
        let data = &mut data[..len];
        let (transposed, fft_scratch) = scratch.split_at_mut(len);
        rows.process_with_scratch(data, &mut fft_scratch[..rows.get_inplace_scratch_len()]);
        transpose(data, transposed, self.rows, self.cols);
        cols.process_with_scratch(transposed, &mut fft_scratch[..cols.get_inplace_scratch_len()]);
        transpose(transposed, data, self.cols, self.rows);
    }
}

/// `out` (cols×rows) = transpose of `x` (rows×cols).
fn transpose(x: &[Complex<f32>], out: &mut [Complex<f32>], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
}

/// An unnormalised 2-D FFT in f64 (filter construction only).
fn fft2_f64(planner: &mut FftPlanner<f64>, data: &mut [Complex<f64>], m: usize, n: usize) {
    planner.plan_fft_forward(n).process(data);
    let mut t = vec![Complex::new(0.0, 0.0); m * n];
    for r in 0..m {
        for c in 0..n {
            t[c * m + r] = data[r * n + c];
        }
    }
    planner.plan_fft_forward(m).process(&mut t);
    for r in 0..m {
        for c in 0..n {
            data[r * n + c] = t[c * m + r];
        }
    }
}
