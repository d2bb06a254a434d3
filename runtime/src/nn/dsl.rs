//! Support for the code `network!` and `#[derive(Module)]` generate; not a
//! user-facing API.

use crate::tensor::Tensor;

/// Adds an adjoint contribution into a slot: where a value fans out, its
/// gradients add.
#[inline]
pub fn acc(slot: &mut Option<Tensor>, g: Option<Tensor>) {
    if let Some(g) = g {
        *slot = Some(match slot.take() {
            Some(prev) => &prev + &g,
            None => g,
        });
    }
}
