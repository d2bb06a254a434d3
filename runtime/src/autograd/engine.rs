//! The backward engine: a topological walk from the output, summing gradients
//! where a value fans out and accumulating into leaves.

use std::collections::HashMap;
use std::sync::Arc;

use super::{no_grad, Edge, GradNode};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::Tensor;

fn freed_graph_error() -> Error {
    Error::Autograd(
        "Trying to backward through the graph a second time: its saved tensors were freed \
         after the first backward. Call backward_retain() (or backward_opts(.., true)) the \
         first time if you need to backward through the same graph again"
            .into(),
    )
}

/// Adds `g` into a leaf's `.grad()`, in place when a gradient is already there.
pub(crate) fn accumulate(leaf: &Tensor, g: Tensor) {
    let g = if g.dtype() != leaf.dtype() {
        g.to_dtype(leaf.dtype())
    } else {
        g
    };
    let mut slot = leaf.grad_slot();
    match &*slot {
        Some(existing) => {
            existing.add_(&g);
        }
        None => {
            // Keep the tensor when nothing else sees its storage; otherwise copy,
            // so a later in-place `zero_()` cannot reach anyone else's data.
            let owned = Arc::strong_count(g.storage()) == 1 && g.is_contiguous();
            *slot = Some(if owned { g } else { g.clone_data() });
        }
    }
}

pub(crate) fn run_backward(root: &Tensor, seed: Tensor, retain_graph: bool) -> Result<()> {
    let _guard = super::NoGradGuard::new();
    let Some(root_node) = root.grad_node().cloned() else {
        if root.requires_grad() {
            // backward() on a leaf: its gradient is the seed.
            accumulate(root, seed);
            return Ok(());
        }
        return Err(Error::Autograd(
            "backward: this tensor does not require grad and has no grad_fn. Mark the \
             inputs with requires_grad_(true) before computing it, and don't compute it \
             inside no_grad"
                .into(),
        ));
    };

    // Topological order (depth-first post-order, reversed) and in-degrees.
    let mut index: HashMap<*const GradNode, usize> = HashMap::new();
    let mut nodes: Vec<Arc<GradNode>> = Vec::new();
    let mut stack: Vec<(Arc<GradNode>, usize)> = vec![(root_node.clone(), 0)];
    index.insert(Arc::as_ptr(&root_node), usize::MAX);
    while let Some((node, child)) = stack.pop() {
        if child < node.next.len() {
            stack.push((node.clone(), child + 1));
            if let Some(Edge::Node(n)) = &node.next[child] {
                if let std::collections::hash_map::Entry::Vacant(e) = index.entry(Arc::as_ptr(n)) {
                    e.insert(usize::MAX);
                    stack.push((n.clone(), 0));
                }
            }
        } else {
            nodes.push(node);
        }
    }
    nodes.reverse();
    for (i, n) in nodes.iter().enumerate() {
        index.insert(Arc::as_ptr(n), i);
    }
    // Check every node still has its saved tensors before touching any gradient,
    // so a refused backward leaves `.grad()` as it was.
    for n in &nodes {
        if n.op.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(freed_graph_error());
        }
    }

    let mut grads: Vec<Option<Tensor>> = vec![None; nodes.len()];
    grads[0] = Some(seed);
    for i in 0..nodes.len() {
        let node = &nodes[i];
        let Some(grad) = grads[i].take() else {
            continue;
        };
        let input_grads = {
            let mut op = node.op.lock().unwrap_or_else(|e| e.into_inner());
            let g = match op.as_ref() {
                Some(op) => op.backward(&grad),
                None => return Err(freed_graph_error()),
            };
            if !retain_graph {
                *op = None;
            }
            g
        };
        for (edge, g) in node.next.iter().zip(input_grads) {
            let (Some(edge), Some(g)) = (edge, g) else {
                continue;
            };
            match edge {
                Edge::Leaf(leaf) => accumulate(leaf, g),
                Edge::Node(n) => {
                    let j = index[&Arc::as_ptr(n)];
                    grads[j] = Some(match grads[j].take() {
                        Some(prev) => &prev + &g,
                        None => g,
                    });
                }
            }
        }
    }
    Ok(())
}

impl Tensor {
    /// Computes the gradient of this one-element tensor with respect to every
    /// leaf that requires grad, adding it into their `.grad()`. The graph's saved
    /// tensors are freed afterwards (see [`backward_retain`](Self::backward_retain)).
    #[track_caller]
    pub fn backward(&self) {
        self.try_backward_opts(None, false).or_panic()
    }

    /// Like [`backward`](Self::backward) but keeps the graph, so backward can run
    /// through it again (`retain_graph=True`).
    #[track_caller]
    pub fn backward_retain(&self) {
        self.try_backward_opts(None, true).or_panic()
    }

    /// Vector-Jacobian product: adds vᵀ·J into each leaf's `.grad()`, where J is
    /// the Jacobian of this tensor with respect to the leaf (`y.backward(v)`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let x = tensor![1., 2., 3.].requires_grad_(true);
    /// let y = &x * &x; // J = diag(2x)
    /// y.backward_with(&tensor![1., 0.1, 0.01]);
    /// assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![2., 0.4, 0.06]);
    /// ```
    #[track_caller]
    pub fn backward_with(&self, v: &Tensor) {
        self.try_backward_opts(Some(v), false).or_panic()
    }

    /// Backward with an optional seed `v` (`None`: this tensor must have one
    /// element) and PyTorch's `retain_graph`.
    #[track_caller]
    pub fn backward_opts(&self, v: Option<&Tensor>, retain_graph: bool) {
        self.try_backward_opts(v, retain_graph).or_panic()
    }

    /// Fallible [`backward_opts`](Self::backward_opts).
    pub fn try_backward_opts(&self, v: Option<&Tensor>, retain_graph: bool) -> Result<()> {
        let seed = match v {
            None => {
                if self.numel() != 1 {
                    return Err(Error::shape(
                        "backward",
                        format!(
                            "grad can be implicitly created only for one-element outputs, \
                             but this tensor has shape {:?}; reduce it first (.sum(), .mean()) \
                             or pass the seed with backward_with(&v)",
                            self.shape()
                        ),
                    ));
                }
                self.ones_like()
            }
            Some(v) => {
                if v.shape() != self.shape() {
                    return Err(Error::shape(
                        "backward_with",
                        format!(
                            "the seed v has shape {:?} but the output has shape {:?}; v must \
                             have exactly the output's shape",
                            v.shape(),
                            self.shape()
                        ),
                    ));
                }
                no_grad(|| v.to_dtype(self.dtype()).detach())
            }
        };
        run_backward(self, seed, retain_graph)
    }
}
