use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc1: Linear(4, 8),
        fc2: Linear(4, 3),
    }
    fn forward(x) {
        let base = fc1(x).sigmoid();
        let exponent = fc2(x);
        let y = pow(base, exponent);
        y
    }
}

fn main() {}
