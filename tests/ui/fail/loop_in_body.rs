use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc: Linear(4, 4),
    }
    fn forward(x) {
        let h = fc(x);
        for _ in 0..3 {
            h = fc(h);
        }
        h
    }
}

fn main() {}
