use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc1: Linear(4, 8),
        fc2: Linear(8, 8),
    }
    fn forward(x) {
        fc2(fc1(x)) + fc1
    }
}

fn main() {}
