//! Hooks run after a leaf's gradient has been accumulated
//! (`register_post_accumulate_grad_hook`), and callbacks run when a tape
//! backward ends (PyTorch's `queue_callback`): what data-parallel training
//! uses to start reducing a gradient as soon as it is complete.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::tensor::Tensor;

/// A post-accumulate-grad hook: called with the leaf whose `.grad()` is complete.
pub(crate) type HookFn = dyn Fn(&Tensor) + Send + Sync;

/// The hooks of one leaf, with the ids their handles remove them by.
#[derive(Default)]
pub(crate) struct Hooks {
    list: Mutex<Vec<(u64, Arc<HookFn>)>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Removes the hook it was returned for ([`Tensor::register_post_accumulate_grad_hook`]),
/// like PyTorch's `RemovableHandle`. Dropping the handle keeps the hook.
pub struct HookHandle {
    hooks: Weak<Hooks>,
    id: u64,
}

impl HookHandle {
    /// Unregisters the hook (a no-op when it is already gone).
    pub fn remove(&self) {
        if let Some(h) = self.hooks.upgrade() {
            h.list
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(id, _)| *id != self.id);
        }
    }
}

impl std::fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookHandle").field("id", &self.id).finish()
    }
}

impl Tensor {
    /// Registers `hook` to run after this leaf's gradient has been
    /// accumulated into `.grad()` (PyTorch's
    /// `register_post_accumulate_grad_hook`); the hook receives the leaf.
    ///
    /// It runs once per tape backward that reaches the leaf, after every
    /// contribution of that backward has been added (a weight used twice in
    /// a graph is reported once, complete); once per parameter gradient a
    /// compile-time backward adds (`nn::accumulate_grad`, the layers'
    /// `backward` and `backward_ws`). It runs on the thread doing the
    /// backward, under `no_grad`. A hook must not register or remove hooks
    /// on the same tensor (the list is locked while hooks run), and it
    /// should not capture the tensor itself (that would keep it alive
    /// forever): the leaf is passed in.
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// use std::sync::{Arc, Mutex};
    /// let w = tensor![1., 2.].requires_grad_(true);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let handle = w.register_post_accumulate_grad_hook(move |p| {
    ///     s.lock().unwrap().push(p.grad().unwrap().to_vec::<f32>());
    /// });
    /// (&w * &w + &w).sum().backward(); // w used three times: one call
    /// assert_eq!(*seen.lock().unwrap(), vec![vec![3., 5.]]);
    /// handle.remove();
    /// w.sum().backward();
    /// assert_eq!(seen.lock().unwrap().len(), 1);
    /// ```
    #[track_caller]
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: impl Fn(&Tensor) + Send + Sync + 'static,
    ) -> HookHandle {
        assert!(
            self.is_leaf(),
            "register_post_accumulate_grad_hook: only leaf tensors accumulate gradients; \
             this one was produced by {} (register the hook on the leaf it came from)",
            self.grad_fn().unwrap_or("an op")
        );
        let hooks = self.0.hooks.get_or_init(|| Arc::new(Hooks::default()));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        hooks
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(hook)));
        HookHandle {
            hooks: Arc::downgrade(hooks),
            id,
        }
    }

    /// Whether any post-accumulate-grad hook was ever registered here (cheap:
    /// the backward engine asks it of every leaf).
    #[inline]
    pub(crate) fn has_grad_hooks(&self) -> bool {
        self.0.hooks.get().is_some()
    }
}

/// Runs `leaf`'s post-accumulate-grad hooks (none: returns at once).
#[inline]
pub(crate) fn run_post_accumulate_hooks(leaf: &Tensor) {
    if let Some(hooks) = leaf.0.hooks.get() {
        let list = hooks.list.lock().unwrap_or_else(|e| e.into_inner());
        for (_, hook) in list.iter() {
            hook(leaf);
        }
    }
}

// ----- end-of-backward callbacks

thread_local! {
    /// How many tape backwards are running on this thread (a hook may start one).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Callbacks queued during the outermost running backward.
    static CALLBACKS: RefCell<Vec<Box<dyn FnOnce()>>> = const { RefCell::new(Vec::new()) };
}

/// Queues `f` to run when the tape backward running on this thread ends
/// (PyTorch's `Variable._execution_engine.queue_callback`). Returns false,
/// without queueing, when no tape backward is running here (the
/// compile-time path, or a hook called outside backward).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn queue_callback(f: Box<dyn FnOnce()>) -> bool {
    if DEPTH.with(Cell::get) == 0 {
        return false;
    }
    CALLBACKS.with(|c| c.borrow_mut().push(f));
    true
}

/// Marks a tape backward as running on this thread for its lifetime; the
/// outermost one runs the queued callbacks when it ends normally.
pub(crate) struct BackwardScope;

impl BackwardScope {
    pub(crate) fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        BackwardScope
    }

    /// Ends the scope, running the callbacks queued in it (in order) when
    /// this was the outermost backward.
    pub(crate) fn finish(self) {
        let outermost = DEPTH.with(Cell::get) == 1;
        let queued = if outermost {
            CALLBACKS.with(|c| std::mem::take(&mut *c.borrow_mut()))
        } else {
            Vec::new()
        };
        drop(self);
        for f in queued {
            f();
        }
    }
}

impl Drop for BackwardScope {
    fn drop(&mut self) {
        let left = DEPTH.with(|d| {
            d.set(d.get() - 1);
            d.get()
        });
        if left == 0 {
            // A backward that failed or panicked runs nothing it queued.
            CALLBACKS.with(|c| c.borrow_mut().clear());
        }
    }
}
