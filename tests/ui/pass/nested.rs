use deriv::network;
use deriv::nn::{Linear, Module, ReLU};
use deriv::Tensor;

network! {
    pub struct Block = Linear(4, 4) -> ReLU;

    pub struct Model {
        b1: Block,
        b2: Block,
        head: Linear(4, 1),
    }
    fn forward(x) {
        let h = b1(x) + x;
        head(b2(h) + h)
    }
}

fn main() {
    let m = Model::default();
    assert_eq!(m.named_parameters()[0].0, "b1.0.weight");
    let _ = m.forward(&Tensor::randn([2, 4]));
}
