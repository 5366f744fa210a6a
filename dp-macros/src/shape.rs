//! The shape of one example's value (the batch axis is never part of it).

use crate::ctxt::Ctxt;
use proc_macro2::Span;

/// Dimensions of one example's value, outermost first (NCHW without the N).
pub type Shape = Vec<usize>;

/// A shape as the user writes it, `[1, 28, 28]`.
pub fn show(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// `[C, H, W]` of an image op's input, or an error on `at` naming the op.
pub fn image(cx: &mut Ctxt, at: Span, op: &str, x: &Shape) -> Option<[usize; 3]> {
    match x.as_slice() {
        &[c, h, w] => Some([c, h, w]),
        _ => {
            cx.error(
                at,
                format!("`{op}` takes an image [C, H, W] per example, but its input has shape {}", show(x)),
            );
            None
        }
    }
}
