//! Unit tests of the planner's storage classes: what a device storing in bf16 may store in bf16
//! (activations and output gradients) and what stays f32 whatever the precision.

use quote::quote;

/// Each buffer's storage class for a device storing in bf16: what carries a clip factor, an index, a
/// statistic, kept gradients or an LSTM's recurrence is f32; activations and output gradients are
/// stored in the precision.
#[test]
fn buffers_are_stored_in_the_precision_only_when_rounding_them_is_safe() {
    use crate::plan::memory::Stored;
    let plan = crate::plan_of(
        quote!(input = [2, 8, 8], loss = cross_entropy(classes = 3)),
        quote! {
            pub struct Mixed {
                #[layer(conv2d(out = 4, kernel = 3, padding = 1, norms = direct))]
                conv: Conv2d,
                #[layer(group_norm(groups = 2), relu, max_pool2d(kernel = 2))]
                norm: GroupNorm,
                #[layer(flatten, linear(out = 3))]
                head: Linear,
            }
        },
    );
    let f32_purposes = ["clipping scratch", "kept per-example gradients", "mean", "rstd", "affine", "argmax"];
    let mut seen = Vec::new();
    for b in &plan.buffers {
        let must_be_f32 = f32_purposes.iter().find(|p| b.purpose.contains(**p));
        match must_be_f32 {
            Some(p) => {
                assert_eq!(b.stored, Stored::F32, "{}", b.purpose);
                seen.push(*p);
            }
            None if b.purpose.contains("output")
                || b.purpose.contains("delta")
                || b.purpose.contains("gradient") =>
            {
                assert_eq!(b.stored, Stored::OfPrecision, "{}", b.purpose)
            }
            None => {}
        }
    }
    for p in ["clipping scratch", "kept per-example gradients", "mean", "rstd", "affine", "argmax"] {
        assert!(seen.contains(&p), "no buffer for {p}: {:?}", plan.buffers);
    }
}

/// An LSTM's recurrence (gates, cells, previous hidden states, gate gradients, scratch) stays f32; its
/// hidden states and their gradient are stored in the precision.
#[test]
fn an_lstm_keeps_its_recurrence_in_f32() {
    use crate::plan::memory::Stored;
    let plan = crate::plan_of(
        quote!(input = tokens(len = 7, vocab = 50), loss = cross_entropy(classes = 3)),
        quote! {
            pub struct Recurrent {
                #[layer(embedding(dim = 6))]
                embedding: Embedding,
                #[layer(lstm(hidden = 5), mean)]
                lstm: Lstm,
                #[layer(linear(out = 3))]
                fc: Linear,
            }
        },
    );
    let stored = |purpose: &str| {
        let b = plan.buffers.iter().find(|b| b.purpose == purpose);
        b.unwrap_or_else(|| panic!("no buffer {purpose}: {:?}", plan.buffers)).stored
    };
    for purpose in
        ["lstm gates", "lstm cells", "lstm previous hidden states", "lstm gate delta", "lstm scratch"]
    {
        assert_eq!(stored(purpose), Stored::F32, "{purpose}");
    }
    for purpose in ["lstm hidden states", "lstm hidden-state gradient"] {
        assert_eq!(stored(purpose), Stored::OfPrecision, "{purpose}");
    }
}
