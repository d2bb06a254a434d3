use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc1: Linear(4, 8),
        fc2: Linear(8, 2),
    }
    fn forward(x) {
        fc3(relu(fc1(x)))
    }
}

fn main() {}
