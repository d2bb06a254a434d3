//! Random number generation: a seedable global generator and explicit generators.

use std::cell::RefCell;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// PyTorch's default seed, so an unseeded program is still reproducible.
const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// A seeded random number generator, for code that must not depend on the
/// global one (`torch.Generator`).
///
/// ```
/// use deriv_runtime::{Generator, Tensor};
/// let mut g1 = Generator::new(7);
/// let mut g2 = Generator::new(7);
/// let a = Tensor::randn_with([3], &mut g1);
/// let b = Tensor::randn_with([3], &mut g2);
/// assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
/// ```
#[derive(Clone, Debug)]
pub struct Generator {
    rng: rand::rngs::StdRng,
    seed: u64,
}

impl Generator {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            seed,
        }
    }
    /// Restarts the generator from `seed` (`Generator.manual_seed`).
    pub fn manual_seed(&mut self, seed: u64) {
        *self = Generator::new(seed);
    }
    /// The seed this generator was last started from.
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }
    /// A uniform sample from [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
    /// A standard normal sample.
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.rng)
    }
    /// A uniform integer in `[low, high)`.
    pub fn int_range(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..high)
    }
    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
    /// Shuffles `v` in place with the draws of [`permutation`](Self::permutation).
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.rng.random_range(0..=i);
            v.swap(i, j);
        }
    }
}

static GLOBAL: Mutex<Option<Generator>> = Mutex::new(None);

/// Seeds the global generator used by `rand`, `randn` and friends
/// (`torch.manual_seed`).
///
/// ```
/// use deriv_runtime::{manual_seed, Tensor};
/// manual_seed(42);
/// let a = Tensor::rand([4]);
/// manual_seed(42);
/// assert_eq!(a.to_vec::<f32>(), Tensor::rand([4]).to_vec::<f32>());
/// ```
///
/// Inside [`with_thread_generator`] it seeds that thread's private
/// generator instead.
pub fn manual_seed(seed: u64) {
    let seeded_private = THREAD_GENERATOR.with(|t| match t.borrow_mut().as_mut() {
        Some(g) => {
            g.manual_seed(seed);
            true
        }
        None => false,
    });
    if !seeded_private {
        *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Generator::new(seed));
    }
}

/// Runs `f` with the global generator (this thread's private one inside
/// [`with_thread_generator`]).
pub fn with_global_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    let mut f = Some(f);
    let private = THREAD_GENERATOR.with(|t| {
        t.borrow_mut()
            .as_mut()
            .map(|g| (f.take().expect("called once"))(g))
    });
    if let Some(r) = private {
        return r;
    }
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    (f.take().expect("called once"))(g.get_or_insert_with(|| Generator::new(DEFAULT_SEED)))
}

thread_local! {
    /// The generator that replaces the global one on this thread while
    /// [`with_thread_generator`] runs.
    static THREAD_GENERATOR: RefCell<Option<Generator>> = const { RefCell::new(None) };
}

/// Runs `f` with a default generator private to this thread: inside it,
/// [`manual_seed`], `rand`, `randn`, `randint`, `randperm`, dropout and
/// unseeded `DataLoader` shuffles on this thread use that generator
/// (started from the default seed), and neither read nor disturb the
/// process-wide one or other threads'. The previous state comes back when
/// `f` returns or panics.
///
/// PyTorch's default generator is one per process; this is for running
/// seeded work side by side in threads (tests, sweeps) and still getting,
/// in each, the numbers it gives when run alone. Work that `f` hands to
/// other threads draws from theirs.
///
/// ```
/// use deriv_runtime::{manual_seed, with_thread_generator, Generator, Tensor};
/// let run = || {
///     with_thread_generator(|| {
///         manual_seed(3);
///         Tensor::rand([4]).to_vec::<f32>()
///     })
/// };
/// let other = std::thread::spawn(run);
/// let seeded_3 = Tensor::rand_with([4], &mut Generator::new(3)).to_vec::<f32>();
/// assert_eq!(run(), seeded_3);
/// assert_eq!(other.join().unwrap(), seeded_3);
/// ```
pub fn with_thread_generator<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the enclosing scope's generator back, also on unwinding.
    struct Restore(Option<Generator>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            THREAD_GENERATOR.with(|t| *t.borrow_mut() = outer);
        }
    }
    let outer = THREAD_GENERATOR.with(|t| t.borrow_mut().replace(Generator::new(DEFAULT_SEED)));
    let _restore = Restore(outer);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw() -> f64 {
        with_global_generator(|g| g.uniform())
    }

    /// Nested scopes: the inner one's seeding and draws leave the outer
    /// one's sequence where it was, also when the inner one panics. (All
    /// inside a scope, so the other tests' use of the process-wide
    /// generator cannot interleave.)
    #[test]
    fn a_thread_generator_scope_restores_the_one_around_it() {
        with_thread_generator(|| {
            manual_seed(5);
            let first = draw();
            let inner = with_thread_generator(|| {
                let unseeded = draw();
                manual_seed(9);
                (unseeded, draw())
            });
            let panicked = std::panic::catch_unwind(|| {
                with_thread_generator(|| {
                    manual_seed(1);
                    draw();
                    panic!("inside the scope")
                })
            });
            assert!(panicked.is_err());
            let second = draw();

            let mut outer = Generator::new(5);
            assert_eq!((first, second), (outer.uniform(), outer.uniform()));
            let mut fresh = Generator::new(DEFAULT_SEED);
            let mut nine = Generator::new(9);
            assert_eq!(inner, (fresh.uniform(), nine.uniform()));
        });
        THREAD_GENERATOR.with(|t| assert!(t.borrow().is_none(), "scope left behind"));
    }
}
