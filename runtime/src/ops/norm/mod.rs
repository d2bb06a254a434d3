//! Normalisation layers' ops: `layer_norm`.

mod layer_norm;

pub use layer_norm::LayerNorm;
