//! The compiled image models against an f64 reference written only for this test, one example at a
//! time: losses, per-example squared norms per group, clipped sums and the non-private gradient;
//! forced ghost against forced direct norms; a NaN example with factor 0; the reference's own
//! gradients against central finite differences.

use dp::models::{MnistCnn, ResidualCnn};
use dp::prelude::*;
use dp::NormStrategy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Models declared for the test.

/// Every pooling kind, strided/dilated/grouped/padded convs, a conv without bias, global pooling.
#[dp_model(input = [2, 7, 7], loss = cross_entropy(classes = 3))]
struct ConvPool {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1), relu, max_pool2d(kernel = 3, stride = 2, padding = 1))]
    c1: Conv2d,
    #[layer(
        conv2d(out = 6, kernel = 2, groups = 2, bias = false),
        tanh,
        avg_pool2d(kernel = 2, stride = 1, padding = 1)
    )]
    c2: Conv2d,
    #[layer(conv2d(out = 5, kernel = 2, stride = 2, dilation = 2, padding = 1), sigmoid, global_avg_pool)]
    c3: Conv2d,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// `ConvPool` with ghost norms forced on every layer.
#[dp_model(input = [2, 7, 7], loss = cross_entropy(classes = 3))]
struct ConvPoolGhost {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1, norms = ghost), relu, max_pool2d(kernel = 3, stride = 2, padding = 1))]
    c1: Conv2d,
    #[layer(conv2d(out = 6, kernel = 2, groups = 2, bias = false, norms = ghost), tanh, avg_pool2d(kernel = 2, stride = 1, padding = 1))]
    c2: Conv2d,
    #[layer(conv2d(out = 5, kernel = 2, stride = 2, dilation = 2, padding = 1, norms = ghost), sigmoid, global_avg_pool)]
    c3: Conv2d,
    #[layer(linear(out = 3, norms = ghost))]
    fc: Linear,
}

/// `ConvPool` with direct norms forced on every layer.
#[dp_model(input = [2, 7, 7], loss = cross_entropy(classes = 3))]
struct ConvPoolDirect {
    #[layer(conv2d(out = 4, kernel = 3, padding = 1, norms = direct), relu, max_pool2d(kernel = 3, stride = 2, padding = 1))]
    c1: Conv2d,
    #[layer(conv2d(out = 6, kernel = 2, groups = 2, bias = false, norms = direct), tanh, avg_pool2d(kernel = 2, stride = 1, padding = 1))]
    c2: Conv2d,
    #[layer(conv2d(out = 5, kernel = 2, stride = 2, dilation = 2, padding = 1, norms = direct), sigmoid, global_avg_pool)]
    c3: Conv2d,
    #[layer(linear(out = 3, norms = direct))]
    fc: Linear,
}

/// Layer norm over rows `[T, D]` (fused tanh) and over a vector `[D]`.
#[dp_model(input = [3, 4], loss = cross_entropy(classes = 3))]
struct NormChain {
    #[layer(layer_norm, tanh)]
    ln1: LayerNorm,
    #[layer(flatten, linear(out = 5))]
    fc1: Linear,
    #[layer(layer_norm(eps = 1e-5))]
    ln2: LayerNorm,
    #[layer(linear(out = 3))]
    fc2: Linear,
}

/// Not a chain: `h` is read three times (group norm, `+`, `.tanh()`), `+` with a fused relu, a second
/// `+` of two computed values, group norm with a fused relu, layer norm over an image.
#[dp_model(input = [2, 5, 5], loss = cross_entropy(classes = 3))]
mod skip {
    pub struct Skip {
        #[layer(conv2d(out = 4, kernel = 3, padding = 1))]
        a: Conv2d,
        #[layer(group_norm(groups = 2), relu)]
        an: GroupNorm,
        #[layer(conv2d(out = 4, kernel = 3, padding = 1))]
        b: Conv2d,
        #[layer(layer_norm)]
        bn: LayerNorm,
        #[layer(flatten, linear(out = 3))]
        head: Linear,
    }

    impl Skip {
        fn forward(&self, x: Input) -> Output {
            let h = self.a(x);
            let r = self.bn(self.b(self.an(h)));
            let s = (h + r).relu() + h.tanh();
            self.head(s)
        }
    }
}
use skip::Skip;

// ---------------------------------------------------------------------------------------------
// The f64 reference: a graph of ops over one example's values.

#[derive(Clone, Copy, Debug)]
struct Conv {
    in_c: usize,
    in_h: usize,
    in_w: usize,
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    bias: bool,
}

impl Conv {
    fn out_hw(&self) -> (usize, usize) {
        let span = self.dil * (self.k - 1) + 1;
        (
            (self.in_h + 2 * self.pad - span) / self.stride + 1,
            (self.in_w + 2 * self.pad - span) / self.stride + 1,
        )
    }
    fn weight_len(&self) -> usize {
        self.out * self.in_c / self.groups * self.k * self.k
    }
}

#[derive(Clone, Copy, Debug)]
enum RefOp {
    Conv(Conv),
    /// channels, h, w, kernel, stride, padding
    MaxPool(usize, usize, usize, usize, usize, usize),
    AvgPool(usize, usize, usize, usize, usize, usize),
    /// channels, plane
    GlobalAvgPool(usize, usize),
    Linear {
        inputs: usize,
        outputs: usize,
        bias: bool,
    },
    /// channels, plane, groups (layer norm over an image or a vector is one group)
    GroupNorm(usize, usize, usize),
    /// rows, dim: each row normalised, affine `[dim]`
    RowNorm(usize, usize),
    Relu,
    Tanh,
    Sigmoid,
    Flatten,
    Add,
}

impl RefOp {
    fn param_len(&self) -> usize {
        match *self {
            RefOp::Conv(c) => c.weight_len() + if c.bias { c.out } else { 0 },
            RefOp::Linear { inputs, outputs, bias } => inputs * outputs + if bias { outputs } else { 0 },
            RefOp::GroupNorm(c, _, _) => 2 * c,
            RefOp::RowNorm(_, d) => 2 * d,
            _ => 0,
        }
    }
}

struct Node {
    op: RefOp,
    inputs: Vec<usize>,
}

struct Spec {
    nodes: Vec<Node>,
    input_len: usize,
    classes: usize,
}

impl Spec {
    /// A chain: node k reads value k (value 0 is the input), writes value k + 1.
    fn chain(ops: Vec<RefOp>, input_len: usize, classes: usize) -> Spec {
        let nodes = ops.into_iter().enumerate().map(|(k, op)| Node { op, inputs: vec![k] }).collect();
        Spec { nodes, input_len, classes }
    }

    /// (offset, group) of each node's parameters, the parameter count, the group count.
    fn layout(&self) -> (Vec<Option<(usize, usize)>>, usize, usize) {
        let (mut offset, mut group, mut out) = (0, 0, Vec::new());
        for node in &self.nodes {
            let len = node.op.param_len();
            if len > 0 {
                out.push(Some((offset, group)));
                offset += len;
                group += 1;
            } else {
                out.push(None);
            }
        }
        (out, offset, group)
    }

    fn groups_of(&self) -> Vec<usize> {
        let (lay, count, _) = self.layout();
        let mut groups = vec![0; count];
        for (node, slot) in self.nodes.iter().zip(&lay) {
            if let Some((off, g)) = *slot {
                groups[off..off + node.op.param_len()].iter_mut().for_each(|v| *v = g);
            }
        }
        groups
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// (channel, index in the plane) blocks of a pooling window, clipped to the input.
fn window(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> std::ops::Range<usize> {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + k as isize).min(len as isize);
    start.max(0) as usize..end.max(0) as usize
}

fn pool_out(h: usize, k: usize, s: usize, p: usize) -> usize {
    (h + 2 * p - k) / s + 1
}

/// Forward of one node.
fn op_forward(op: RefOp, params: &[f64], off: usize, xs: &[&[f64]]) -> Vec<f64> {
    let x = xs[0];
    match op {
        RefOp::Conv(c) => {
            let (oh_n, ow_n) = c.out_hw();
            let (cg, og) = (c.in_c / c.groups, c.out / c.groups);
            let mut y = vec![0.0; c.out * oh_n * ow_n];
            for o in 0..c.out {
                let q = o / og;
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let mut s = if c.bias { params[off + c.weight_len() + o] } else { 0.0 };
                        for cl in 0..cg {
                            for ki in 0..c.k {
                                for kj in 0..c.k {
                                    let ih = (oh * c.stride + ki * c.dil) as isize - c.pad as isize;
                                    let iw = (ow * c.stride + kj * c.dil) as isize - c.pad as isize;
                                    if ih < 0 || iw < 0 || ih as usize >= c.in_h || iw as usize >= c.in_w {
                                        continue;
                                    }
                                    let xv = x[((q * cg + cl) * c.in_h + ih as usize) * c.in_w + iw as usize];
                                    s += params[off + ((o * cg + cl) * c.k + ki) * c.k + kj] * xv;
                                }
                            }
                        }
                        y[(o * oh_n + oh) * ow_n + ow] = s;
                    }
                }
            }
            y
        }
        RefOp::MaxPool(ch, h, w, k, s, p) | RefOp::AvgPool(ch, h, w, k, s, p) => {
            let (oh_n, ow_n) = (pool_out(h, k, s, p), pool_out(w, k, s, p));
            let mut y = vec![0.0; ch * oh_n * ow_n];
            for c in 0..ch {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let vals = window(oh, s, p, k, h)
                            .flat_map(|ih| window(ow, s, p, k, w).map(move |iw| x[(c * h + ih) * w + iw]));
                        y[(c * oh_n + oh) * ow_n + ow] = match op {
                            RefOp::MaxPool(..) => vals.fold(f64::NEG_INFINITY, f64::max),
                            _ => vals.sum::<f64>() / (k * k) as f64,
                        };
                    }
                }
            }
            y
        }
        RefOp::GlobalAvgPool(ch, plane) => {
            (0..ch).map(|c| x[c * plane..(c + 1) * plane].iter().sum::<f64>() / plane as f64).collect()
        }
        RefOp::Linear { inputs, outputs, bias } => (0..outputs)
            .map(|o| {
                let z: f64 = (0..inputs).map(|j| params[off + o * inputs + j] * x[j]).sum();
                z + if bias { params[off + inputs * outputs + o] } else { 0.0 }
            })
            .collect(),
        RefOp::RowNorm(rows, dim) => {
            let mut y = vec![0.0; rows * dim];
            for r in 0..rows {
                let xs = &x[r * dim..(r + 1) * dim];
                let mean = xs.iter().sum::<f64>() / dim as f64;
                let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
                let rstd = 1.0 / (var + 1e-5).sqrt();
                for k in 0..dim {
                    y[r * dim + k] = (xs[k] - mean) * rstd * params[off + k] + params[off + dim + k];
                }
            }
            y
        }
        RefOp::GroupNorm(ch, plane, groups) => {
            let block = ch / groups * plane;
            let mut y = vec![0.0; ch * plane];
            for g in 0..groups {
                let xs = &x[g * block..(g + 1) * block];
                let mean = xs.iter().sum::<f64>() / block as f64;
                let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / block as f64;
                let rstd = 1.0 / (var + 1e-5).sqrt();
                for (k, &v) in xs.iter().enumerate() {
                    let c = (g * block + k) / plane;
                    y[g * block + k] = (v - mean) * rstd * params[off + c] + params[off + ch + c];
                }
            }
            y
        }
        RefOp::Relu => x.iter().map(|v| v.max(0.0)).collect(),
        RefOp::Tanh => x.iter().map(|v| v.tanh()).collect(),
        RefOp::Sigmoid => x.iter().map(|&v| sigmoid(v)).collect(),
        RefOp::Flatten => x.to_vec(),
        RefOp::Add => x.iter().zip(xs[1]).map(|(a, b)| a + b).collect(),
    }
}

/// Backward of one node: adds the parameter gradient into `grad[off..]`, returns each input's gradient.
fn op_backward(
    op: RefOp,
    params: &[f64],
    off: usize,
    xs: &[&[f64]],
    y: &[f64],
    gy: &[f64],
    grad: &mut [f64],
) -> Vec<Vec<f64>> {
    let x = xs[0];
    let gx = match op {
        RefOp::Conv(c) => {
            let (oh_n, ow_n) = c.out_hw();
            let (cg, og) = (c.in_c / c.groups, c.out / c.groups);
            let mut gx = vec![0.0; x.len()];
            for o in 0..c.out {
                let q = o / og;
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let g = gy[(o * oh_n + oh) * ow_n + ow];
                        if c.bias {
                            grad[off + c.weight_len() + o] += g;
                        }
                        for cl in 0..cg {
                            for ki in 0..c.k {
                                for kj in 0..c.k {
                                    let ih = (oh * c.stride + ki * c.dil) as isize - c.pad as isize;
                                    let iw = (ow * c.stride + kj * c.dil) as isize - c.pad as isize;
                                    if ih < 0 || iw < 0 || ih as usize >= c.in_h || iw as usize >= c.in_w {
                                        continue;
                                    }
                                    let xi = ((q * cg + cl) * c.in_h + ih as usize) * c.in_w + iw as usize;
                                    let wi = off + ((o * cg + cl) * c.k + ki) * c.k + kj;
                                    grad[wi] += g * x[xi];
                                    gx[xi] += g * params[wi];
                                }
                            }
                        }
                    }
                }
            }
            gx
        }
        RefOp::MaxPool(ch, h, w, k, s, p) | RefOp::AvgPool(ch, h, w, k, s, p) => {
            let (oh_n, ow_n) = (pool_out(h, k, s, p), pool_out(w, k, s, p));
            let mut gx = vec![0.0; x.len()];
            for c in 0..ch {
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let g = gy[(c * oh_n + oh) * ow_n + ow];
                        let cells: Vec<usize> = window(oh, s, p, k, h)
                            .flat_map(|ih| window(ow, s, p, k, w).map(move |iw| (c * h + ih) * w + iw))
                            .collect();
                        if let RefOp::MaxPool(..) = op {
                            // The first maximum, as the kernel (ties only arise between relu zeros).
                            let best =
                                cells.iter().copied().fold(cells[0], |b, i| if x[i] > x[b] { i } else { b });
                            gx[best] += g;
                        } else {
                            cells.iter().for_each(|&i| gx[i] += g / (k * k) as f64);
                        }
                    }
                }
            }
            gx
        }
        RefOp::GlobalAvgPool(ch, plane) => (0..ch * plane).map(|i| gy[i / plane] / plane as f64).collect(),
        RefOp::Linear { inputs, outputs, bias } => {
            for o in 0..outputs {
                for j in 0..inputs {
                    grad[off + o * inputs + j] += gy[o] * x[j];
                }
                if bias {
                    grad[off + inputs * outputs + o] += gy[o];
                }
            }
            (0..inputs).map(|j| (0..outputs).map(|o| gy[o] * params[off + o * inputs + j]).sum()).collect()
        }
        RefOp::RowNorm(rows, dim) => {
            let mut gx = vec![0.0; x.len()];
            for r in 0..rows {
                let xs = &x[r * dim..(r + 1) * dim];
                let mean = xs.iter().sum::<f64>() / dim as f64;
                let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
                let rstd = 1.0 / (var + 1e-5).sqrt();
                let xhat: Vec<f64> = xs.iter().map(|v| (v - mean) * rstd).collect();
                let dxhat: Vec<f64> = (0..dim).map(|k| gy[r * dim + k] * params[off + k]).collect();
                let m1 = dxhat.iter().sum::<f64>() / dim as f64;
                let m2 = dxhat.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / dim as f64;
                for k in 0..dim {
                    gx[r * dim + k] = rstd * (dxhat[k] - m1 - xhat[k] * m2);
                    grad[off + k] += gy[r * dim + k] * xhat[k];
                    grad[off + dim + k] += gy[r * dim + k];
                }
            }
            gx
        }
        RefOp::GroupNorm(ch, plane, groups) => {
            let block = ch / groups * plane;
            let mut gx = vec![0.0; x.len()];
            for g in 0..groups {
                let xs = &x[g * block..(g + 1) * block];
                let mean = xs.iter().sum::<f64>() / block as f64;
                let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / block as f64;
                let rstd = 1.0 / (var + 1e-5).sqrt();
                let xhat: Vec<f64> = xs.iter().map(|v| (v - mean) * rstd).collect();
                let chan = |k: usize| (g * block + k) / plane;
                let dxhat: Vec<f64> = (0..block).map(|k| gy[g * block + k] * params[off + chan(k)]).collect();
                let m1 = dxhat.iter().sum::<f64>() / block as f64;
                let m2 = dxhat.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / block as f64;
                for k in 0..block {
                    gx[g * block + k] = rstd * (dxhat[k] - m1 - xhat[k] * m2);
                    grad[off + chan(k)] += gy[g * block + k] * xhat[k];
                    grad[off + ch + chan(k)] += gy[g * block + k];
                }
            }
            gx
        }
        RefOp::Relu => gy.iter().zip(y).map(|(g, &v)| if v > 0.0 { *g } else { 0.0 }).collect(),
        RefOp::Tanh => gy.iter().zip(y).map(|(g, v)| g * (1.0 - v * v)).collect(),
        RefOp::Sigmoid => gy.iter().zip(y).map(|(g, v)| g * v * (1.0 - v)).collect(),
        RefOp::Flatten => gy.to_vec(),
        RefOp::Add => return vec![gy.to_vec(), gy.to_vec()],
    };
    vec![gx]
}

fn ref_forward(spec: &Spec, params: &[f64], x: &[f64]) -> Vec<Vec<f64>> {
    let (lay, _, _) = spec.layout();
    let mut values = vec![x.to_vec()];
    for (node, slot) in spec.nodes.iter().zip(&lay) {
        let xs: Vec<&[f64]> = node.inputs.iter().map(|&v| values[v].as_slice()).collect();
        let y = op_forward(node.op, params, slot.map_or(0, |s| s.0), &xs);
        values.push(y);
    }
    values
}

/// Softmax cross-entropy and its gradient.
fn ref_loss(out: &[f64], label: usize) -> (f64, Vec<f64>) {
    let m = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = out.iter().map(|z| (z - m).exp()).sum();
    let grad =
        out.iter().enumerate().map(|(j, z)| (z - m).exp() / s - f64::from(u8::from(j == label))).collect();
    (s.ln() + m - out[label], grad)
}

/// Loss and the full parameter gradient of one example.
fn ref_gradient(spec: &Spec, params: &[f64], x: &[f64], label: usize) -> (f64, Vec<f64>) {
    let (lay, count, _) = spec.layout();
    let values = ref_forward(spec, params, x);
    let (loss, g_out) = ref_loss(values.last().unwrap(), label);
    let mut grads: Vec<Vec<f64>> = values.iter().map(|v| vec![0.0; v.len()]).collect();
    *grads.last_mut().unwrap() = g_out;
    let mut grad = vec![0.0; count];
    for (k, node) in spec.nodes.iter().enumerate().rev() {
        let xs: Vec<&[f64]> = node.inputs.iter().map(|&v| values[v].as_slice()).collect();
        let gy = grads[k + 1].clone();
        let gxs =
            op_backward(node.op, params, lay[k].map_or(0, |s| s.0), &xs, &values[k + 1], &gy, &mut grad);
        for (&v, gx) in node.inputs.iter().zip(gxs) {
            grads[v].iter_mut().zip(gx).for_each(|(a, b)| *a += b);
        }
    }
    (loss, grad)
}

// ---------------------------------------------------------------------------------------------
// Reference specs of the models above.

#[allow(clippy::too_many_arguments)] // mirrors conv2d's own argument list
fn conv(
    in_c: usize,
    in_h: usize,
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    bias: bool,
) -> RefOp {
    RefOp::Conv(Conv { in_c, in_h, in_w: in_h, out, k, stride, pad, dil, groups, bias })
}

fn spec_conv_pool() -> Spec {
    Spec::chain(
        vec![
            conv(2, 7, 4, 3, 1, 1, 1, 1, true),
            RefOp::Relu,
            RefOp::MaxPool(4, 7, 7, 3, 2, 1),
            conv(4, 4, 6, 2, 1, 0, 1, 2, false),
            RefOp::Tanh,
            RefOp::AvgPool(6, 3, 3, 2, 1, 1),
            conv(6, 4, 5, 2, 2, 1, 2, 1, true),
            RefOp::Sigmoid,
            RefOp::GlobalAvgPool(5, 4),
            RefOp::Linear { inputs: 5, outputs: 3, bias: true },
        ],
        2 * 7 * 7,
        3,
    )
}

fn spec_norm_chain() -> Spec {
    Spec::chain(
        vec![
            RefOp::RowNorm(3, 4),
            RefOp::Tanh,
            RefOp::Flatten,
            RefOp::Linear { inputs: 12, outputs: 5, bias: true },
            RefOp::GroupNorm(5, 1, 1),
            RefOp::Linear { inputs: 5, outputs: 3, bias: true },
        ],
        12,
        3,
    )
}

/// A graph spec: (op, inputs) per node, node k writing value k + 1.
fn graph(nodes: Vec<(RefOp, Vec<usize>)>, input_len: usize, classes: usize) -> Spec {
    Spec { nodes: nodes.into_iter().map(|(op, inputs)| Node { op, inputs }).collect(), input_len, classes }
}

fn spec_skip() -> Spec {
    graph(
        vec![
            (conv(2, 5, 4, 3, 1, 1, 1, 1, true), vec![0]), // v1 = h
            (RefOp::GroupNorm(4, 25, 2), vec![1]),
            (RefOp::Relu, vec![2]),
            (conv(4, 5, 4, 3, 1, 1, 1, 1, true), vec![3]),
            (RefOp::GroupNorm(4, 25, 1), vec![4]), // v5 = r
            (RefOp::Add, vec![1, 5]),
            (RefOp::Relu, vec![6]),
            (RefOp::Tanh, vec![1]),
            (RefOp::Add, vec![7, 8]),
            (RefOp::Flatten, vec![9]),
            (RefOp::Linear { inputs: 100, outputs: 3, bias: true }, vec![10]),
        ],
        50,
        3,
    )
}

fn spec_residual_cnn() -> Spec {
    let c = || conv(16, 32, 16, 3, 1, 1, 1, 1, true);
    let gn = || RefOp::GroupNorm(16, 1024, 4);
    let mut nodes = vec![
        (conv(3, 32, 16, 3, 1, 1, 1, 1, true), vec![0]),
        (gn(), vec![1]),
        (RefOp::Relu, vec![2]), // v3 = h
    ];
    let mut h = 3;
    for _ in 0..2 {
        let v = nodes.len(); // the next node writes value v + 1
        nodes.extend([
            (c(), vec![h]),
            (gn(), vec![v + 1]),
            (RefOp::Relu, vec![v + 2]),
            (c(), vec![v + 3]),
            (gn(), vec![v + 4]),
            (RefOp::Add, vec![h, v + 5]),
            (RefOp::Relu, vec![v + 6]),
        ]);
        h = v + 7;
    }
    nodes.push((RefOp::GlobalAvgPool(16, 1024), vec![h]));
    nodes.push((RefOp::Linear { inputs: 16, outputs: 10, bias: true }, vec![h + 1]));
    graph(nodes, 3 * 1024, 10)
}

fn spec_mnist() -> Spec {
    Spec::chain(
        vec![
            conv(1, 28, 16, 8, 2, 3, 1, 1, true),
            RefOp::Relu,
            RefOp::MaxPool(16, 14, 14, 2, 1, 0),
            conv(16, 13, 32, 4, 2, 0, 1, 1, true),
            RefOp::Relu,
            RefOp::MaxPool(32, 5, 5, 2, 1, 0),
            RefOp::Flatten,
            RefOp::Linear { inputs: 512, outputs: 32, bias: true },
            RefOp::Relu,
            RefOp::Linear { inputs: 32, outputs: 10, bias: true },
        ],
        784,
        10,
    )
}

// ---------------------------------------------------------------------------------------------
// Harness.

struct Data {
    inputs: Vec<f32>,
    labels: Vec<f32>,
    size: usize,
}

impl Data {
    fn random(spec: &Spec, size: usize, rng: &mut ChaCha8Rng) -> Data {
        let inputs = (0..size * spec.input_len).map(|_| rng.random_range(-2.0..2.0)).collect();
        let labels = (0..size).map(|_| rng.random_range(0..spec.classes) as f32).collect();
        Data { inputs, labels, size }
    }

    fn batch(&self) -> Batch<'_, f32> {
        Batch { inputs: &self.inputs, labels: &self.labels, size: self.size }
    }
}

/// Per example: loss and gradient (f64), at the model's parameters.
fn reference<M: DpModel>(model: &M, spec: &Spec, data: &Data) -> Vec<(f64, Vec<f64>)> {
    let params: Vec<f64> = model.params().iter().map(|&v| v as f64).collect();
    (0..data.size)
        .map(|i| {
            let x: Vec<f64> =
                data.inputs[i * spec.input_len..(i + 1) * spec.input_len].iter().map(|&v| v as f64).collect();
            ref_gradient(spec, &params, &x, data.labels[i] as usize)
        })
        .collect()
}

fn group_sq_norms(spec: &Spec, grad: &[f64]) -> Vec<f64> {
    let mut norms = vec![0.0; spec.layout().2];
    for (g, v) in spec.groups_of().iter().zip(grad) {
        norms[*g] += v * v;
    }
    norms
}

/// |got − want| ≤ 1e-4·max(|want|, floor): relative, with a floor for values that cancel to ~0.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let floor = 1e-3 * want.iter().fold(0.0f64, |m, v| m.max(v.abs())) + 1e-12;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-4 * w.abs().max(floor), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Per-layer clip factors from the reference norms (`clip` per group), with example `dropped` at 0.
fn factors_for(spec: &Spec, want: &[(f64, Vec<f64>)], clip: f64, dropped: Option<usize>) -> Vec<f32> {
    want.iter()
        .enumerate()
        .flat_map(|(i, (_, g))| {
            group_sq_norms(spec, g).into_iter().map(move |sq| {
                if Some(i) == dropped {
                    0.0
                } else {
                    (clip / sq.sqrt()).min(1.0) as f32
                }
            })
        })
        .collect()
}

/// The private primitive and the non-private gradient against the reference.
fn check_against_reference<M: DpModel<Input = f32>>(spec: &Spec, size: usize, clip: f64, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let data = Data::random(spec, size, &mut rng);
    let want = reference(&model, spec, &data);
    let groups = M::GROUPS.len();
    assert_eq!(groups, spec.layout().2, "{}: groups", M::NAME);
    assert_eq!(M::PARAM_COUNT, spec.layout().1, "{}: parameters", M::NAME);
    let mut ws = Workspace::new::<M>(size);

    let (mut losses, mut sq_norms) = (vec![0.0f32; size], vec![7.0f32; size * groups]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq_norms);
    let want_losses: Vec<f64> = want.iter().map(|(l, _)| *l).collect();
    assert_close(&losses, &want_losses, "losses");
    let want_norms: Vec<f64> = want.iter().flat_map(|(_, g)| group_sq_norms(spec, g)).collect();
    assert_close(&sq_norms, &want_norms, "per-example squared norms");

    let factors = factors_for(spec, &want, clip, None);
    let start: Vec<f32> = (0..M::PARAM_COUNT).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut grad = start.clone();
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    let group_of = spec.groups_of();
    let mut want_sum: Vec<f64> = start.iter().map(|&v| v as f64).collect();
    for (i, (_, g)) in want.iter().enumerate() {
        for (k, v) in g.iter().enumerate() {
            want_sum[k] += factors[i * groups + group_of[k]] as f64 * v;
        }
    }
    assert_close(&grad, &want_sum, "clipped sum");

    let mut grad = start.clone();
    model.loss_and_gradient(&mut ws, data.batch(), &mut losses, &mut grad);
    let mut want_sum: Vec<f64> = start.iter().map(|&v| v as f64).collect();
    for (_, g) in &want {
        want_sum.iter_mut().zip(g).for_each(|(s, v)| *s += v);
    }
    assert_close(&grad, &want_sum, "non-private gradient sum");
    assert_close(&losses, &want_losses, "non-private losses");

    let mut outputs = vec![0.0f32; size * spec.classes];
    model.forward(&mut ws, &data.inputs, size, &mut outputs);
    let params: Vec<f64> = model.params().iter().map(|&v| v as f64).collect();
    let want_out: Vec<f64> = (0..size)
        .flat_map(|i| {
            let x: Vec<f64> =
                data.inputs[i * spec.input_len..(i + 1) * spec.input_len].iter().map(|&v| v as f64).collect();
            ref_forward(spec, &params, &x).pop().unwrap()
        })
        .collect();
    assert_close(&outputs, &want_out, "forward outputs");
}

/// The model's norms and clipped sum with every layer forced to ghost and to direct are the same.
fn check_forced_strategies_agree<G: DpModel<Input = f32>, D: DpModel<Input = f32>>(
    spec: &Spec,
    size: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ghost = G::init(&mut rng);
    let direct = D::from_params(ghost.params().to_vec());
    assert!(G::LAYERS.iter().filter_map(|l| l.strategy).all(|s| s == NormStrategy::Ghost));
    assert!(D::LAYERS.iter().filter_map(|l| l.strategy).all(|s| s == NormStrategy::Direct));
    let data = Data::random(spec, size, &mut rng);
    let groups = G::GROUPS.len();
    let (mut wg, mut wd) = (Workspace::new::<G>(size), Workspace::new::<D>(size));
    let (mut losses, mut sq_g, mut sq_d) =
        (vec![0.0f32; size], vec![0.0f32; size * groups], vec![0.0f32; size * groups]);
    ghost.per_example_norms(&mut wg, data.batch(), &mut losses, &mut sq_g);
    direct.per_example_norms(&mut wd, data.batch(), &mut losses, &mut sq_d);
    let factors: Vec<f32> = sq_g.iter().map(|s| (0.3 / s.sqrt()).min(1.0)).collect();
    let (mut grad_g, mut grad_d) = (vec![0.0f32; G::PARAM_COUNT], vec![0.0f32; G::PARAM_COUNT]);
    ghost.clipped_sum(&mut wg, data.batch(), &factors, &mut grad_g);
    direct.clipped_sum(&mut wd, data.batch(), &factors, &mut grad_d);
    let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert_close(&sq_g, &as64(&sq_d), "ghost vs direct norms");
    assert_close(&grad_g, &as64(&grad_d), "ghost vs direct clipped sums");
}

/// A NaN input with factor 0 contributes nothing to the clipped sum; the others are the reference's.
fn check_nan_example_is_dropped<M: DpModel<Input = f32>>(spec: &Spec, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let model = M::init(&mut rng);
    let mut data = Data::random(spec, 3, &mut rng);
    let want = reference(&model, spec, &data);
    data.inputs[spec.input_len..2 * spec.input_len].iter_mut().for_each(|v| *v = f32::NAN);
    let groups = M::GROUPS.len();
    let mut ws = Workspace::new::<M>(3);
    let (mut losses, mut sq) = (vec![0.0f32; 3], vec![0.0f32; 3 * groups]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq);
    assert!(sq[groups..2 * groups].iter().any(|v| v.is_nan()), "the NaN example's norms are not finite");
    assert!(sq[..groups].iter().chain(&sq[2 * groups..]).all(|v| v.is_finite()));
    let factors = factors_for(spec, &want, 0.5, Some(1));
    let mut grad = vec![0.0f32; M::PARAM_COUNT];
    model.clipped_sum(&mut ws, data.batch(), &factors, &mut grad);
    assert!(grad.iter().all(|v| v.is_finite()));
    let group_of = spec.groups_of();
    let mut sum = vec![0.0f64; M::PARAM_COUNT];
    for (i, (_, g)) in want.iter().enumerate().filter(|(i, _)| *i != 1) {
        for (k, v) in g.iter().enumerate() {
            sum[k] += factors[i * groups + group_of[k]] as f64 * v;
        }
    }
    assert_close(&grad, &sum, "clipped sum without the NaN example");
}

fn finite_differences(spec: &Spec, seed: u64, samples: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (_, count, _) = spec.layout();
    let params: Vec<f64> = (0..count).map(|_| rng.random_range(-0.5..0.5)).collect();
    let x: Vec<f64> = (0..spec.input_len).map(|_| rng.random_range(-2.0..2.0)).collect();
    let label = rng.random_range(0..spec.classes);
    let (_, grad) = ref_gradient(spec, &params, &x, label);
    let loss_at = |p: &[f64]| ref_loss(&ref_forward(spec, p, &x).pop().unwrap(), label).0;
    let h = 1e-6;
    for k in (0..count).step_by(count / samples + 1) {
        let (mut plus, mut minus) = (params.clone(), params.clone());
        plus[k] += h;
        minus[k] -= h;
        let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
        assert!(
            (numeric - grad[k]).abs() <= 1e-6 + 1e-5 * grad[k].abs(),
            "param {k}: {numeric} vs {}",
            grad[k]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn conv_and_pooling_match_the_reference_at_b_1_and_3() {
    for (size, seed) in [(1, 1), (3, 2)] {
        check_against_reference::<ConvPool>(&spec_conv_pool(), size, 0.5, seed);
        check_against_reference::<ConvPoolGhost>(&spec_conv_pool(), size, 0.05, seed + 10);
        check_against_reference::<ConvPoolDirect>(&spec_conv_pool(), size, 1e6, seed + 20);
    }
}

#[test]
fn forced_ghost_and_forced_direct_agree_on_conv_and_linear() {
    check_forced_strategies_agree::<ConvPoolGhost, ConvPoolDirect>(&spec_conv_pool(), 3, 3);
}

#[test]
fn a_nan_example_with_factor_zero_contributes_nothing() {
    check_nan_example_is_dropped::<ConvPool>(&spec_conv_pool(), 4);
}

#[test]
fn mnist_cnn_matches_the_reference_at_b_2() {
    check_against_reference::<MnistCnn>(&spec_mnist(), 2, 0.5, 5);
}

#[test]
fn reference_gradients_match_central_finite_differences() {
    finite_differences(&spec_conv_pool(), 6, 400);
    finite_differences(&spec_mnist(), 7, 150);
}

#[test]
fn layer_norm_over_rows_and_vectors_matches_the_reference() {
    for (size, seed) in [(1, 11), (3, 12)] {
        check_against_reference::<NormChain>(&spec_norm_chain(), size, 0.5, seed);
    }
    check_nan_example_is_dropped::<NormChain>(&spec_norm_chain(), 13);
    finite_differences(&spec_norm_chain(), 14, 200);
}

#[test]
fn a_value_read_three_times_matches_the_reference() {
    for (size, seed) in [(1, 21), (3, 22)] {
        check_against_reference::<Skip>(&spec_skip(), size, 0.5, seed);
    }
    check_nan_example_is_dropped::<Skip>(&spec_skip(), 23);
    finite_differences(&spec_skip(), 24, 300);
}

#[test]
fn residual_cnn_matches_the_reference_at_b_2() {
    check_against_reference::<ResidualCnn>(&spec_residual_cnn(), 2, 0.5, 31);
    finite_differences(&spec_residual_cnn(), 32, 8);
}
