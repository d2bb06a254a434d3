//! Random number generation: a seedable global generator and explicit generators.

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
pub fn manual_seed(seed: u64) {
    *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Generator::new(seed));
}

/// Runs `f` with the global generator.
pub fn with_global_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Generator::new(DEFAULT_SEED)))
}
