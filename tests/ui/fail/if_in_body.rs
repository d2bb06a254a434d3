use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc: Linear(4, 4),
    }
    fn forward(x) {
        let h = fc(x);
        if true { relu(h) } else { h }
    }
}

fn main() {}
