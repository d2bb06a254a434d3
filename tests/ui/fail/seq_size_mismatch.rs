use deriv::network;
use deriv::nn::{Linear, ReLU};

network! {
    pub struct Mlp = Linear(784, 256) -> ReLU -> Linear(128, 10);
}

fn main() {}
