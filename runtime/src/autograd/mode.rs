//! Turning recording on and off: `no_grad`.

use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread are recorded for backward.
#[inline]
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording on or off for this thread; returns the previous setting.
pub fn set_grad_enabled(enabled: bool) -> bool {
    GRAD_ENABLED.with(|g| g.replace(enabled))
}

/// Disables recording until dropped (`with torch.no_grad():`).
///
/// ```
/// use deriv_runtime::{NoGradGuard, Tensor};
/// let w = Tensor::ones([2]).requires_grad_(true);
/// {
///     let _guard = NoGradGuard::new();
///     assert!(!(&w * 2.0).requires_grad());
/// }
/// assert!((&w * 2.0).requires_grad());
/// ```
///
/// The setting is per thread, so the guard is neither `Send` nor `Sync`: it
/// must be dropped on the thread that made it (moving it to another thread
/// would restore that thread's setting and leave this one's off for good).
///
/// ```compile_fail
/// let guard = deriv_runtime::NoGradGuard::new();
/// std::thread::spawn(move || drop(guard)); // error: cannot be sent between threads
/// ```
pub struct NoGradGuard {
    previous: bool,
    /// A raw pointer makes the guard `!Send` and `!Sync`.
    _thread_bound: PhantomData<*const ()>,
}

impl NoGradGuard {
    /// Disables recording on this thread until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NoGradGuard {
            previous: set_grad_enabled(false),
            _thread_bound: PhantomData,
        }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        set_grad_enabled(self.previous);
    }
}

/// Runs `f` with recording disabled: updates to parameters go here.
///
/// ```
/// use deriv_runtime::{no_grad, Tensor};
/// let w = Tensor::ones([2]).requires_grad_(true);
/// (&w * 3.0).sum().backward();
/// no_grad(|| w.sub_(&(w.grad().unwrap() * 0.1)));
/// assert_eq!(w.to_vec::<f32>(), vec![0.7, 0.7]);
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}
