use deriv::network;
use deriv::nn::Linear;
use deriv::Tensor;

network! {
    pub struct Pair {
        fa: Linear(3, 4),
        fb: Linear(2, 4),
    }
    fn forward(x, y) {
        let h = fa(x) + fb(y);
        h * h
    }
}

fn main() {
    let m = Pair::default();
    let (x, y) = (Tensor::randn([5, 3]), Tensor::randn([5, 2]));
    let _: Tensor = m.forward(&x, &y);
    let (out, saved) = m.forward_train(&x, &y);
    let (_dx, _dy): (Option<Tensor>, Option<Tensor>) = m.backward(saved, &out, true);
}
