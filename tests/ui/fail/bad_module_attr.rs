use deriv::nn::{Linear, Module};

#[derive(Module)]
#[module(sequental)]
struct Mlp {
    fc1: Linear,
    #[module(skip, frozen)]
    fc2: Linear,
}

fn main() {}
