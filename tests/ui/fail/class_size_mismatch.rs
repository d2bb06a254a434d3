use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc1: Linear(784, 256),
        fc2: Linear(128, 10),
    }
    fn forward(x) {
        let h = relu(fc1(x));
        fc2(h)
    }
}

fn main() {}
