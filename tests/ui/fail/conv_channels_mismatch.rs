use deriv::network;
use deriv::nn::{Conv2d, ReLU};

network! {
    pub struct Cnn = Conv2d(1, 6, 5) -> ReLU -> Conv2d(8, 16, 5);
}

fn main() {}
