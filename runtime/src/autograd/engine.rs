//! The backward engine: a topological walk from the output, summing gradients
//! where a value fans out and accumulating into leaves.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::hooks::{run_post_accumulate_hooks, BackwardScope};
use super::{no_grad, Edge, GradNode};
use crate::backend::{cpu, Buffer};
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
    match &slot.grad {
        Some(existing) => {
            if !add_same_shape(existing, &g) {
                existing.add_(&g);
            }
        }
        None => {
            // Keep the tensor when nothing else sees its storage; otherwise copy,
            // so a later in-place `zero_()` cannot reach anyone else's data.
            let owned = Arc::strong_count(g.storage()) == 1 && g.is_contiguous();
            slot.grad = Some(if owned { g } else { g.clone_data() });
            // Computed apart: a recycled buffer would only hold memory now.
            slot.spare = None;
        }
    }
}

/// Graphs up to this many nodes find a node's position by a linear scan, which
/// beats hashing at this size; larger graphs build a hash map.
const SMALL_GRAPH: usize = 32;

/// Hashes a node's address: the low bits are alignment, so they are shifted out.
#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = ((n as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type NodeMap = HashMap<*const GradNode, usize, BuildHasherDefault<PtrHasher>>;

/// `dst += src` for two float tensors of one shape and dtype in distinct
/// storages: the common case of `accumulate`, without the broadcasting and
/// checks of `add_` (which handles everything else). Whether it did the add.
fn add_same_shape(dst: &Tensor, src: &Tensor) -> bool {
    if !crate::tensor::same_shape(dst.shape(), src.shape())
        || dst.dtype() != src.dtype()
        || dst.shares_storage(src)
    {
        return false;
    }
    if dst.device() != src.device() {
        return false;
    }
    #[cfg(feature = "cuda")]
    if dst.device().is_cuda() {
        if !dst.dtype().is_float() {
            return false;
        }
        crate::backend::cuda::ops::update(
            crate::backend::Ew::Add,
            dst.array(),
            src.array(),
            src.layout(),
            0.0,
        );
        return true;
    }
    if !dst.dtype().is_float() {
        return false;
    }
    // In the global lock order: another thread may copy between the two.
    let ([s], [d]) = crate::backend::lock_storages([Some(&**src.storage())], [Some(dst.storage())]);
    let locked = "distinct storages are each locked";
    match (&mut *d.expect(locked), &*s.expect(locked)) {
        (Buffer::F32(d), Buffer::F32(s)) => cpu::update(
            "backward (gradient accumulation)",
            d,
            dst.layout(),
            s,
            src.layout(),
            |x, y| x + y,
        ),
        (Buffer::F64(d), Buffer::F64(s)) => cpu::update(
            "backward (gradient accumulation)",
            d,
            dst.layout(),
            s,
            src.layout(),
            |x, y| x + y,
        ),
        _ => unreachable!("one float dtype, checked above"),
    }
    true
}

/// The leaves of a graph that have post-accumulate-grad hooks: how many
/// edges still lead to each, and whether one brought a gradient. A leaf's
/// hooks run after its last edge, so they see the complete gradient once per
/// backward however many ops used the leaf.
#[derive(Default)]
struct HookedLeaves<'g> {
    leaves: Vec<(&'g Tensor, usize, bool)>,
}

impl<'g> HookedLeaves<'g> {
    fn scan(order: &[&'g GradNode]) -> Self {
        let mut h = HookedLeaves::default();
        for n in order {
            for edge in n.next.as_slice() {
                if let Some(Edge::Leaf(leaf)) = edge
                    && leaf.has_grad_hooks()
                {
                    match h.find(leaf) {
                        Some(i) => h.leaves[i].1 += 1,
                        None => h.leaves.push((leaf, 1, false)),
                    }
                }
            }
        }
        h
    }

    fn find(&self, leaf: &Tensor) -> Option<usize> {
        self.leaves
            .iter()
            .position(|(l, _, _)| Arc::ptr_eq(&l.0, &leaf.0))
    }

    /// One edge into `leaf` has been handled; runs its hooks after the last.
    fn visit(&mut self, leaf: &Tensor, brought_grad: bool) {
        let Some(i) = self.find(leaf) else {
            return;
        };
        let entry = &mut self.leaves[i];
        entry.1 -= 1;
        entry.2 |= brought_grad;
        if entry.1 == 0 && entry.2 {
            run_post_accumulate_hooks(leaf);
        }
    }

    /// The edges of a node that got no gradient: nothing flows into its leaves.
    fn skip(&mut self, node: &GradNode) {
        for edge in node.next.as_slice() {
            if let Some(Edge::Leaf(leaf)) = edge {
                self.visit(leaf, false);
            }
        }
    }
}

pub(crate) fn run_backward(root: &Tensor, seed: Tensor, retain_graph: bool) -> Result<()> {
    let _guard = super::NoGradGuard::new();
    let scope = BackwardScope::enter();
    let Some(root_node) = root.grad_node() else {
        if root.requires_grad() {
            // backward() on a leaf: its gradient is the seed.
            accumulate(root, seed);
            run_post_accumulate_hooks(root);
            scope.finish();
            return Ok(());
        }
        return Err(Error::Autograd(
            "backward: this tensor does not require grad and has no grad_fn. Mark the \
             inputs with requires_grad_(true) before computing it, and don't compute it \
             inside no_grad"
                .into(),
        ));
    };
    // Every node is borrowed from `root`, which owns the graph through its edges
    // for the whole call (edges never change while a node is shared).
    let root_node: &GradNode = root_node;

    // Topological order: depth-first post-order, reversed. A node has been seen
    // when it is on the stack or already ordered; past SMALL_GRAPH nodes a map
    // answers that instead of scanning both.
    let mut order: Vec<&GradNode> = Vec::with_capacity(8);
    let mut stack: Vec<(&GradNode, usize)> = Vec::with_capacity(8);
    let mut map: Option<NodeMap> = None;
    stack.push((root_node, 0));
    while let Some(top) = stack.last_mut() {
        let (node, child) = *top;
        let next = node.next.as_slice();
        if child < next.len() {
            top.1 += 1;
            if let Some(Edge::Node(n)) = &next[child] {
                let n: &GradNode = n;
                let seen = match &map {
                    Some(m) => m.contains_key(&ptr(n)),
                    None => {
                        stack.iter().any(|&(s, _)| std::ptr::eq(s, n))
                            || order.iter().any(|&o| std::ptr::eq(o, n))
                    }
                };
                if !seen {
                    stack.push((n, 0));
                    match &mut map {
                        Some(m) => {
                            m.insert(ptr(n), usize::MAX);
                        }
                        None if stack.len() + order.len() > SMALL_GRAPH => {
                            let mut m = NodeMap::default();
                            m.reserve(4 * SMALL_GRAPH);
                            for &(s, _) in &stack {
                                m.insert(ptr(s), usize::MAX);
                            }
                            for &o in &order {
                                m.insert(ptr(o), usize::MAX);
                            }
                            map = Some(m);
                        }
                        None => {}
                    }
                }
            }
        } else {
            stack.pop();
            order.push(node);
        }
    }
    order.reverse();
    if let Some(m) = &mut map {
        for (i, &n) in order.iter().enumerate() {
            m.insert(ptr(n), i);
        }
    }
    // Check every node still has its saved tensors before touching any gradient,
    // so a refused backward leaves `.grad()` as it was.
    for n in &order {
        if n.op.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(freed_graph_error());
        }
    }

    let mut hooked = HookedLeaves::scan(&order);

    let mut grads: Vec<Option<Tensor>> = Vec::with_capacity(order.len());
    grads.resize(order.len(), None);
    grads[0] = Some(seed);
    for i in 0..order.len() {
        let node = order[i];
        let Some(grad) = grads[i].take() else {
            if !hooked.leaves.is_empty() {
                hooked.skip(node);
            }
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
        drop(grad);
        for (edge, g) in node.next.as_slice().iter().zip(input_grads) {
            if let (Some(Edge::Leaf(leaf)), false) = (edge, hooked.leaves.is_empty()) {
                let brought = g.is_some();
                if let Some(g) = g {
                    accumulate(leaf, g);
                }
                hooked.visit(leaf, brought);
                continue;
            }
            let (Some(edge), Some(g)) = (edge, g) else {
                continue;
            };
            match edge {
                Edge::Leaf(leaf) => accumulate(leaf, g),
                Edge::Node(n) => {
                    // Inputs come after their consumers in topological order.
                    let j = match &map {
                        Some(m) => m[&ptr(n)],
                        None => {
                            i + 1
                                + order[i + 1..]
                                    .iter()
                                    .position(|&o| std::ptr::eq(o, &**n))
                                    .expect("every input node is ordered")
                        }
                    };
                    grads[j] = Some(match grads[j].take() {
                        Some(prev) => &prev + &g,
                        None => g,
                    });
                }
            }
        }
    }
    drop(grads);
    scope.finish();
    Ok(())
}

fn ptr(n: &GradNode) -> *const GradNode {
    n
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
                if !crate::tensor::same_shape(v.shape(), self.shape()) {
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
