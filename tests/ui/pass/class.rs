use deriv::network;
use deriv::nn::{Dropout, Linear};
use deriv::Tensor;

network! {
    pub struct Net {
        /// The hidden layer.
        fc1: Linear(784, 256),
        drop: Dropout(0.1),
        fc2: Linear(256, 10),
    }
    fn forward(x) {
        let h = drop(relu(fc1(x)));
        log_softmax(fc2(h) * 0.5 + 1.0, 1)
    }
}

fn main() {
    let net = Net::default();
    let (y, saved) = net.forward_train(&Tensor::randn([2, 784]));
    let _: Option<Tensor> = net.backward(saved, &y, false);
}
