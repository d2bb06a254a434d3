use deriv::network;
use deriv::nn::{Embedding, Linear};

network! {
    pub struct Tagger = Embedding(1000, 64) -> Linear(32, 5);
}

fn main() {}
