use deriv::network;
use deriv::nn::{Linear, Tanh};
use deriv::Tensor;

network! {
    pub struct Seq<const I: usize = 2, const H: usize = 8> = Linear(I, H) -> Tanh -> Linear(H, 1);

    pub struct Class<const H: usize = 8> {
        fc1: Linear(4, H),
        fc2: Linear(H, 1),
    }
    fn forward(x) {
        fc2(tanh(fc1(x)) * H)
    }
}

fn main() {
    let _ = Seq::<3, 5>::default().forward(&Tensor::randn([1, 3]));
    let _ = Class::<16>::default().forward(&Tensor::randn([1, 4]));
    let _: Seq = Seq::default();
}
