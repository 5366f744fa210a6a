//! A reference network: a list of ops (one may be a residual block) run on one example, reading its
//! parameters by PyTorch name from a flat f64 buffer laid out by a model's `PARAMS`, returning the
//! loss and the gradient in the same layout. Looking parameters up by name keeps the reference
//! independent of buffer order; [`Network::check_layout`] asserts that names, shapes and the set of
//! parameters are exactly the ones the ops imply.

use std::ops::Range;

use super::attention::Mha;
use super::conv::{conv2d_backward, conv2d_forward, Conv2dGeom};
use super::dense::{linear_backward, linear_forward, Activation};
use super::embedding::{
    embedding_backward, embedding_forward, mean_over_sequence_backward, mean_over_sequence_forward,
};
use super::loss::RefLoss;
use super::lstm::{lstm_backward, lstm_forward, LstmParams};
use super::norm::{group_norm_backward, group_norm_forward, layer_norm_backward, layer_norm_forward};
use super::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward, global_avg_pool_forward,
    max_pool2d_backward, max_pool2d_forward, PoolGeom,
};

/// One op of a reference network; `name` is the PyTorch module name its parameters hang under.
#[derive(Clone, Debug)]
pub enum Op {
    /// `[in] → [out]`, or at every position `[T, in] → [T, out]`; parameters `name.weight [out, in]`,
    /// `name.bias [out]`.
    Linear {
        name: &'static str,
        out: usize,
        bias: bool,
    },
    /// PEFT's LoRA linear, `y = W x + b + (alpha/rank) · B A x` (on a vector, or at every position of a
    /// sequence); parameters `name.weight [out, in]`, `name.bias [out]`, `name.lora_A.weight
    /// [rank, in]`, `name.lora_B.weight [out, rank]`. The gradient of every one is computed (the model
    /// trains only A and B).
    LoraLinear {
        name: &'static str,
        out: usize,
        rank: usize,
        alpha: f64,
    },
    /// `[C, H, W] → [out, H′, W′]`; parameters `name.weight [out, C / groups, k, k]`, `name.bias [out]`.
    Conv2d(Conv),
    Act(Activation),
    MaxPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// `[C, H, W] → [C]`.
    GlobalAvgPool,
    /// `[…] → [n]`, values in place (row-major NCHW).
    Flatten,
    /// `[C, …]` unchanged; parameters `name.weight [C]`, `name.bias [C]`.
    GroupNorm {
        name: &'static str,
        groups: usize,
    },
    /// `torch.nn.LayerNorm(D)` on `[D]` or on every row of `[T, D]`; parameters `name.weight [D]`,
    /// `name.bias [D]`.
    LayerNorm {
        name: &'static str,
    },
    /// Token ids `[T] → [T, dim]`; parameter `name.weight [vocab, dim]`.
    Embedding {
        name: &'static str,
        vocab: usize,
        dim: usize,
    },
    /// `[T, D] → [D]`.
    MeanOverSequence,
    /// `[T, D] → [D]`: the first position.
    FirstOfSequence,
    /// `[C, H, W] → [(H/P)(W/P), C·P·P]`: the image's `P×P` patches in row-major order, each
    /// ordered `[C][P][P]` (what `Conv2d(kernel_size = P, stride = P)` reads).
    Patches {
        size: usize,
    },
    /// `[T, D] → [T, D]`, `x + P`; parameter `name.weight [T, D]`.
    PositionEmbedding {
        name: &'static str,
    },
    /// Self-attention `[T, D] → [T, D]` (see `attention.rs`); parameters `name.in_proj_weight [3D, D]`,
    /// `name.in_proj_bias [3D]`, `name.out_proj.weight [D, D]`, `name.out_proj.bias [D]`.
    MultiHeadAttention {
        name: &'static str,
        heads: usize,
        causal: bool,
    },
    /// `[T, I] → [T, hidden]`; parameters `name.weight_ih_l0 [4H, I]`, `name.weight_hh_l0 [4H, H]` and
    /// every bias named in `biases` (each `[4H]`; the forward adds them all, each gets the gradient).
    Lstm {
        name: &'static str,
        hidden: usize,
        biases: &'static [&'static str],
    },
    /// `x + body(x)`; the body must keep the shape.
    Residual(Vec<Op>),
}

/// A convolution's attributes, as `conv2d(...)` takes them (square kernel, same on both axes).
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    pub name: &'static str,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv {
    /// `conv2d(out, kernel, stride, padding)` with bias, dilation 1, one group.
    pub fn new(name: &'static str, out: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        Conv { name, out, kernel, stride, padding, dilation: 1, groups: 1, bias: true }
    }

    fn geom(&self, shape: &[usize]) -> Conv2dGeom {
        assert_eq!(shape.len(), 3, "conv2d takes [C, H, W], got {shape:?}");
        Conv2dGeom {
            in_channels: shape[0],
            out_channels: self.out,
            height: shape[1],
            width: shape[2],
            kernel: (self.kernel, self.kernel),
            stride: (self.stride, self.stride),
            padding: (self.padding, self.padding),
            dilation: (self.dilation, self.dilation),
            groups: self.groups,
        }
    }

    fn weight_shape(&self, shape: &[usize]) -> [usize; 4] {
        [self.out, shape[0] / self.groups, self.kernel, self.kernel]
    }
}

/// One parameter tensor of the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub group: usize,
}

/// The flat buffer's layout, taken from a model's `PARAMS`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub entries: Vec<Entry>,
    pub count: usize,
    /// Groups of the trained tensors (a frozen tensor's group is `dp::FROZEN_GROUP`).
    pub groups: usize,
    /// The trained prefix of the buffer (every trained tensor lies in it, every frozen one after it).
    pub trained: usize,
}

impl Layout {
    /// The layout of `specs` (a model's `PARAMS`).
    pub fn of(specs: &[dp::ParamSpec]) -> Self {
        let entries: Vec<Entry> = specs
            .iter()
            .map(|p| {
                assert_eq!(
                    p.shape.iter().product::<usize>(),
                    p.len,
                    "{}: len is not the product of shape",
                    p.name
                );
                Entry { name: p.name.to_string(), shape: p.shape.to_vec(), offset: p.offset, group: p.group }
            })
            .collect();
        let count = specs.iter().map(|p| p.offset + p.len).max().unwrap_or(0);
        assert_eq!(count, specs.iter().map(|p| p.len).sum::<usize>(), "parameters overlap or leave gaps");
        let trained_specs = specs.iter().filter(|p| p.group != dp::FROZEN_GROUP);
        let groups = trained_specs.clone().map(|p| p.group + 1).max().unwrap_or(0);
        let trained = trained_specs.map(|p| p.offset + p.len).max().unwrap_or(0);
        for p in specs.iter().filter(|p| p.group == dp::FROZEN_GROUP) {
            assert!(p.offset >= trained, "{}: a frozen tensor inside the trained prefix", p.name);
        }
        Layout { entries, count, groups, trained }
    }

    /// The range of parameter `name`, which must have `shape`.
    pub fn range(&self, name: &str, shape: &[usize]) -> Range<usize> {
        let e = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no parameter named {name} in {:?}", self.names()));
        assert_eq!(e.shape, shape, "{name}: shape");
        e.offset..e.offset + shape.iter().product::<usize>()
    }

    /// The parameter names in buffer order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The group of every element of the flat buffer (`dp::FROZEN_GROUP` for a frozen one).
    pub fn group_of_each(&self) -> Vec<usize> {
        let mut groups = vec![0; self.count];
        for e in &self.entries {
            let len: usize = e.shape.iter().product();
            groups[e.offset..e.offset + len].iter_mut().for_each(|g| *g = e.group);
        }
        groups
    }

    /// The squared norm of `grad` restricted to each group (frozen tensors are in none).
    pub fn group_sq_norms(&self, grad: &[f64]) -> Vec<f64> {
        let mut norms = vec![0.0; self.groups];
        for (g, v) in self.group_of_each().into_iter().zip(grad) {
            if g != dp::FROZEN_GROUP {
                norms[g] += v * v;
            }
        }
        norms
    }
}

/// A reference network for one model.
#[derive(Clone, Debug)]
pub struct Network {
    pub ops: Vec<Op>,
    pub input_shape: Vec<usize>,
    pub loss: RefLoss,
    pub layout: Layout,
}

fn pool_geom(shape: &[usize], kernel: usize, stride: usize, padding: usize) -> PoolGeom {
    assert_eq!(shape.len(), 3, "pooling takes [C, H, W], got {shape:?}");
    PoolGeom { channels: shape[0], height: shape[1], width: shape[2], kernel, stride, padding }
}

/// The tokens of an embedding's input (ids stored exactly as f64).
fn tokens(x: &[f64]) -> Vec<usize> {
    x.iter().map(|&v| v as usize).collect()
}

/// For each value of the patch sequence, the index of the image value it is.
fn patch_order(shape: &[usize], p: usize) -> Vec<usize> {
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let mut order = Vec::with_capacity(c * h * w);
    for py in 0..h / p {
        for px in 0..w / p {
            for ch in 0..c {
                for dy in 0..p {
                    for dx in 0..p {
                        order.push((ch * h + py * p + dy) * w + px * p + dx);
                    }
                }
            }
        }
    }
    order
}

/// The parameters `op` reads on input `shape`: (name, shape).
fn op_params(op: &Op, shape: &[usize]) -> Vec<(String, Vec<usize>)> {
    let p = |name: &str, suffix: &str, s: Vec<usize>| (format!("{name}.{suffix}"), s);
    match op {
        Op::Linear { name, out, bias } => {
            let mut v = vec![p(name, "weight", vec![*out, *shape.last().unwrap()])];
            v.extend(bias.then(|| p(name, "bias", vec![*out])));
            v
        }
        Op::LoraLinear { name, out, rank, .. } => {
            let inputs = *shape.last().unwrap();
            vec![
                p(name, "weight", vec![*out, inputs]),
                p(name, "bias", vec![*out]),
                p(name, "lora_A.weight", vec![*rank, inputs]),
                p(name, "lora_B.weight", vec![*out, *rank]),
            ]
        }
        Op::Conv2d(c) => {
            let mut v = vec![p(c.name, "weight", c.weight_shape(shape).to_vec())];
            v.extend(c.bias.then(|| p(c.name, "bias", vec![c.out])));
            v
        }
        Op::LayerNorm { name } => {
            let d = *shape.last().unwrap();
            vec![p(name, "weight", vec![d]), p(name, "bias", vec![d])]
        }
        Op::GroupNorm { name, .. } => {
            vec![p(name, "weight", vec![shape[0]]), p(name, "bias", vec![shape[0]])]
        }
        Op::Embedding { name, vocab, dim } => vec![p(name, "weight", vec![*vocab, *dim])],
        Op::PositionEmbedding { name } => vec![p(name, "weight", shape.to_vec())],
        Op::MultiHeadAttention { name, .. } => {
            let d = shape[1];
            vec![
                p(name, "in_proj_weight", vec![3 * d, d]),
                p(name, "in_proj_bias", vec![3 * d]),
                p(name, "out_proj.weight", vec![d, d]),
                p(name, "out_proj.bias", vec![d]),
            ]
        }
        Op::Lstm { name, hidden, biases } => {
            let mut v = vec![
                p(name, "weight_ih_l0", vec![4 * hidden, shape[1]]),
                p(name, "weight_hh_l0", vec![4 * hidden, *hidden]),
            ];
            v.extend(biases.iter().map(|b| p(name, b, vec![4 * hidden])));
            v
        }
        Op::Residual(body) => {
            let mut shape = shape.to_vec();
            let mut v = Vec::new();
            for op in body {
                v.extend(op_params(op, &shape));
                shape = output_shape(op, &shape);
            }
            v
        }
        _ => Vec::new(),
    }
}

/// The output shape of `op` on input `shape`.
pub fn output_shape(op: &Op, shape: &[usize]) -> Vec<usize> {
    match op {
        Op::Linear { out, .. } | Op::LoraLinear { out, .. } => match shape.len() {
            1 => vec![*out],
            2 => vec![shape[0], *out],
            _ => panic!("linear takes a vector or a sequence; flatten first (got {shape:?})"),
        },
        Op::Conv2d(c) => {
            let (h, w) = c.geom(shape).output_size();
            vec![c.out, h, w]
        }
        Op::MaxPool2d { kernel, stride, padding } | Op::AvgPool2d { kernel, stride, padding } => {
            let (h, w) = pool_geom(shape, *kernel, *stride, *padding).output_size();
            vec![shape[0], h, w]
        }
        Op::GlobalAvgPool => vec![shape[0]],
        Op::Flatten => vec![shape.iter().product()],
        Op::Embedding { dim, .. } => vec![shape[0], *dim],
        Op::MeanOverSequence | Op::FirstOfSequence => vec![shape[1]],
        Op::Patches { size } => {
            assert!(
                shape.len() == 3 && shape[1].is_multiple_of(*size) && shape[2].is_multiple_of(*size),
                "patches of {shape:?}"
            );
            vec![(shape[1] / size) * (shape[2] / size), shape[0] * size * size]
        }
        Op::PositionEmbedding { .. } | Op::MultiHeadAttention { .. } => {
            assert_eq!(shape.len(), 2, "a sequence op takes [T, D], got {shape:?}");
            shape.to_vec()
        }
        Op::Lstm { hidden, .. } => vec![shape[0], *hidden],
        Op::LayerNorm { .. } => {
            assert!(matches!(shape.len(), 1 | 2), "layer_norm takes [D] or [T, D], got {shape:?}");
            shape.to_vec()
        }
        Op::Act(_) | Op::GroupNorm { .. } => shape.to_vec(),
        Op::Residual(body) => {
            let out = body.iter().fold(shape.to_vec(), |s, op| output_shape(op, &s));
            assert_eq!(out, shape, "a residual body must keep the shape");
            out
        }
    }
}

impl Network {
    /// A network over a model's parameter layout (`M::PARAMS`) and loss.
    pub fn new(ops: Vec<Op>, input_shape: &[usize], loss: dp::Loss, params: &[dp::ParamSpec]) -> Self {
        Network {
            ops,
            input_shape: input_shape.to_vec(),
            loss: RefLoss::of(loss),
            layout: Layout::of(params),
        }
    }

    /// The (name, shape) of every parameter the ops read, in op order.
    pub fn expected_params(&self) -> Vec<(String, Vec<usize>)> {
        let mut shape = self.input_shape.clone();
        let mut v = Vec::new();
        for op in &self.ops {
            v.extend(op_params(op, &shape));
            shape = output_shape(op, &shape);
        }
        v
    }

    /// Asserts that the layout holds exactly the parameters the ops read, with PyTorch's shapes.
    pub fn check_layout(&self) {
        let mut want = self.expected_params();
        let mut got: Vec<(String, Vec<usize>)> =
            self.layout.entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "the model's parameters are not the reference's");
    }

    fn param<'a>(&self, params: &'a [f64], name: &str, suffix: &str, shape: &[usize]) -> &'a [f64] {
        &params[self.layout.range(&format!("{name}.{suffix}"), shape)]
    }

    fn forward_op(&self, op: &Op, params: &[f64], x: &[f64], shape: &[usize]) -> Vec<f64> {
        match op {
            Op::Linear { name, out, bias } => {
                let inputs = *shape.last().unwrap();
                let w = self.param(params, name, "weight", &[*out, inputs]);
                let b = bias.then(|| self.param(params, name, "bias", &[*out]));
                x.chunks(inputs).flat_map(|row| linear_forward(w, b, row, *out)).collect()
            }
            Op::LoraLinear { name, out, rank, alpha } => {
                let inputs = *shape.last().unwrap();
                let w = self.param(params, name, "weight", &[*out, inputs]);
                let b = self.param(params, name, "bias", &[*out]);
                let a_w = self.param(params, name, "lora_A.weight", &[*rank, inputs]);
                let b_w = self.param(params, name, "lora_B.weight", &[*out, *rank]);
                let scale = alpha / *rank as f64;
                x.chunks(inputs)
                    .flat_map(|row| {
                        let adapter = linear_forward(b_w, None, &linear_forward(a_w, None, row, *rank), *out);
                        let base = linear_forward(w, Some(b), row, *out);
                        base.into_iter().zip(adapter).map(|(y, z)| y + scale * z).collect::<Vec<_>>()
                    })
                    .collect()
            }
            Op::Conv2d(c) => {
                let w = self.param(params, c.name, "weight", &c.weight_shape(shape));
                let b = c.bias.then(|| self.param(params, c.name, "bias", &[c.out]));
                conv2d_forward(&c.geom(shape), w, b, x)
            }
            Op::Act(a) => a.forward(x),
            Op::MaxPool2d { kernel, stride, padding } => {
                max_pool2d_forward(&pool_geom(shape, *kernel, *stride, *padding), x)
            }
            Op::AvgPool2d { kernel, stride, padding } => {
                avg_pool2d_forward(&pool_geom(shape, *kernel, *stride, *padding), x)
            }
            Op::GlobalAvgPool => global_avg_pool_forward(x, x.len() / shape[0]),
            Op::Flatten => x.to_vec(),
            Op::GroupNorm { name, groups } => {
                let c = shape[0];
                let (gamma, beta) =
                    (self.param(params, name, "weight", &[c]), self.param(params, name, "bias", &[c]));
                group_norm_forward(x, c, *groups, gamma, beta)
            }
            Op::LayerNorm { name } => {
                let d = *shape.last().unwrap();
                let (gamma, beta) =
                    (self.param(params, name, "weight", &[d]), self.param(params, name, "bias", &[d]));
                x.chunks(d).flat_map(|row| layer_norm_forward(row, gamma, beta)).collect()
            }
            Op::Embedding { name, vocab, dim } => {
                embedding_forward(self.param(params, name, "weight", &[*vocab, *dim]), *dim, &tokens(x))
            }
            Op::MeanOverSequence => mean_over_sequence_forward(x, shape[1]),
            Op::FirstOfSequence => x[..shape[1]].to_vec(),
            Op::Patches { size } => patch_order(shape, *size).iter().map(|&k| x[k]).collect(),
            Op::PositionEmbedding { name } => {
                let table = self.param(params, name, "weight", shape);
                x.iter().zip(table).map(|(a, b)| a + b).collect()
            }
            Op::MultiHeadAttention { name, heads, causal } => {
                self.mha(params, name, *heads, *causal, shape[1]).forward(x, shape[1])
            }
            Op::Lstm { name, hidden, biases } => {
                let bias = self.lstm_bias(params, name, *hidden, biases);
                lstm_forward(&self.lstm_params(params, name, *hidden, shape[1], &bias), x)
            }
            Op::Residual(body) => {
                let inner = self.forward_seq(body, params, x, shape).pop().unwrap().0;
                x.iter().zip(inner).map(|(a, b)| a + b).collect()
            }
        }
    }

    fn mha<'a>(&self, params: &'a [f64], name: &str, heads: usize, causal: bool, d: usize) -> Mha<'a> {
        Mha {
            in_weight: self.param(params, name, "in_proj_weight", &[3 * d, d]),
            in_bias: self.param(params, name, "in_proj_bias", &[3 * d]),
            out_weight: self.param(params, name, "out_proj.weight", &[d, d]),
            out_bias: self.param(params, name, "out_proj.bias", &[d]),
            heads,
            causal,
        }
    }

    fn lstm_bias(&self, params: &[f64], name: &str, hidden: usize, biases: &[&str]) -> Vec<f64> {
        let mut bias = vec![0.0; 4 * hidden];
        for b in biases {
            bias.iter_mut().zip(self.param(params, name, b, &[4 * hidden])).for_each(|(s, v)| *s += v);
        }
        bias
    }

    fn lstm_params<'a>(
        &self,
        params: &'a [f64],
        name: &str,
        hidden: usize,
        inputs: usize,
        bias: &'a [f64],
    ) -> LstmParams<'a> {
        LstmParams {
            weight_ih: self.param(params, name, "weight_ih_l0", &[4 * hidden, inputs]),
            weight_hh: self.param(params, name, "weight_hh_l0", &[4 * hidden, hidden]),
            bias,
            hidden,
        }
    }

    /// Adds `values` into the gradient of parameter `name.suffix`.
    fn accumulate(&self, grad: &mut [f64], name: &str, suffix: &str, shape: &[usize], values: &[f64]) {
        grad[self.layout.range(&format!("{name}.{suffix}"), shape)]
            .iter_mut()
            .zip(values)
            .for_each(|(g, v)| *g += v);
    }

    /// Accumulates the parameter gradients of `op` into `grad`; returns the input gradient.
    fn backward_op(
        &self,
        op: &Op,
        params: &[f64],
        x: &[f64],
        shape: &[usize],
        dy: &[f64],
        grad: &mut [f64],
    ) -> Vec<f64> {
        match op {
            Op::Linear { name, out, bias } => {
                let inputs = *shape.last().unwrap();
                let w = self.param(params, name, "weight", &[*out, inputs]);
                let mut dx = Vec::with_capacity(x.len());
                for (row, drow) in x.chunks(inputs).zip(dy.chunks(*out)) {
                    let (dxr, dw, db) = linear_backward(w, row, drow);
                    self.accumulate(grad, name, "weight", &[*out, inputs], &dw);
                    if *bias {
                        self.accumulate(grad, name, "bias", &[*out], &db);
                    }
                    dx.extend(dxr);
                }
                dx
            }
            Op::LoraLinear { name, out, rank, alpha } => {
                let inputs = *shape.last().unwrap();
                let w = self.param(params, name, "weight", &[*out, inputs]);
                let a_w = self.param(params, name, "lora_A.weight", &[*rank, inputs]);
                let b_w = self.param(params, name, "lora_B.weight", &[*out, *rank]);
                let scale = alpha / *rank as f64;
                let mut dx = Vec::with_capacity(x.len());
                for (row, drow) in x.chunks(inputs).zip(dy.chunks(*out)) {
                    let (dx_base, dw, db) = linear_backward(w, row, drow);
                    self.accumulate(grad, name, "weight", &[*out, inputs], &dw);
                    self.accumulate(grad, name, "bias", &[*out], &db);
                    let scaled: Vec<f64> = drow.iter().map(|g| scale * g).collect();
                    let hidden = linear_forward(a_w, None, row, *rank);
                    let (d_hidden, d_b, _) = linear_backward(b_w, &hidden, &scaled);
                    self.accumulate(grad, name, "lora_B.weight", &[*out, *rank], &d_b);
                    let (dx_adapter, d_a, _) = linear_backward(a_w, row, &d_hidden);
                    self.accumulate(grad, name, "lora_A.weight", &[*rank, inputs], &d_a);
                    dx.extend(dx_base.iter().zip(dx_adapter).map(|(a, b)| a + b));
                }
                dx
            }
            Op::Conv2d(c) => {
                let wshape = c.weight_shape(shape);
                let (dx, dw, db) =
                    conv2d_backward(&c.geom(shape), self.param(params, c.name, "weight", &wshape), x, dy);
                self.accumulate(grad, c.name, "weight", &wshape, &dw);
                if c.bias {
                    self.accumulate(grad, c.name, "bias", &[c.out], &db);
                }
                dx
            }
            Op::Act(a) => a.backward(x, dy),
            Op::MaxPool2d { kernel, stride, padding } => {
                max_pool2d_backward(&pool_geom(shape, *kernel, *stride, *padding), x, dy)
            }
            Op::AvgPool2d { kernel, stride, padding } => {
                avg_pool2d_backward(&pool_geom(shape, *kernel, *stride, *padding), x, dy)
            }
            Op::GlobalAvgPool => global_avg_pool_backward(dy, x.len() / shape[0]),
            Op::Flatten => dy.to_vec(),
            Op::GroupNorm { name, groups } => {
                let c = shape[0];
                let (dx, dgamma, dbeta) =
                    group_norm_backward(x, c, *groups, self.param(params, name, "weight", &[c]), dy);
                self.accumulate(grad, name, "weight", &[c], &dgamma);
                self.accumulate(grad, name, "bias", &[c], &dbeta);
                dx
            }
            Op::LayerNorm { name } => {
                let d = *shape.last().unwrap();
                let gamma = self.param(params, name, "weight", &[d]);
                let mut dx = Vec::with_capacity(x.len());
                for (row, drow) in x.chunks(d).zip(dy.chunks(d)) {
                    let (dxr, dgamma, dbeta) = layer_norm_backward(row, gamma, drow);
                    self.accumulate(grad, name, "weight", &[d], &dgamma);
                    self.accumulate(grad, name, "bias", &[d], &dbeta);
                    dx.extend(dxr);
                }
                dx
            }
            Op::Embedding { name, vocab, dim } => {
                let range = self.layout.range(&format!("{name}.weight"), &[*vocab, *dim]);
                embedding_backward(*dim, &tokens(x), dy, &mut grad[range]);
                vec![0.0; x.len()] // token ids have no gradient
            }
            Op::MeanOverSequence => mean_over_sequence_backward(dy, shape[0]),
            Op::Patches { size } => {
                let mut dx = vec![0.0; x.len()];
                patch_order(shape, *size).iter().zip(dy).for_each(|(&k, g)| dx[k] += g);
                dx
            }
            Op::FirstOfSequence => {
                let mut dx = vec![0.0; x.len()];
                dx[..shape[1]].copy_from_slice(dy);
                dx
            }
            Op::PositionEmbedding { name } => {
                self.accumulate(grad, name, "weight", shape, dy);
                dy.to_vec()
            }
            Op::MultiHeadAttention { name, heads, causal } => {
                let d = shape[1];
                let g = self.mha(params, name, *heads, *causal, d).backward(x, d, dy);
                self.accumulate(grad, name, "in_proj_weight", &[3 * d, d], &g.in_weight);
                self.accumulate(grad, name, "in_proj_bias", &[3 * d], &g.in_bias);
                self.accumulate(grad, name, "out_proj.weight", &[d, d], &g.out_weight);
                self.accumulate(grad, name, "out_proj.bias", &[d], &g.out_bias);
                g.input
            }
            Op::Lstm { name, hidden, biases } => {
                let h = *hidden;
                let bias = self.lstm_bias(params, name, h, biases);
                let g = lstm_backward(&self.lstm_params(params, name, h, shape[1], &bias), x, dy);
                self.accumulate(grad, name, "weight_ih_l0", &[4 * h, shape[1]], &g.weight_ih);
                self.accumulate(grad, name, "weight_hh_l0", &[4 * h, h], &g.weight_hh);
                for b in *biases {
                    self.accumulate(grad, name, b, &[4 * h], &g.bias);
                }
                g.input
            }
            Op::Residual(body) => {
                let inner = self.backward_seq(body, params, x, shape, dy, grad);
                dy.iter().zip(inner).map(|(a, b)| a + b).collect()
            }
        }
    }

    /// The input of every op of `ops` with its shape, then the output.
    fn forward_seq(
        &self,
        ops: &[Op],
        params: &[f64],
        x: &[f64],
        shape: &[usize],
    ) -> Vec<(Vec<f64>, Vec<usize>)> {
        let mut values = vec![(x.to_vec(), shape.to_vec())];
        for op in ops {
            let (v, s) = values.last().unwrap();
            let next = (self.forward_op(op, params, v, s), output_shape(op, s));
            assert_eq!(next.0.len(), next.1.iter().product::<usize>(), "{op:?}: output length");
            values.push(next);
        }
        values
    }

    fn backward_seq(
        &self,
        ops: &[Op],
        params: &[f64],
        x: &[f64],
        shape: &[usize],
        dy: &[f64],
        grad: &mut [f64],
    ) -> Vec<f64> {
        let values = self.forward_seq(ops, params, x, shape);
        self.backward_from(ops, params, &values, dy, grad)
    }

    /// Backpropagates `dy` through `ops`, whose inputs `forward_seq` recorded in `values`.
    fn backward_from(
        &self,
        ops: &[Op],
        params: &[f64],
        values: &[(Vec<f64>, Vec<usize>)],
        dy: &[f64],
        grad: &mut [f64],
    ) -> Vec<f64> {
        let mut g = dy.to_vec();
        for (op, (v, s)) in ops.iter().zip(values).rev() {
            g = self.backward_op(op, params, v, s, &g, grad);
        }
        g
    }

    /// The outputs (logits or predictions) of one example.
    pub fn output(&self, params: &[f64], x: &[f64]) -> Vec<f64> {
        assert_eq!(params.len(), self.layout.count, "parameter buffer length");
        assert_eq!(x.len(), self.input_shape.iter().product::<usize>(), "input length");
        self.forward_seq(&self.ops, params, x, &self.input_shape).pop().unwrap().0
    }

    /// The loss of one example.
    pub fn loss(&self, params: &[f64], x: &[f64], label: &[f64]) -> f64 {
        self.loss.value_and_gradient(&self.output(params, x), label).0
    }

    /// The loss of one example and its gradient, in the flat layout.
    pub fn loss_and_gradient(&self, params: &[f64], x: &[f64], label: &[f64]) -> (f64, Vec<f64>) {
        let (loss, grad, _) = self.evaluate(params, x, label);
        (loss, grad)
    }

    /// The loss of one example, its gradient in the flat layout, and the outputs, from one forward.
    pub fn evaluate(&self, params: &[f64], x: &[f64], label: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        assert_eq!(params.len(), self.layout.count, "parameter buffer length");
        assert_eq!(x.len(), self.input_shape.iter().product::<usize>(), "input length");
        let values = self.forward_seq(&self.ops, params, x, &self.input_shape);
        let out = values.last().unwrap().0.clone();
        let (loss, dy) = self.loss.value_and_gradient(&out, label);
        let mut grad = vec![0.0; self.layout.count];
        self.backward_from(&self.ops, params, &values[..self.ops.len()], &dy, &mut grad);
        (loss, grad, out)
    }
}

impl Network {
    /// A network with its own layout: the parameters the ops read, in op order, one group per
    /// module name (for testing the reference itself, without a compiled model).
    pub fn standalone(ops: Vec<Op>, input_shape: &[usize], loss: RefLoss) -> Self {
        let mut net = Network {
            ops,
            input_shape: input_shape.to_vec(),
            loss,
            layout: Layout { entries: vec![], count: 0, groups: 0, trained: 0 },
        };
        let (mut offset, mut modules) = (0, Vec::<String>::new());
        for (name, shape) in net.expected_params() {
            let module = name.rsplit_once('.').map_or(name.clone(), |(m, _)| m.to_string());
            let group = modules.iter().position(|m| *m == module).unwrap_or_else(|| {
                modules.push(module);
                modules.len() - 1
            });
            let len: usize = shape.iter().product();
            net.layout.entries.push(Entry { name, shape, offset, group });
            offset += len;
        }
        net.layout.count = offset;
        net.layout.groups = modules.len();
        net.layout.trained = offset;
        net
    }
}

/// PyTorch's `bias_ih_l0 + bias_hh_l0` is one bias in our models, under the first name.
pub const ONE_BIAS: &[&str] = &["bias_ih_l0"];

/// The small token network several tests share — `emb` embedding(5 → 3), `lstm` LSTM(4), the mean
/// over the sequence, `fc` linear(1) — over the parameter layout of `M`, a model with those fields
/// (forced norms and frozen layers change the layout, not the network).
pub fn embedding_lstm_mean_linear<M: dp::DpModel>() -> Network {
    Network::new(
        vec![
            Op::Embedding { name: "emb", vocab: 5, dim: 3 },
            Op::Lstm { name: "lstm", hidden: 4, biases: ONE_BIAS },
            Op::MeanOverSequence,
            Op::Linear { name: "fc", out: 1, bias: true },
        ],
        M::INPUT_SHAPE,
        M::LOSS,
        M::PARAMS,
    )
}
