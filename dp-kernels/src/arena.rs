//! Carving a workspace arena into the disjoint buffers of a static memory plan.

/// Splits `arena` into `N` consecutive buffers of `lens[k] · batch` values each (per-example lengths
/// times the run-time batch size), so generated code can hold them all mutably at once, and the rest
/// of the arena after them: the per-task scratch (`dp_spec::cost::TASKS_PER_THREAD` slots per thread
/// of one example's conv patches), whose length the kernels read to size their tasks.
pub fn carve<'a, const N: usize>(
    arena: &'a mut [f32],
    batch: usize,
    lens: &[usize; N],
) -> ([&'a mut [f32]; N], &'a mut [f32]) {
    let total: usize = lens.iter().sum::<usize>() * batch;
    assert!(arena.len() >= total, "workspace holds {} values, the plan needs {total}", arena.len());
    let mut rest = arena;
    let buffers = std::array::from_fn(|k| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(lens[k] * batch);
        rest = tail;
        head
    });
    (buffers, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_consecutive_and_scaled_by_the_batch() {
        let mut arena: Vec<f32> = (0..20).map(|v| v as f32).collect();
        let ([a, b, c], rest) = carve(&mut arena, 3, &[2, 0, 4]);
        assert_eq!((a.len(), b.len(), c.len()), (6, 0, 12));
        assert_eq!((a[0], c[0]), (0.0, 6.0));
        assert_eq!((rest.len(), rest[0]), (2, 18.0), "the rest of the arena follows the buffers");
    }

    #[test]
    #[should_panic(expected = "the plan needs")]
    fn a_short_arena_is_an_invariant_violation() {
        let mut arena = vec![0.0f32; 5];
        let _ = carve(&mut arena, 2, &[3]);
    }
}
