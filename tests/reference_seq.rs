//! The compiled sequence models (token input, embedding, mean over the sequence, LSTM) against an f64
//! reference written only for this test and run one example at a time: losses, per-example gradient
//! norms per group, clipped sums and the non-private gradient; the reference's own gradients against
//! central finite differences; ghost and direct norms of the LSTM forced against each other.

use dp::models::{EmbeddingNet, LstmNet};
use dp::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Models declared for the test.

/// embedding 20×4 → mean over 6 tokens → linear 4 → 3.
#[dp_model(input = tokens(len = 6, vocab = 20), loss = cross_entropy(classes = 3))]
struct EmbedMean {
    #[layer(embedding(dim = 4), mean)]
    embedding: Embedding,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// embedding 20×4 (vocab declared) → LSTM 5 over 7 tokens → mean → linear 5 → 3; planner's strategies.
#[dp_model(input = tokens(len = 7, vocab = 20), loss = cross_entropy(classes = 3))]
struct EmbedLstm {
    #[layer(embedding(dim = 4, vocab = 20))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// [`EmbedLstm`] with the ghost norm forced on both LSTM weights.
#[dp_model(input = tokens(len = 7, vocab = 20), loss = cross_entropy(classes = 3))]
struct EmbedLstmGhost {
    #[layer(embedding(dim = 4))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5, norms = ghost), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

/// [`EmbedLstm`] with the direct norm forced on both LSTM weights.
#[dp_model(input = tokens(len = 7, vocab = 20), loss = cross_entropy(classes = 3))]
struct EmbedLstmDirect {
    #[layer(embedding(dim = 4))]
    embedding: Embedding,
    #[layer(lstm(hidden = 5, norms = direct), mean)]
    lstm: Lstm,
    #[layer(linear(out = 3))]
    fc: Linear,
}

// ---------------------------------------------------------------------------------------------
// The f64 reference: embedding → [LSTM] → mean → linear → softmax cross-entropy, one example.

#[derive(Clone, Copy)]
struct Ref {
    vocab: usize,
    steps: usize,
    dim: usize,
    /// LSTM hidden width, if the model has one.
    hidden: Option<usize>,
    classes: usize,
}

/// Offsets of every tensor in the flat buffer (PyTorch order, as the models declare them).
struct Layout {
    table: usize,
    w_ih: usize,
    w_hh: usize,
    bias: usize,
    fc_w: usize,
    fc_b: usize,
    count: usize,
}

impl Ref {
    fn width(&self) -> usize {
        self.hidden.unwrap_or(self.dim)
    }

    fn layout(&self) -> Layout {
        let (e, k) = (self.dim, self.classes);
        let table = 0;
        let w_ih = self.vocab * e;
        let (w_hh, bias, fc_w) = match self.hidden {
            Some(h) => (w_ih + 4 * h * e, w_ih + 4 * h * e + 4 * h * h, w_ih + 4 * h * (e + h + 1)),
            None => (w_ih, w_ih, w_ih),
        };
        let fc_b = fc_w + k * self.width();
        Layout { table, w_ih, w_hh, bias, fc_w, fc_b, count: fc_b + k }
    }

    /// The parameter group of every parameter: embedding, [lstm], fc.
    fn groups(&self) -> Vec<usize> {
        let l = self.layout();
        (0..l.count)
            .map(|j| match self.hidden {
                Some(_) if j >= l.fc_w => 2,
                Some(_) if j >= l.w_ih => 1,
                None if j >= l.fc_w => 1,
                _ => 0,
            })
            .collect()
    }

    fn group_count(&self) -> usize {
        if self.hidden.is_some() {
            3
        } else {
            2
        }
    }

    /// Loss and full parameter gradient of one example, by backpropagation (through time).
    fn gradient(&self, p: &[f64], tokens: &[u32], label: usize) -> (f64, Vec<f64>) {
        let (t_n, e, k, w) = (self.steps, self.dim, self.classes, self.width());
        let l = self.layout();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&v| p[l.table + v as usize * e..l.table + (v as usize + 1) * e].to_vec())
            .collect();
        // LSTM forward, saving activated gates, cells and h_{t−1}.
        let (mut gates, mut cells, mut hprev, mut seq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        match self.hidden {
            Some(h) => {
                let (mut hs, mut cs) = (vec![0.0; h], vec![0.0; h]);
                for x in &xs {
                    let pre: Vec<f64> = (0..4 * h)
                        .map(|r| {
                            p[l.bias + r]
                                + (0..e).map(|c| p[l.w_ih + r * e + c] * x[c]).sum::<f64>()
                                + (0..h).map(|c| p[l.w_hh + r * h + c] * hs[c]).sum::<f64>()
                        })
                        .collect();
                    hprev.push(hs.clone());
                    let g: Vec<f64> = (0..4 * h)
                        .map(|r| if (2 * h..3 * h).contains(&r) { pre[r].tanh() } else { sig(pre[r]) })
                        .collect();
                    for j in 0..h {
                        cs[j] = g[h + j] * cs[j] + g[j] * g[2 * h + j];
                        hs[j] = g[3 * h + j] * cs[j].tanh();
                    }
                    gates.push(g);
                    cells.push(cs.clone());
                    seq.push(hs.clone());
                }
            }
            None => seq = xs.clone(),
        }
        let mean: Vec<f64> = (0..w).map(|c| seq.iter().map(|s| s[c]).sum::<f64>() / t_n as f64).collect();
        let z: Vec<f64> = (0..k)
            .map(|o| p[l.fc_b + o] + (0..w).map(|c| p[l.fc_w + o * w + c] * mean[c]).sum::<f64>())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let loss = s.ln() + m - z[label];
        let dz: Vec<f64> = (0..k).map(|o| (z[o] - m).exp() / s - f64::from(u8::from(o == label))).collect();

        let mut g = vec![0.0; l.count];
        for o in 0..k {
            g[l.fc_b + o] = dz[o];
            for c in 0..w {
                g[l.fc_w + o * w + c] = dz[o] * mean[c];
            }
        }
        let dmean: Vec<f64> =
            (0..w).map(|c| (0..k).map(|o| dz[o] * p[l.fc_w + o * w + c]).sum::<f64>() / t_n as f64).collect();
        let dxs: Vec<Vec<f64>> = match self.hidden {
            Some(h) => {
                let mut dxs = vec![vec![0.0; e]; t_n];
                let (mut dh_next, mut dc_next) = (vec![0.0; h], vec![0.0; h]);
                for t in (0..t_n).rev() {
                    let gt = &gates[t];
                    let mut d = vec![0.0; 4 * h];
                    for j in 0..h {
                        let (i, f, gg, o) = (gt[j], gt[h + j], gt[2 * h + j], gt[3 * h + j]);
                        let dh = dmean[j] + dh_next[j];
                        let tc = cells[t][j].tanh();
                        let c_prev = if t > 0 { cells[t - 1][j] } else { 0.0 };
                        let dc = dc_next[j] + dh * o * (1.0 - tc * tc);
                        d[j] = dc * gg * i * (1.0 - i);
                        d[h + j] = dc * c_prev * f * (1.0 - f);
                        d[2 * h + j] = dc * i * (1.0 - gg * gg);
                        d[3 * h + j] = dh * tc * o * (1.0 - o);
                        dc_next[j] = dc * f;
                    }
                    for r in 0..4 * h {
                        g[l.bias + r] += d[r];
                        for c in 0..e {
                            g[l.w_ih + r * e + c] += d[r] * xs[t][c];
                        }
                        for c in 0..h {
                            g[l.w_hh + r * h + c] += d[r] * hprev[t][c];
                        }
                    }
                    for c in 0..e {
                        dxs[t][c] = (0..4 * h).map(|r| d[r] * p[l.w_ih + r * e + c]).sum();
                    }
                    for c in 0..h {
                        dh_next[c] = (0..4 * h).map(|r| d[r] * p[l.w_hh + r * h + c]).sum();
                    }
                }
                dxs
            }
            None => vec![dmean.clone(); t_n],
        };
        for (t, &v) in tokens.iter().enumerate() {
            for c in 0..e {
                g[l.table + v as usize * e + c] += dxs[t][c];
            }
        }
        (loss, g)
    }

    fn group_sq_norms(&self, grad: &[f64]) -> Vec<f64> {
        let mut norms = vec![0.0; self.group_count()];
        for (g, v) in self.groups().iter().zip(grad) {
            norms[*g] += v * v;
        }
        norms
    }
}

// ---------------------------------------------------------------------------------------------
// Harness.

struct Data {
    tokens: Vec<u32>,
    labels: Vec<f32>,
    size: usize,
}

impl Data {
    fn batch(&self) -> Batch<'_, u32> {
        Batch { inputs: &self.tokens, labels: &self.labels, size: self.size }
    }
}

/// Random tokens; example 0 repeats ONE token everywhere, example 1 (if any) alternates two tokens.
fn data(r: &Ref, size: usize, rng: &mut ChaCha8Rng) -> Data {
    let mut tokens: Vec<u32> = (0..size * r.steps).map(|_| rng.random_range(0..r.vocab as u32)).collect();
    tokens[..r.steps].fill(r.vocab as u32 - 1);
    if size > 1 {
        for t in 0..r.steps {
            tokens[r.steps + t] = if t % 2 == 0 { 3 } else { 0 };
        }
    }
    let labels = (0..size).map(|_| rng.random_range(0..r.classes) as f32).collect();
    Data { tokens, labels, size }
}

fn reference<M: DpModel>(r: &Ref, model: &M, data: &Data) -> Vec<(f64, Vec<f64>)> {
    let params: Vec<f64> = model.params().iter().map(|&v| v as f64).collect();
    (0..data.size)
        .map(|i| r.gradient(&params, &data.tokens[i * r.steps..(i + 1) * r.steps], data.labels[i] as usize))
        .collect()
}

/// |got − want| ≤ 1e-4·max(|want|, floor): relative, with a floor for values that cancel to ~0.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let floor = 1e-3 * want.iter().fold(0.0f64, |m, v| m.max(v.abs())) + 1e-12;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-4 * w.abs().max(floor), "{what}[{i}]: got {g}, want {w}");
    }
}

/// What a compiled model computed on one batch.
struct Outputs {
    losses: Vec<f32>,
    sq_norms: Vec<f32>,
    clipped: Vec<f32>,
    gradient: Vec<f32>,
}

/// Runs the private primitive (norms, then the clipped sum with `factors`) and the non-private gradient.
fn run<M: DpModel<Input = u32>>(model: &M, data: &Data, factors: &[f32]) -> Outputs {
    let size = data.size;
    let mut ws = Workspace::new::<M>(size);
    let (mut losses, mut sq_norms) = (vec![0.0f32; size], vec![f32::NAN; size * M::GROUPS.len()]);
    model.per_example_norms(&mut ws, data.batch(), &mut losses, &mut sq_norms);
    let mut clipped = vec![0.5f32; M::PARAM_COUNT];
    model.clipped_sum(&mut ws, data.batch(), factors, &mut clipped);
    let mut gradient = vec![-0.25f32; M::PARAM_COUNT];
    let mut plain_losses = vec![0.0f32; size];
    model.loss_and_gradient(&mut ws, data.batch(), &mut plain_losses, &mut gradient);
    assert_eq!(plain_losses, losses, "both passes compute the same losses");
    Outputs { losses, sq_norms, clipped, gradient }
}

/// Factors per example and group: flat clipping at norm 1, except example `zero` which gets 0.
fn factors(r: &Ref, want: &[(f64, Vec<f64>)], zero: Option<usize>) -> Vec<f32> {
    let groups = r.group_count();
    want.iter()
        .enumerate()
        .flat_map(|(i, (_, g))| {
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            let c = if Some(i) == zero { 0.0 } else { (1.0 / norm).min(1.0) as f32 };
            vec![c; groups]
        })
        .collect()
}

/// Compares everything a compiled model computes with the reference; returns its outputs.
fn check<M: DpModel<Input = u32>>(r: &Ref, model: &M, data: &Data, zero: Option<usize>) -> Outputs {
    let want = reference(r, model, data);
    let groups = r.group_count();
    let factors = factors(r, &want, zero);
    let out = run(model, data, &factors);
    let want_losses: Vec<f64> = want.iter().map(|(l, _)| *l).collect();
    assert_close(&out.losses, &want_losses, "losses");
    let want_norms: Vec<f64> = want.iter().flat_map(|(_, g)| r.group_sq_norms(g)).collect();
    assert_close(&out.sq_norms, &want_norms, "per-example squared norms");
    let mut want_clipped = vec![0.5f64; M::PARAM_COUNT];
    let mut want_gradient = vec![-0.25f64; M::PARAM_COUNT];
    for (i, (_, g)) in want.iter().enumerate() {
        let c = factors[i * groups] as f64;
        want_clipped.iter_mut().zip(g).for_each(|(s, v)| *s += c * v);
        want_gradient.iter_mut().zip(g).for_each(|(s, v)| *s += v);
    }
    assert_close(&out.clipped, &want_clipped, "clipped sum");
    assert_close(&out.gradient, &want_gradient, "non-private gradient");
    out
}

fn model<M: DpModel>(seed: u64) -> M {
    M::init(&mut ChaCha8Rng::seed_from_u64(seed))
}

const EMBED_MEAN: Ref = Ref { vocab: 20, steps: 6, dim: 4, hidden: None, classes: 3 };
const EMBED_LSTM: Ref = Ref { vocab: 20, steps: 7, dim: 4, hidden: Some(5), classes: 3 };

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn the_reference_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for r in [EMBED_MEAN, EMBED_LSTM] {
        let params: Vec<f64> = (0..r.layout().count).map(|_| rng.random_range(-0.8..0.8)).collect();
        // Repeated tokens, so that table rows collect several positions.
        let tokens: Vec<u32> = (0..r.steps).map(|t| [2, 5, 2, 19, 5, 2, 7][t] as u32).collect();
        let (_, grad) = r.gradient(&params, &tokens, 1);
        let eps = 1e-6;
        for j in 0..params.len() {
            let mut p = params.clone();
            p[j] += eps;
            let up = r.gradient(&p, &tokens, 1).0;
            p[j] -= 2.0 * eps;
            let down = r.gradient(&p, &tokens, 1).0;
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (fd - grad[j]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "parameter {j}: fd {fd}, backprop {}",
                grad[j]
            );
        }
    }
}

#[test]
fn embedding_and_mean_match_the_reference_with_repeated_tokens() {
    for (size, seed) in [(1, 10), (3, 11)] {
        let model: EmbedMean = model(seed);
        let data = data(&EMBED_MEAN, size, &mut ChaCha8Rng::seed_from_u64(seed + 100));
        check(&EMBED_MEAN, &model, &data, None);
    }
}

#[test]
fn the_embedding_norm_adds_the_rows_of_equal_tokens_before_squaring() {
    let model: EmbedMean = model(12);
    let data = data(&EMBED_MEAN, 1, &mut ChaCha8Rng::seed_from_u64(13));
    assert!(data.tokens.iter().all(|&v| v == 19), "example 0 repeats one token");
    let out = check(&EMBED_MEAN, &model, &data, None);
    // With one token everywhere, every position has the same δ = dmean/T: the grouped norm is
    // ‖T·δ‖² = T²‖δ‖², T times the sum of the squared rows.
    let want = reference(&EMBED_MEAN, &model, &data);
    let row_sq: f64 = want[0].1[19 * 4..20 * 4].iter().map(|v| v * v).sum();
    assert!((out.sq_norms[0] as f64 - row_sq).abs() <= 1e-4 * row_sq);
    let squared_rows = row_sq / EMBED_MEAN.steps as f64;
    assert!((out.sq_norms[0] as f64 - squared_rows).abs() > 0.5 * row_sq, "rows are not squared separately");
}

#[test]
fn embedding_lstm_mean_linear_matches_the_reference() {
    for (size, seed) in [(1, 20), (3, 21)] {
        let model: EmbedLstm = model(seed);
        let data = data(&EMBED_LSTM, size, &mut ChaCha8Rng::seed_from_u64(seed + 100));
        check(&EMBED_LSTM, &model, &data, None);
    }
}

#[test]
fn an_example_with_factor_zero_contributes_nothing() {
    let data = data(&EMBED_LSTM, 3, &mut ChaCha8Rng::seed_from_u64(31));
    let lstm: EmbedLstm = model(30);
    let all = check(&EMBED_LSTM, &lstm, &data, Some(1));
    let mean: EmbedMean = model(30);
    let data_mean = self::data(&EMBED_MEAN, 3, &mut ChaCha8Rng::seed_from_u64(31));
    check(&EMBED_MEAN, &mean, &data_mean, Some(1));
    // Dropping example 1 from the batch gives the same clipped sum as giving it factor 0...
    let kept = Data {
        tokens: [&data.tokens[..7], &data.tokens[14..]].concat(),
        labels: vec![data.labels[0], data.labels[2]],
        size: 2,
    };
    let want = reference(&EMBED_LSTM, &lstm, &data);
    let f = factors(&EMBED_LSTM, &want, Some(1));
    let f_kept: Vec<f32> = [&f[..3], &f[6..]].concat();
    let out_kept = run(&lstm, &kept, &f_kept);
    assert_close(&out_kept.clipped, &all.clipped.iter().map(|&v| v as f64).collect::<Vec<_>>(), "without it");
    // ... and the clipped sum can be repeated on the same workspace (δ is not consumed).
    let mut ws = Workspace::new::<EmbedLstm>(3);
    let (mut losses, mut norms) = (vec![0.0; 3], vec![0.0; 9]);
    lstm.per_example_norms(&mut ws, data.batch(), &mut losses, &mut norms);
    let (mut first, mut second) =
        (vec![0.5f32; EmbedLstm::PARAM_COUNT], vec![0.5f32; EmbedLstm::PARAM_COUNT]);
    lstm.clipped_sum(&mut ws, data.batch(), &f, &mut first);
    lstm.clipped_sum(&mut ws, data.batch(), &f, &mut second);
    assert_eq!(first, second);
    assert_eq!(first, all.clipped);
}

#[test]
fn ghost_and_direct_lstm_norms_agree() {
    assert_eq!(EmbedLstmGhost::LAYERS[1].strategy, Some(dp::NormStrategy::Ghost));
    assert_eq!(EmbedLstmDirect::LAYERS[1].strategy, Some(dp::NormStrategy::Direct));
    let params = EmbedLstm::init(&mut ChaCha8Rng::seed_from_u64(40)).params().to_vec();
    let ghost = EmbedLstmGhost::from_params(params.clone());
    let direct = EmbedLstmDirect::from_params(params);
    let data = data(&EMBED_LSTM, 3, &mut ChaCha8Rng::seed_from_u64(41));
    let g = check(&EMBED_LSTM, &ghost, &data, None);
    let d = check(&EMBED_LSTM, &direct, &data, None);
    assert_close(&g.sq_norms, &d.sq_norms.iter().map(|&v| v as f64).collect::<Vec<_>>(), "ghost vs direct");
    assert_close(&g.clipped, &d.clipped.iter().map(|&v| v as f64).collect::<Vec<_>>(), "clipped sums");
}

#[test]
fn embedding_net_at_batch_two_matches_the_reference() {
    let r = Ref { vocab: 10_004, steps: 256, dim: 16, hidden: None, classes: 2 };
    let model: EmbeddingNet = model(50);
    let data = data(&r, 2, &mut ChaCha8Rng::seed_from_u64(51));
    let out = check(&r, &model, &data, None);
    assert!(out.sq_norms.iter().all(|v| v.is_finite() && *v > 0.0));
}

#[test]
fn lstm_net_at_batch_two_gives_finite_norms_and_matches_the_reference() {
    let r = Ref { vocab: 10_004, steps: 256, dim: 100, hidden: Some(100), classes: 2 };
    let model: LstmNet = model(60);
    let data = data(&r, 2, &mut ChaCha8Rng::seed_from_u64(61));
    let want = reference(&r, &model, &data);
    let out = run(&model, &data, &factors(&r, &want, None));
    assert!(out.sq_norms.iter().all(|v| v.is_finite() && *v > 0.0), "{:?}", out.sq_norms);
    let want_norms: Vec<f64> = want.iter().flat_map(|(_, g)| r.group_sq_norms(g)).collect();
    assert_close(&out.sq_norms, &want_norms, "LstmNet per-example squared norms");
    let want_losses: Vec<f64> = want.iter().map(|(l, _)| *l).collect();
    assert_close(&out.losses, &want_losses, "LstmNet losses");
}
