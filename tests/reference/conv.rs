//! `torch.nn.Conv2d` on one NCHW example without the batch axis: input `[C_in, H, W]`, weight
//! `[C_out, C_in / groups, kh, kw]`, bias `[C_out]`, zero padding, stride and dilation per axis.
//!
//! `y[o, i, j] = b[o] + Σ_{c ∈ group(o)} Σ_{u, v} W[o, c − c₀, u, v] · x[c, i·s − p + u·d, j·s − p + v·d]`,
//! out-of-range input positions reading 0; `H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1`.

/// The static shape of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    /// `(kh, kw)`.
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Conv2dGeom {
    /// A square kernel with the same stride, padding and dilation on both axes, one group.
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        (height, width): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Conv2dGeom {
            in_channels,
            out_channels,
            height,
            width,
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// `(H_out, W_out)`.
    pub fn output_size(&self) -> (usize, usize) {
        let out = |n: usize, k: usize, s: usize, p: usize, d: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
        (
            out(self.height, self.kernel.0, self.stride.0, self.padding.0, self.dilation.0),
            out(self.width, self.kernel.1, self.stride.1, self.padding.1, self.dilation.1),
        )
    }

    /// The weight's length, `C_out · C_in / groups · kh · kw`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels / self.groups * self.kernel.0 * self.kernel.1
    }

    /// Calls `visit(weight index, input index, output index)` for every product of the convolution
    /// that reads an in-range input position (padded positions contribute nothing).
    fn for_each_term(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let (ho, wo) = self.output_size();
        let (kh, kw) = self.kernel;
        let per_group_in = self.in_channels / self.groups;
        let per_group_out = self.out_channels / self.groups;
        for o in 0..self.out_channels {
            let first_in = (o / per_group_out) * per_group_in;
            for ci in 0..per_group_in {
                let c = first_in + ci;
                for u in 0..kh {
                    for v in 0..kw {
                        let widx = ((o * per_group_in + ci) * kh + u) * kw + v;
                        for i in 0..ho {
                            let r =
                                (i * self.stride.0 + u * self.dilation.0) as isize - self.padding.0 as isize;
                            if r < 0 || r >= self.height as isize {
                                continue;
                            }
                            for j in 0..wo {
                                let col = (j * self.stride.1 + v * self.dilation.1) as isize
                                    - self.padding.1 as isize;
                                if col < 0 || col >= self.width as isize {
                                    continue;
                                }
                                let xidx = (c * self.height + r as usize) * self.width + col as usize;
                                visit(widx, xidx, (o * ho + i) * wo + j);
                            }
                        }
                    }
                }
            }
        }
    }

    fn check(&self, w: &[f64], x: &[f64]) {
        assert_eq!(self.in_channels % self.groups, 0, "conv: groups must divide C_in");
        assert_eq!(self.out_channels % self.groups, 0, "conv: groups must divide C_out");
        assert_eq!(w.len(), self.weight_len(), "conv weight shape");
        assert_eq!(x.len(), self.in_channels * self.height * self.width, "conv input shape");
    }
}

/// The convolution of one example, output `[C_out, H_out, W_out]`.
pub fn conv2d_forward(geom: &Conv2dGeom, w: &[f64], b: Option<&[f64]>, x: &[f64]) -> Vec<f64> {
    geom.check(w, x);
    let (ho, wo) = geom.output_size();
    let mut y: Vec<f64> =
        (0..geom.out_channels * ho * wo).map(|k| b.map_or(0.0, |b| b[k / (ho * wo)])).collect();
    geom.for_each_term(|wi, xi, yi| y[yi] += w[wi] * x[xi]);
    y
}

/// The gradients of [`conv2d_forward`]: `(dx, dW, db)` from `dy` (`db[o] = Σ_{i,j} dy[o, i, j]`).
pub fn conv2d_backward(
    geom: &Conv2dGeom,
    w: &[f64],
    x: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    geom.check(w, x);
    let (ho, wo) = geom.output_size();
    assert_eq!(dy.len(), geom.out_channels * ho * wo, "conv output gradient shape");
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    geom.for_each_term(|wi, xi, yi| {
        dw[wi] += dy[yi] * x[xi];
        dx[xi] += dy[yi] * w[wi];
    });
    let db = dy.chunks(ho * wo).map(|plane| plane.iter().sum()).collect();
    (dx, dw, db)
}
