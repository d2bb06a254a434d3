//! The dynamic tape: nodes recorded by ops, the backward engine, `no_grad`, gradcheck.
//!
//! Each op's backward lives in its own op file (`ops/*.rs`) as a type
//! implementing the (crate-private) `Backward` trait; this module only
//! records and walks them.

pub(crate) mod engine;
mod gradcheck;
mod hooks;
mod mode;
mod op;

use std::sync::{Arc, Mutex};

pub use gradcheck::{gradcheck, gradcheck_opts, GradcheckOptions, GradcheckReport};
pub use hooks::HookHandle;
#[allow(unused_imports)]
pub(crate) use hooks::{queue_callback, run_post_accumulate_hooks, Hooks};
pub use mode::{is_grad_enabled, no_grad, set_grad_enabled, NoGradGuard};
pub use op::{
    apply, forward_into, forward_saving, try_apply, GradSlot, Op, OpNode, Out, Saved, Shape, Spec,
};

use crate::tensor::Tensor;

/// The backward of one recorded op: given dL/d(output), the gradient for each
/// recorded input (in the order passed to [`record`]); `None` where an input
/// needs none.
pub(crate) trait Backward: Send + Sync {
    fn backward(&self, grad: &Tensor) -> Vec<Option<Tensor>>;
}

/// Where a recorded input's gradient goes.
pub(crate) enum Edge {
    /// Into the node that produced the input.
    Node(Arc<GradNode>),
    /// Into a leaf's `.grad()`.
    Leaf(Tensor),
}

/// A node of the graph: an op's backward and the edges to its inputs.
pub struct GradNode {
    name: &'static str,
    /// `None` once backward has run without `retain_graph`: the saved tensors are freed.
    op: Mutex<Option<Box<dyn Backward>>>,
    next: Edges,
}

/// A node's input edges: inline for the one- and two-input ops that make up
/// most graphs (one allocation fewer per recorded op), on the heap past that.
pub(crate) enum Edges {
    Inline(usize, [Option<Edge>; 2]),
    Heap(Vec<Option<Edge>>),
}

impl Edges {
    fn of(inputs: &[&Tensor]) -> Edges {
        match inputs {
            [] => Edges::Inline(0, [None, None]),
            [a] => Edges::Inline(1, [edge_of(a), None]),
            [a, b] => Edges::Inline(2, [edge_of(a), edge_of(b)]),
            _ => Edges::Heap(inputs.iter().map(|t| edge_of(t)).collect()),
        }
    }

    pub(crate) fn as_slice(&self) -> &[Option<Edge>] {
        match self {
            Edges::Inline(n, e) => &e[..*n],
            Edges::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Option<Edge>] {
        match self {
            Edges::Inline(n, e) => &mut e[..*n],
            Edges::Heap(v) => v,
        }
    }
}

impl GradNode {
    /// The node's name, like PyTorch's `grad_fn` (`MulBackward`).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for GradNode {
    /// Unlinks the graph iteratively: dropping a long chain (an RNN over many
    /// steps, `total = &total + &loss` in a loop) recursively would overflow the stack.
    fn drop(&mut self) {
        let mut stack = DropStack::default();
        stack.unlink(&mut self.next);
        while let Some(mut node) = stack.pop() {
            // The node then drops with no children left.
            stack.unlink(&mut node.next);
        }
    }
}

/// The nodes still to unlink while dropping a graph: a few inline, so dropping
/// a small graph allocates nothing, the rest on the heap.
#[derive(Default)]
struct DropStack {
    inline: [Option<GradNode>; 4],
    len: usize,
    spill: Vec<GradNode>,
}

impl DropStack {
    /// Takes `next`'s node edges, keeping the nodes this was the last owner of.
    fn unlink(&mut self, next: &mut Edges) {
        for edge in next.as_mut_slice() {
            if let Some(Edge::Node(n)) = edge.take() {
                // Only the last owner unlinks; other owners just let go.
                if let Ok(inner) = Arc::try_unwrap(n) {
                    if self.len < self.inline.len() {
                        self.inline[self.len] = Some(inner);
                        self.len += 1;
                    } else {
                        self.spill.push(inner);
                    }
                }
            }
        }
    }

    fn pop(&mut self) -> Option<GradNode> {
        if let Some(n) = self.spill.pop() {
            return Some(n);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}

fn edge_of(t: &Tensor) -> Option<Edge> {
    if let Some(n) = t.grad_node() {
        Some(Edge::Node(n.clone()))
    } else if t.requires_grad() {
        Some(Edge::Leaf(t.clone()))
    } else {
        None
    }
}

/// Whether an op on `inputs` must be recorded now.
#[inline]
pub(crate) fn needs_grad(inputs: &[&Tensor]) -> bool {
    inputs.iter().any(|t| t.requires_grad()) && is_grad_enabled()
}

/// Links `output` to `inputs` through a node named `name` whose backward is
/// built by `make` (only called when recording, so ops pay nothing otherwise).
#[inline]
pub(crate) fn record<B: Backward + 'static>(
    name: &'static str,
    inputs: &[&Tensor],
    output: Tensor,
    make: impl FnOnce() -> B,
) -> Tensor {
    if !needs_grad(inputs) {
        return output;
    }
    let node = Arc::new(GradNode {
        name,
        op: Mutex::new(Some(Box::new(make()))),
        next: Edges::of(inputs),
    });
    output.with_grad_fn(node)
}
