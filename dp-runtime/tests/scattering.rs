//! The scattering transform (dp_runtime::data::scattering) against a direct computation in f64 in the
//! spatial domain: each filter's spatial form by a naive inverse DFT of its Fourier transform, circular
//! convolutions on the padded grid, subsampling by taking every k-th sample, moduli. No FFT is used on
//! the reference side. Also: shapes, the filters' defining properties, and that the transform of a
//! dataset is per example.

use dp_runtime::data::scattering::{Scattering2d, Work};
use dp_runtime::data::Dataset;
use rustfft::num_complex::Complex;

type C64 = Complex<f64>;

/// The spatial filter whose Fourier transform is `fourier` (`rows×cols`), by a naive inverse DFT.
fn spatial(fourier: &[f32], rows: usize, cols: usize) -> Vec<C64> {
    let mut out = vec![C64::new(0.0, 0.0); rows * cols];
    for p in 0..rows {
        for q in 0..cols {
            let mut sum = C64::new(0.0, 0.0);
            for u in 0..rows {
                for v in 0..cols {
                    let phase = 2.0
                        * std::f64::consts::PI
                        * ((p * u) as f64 / rows as f64 + (q * v) as f64 / cols as f64);
                    sum += fourier[u * cols + v] as f64 * C64::new(phase.cos(), phase.sin());
                }
            }
            out[p * cols + q] = sum / (rows * cols) as f64;
        }
    }
    out
}

/// Circular convolution of `x` with `h` on a `rows×cols` grid, then every `k`-th sample.
fn convolve_subsample(x: &[C64], h: &[C64], rows: usize, cols: usize, k: usize) -> Vec<C64> {
    let (out_r, out_c) = (rows / k, cols / k);
    let mut out = vec![C64::new(0.0, 0.0); out_r * out_c];
    for pr in 0..out_r {
        for pc in 0..out_c {
            let (p, q) = (pr * k, pc * k);
            let mut sum = C64::new(0.0, 0.0);
            for a in 0..rows {
                for b in 0..cols {
                    sum += x[a * cols + b] * h[((p + rows - a) % rows) * cols + (q + cols - b) % cols];
                }
            }
            out[pr * out_c + pc] = sum;
        }
    }
    out
}

fn modulus(x: Vec<C64>) -> Vec<C64> {
    x.into_iter().map(|v| C64::new(v.norm(), 0.0)).collect()
}

/// The real part without the one-sample border.
fn unpad(x: &[C64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 1..rows - 1 {
        for c in 1..cols - 1 {
            out.push(x[r * cols + c].re);
        }
    }
    out
}

fn reflect(i: isize, size: usize) -> usize {
    let size = size as isize;
    let i = i.abs();
    (if i >= size { 2 * (size - 1) - i } else { i }) as usize
}

/// The whole transform, directly: channel after channel in the documented order.
fn direct(s: &Scattering2d, image: &[f32], h: usize, w: usize, big_j: usize, angles: usize) -> Vec<f64> {
    let (m, n) = s.padded_size();
    let pad = 1 << big_j;
    let mut x = vec![C64::new(0.0, 0.0); m * n];
    for r in 0..m {
        for c in 0..n {
            let (sr, sc) = (reflect(r as isize - pad as isize, h), reflect(c as isize - pad as isize, w));
            x[r * n + c] = C64::new(image[sr * w + sc] as f64, 0.0);
        }
    }
    let at = |res: usize| (m >> res, n >> res);
    let phi = |res: usize| {
        let (r, c) = at(res);
        spatial(s.low_pass_fourier(res), r, c)
    };
    let psi = |j: usize, theta: usize, res: usize| {
        let (r, c) = at(res);
        spatial(s.wavelet_fourier(j, theta, res), r, c)
    };
    let (out_r, out_c) = at(big_j);
    let mut first = Vec::new();
    let mut second = Vec::new();
    let s0 = convolve_subsample(&x, &phi(0), m, n, 1 << big_j);
    for j1 in 0..big_j {
        for t1 in 0..angles {
            let u1 = modulus(convolve_subsample(&x, &psi(j1, t1, 0), m, n, 1 << j1));
            let (r1, c1) = at(j1);
            first.extend(unpad(&convolve_subsample(&u1, &phi(j1), r1, c1, 1 << (big_j - j1)), out_r, out_c));
            for j2 in j1 + 1..big_j {
                for t2 in 0..angles {
                    let u2 = modulus(convolve_subsample(&u1, &psi(j2, t2, j1), r1, c1, 1 << (j2 - j1)));
                    let (r2, c2) = at(j2);
                    second.extend(unpad(
                        &convolve_subsample(&u2, &phi(j2), r2, c2, 1 << (big_j - j2)),
                        out_r,
                        out_c,
                    ));
                }
            }
        }
    }
    let mut out = unpad(&s0, out_r, out_c);
    out.extend(first);
    out.extend(second);
    out
}

/// A deterministic test image with structure at several scales, values in [0, 1].
fn image(h: usize, w: usize, seed: u64) -> Vec<f32> {
    (0..h * w)
        .map(|i| {
            let (r, c) = ((i / w) as f32, (i % w) as f32);
            let hash = ((i as u64 + 1 + 1000 * seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32
                / (1u64 << 24) as f32;
            0.5 + 0.3 * (0.9 * r + 0.4 * c).sin() * (0.3 * c).cos() + 0.2 * (hash - 0.5)
        })
        .collect()
}

fn check_against_direct(h: usize, w: usize, big_j: usize, angles: usize) {
    let s = Scattering2d::new(h, w, big_j, angles).unwrap();
    let x = image(h, w, 7);
    let mut out = vec![0.0f32; s.output_shape().iter().product()];
    s.transform(&x, &mut out, &mut Work::default());
    let expected = direct(&s, &x, h, w, big_j, angles);
    assert_eq!(out.len(), expected.len());
    let scale = expected.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
        assert!(
            (got as f64 - want).abs() <= 2e-5 * scale,
            "{h}x{w} J={big_j} L={angles}: value {i}: FFT {got} vs direct {want} (scale {scale})"
        );
    }
    // Not all zero: the comparison means something on every order.
    let [channels, oh, ow] = s.output_shape();
    let plane = oh * ow;
    for channel in [0, 1, channels - 1] {
        assert!(expected[channel * plane..(channel + 1) * plane].iter().any(|v| v.abs() > 1e-4 * scale));
    }
}

#[test]
fn fft_transform_equals_direct_spatial_computation_j2_l8() {
    check_against_direct(8, 8, 2, 8);
}

#[test]
fn fft_transform_equals_direct_spatial_computation_rectangular_j1_l3() {
    check_against_direct(6, 10, 1, 3);
}

#[test]
fn mnist_shape_is_81_channels_of_7x7() {
    let s = Scattering2d::new(28, 28, 2, 8).unwrap();
    assert_eq!(s.output_shape(), [81, 7, 7]);
    assert_eq!(s.padded_size(), (36, 36));
    let x = image(28, 28, 1);
    let mut out = vec![f32::NAN; 81 * 49];
    s.transform(&x, &mut out, &mut Work::default());
    assert!(out.iter().all(|v| v.is_finite()));
    // S0 is a local average of an image in [0, 1]: it stays in that range.
    assert!(out[..49].iter().all(|&v| (0.0..=1.0).contains(&v)), "{:?}", &out[..49]);
}

#[test]
fn filters_have_their_defining_properties() {
    let s = Scattering2d::new(28, 28, 2, 8).unwrap();
    let (m, n) = s.padded_size();
    // φ is a normalised Gaussian: its mean (the zero frequency) is 1 (up to Kymatio's 3.1415).
    assert!((s.low_pass_fourier(0)[0] - 1.0).abs() < 1e-3, "{}", s.low_pass_fourier(0)[0]);
    for j in 0..2 {
        for theta in 0..8 {
            let f = s.wavelet_fourier(j, theta, 0);
            // Morlet wavelets have zero mean.
            assert!(f[0].abs() < 1e-5, "psi({j},{theta}) mean {}", f[0]);
            // The peak frequency lies at ξ/2^j = (3π/4)/2^j, in the direction of the wavelet's angle.
            let (peak, _) =
                f.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            let signed = |k: usize, size: usize| if k > size / 2 { k as f64 - size as f64 } else { k as f64 };
            let (u, v) = (
                signed(peak / n, m) * 2.0 * std::f64::consts::PI / m as f64,
                signed(peak % n, n) * 2.0 * std::f64::consts::PI / n as f64,
            );
            let radius = (u * u + v * v).sqrt();
            let xi = 0.75 * std::f64::consts::PI / (1 << j) as f64;
            assert!((radius - xi).abs() < 0.25 * xi, "psi({j},{theta}) peaks at radius {radius}, xi {xi}");
            let angle = (3.0 - theta as f64) * std::f64::consts::PI / 8.0;
            let direction = v.atan2(u);
            let off = (direction - angle).rem_euclid(std::f64::consts::PI);
            let off = off.min(std::f64::consts::PI - off);
            assert!(off < 0.3, "psi({j},{theta}) peaks at angle {direction}, expected {angle}");
        }
    }
}

#[test]
fn transform_of_a_dataset_is_per_example() {
    let s = Scattering2d::new(8, 8, 2, 4).unwrap();
    let rows: Vec<f32> = (0..3).flat_map(|i| image(8, 8, i)).collect();
    let data = Dataset::new(rows.clone(), vec![0.0, 1.0, 2.0], vec![1, 8, 8], 1).unwrap();
    let mut neighbour = rows;
    neighbour[64..128].copy_from_slice(&image(8, 8, 99));
    let other = Dataset::new(neighbour, vec![0.0, 5.0, 2.0], vec![1, 8, 8], 1).unwrap();
    let (a, b) = (s.transform_dataset(&data).unwrap(), s.transform_dataset(&other).unwrap());
    assert_eq!(a.example_shape, vec![s.channels(), 2, 2]);
    assert_eq!(a.labels, data.labels);
    assert_eq!(a.input(0), b.input(0), "the first example's features changed with another row");
    assert_eq!(a.input(2), b.input(2), "the last example's features changed with another row");
    assert_ne!(a.input(1), b.input(1));
}

#[test]
fn bad_settings_are_errors() {
    assert!(Scattering2d::new(28, 28, 0, 8).is_err());
    assert!(Scattering2d::new(30, 28, 2, 8).is_err()); // not a multiple of 4
    assert!(Scattering2d::new(4, 4, 2, 8).is_err()); // no room for the padding
    let s = Scattering2d::new(8, 8, 1, 2).unwrap();
    let wrong = Dataset::new(vec![0.0; 2 * 2 * 64], vec![0.0; 2], vec![2, 8, 8], 1).unwrap();
    let err = s.transform_dataset(&wrong).unwrap_err().to_string();
    assert!(err.contains("scattering"), "{err}");
}

/// The ring-and-stroke image of `tests/data/kymatio_scattering.py`, computed in f64 and rounded to f32.
fn ring_and_stroke() -> Vec<f32> {
    let mut x = Vec::with_capacity(28 * 28);
    for r in 0..28 {
        for c in 0..28 {
            let (rf, cf) = (r as f64, c as f64);
            let radius = ((rf - 13.0).powi(2) + (cf - 15.0).powi(2)).sqrt();
            let ring = (-(radius - 7.0).powi(2) / 4.0).exp();
            let stroke = if c > 6 && c < 22 { (-(rf - 0.8 * cf - 4.0).powi(2) / 3.0).exp() } else { 0.0 };
            x.push((ring + stroke).min(1.0) as f32);
        }
    }
    x
}

#[test]
fn equals_kymatio_on_a_28x28_image() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kymatio_scattering_j2_l8_28x28.txt"
    ))
    .unwrap();
    let expected: Vec<f64> =
        text.lines().filter(|l| !l.starts_with('#')).map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(expected.len(), 81 * 49);
    let s = Scattering2d::new(28, 28, 2, 8).unwrap();
    let mut out = vec![0.0f32; 81 * 49];
    s.transform(&ring_and_stroke(), &mut out, &mut Work::default());
    let scale = expected.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
        assert!(
            (got as f64 - want).abs() <= 1e-5 * scale,
            "channel {} value {}: ours {got}, Kymatio {want}",
            i / 49,
            i % 49
        );
    }
}
