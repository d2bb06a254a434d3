use deriv::prelude::*;
fn main() {
    let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
    let y = x.matmul(&x).relu().mean();
    y.backward();
    println!("{y}\n{}\n{:?}", x.grad().unwrap(), x);
    let a = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    println!("{}", a.sum_dim(1, false));
    println!("{}", a.transpose(0, 2).contiguous());
    let (v, i) = a.max_dim(-1, true);
    println!("{v} {i}");
    println!("{}", a.var_dim(2, 1, false));
    println!("{}", Tensor::randn([3, 3]) * 1000.0);
    println!("{}", Tensor::zeros([8, 25, 400, 400, 3]).narrow(0, 0, 2));
    let x1 = Tensor::scalar(0.0f32).requires_grad_(true);
    let x2 = Tensor::scalar(0.0f32).requires_grad_(true);
    for _ in 0..100 {
        let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
        f.backward();
        no_grad(|| { x1.sub_(&(x1.grad().unwrap() * 0.1)); x2.sub_(&(x2.grad().unwrap() * 0.1)); });
        x1.grad().unwrap().zero_(); x2.grad().unwrap().zero_();
    }
    println!("{} {}", x1, x2);
    let r = deriv::gradcheck(|t| t[0].matmul(&t[1]).sigmoid().sum_dim(0, false), &[Tensor::randn([3, 4]), Tensor::randn([2, 4, 5])]);
    println!("{r}");
    let t = std::time::Instant::now();
    for _ in 0..100000 {
        let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
        f.backward();
        no_grad(|| { x1.sub_(&(x1.grad().unwrap() * 0.1)); x2.sub_(&(x2.grad().unwrap() * 0.1)); });
        x1.grad().unwrap().zero_(); x2.grad().unwrap().zero_();
    }
    println!("step {:?}", t.elapsed() / 100000);
}
