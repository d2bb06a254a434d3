use deriv::nn::{Differentiable, Forward, Linear, Module, ReLU};
use deriv::{Device, Tensor};

#[derive(Module)]
#[module(sequential)]
struct Mlp {
    fc1: Linear,
    act: ReLU,
    fc2: Linear,
    #[module(skip)]
    name: &'static str,
}

#[derive(Module)]
struct Wrapper<M> {
    inner: M,
    scale: Tensor,
}

fn main() {
    let dev = Device::Cpu;
    let mlp = Mlp { fc1: Linear::new(2, 4, &dev), act: ReLU, fc2: Linear::new(4, 1, &dev), name: "mlp" };
    let x = Tensor::randn([3, 2]);
    let _ = mlp.forward(&x);
    let (y, saved) = mlp.forward_train(&x);
    let _ = mlp.backward(saved, &y, true);
    let w = Wrapper { inner: mlp, scale: Tensor::ones([1]) };
    assert_eq!(w.named_parameters().len(), 5);
    let _ = w.inner.name;
}
