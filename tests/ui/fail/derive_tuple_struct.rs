use deriv::nn::{Linear, Module};

#[derive(Module)]
struct Pair(Linear, Linear);

fn main() {}
