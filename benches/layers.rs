//! The layer workloads of the suite (W6-W8), each one training step
//! (forward, cross-entropy, backward, SGD update) on three paths as W3/W4:
//! `ws` (`TrainStep`), `compile_time` (`forward_train`/`backward` as a user
//! writes it) and `tape`; and W6b, one convolution's forward:
//! - w6_step: LeNet-5-like CNN, Conv(1,6,5,p2)-ReLU-MaxPool2-Conv(6,16,5)-
//!   ReLU-MaxPool2-Flatten-Linear(400,120)-ReLU-Linear(120,84)-ReLU-
//!   Linear(84,10), batch 64 of 1x28x28, SGD 0.01 (samples/s);
//! - w6b_conv: Conv2d(64, 64, 3, padding 1) forward on 8x64x56x56 (GFLOP/s);
//! - w7_step: LSTM(64, 128, batch_first) over 32 steps, batch 32,
//!   Linear(128, 10) on the last hidden state, SGD 0.01 (samples/s);
//! - w8_step: TransformerEncoderLayer(128, 4, 512, dropout 0, batch_first)
//!   on batch 16 x 64 tokens, mean over the tokens, Linear(128, 10), SGD 0.01
//!   (samples/s).
//!
//! The PyTorch side is benches/pytorch/suite.py; benches/pytorch/suite.sh
//! prints both in one table. Run: `cargo bench --bench layers`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deriv::nn::{
    Conv2d, Conv2dOptions, Differentiable, Forward, Linear, LinearWorkspace, LstmKind, MaxPool2d,
    RecurrentOptions, RecurrentSaved, RecurrentWorkspace, TrainStep, TransformerEncoderLayer,
    TransformerEncoderLayerOptions, LSTM,
};
use deriv::{network, no_grad, Device, Generator, Tensor};

#[path = "../tests/common/workloads.rs"]
mod workloads;
use workloads::{LossKind, WsTrainer};

const CPU: Device = Device::Cpu;
const LR: f64 = 0.01;

network! {
    /// W6's LeNet-5-like network (conv1's padding set after construction).
    pub struct LeNet {
        conv1: Conv2d(1, 6, 5),
        conv2: Conv2d(6, 16, 5),
        pool: MaxPool2d(2),
        fc1: Linear(400, 120),
        fc2: Linear(120, 84),
        fc3: Linear(84, 10),
    }
    fn forward(x) {
        let h = pool(relu(conv1(x)));
        let h = pool(relu(conv2(h)));
        fc3(relu(fc2(relu(fc1(h.flatten(1, -1))))))
    }
}

fn lenet() -> LeNet {
    let mut m = LeNet::new(&CPU);
    m.conv1 = Conv2d::with_options(1, 6, 5, &Conv2dOptions::new().padding(2), &CPU);
    m
}

/// W7's model: an LSTM and a classifier on its last step's output.
#[derive(deriv::nn::Module)]
pub struct W7 {
    lstm: LSTM,
    fc: Linear,
}

fn w7() -> W7 {
    let opts = RecurrentOptions {
        batch_first: true,
        ..Default::default()
    };
    W7 {
        lstm: LSTM::with_options(64, 128, &opts, &CPU),
        fc: Linear::new(128, 10, &CPU),
    }
}

impl Forward for W7 {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (out, _) = self.lstm.forward_with(x, None);
        self.fc.forward(&out.select(1, -1))
    }
}

impl Differentiable for W7 {
    type Saved = (
        RecurrentSaved,
        <Linear as Differentiable>::Saved,
        Vec<usize>,
    );

    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
        let (out, lstm) = self.lstm.forward_train(x);
        let (y, fc) = self.fc.forward_train(&out.select(1, -1));
        (y, (lstm, fc, out.shape().to_vec()))
    }

    fn backward(
        &self,
        (lstm, fc, shape): Self::Saved,
        g: &Tensor,
        input_grad: bool,
    ) -> Option<Tensor> {
        let d_last = self.fc.backward(fc, g, true)?;
        // The last step's gradient; the others' outputs were not used.
        let d_out = no_grad(|| {
            let (n, t, h) = (shape[0], shape[1], shape[2]);
            Tensor::cat(&[Tensor::zeros([n, t - 1, h]), d_last.unsqueeze(1)], 1)
        });
        self.lstm.backward(lstm, &d_out, input_grad)
    }
}

/// W7's buffers: the LSTM's and the classifier's, the last step's output,
/// the LSTM output's shape and its gradient (zero but at the last step).
#[derive(Default)]
pub struct W7Workspace {
    lstm: RecurrentWorkspace<LstmKind>,
    last: Option<Tensor>,
    fc: LinearWorkspace,
    out_shape: Vec<usize>,
    d_out: Option<Tensor>,
}

impl TrainStep for W7 {
    type Workspace = W7Workspace;

    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut W7Workspace) -> &'w Tensor {
        let out = self.lstm.forward_train_ws(x, &mut ws.lstm);
        if ws.out_shape != out.shape() {
            ws.out_shape = out.shape().to_vec();
        }
        let last = ws.last.insert(out.select(1, -1));
        self.fc.forward_train_ws(last, &mut ws.fc)
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut W7Workspace,
        g: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let d_last = self.fc.backward_ws(&mut ws.fc, g, true)?;
        let d_out = match &ws.d_out {
            Some(d) if d.shape() == ws.out_shape => d,
            _ => ws.d_out.insert(Tensor::zeros(&ws.out_shape)),
        };
        no_grad(|| {
            d_out.select(1, -1).copy_(d_last);
        });
        self.lstm.backward_ws(&mut ws.lstm, d_out, input_grad)
    }
}

network! {
    /// W8's model: an encoder layer (replaced after construction with
    /// W8's sizes), the mean over the tokens, a classifier.
    pub struct W8 {
        encoder: TransformerEncoderLayer(128, 4),
        fc: Linear(128, 10),
    }
    fn forward(x) {
        fc(encoder(x).mean_dim(1, false))
    }
}

fn w8() -> W8 {
    let mut m = W8::new(&CPU);
    let opts = TransformerEncoderLayerOptions {
        dim_feedforward: 512,
        dropout: 0.0,
        batch_first: true,
        ..Default::default()
    };
    m.encoder = TransformerEncoderLayer::with_options(128, 4, &opts, &CPU);
    m
}

/// A workload on the three paths (each on its own model, same seed).
fn bench_workload<M: TrainStep>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn() -> M,
    x: &Tensor,
    classes: usize,
) {
    let n = x.shape()[0];
    let t = Tensor::randint(0, classes as i64, [n]);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(n as u64));
    let loss = LossKind::CrossEntropy;
    deriv::manual_seed(0);
    let mut trainer = WsTrainer::new(make(), loss, LR);
    group.bench_function(BenchmarkId::new("ws", n), |b| {
        b.iter(|| trainer.step(x, &t))
    });
    deriv::manual_seed(0);
    let model = make();
    let mut opt = workloads::sgd(&model, LR);
    group.bench_function(BenchmarkId::new("compile_time", n), |b| {
        b.iter(|| workloads::user_step(&model, x, &t, loss, &mut opt))
    });
    deriv::manual_seed(0);
    let model = make();
    let mut opt = workloads::sgd(&model, LR);
    group.bench_function(BenchmarkId::new("tape", n), |b| {
        b.iter(|| workloads::tape_step(&model, x, &t, loss, &mut opt))
    });
    group.finish();
}

fn layer_steps(c: &mut Criterion) {
    let mut gen = Generator::new(0);
    bench_workload(
        c,
        "w6_step",
        lenet,
        &Tensor::randn_with([64, 1, 28, 28], &mut gen),
        10,
    );
    bench_workload(
        c,
        "w7_step",
        w7,
        &Tensor::randn_with([32, 32, 64], &mut gen),
        10,
    );
    bench_workload(
        c,
        "w8_step",
        w8,
        &Tensor::randn_with([16, 64, 128], &mut gen),
        10,
    );

    let conv = Conv2d::with_options(64, 64, 3, &Conv2dOptions::new().padding(1), &CPU);
    let x = Tensor::randn_with([8, 64, 56, 56], &mut gen);
    let mut group = c.benchmark_group("w6b_conv");
    // 2·N·O·H·W·C·k·k multiply-adds' flops.
    group.throughput(Throughput::Elements(2 * 8 * 64 * 56 * 56 * 64 * 9));
    group.bench_function("forward", |b| b.iter(|| no_grad(|| conv.forward(&x))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = layer_steps
}
criterion_main!(benches);
