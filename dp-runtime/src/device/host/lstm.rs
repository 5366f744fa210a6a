//! An LSTM's time steps on the host reference, written from the contracts of
//! `DeviceOps::lstm_forward_step` and `lstm_backward_step` (gates i, f, g, o; the products around them
//! are the program's own `gemm` calls). Each step reads and writes only the rows of its time step.

use super::{short, HostDevice};
use crate::device::{DeviceError, LstmBackwardStep, LstmDims, LstmForwardStep, Span};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Every span at least as long as its shape needs, so that the rows below are inside it.
fn fits(what: &str, spans: &[(Span, usize)]) -> Result<(), DeviceError> {
    match spans.iter().all(|(s, need)| s.len >= *need) {
        true => Ok(()),
        false => Err(short(what)),
    }
}

fn in_sequence(what: &str, dims: &LstmDims, t: usize) -> Result<(), DeviceError> {
    match t < dims.steps {
        true => Ok(()),
        false => Err(DeviceError::Mismatch(format!("{what}: step {t} of {}", dims.steps))),
    }
}

impl HostDevice {
    pub(super) fn lstm_forward_rows(
        &mut self,
        s: &LstmForwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError> {
        let (steps, h) = (dims.steps, dims.hidden);
        let g4 = 4 * h;
        in_sequence("lstm_forward_step", dims, t)?;
        fits(
            "lstm_forward_step",
            &[
                (s.saved.gates, n * steps * g4),
                (s.saved.cells, n * steps * h),
                (s.saved.hprev, n * steps * h),
                (s.out, n * steps * h),
                (s.bias, g4),
                (s.recurrent, if t > 0 { n * g4 } else { 0 }),
                (s.hidden, n * h),
            ],
        )?;
        let bias = self.read(s.bias.sub(0, g4))?;
        for i in 0..n {
            let at = |span: Span, width: usize, step: usize| span.sub((i * steps + step) * width, width);
            let mut gates = self.read(at(s.saved.gates, g4, t))?;
            let (h_prev, c_prev, rec) = match t {
                0 => (vec![0.0; h], vec![0.0; h], vec![0.0; g4]),
                _ => (
                    self.read(s.hidden.sub(i * h, h))?,
                    self.read(at(s.saved.cells, h, t - 1))?,
                    self.read(s.recurrent.sub(i * g4, g4))?,
                ),
            };
            let (mut c, mut h_new) = (vec![0.0; h], vec![0.0; h]);
            for j in 0..h {
                let pre = |k: usize| gates[k * h + j] + bias[k * h + j] + rec[k * h + j];
                let (ig, fg, gg, og) = (sigmoid(pre(0)), sigmoid(pre(1)), pre(2).tanh(), sigmoid(pre(3)));
                c[j] = if t == 0 { ig * gg } else { fg * c_prev[j] + ig * gg };
                h_new[j] = og * c[j].tanh();
                (gates[j], gates[h + j], gates[2 * h + j], gates[3 * h + j]) = (ig, fg, gg, og);
            }
            self.write(at(s.saved.gates, g4, t))?.copy_from_slice(&gates);
            self.write(at(s.saved.cells, h, t))?.copy_from_slice(&c);
            self.write(at(s.saved.hprev, h, t))?.copy_from_slice(&h_prev);
            self.write(at(s.out, h, t))?.copy_from_slice(&h_new);
            self.write(s.hidden.sub(i * h, h))?.copy_from_slice(&h_new);
        }
        Ok(())
    }

    pub(super) fn lstm_backward_rows(
        &mut self,
        s: &LstmBackwardStep,
        dims: &LstmDims,
        n: usize,
        t: usize,
    ) -> Result<(), DeviceError> {
        let (steps, h) = (dims.steps, dims.hidden);
        let (g4, last) = (4 * h, t + 1 == steps);
        in_sequence("lstm_backward_step", dims, t)?;
        fits(
            "lstm_backward_step",
            &[
                (s.gates, n * steps * g4),
                (s.cells, n * steps * h),
                (s.dout, n * steps * h),
                (s.recurrent, if last { 0 } else { n * h }),
                (s.cell_grad, n * h),
                (s.step_delta, n * g4),
                (s.delta, n * steps * g4),
            ],
        )?;
        for i in 0..n {
            let at = |span: Span, width: usize, step: usize| span.sub((i * steps + step) * width, width);
            let gates = self.read(at(s.gates, g4, t))?;
            let c_now = self.read(at(s.cells, h, t))?;
            let c_prev = if t > 0 { self.read(at(s.cells, h, t - 1))? } else { vec![0.0; h] };
            let mut dh = self.read(at(s.dout, h, t))?;
            let mut dc = vec![0.0; h];
            if !last {
                let rec = self.read(s.recurrent.sub(i * h, h))?;
                dh.iter_mut().zip(&rec).for_each(|(d, r)| *d += r);
                dc = self.read(s.cell_grad.sub(i * h, h))?;
            }
            let mut d = vec![0.0; g4];
            for j in 0..h {
                let (ig, fg, gg, og) = (gates[j], gates[h + j], gates[2 * h + j], gates[3 * h + j]);
                let tc = c_now[j].tanh();
                let dcv = dc[j] + dh[j] * og * (1.0 - tc * tc);
                d[j] = dcv * gg * ig * (1.0 - ig);
                d[h + j] = dcv * c_prev[j] * fg * (1.0 - fg);
                d[2 * h + j] = dcv * ig * (1.0 - gg * gg);
                d[3 * h + j] = dh[j] * tc * og * (1.0 - og);
                dc[j] = dcv * fg;
            }
            self.write(s.step_delta.sub(i * g4, g4))?.copy_from_slice(&d);
            self.write(at(s.delta, g4, t))?.copy_from_slice(&d);
            self.write(s.cell_grad.sub(i * h, h))?.copy_from_slice(&dc);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceOps, LstmSaved, Region};

    /// A step outside the sequence and spans shorter than the shapes are errors, never panics.
    #[test]
    fn a_step_past_the_sequence_or_a_short_span_is_refused() {
        let (n, dims) = (2, LstmDims { steps: 3, input: 2, hidden: 4 });
        let (seq, units) = (n * dims.steps * dims.hidden, n * dims.hidden);
        let mut host = HostDevice::new();
        host.set(Region::Arena, vec![0.0; 4 * seq + 3 * seq + units + 4 * units + 16]);
        let at = |from: usize, len: usize| Span::new(Region::Arena, from, len);
        let step = LstmForwardStep {
            saved: LstmSaved { gates: at(0, 4 * seq), cells: at(4 * seq, seq), hprev: at(5 * seq, seq) },
            out: at(6 * seq, seq),
            hidden: at(7 * seq, units),
            recurrent: at(7 * seq + units, 4 * units),
            bias: at(7 * seq + 5 * units, 16),
        };
        assert!(host.lstm_forward_step(&step, &dims, n, 2).is_ok());
        let past = host.lstm_forward_step(&step, &dims, n, 3).unwrap_err();
        assert_eq!(past.to_string(), "device program: lstm_forward_step: step 3 of 3");
        let short = LstmForwardStep { out: at(6 * seq, seq - 1), ..step };
        assert!(matches!(host.lstm_forward_step(&short, &dims, n, 0), Err(DeviceError::Mismatch(_))));
        let backward = LstmBackwardStep {
            gates: step.saved.gates,
            cells: step.saved.cells,
            dout: step.out,
            recurrent: step.hidden,
            cell_grad: step.hidden,
            step_delta: step.recurrent,
            delta: at(0, 4 * seq - 1),
        };
        assert!(matches!(host.lstm_backward_step(&backward, &dims, n, 1), Err(DeviceError::Mismatch(_))));
    }
}
