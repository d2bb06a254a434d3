use deriv::network;
use deriv::nn::{Differentiable, Linear, Module, ReLU};
use deriv::Tensor;

network! {
    /// Doc comments pass through.
    #[allow(dead_code)]
    pub struct Mlp = Linear(2, 16) -> ReLU -> Linear(16, 1);
}

fn main() {
    let mlp = Mlp::default();
    assert_eq!(mlp.named_parameters()[0].0, "0.weight");
    let x = Tensor::randn([3, 2]);
    let (y, saved): (Tensor, MlpSaved) = Differentiable::forward_train(&mlp, &x);
    let _ = mlp.backward(saved, &y.ones_like(), true);
}
