//! Pooling on one `[C, H, W]` example, as PyTorch defines it (floor mode, dilation 1):
//! `max_pool2d` (implicit −∞ padding; the gradient goes to the window's first maximum in row-major
//! order, the position PyTorch records), `avg_pool2d` with `count_include_pad = True` (every window
//! divides by kh·kw, padded zeros included), and global average pooling (`[C, H, W] → [C]`).

/// The static shape of one pooling: input `[channels, height, width]`, square window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolGeom {
    /// `(H_out, W_out) = (⌊(H + 2p − k) / s⌋ + 1, …)`.
    pub fn output_size(&self) -> (usize, usize) {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (out(self.height), out(self.width))
    }

    /// The input indices of the in-range positions of output window `(c, i, j)`, in row-major order.
    fn window(&self, c: usize, i: usize, j: usize) -> Vec<usize> {
        let mut idx = Vec::with_capacity(self.kernel * self.kernel);
        for u in 0..self.kernel {
            let r = (i * self.stride + u) as isize - self.padding as isize;
            for v in 0..self.kernel {
                let col = (j * self.stride + v) as isize - self.padding as isize;
                if r >= 0 && col >= 0 && (r as usize) < self.height && (col as usize) < self.width {
                    idx.push((c * self.height + r as usize) * self.width + col as usize);
                }
            }
        }
        idx
    }

    fn windows(&self) -> impl Iterator<Item = Vec<usize>> + '_ {
        let (ho, wo) = self.output_size();
        (0..self.channels)
            .flat_map(move |c| (0..ho).flat_map(move |i| (0..wo).map(move |j| self.window(c, i, j))))
    }
}

/// The input index of each window's maximum (the first one on ties).
fn argmax_per_window(geom: &PoolGeom, x: &[f64]) -> Vec<usize> {
    geom.windows()
        .map(|win| {
            let mut best = win[0];
            for &k in &win[1..] {
                if x[k] > x[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// `max_pool2d`, output `[C, H_out, W_out]`.
pub fn max_pool2d_forward(geom: &PoolGeom, x: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), geom.channels * geom.height * geom.width, "max_pool2d input shape");
    argmax_per_window(geom, x).into_iter().map(|k| x[k]).collect()
}

/// The input gradient of `max_pool2d`: each output's gradient lands on its window's maximum.
pub fn max_pool2d_backward(geom: &PoolGeom, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for (k, g) in argmax_per_window(geom, x).into_iter().zip(dy) {
        dx[k] += g;
    }
    dx
}

/// `avg_pool2d(count_include_pad = True)`, output `[C, H_out, W_out]`.
pub fn avg_pool2d_forward(geom: &PoolGeom, x: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), geom.channels * geom.height * geom.width, "avg_pool2d input shape");
    let area = (geom.kernel * geom.kernel) as f64;
    geom.windows().map(|win| win.iter().map(|&k| x[k]).sum::<f64>() / area).collect()
}

/// The input gradient of `avg_pool2d(count_include_pad = True)`.
pub fn avg_pool2d_backward(geom: &PoolGeom, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let area = (geom.kernel * geom.kernel) as f64;
    let mut dx = vec![0.0; x.len()];
    for (win, g) in geom.windows().zip(dy) {
        win.iter().for_each(|&k| dx[k] += g / area);
    }
    dx
}

/// Global average pooling: the mean of each channel's `plane` values.
pub fn global_avg_pool_forward(x: &[f64], plane: usize) -> Vec<f64> {
    x.chunks(plane).map(|c| c.iter().sum::<f64>() / plane as f64).collect()
}

/// The input gradient of global average pooling.
pub fn global_avg_pool_backward(dy: &[f64], plane: usize) -> Vec<f64> {
    dy.iter().flat_map(|&g| std::iter::repeat_n(g / plane as f64, plane)).collect()
}
