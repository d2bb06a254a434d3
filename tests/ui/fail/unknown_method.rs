use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc: Linear(4, 2),
    }
    fn forward(x) {
        fc(x).cummax(1)
    }
}

fn main() {}
