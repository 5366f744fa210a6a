//! The sequence primitives of the host reference, written from their contracts in `DeviceOps`: an
//! embedding over a sequence (gather, token-grouped norms, scatter-add) and sums and broadcasts over
//! the time axis (a sequence mean and its backward, per-example bias gradients).

use super::{short, HostDevice};
use crate::device::{check_group, DeviceError, Span};

impl HostDevice {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gather_rows(
        &mut self,
        ids: Span,
        table: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        out: Span,
    ) -> Result<(), DeviceError> {
        let (ids, table) = (self.ids(ids)?.to_vec(), self.read(table)?);
        let out = self.write(out)?;
        if ids.len() < n * steps || table.len() < vocab * dim || out.len() < n * steps * dim {
            return Err(short("embedding_forward"));
        }
        for (row, &v) in out.chunks_exact_mut(dim.max(1)).zip(&ids[..n * steps]) {
            match table.get(v as usize * dim..(v as usize + 1) * dim) {
                Some(values) if (v as usize) < vocab => row.copy_from_slice(values),
                _ => row.fill(f32::NAN),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn token_grouped_norms(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        dim: usize,
        sq_norms: Span,
        groups: usize,
        group: usize,
    ) -> Result<(), DeviceError> {
        check_group("embedding_norms", groups, group)?;
        let (ids, d) = (self.ids(ids)?.to_vec(), self.read(delta)?);
        let s = self.write(sq_norms)?;
        if ids.len() < n * steps || d.len() < n * steps * dim || s.len() < n * groups {
            return Err(short("embedding_norms"));
        }
        for i in 0..n {
            let example = &ids[i * steps..(i + 1) * steps];
            let row = |t: usize| &d[(i * steps + t) * dim..(i * steps + t + 1) * dim];
            let mut total = 0.0f64;
            for (t, v) in example.iter().enumerate() {
                // Each token once, at its first position: its rows summed, then squared.
                if example[..t].contains(v) {
                    continue;
                }
                let mut sum = vec![0.0f64; dim];
                for u in (t..steps).filter(|&u| example[u] == *v) {
                    sum.iter_mut().zip(row(u)).for_each(|(a, &x)| *a += f64::from(x));
                }
                total += sum.iter().map(|a| a * a).sum::<f64>();
            }
            s[i * groups + group] = total as f32;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn scatter_rows(
        &mut self,
        ids: Span,
        delta: Span,
        n: usize,
        steps: usize,
        vocab: usize,
        dim: usize,
        factors: Option<(Span, usize, usize)>,
        grad: Span,
    ) -> Result<(), DeviceError> {
        let (ids, d) = (self.ids(ids)?.to_vec(), self.read(delta)?);
        let factors = self.factors_of("embedding_scatter", factors, n)?;
        let g = self.write(grad)?;
        if ids.len() < n * steps || d.len() < n * steps * dim || g.len() < vocab * dim {
            return Err(short("embedding_scatter"));
        }
        for i in 0..n {
            let c = factors.as_ref().map_or(1.0, |f| f[i]);
            if c == 0.0 {
                continue;
            }
            for t in 0..steps {
                let v = ids[i * steps + t] as usize;
                if v >= vocab {
                    continue;
                }
                let row = &d[(i * steps + t) * dim..(i * steps + t + 1) * dim];
                g[v * dim..(v + 1) * dim].iter_mut().zip(row).for_each(|(a, &x)| *a += c * x);
            }
        }
        Ok(())
    }

    pub(super) fn sums_over_time(
        &mut self,
        src: Span,
        (n, steps, cols): (usize, usize, usize),
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < n * steps * cols || dst.len() < n * cols {
            return Err(short("sequence_sums"));
        }
        for i in 0..n {
            for c in 0..cols {
                let sum: f64 = (0..steps).map(|t| f64::from(src[(i * steps + t) * cols + c])).sum();
                dst[i * cols + c] = scale * sum as f32;
            }
        }
        Ok(())
    }

    pub(super) fn broadcast_over_time(
        &mut self,
        src: Span,
        (n, steps, cols): (usize, usize, usize),
        scale: f32,
        dst: Span,
    ) -> Result<(), DeviceError> {
        let src = self.read(src)?;
        let dst = self.write(dst)?;
        if src.len() < n * cols || dst.len() < n * steps * cols {
            return Err(short("sequence_broadcast"));
        }
        for i in 0..n {
            for t in 0..steps {
                for c in 0..cols {
                    dst[(i * steps + t) * cols + c] = scale * src[i * cols + c];
                }
            }
        }
        Ok(())
    }
}
