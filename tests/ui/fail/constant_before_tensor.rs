use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc1: Linear(4, 8),
        fc2: Linear(8, 8),
    }
    fn forward(x) {
        leaky_relu(fc2(fc1(x)), 0.2, x)
    }
}

fn main() {}
