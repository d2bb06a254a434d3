use deriv::network;
use deriv::nn::{BatchNorm2d, Conv2d, GroupNorm, ReLU};

network! {
    pub struct Cnn = Conv2d(1, 8, 3) -> BatchNorm2d(16) -> ReLU;
}

network! {
    pub struct Grouped = Conv2d(1, 8, 3) -> GroupNorm(2, 6) -> ReLU;
}

fn main() {}
