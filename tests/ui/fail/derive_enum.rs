use deriv::nn::{Linear, Module};

#[derive(Module)]
enum Model {
    Small(Linear),
    Large(Linear),
}

fn main() {}
