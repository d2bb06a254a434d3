// Every mistake is reported at once, each at its tokens.
use deriv::network;
use deriv::nn::Linear;

network! {
    pub struct Net {
        fc: Linear(4, 2),
    }
    fn forward(x) {
        let a = (|t| t)(x);
        let b = println!("{}", 1);
        let c = fc(x)?;
        fc.weight = x;
        return fc(x);
    }
}

fn main() {}
