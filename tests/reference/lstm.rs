//! `torch.nn.LSTM(input, hidden)` (one layer, one direction, zero initial state) over one sequence
//! `[T, I]`, returning the whole output sequence `[T, H]`.
//!
//! Gate rows of `weight_ih [4H, I]`, `weight_hh [4H, H]` and the bias `[4H]` are in PyTorch's order
//! i, f, g, o (PyTorch's `bias_ih + bias_hh` is one bias here):
//! `i = σ(·)`, `f = σ(·)`, `g = tanh(·)`, `o = σ(·)`, `c_t = f ⊙ c_{t−1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`.

use super::dense::sigmoid;

/// The parameters of one LSTM layer.
#[derive(Clone, Copy, Debug)]
pub struct LstmParams<'a> {
    pub weight_ih: &'a [f64],
    pub weight_hh: &'a [f64],
    pub bias: &'a [f64],
    pub hidden: usize,
}

/// The gradients of one LSTM layer and of its input sequence.
#[derive(Clone, Debug)]
pub struct LstmGradients {
    pub input: Vec<f64>,
    pub weight_ih: Vec<f64>,
    pub weight_hh: Vec<f64>,
    pub bias: Vec<f64>,
}

/// One time step's gate values (after their nonlinearities) and cell state.
struct Step {
    gates: Vec<f64>,
    cell: Vec<f64>,
    hidden: Vec<f64>,
}

fn run(p: &LstmParams<'_>, x: &[f64]) -> Vec<Step> {
    let h = p.hidden;
    let inputs = p.weight_ih.len() / (4 * h);
    assert_eq!(p.weight_ih.len(), 4 * h * inputs, "weight_ih shape");
    assert_eq!(p.weight_hh.len(), 4 * h * h, "weight_hh shape");
    assert_eq!(p.bias.len(), 4 * h, "bias shape");
    assert_eq!(x.len() % inputs, 0, "LSTM input shape");
    let (mut hprev, mut cprev) = (vec![0.0; h], vec![0.0; h]);
    let mut steps = Vec::with_capacity(x.len() / inputs);
    for xt in x.chunks(inputs) {
        let mut gates: Vec<f64> = (0..4 * h)
            .map(|r| {
                let from_x: f64 = (0..inputs).map(|j| p.weight_ih[r * inputs + j] * xt[j]).sum();
                let from_h: f64 = (0..h).map(|j| p.weight_hh[r * h + j] * hprev[j]).sum();
                from_x + from_h + p.bias[r]
            })
            .collect();
        for (r, v) in gates.iter_mut().enumerate() {
            *v = if r / h == 2 { v.tanh() } else { sigmoid(*v) };
        }
        let cell: Vec<f64> = (0..h).map(|k| gates[h + k] * cprev[k] + gates[k] * gates[2 * h + k]).collect();
        let hidden: Vec<f64> = (0..h).map(|k| gates[3 * h + k] * cell[k].tanh()).collect();
        hprev.clone_from(&hidden);
        cprev.clone_from(&cell);
        steps.push(Step { gates, cell, hidden });
    }
    steps
}

/// The output sequence `[T, H]`.
pub fn lstm_forward(p: &LstmParams<'_>, x: &[f64]) -> Vec<f64> {
    run(p, x).into_iter().flat_map(|s| s.hidden).collect()
}

/// Backpropagation through time from `dy` (`[T, H]`, the gradient of every output).
pub fn lstm_backward(p: &LstmParams<'_>, x: &[f64], dy: &[f64]) -> LstmGradients {
    let h = p.hidden;
    let inputs = p.weight_ih.len() / (4 * h);
    let steps = run(p, x);
    assert_eq!(dy.len(), steps.len() * h, "LSTM output gradient shape");
    let mut grads = LstmGradients {
        input: vec![0.0; x.len()],
        weight_ih: vec![0.0; p.weight_ih.len()],
        weight_hh: vec![0.0; p.weight_hh.len()],
        bias: vec![0.0; 4 * h],
    };
    let (mut dh_next, mut dc_next) = (vec![0.0; h], vec![0.0; h]);
    let zeros = vec![0.0; h];
    for t in (0..steps.len()).rev() {
        let s = &steps[t];
        let (hprev, cprev) =
            if t == 0 { (&zeros, &zeros) } else { (&steps[t - 1].hidden, &steps[t - 1].cell) };
        let (i, f, g, o) = (&s.gates[..h], &s.gates[h..2 * h], &s.gates[2 * h..3 * h], &s.gates[3 * h..]);
        // Gradient of the pre-activations, gate by gate.
        let mut da = vec![0.0; 4 * h];
        for k in 0..h {
            let dh = dy[t * h + k] + dh_next[k];
            let tc = s.cell[k].tanh();
            let dc = dh * o[k] * (1.0 - tc * tc) + dc_next[k];
            da[k] = dc * g[k] * i[k] * (1.0 - i[k]);
            da[h + k] = dc * cprev[k] * f[k] * (1.0 - f[k]);
            da[2 * h + k] = dc * i[k] * (1.0 - g[k] * g[k]);
            da[3 * h + k] = dh * tc * o[k] * (1.0 - o[k]);
            dc_next[k] = dc * f[k];
        }
        let xt = &x[t * inputs..(t + 1) * inputs];
        dh_next.iter_mut().for_each(|v| *v = 0.0);
        for (r, &dar) in da.iter().enumerate() {
            grads.bias[r] += dar;
            for (j, &xj) in xt.iter().enumerate() {
                grads.weight_ih[r * inputs + j] += dar * xj;
                grads.input[t * inputs + j] += dar * p.weight_ih[r * inputs + j];
            }
            for (j, &hj) in hprev.iter().enumerate() {
                grads.weight_hh[r * h + j] += dar * hj;
                dh_next[j] += dar * p.weight_hh[r * h + j];
            }
        }
    }
    grads
}
