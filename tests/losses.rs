//! The loss functions against PyTorch's numbers, gradchecked in f64 on the
//! tape, with `Loss::backward` / `forward_backward` (the compile-time path)
//! equal to the tape's gradient, BCE-with-logits stable at ±100, reduction
//! shapes, grad_fn names and the error messages for bad targets.

// The reference numbers are PyTorch's output as printed (ln 2 among them).
#![allow(clippy::approx_constant)]

use deriv::nn::functional as F;
use deriv::nn::{
    BCELoss, BCEWithLogitsLoss, BceWithLogitsOptions, CrossEntropyLoss, CrossEntropyOptions,
    KLDivLoss, KlDivOptions, KlDivReduction, L1Loss, Loss, MSELoss, NLLLoss, NllLossOptions,
    Reduction, SmoothL1Loss,
};
use deriv::{gradcheck, no_grad, DType, Generator, Tensor};

// ---------------------------------------------------------------- reference numbers
//
// Printed by PyTorch 2 (CPU, /work/torchvenv/bin/python) with this script
// (`show` prints a tensor flattened as a Rust slice):
//
// import torch, torch.nn.functional as F
// torch.set_default_dtype(torch.float64)
// x = torch.tensor([[0.2,-1.3,0.5,2.1],[1.0,0.3,-0.7,0.0],[-0.4,0.8,1.6,-2.2]])
// t = torch.tensor([3,0,1])
// w = torch.tensor([0.3,1.0,2.0,0.5])
// for red in ['mean','sum','none']:
//     R=red.upper()
//     show(f"CE_{R}", F.cross_entropy(x,t,reduction=red))
//     show(f"CE_W_{R}", F.cross_entropy(x,t,weight=w,reduction=red))
//     show(f"CE_LS_{R}", F.cross_entropy(x,t,label_smoothing=0.1,reduction=red))
//     ti = torch.tensor([3,1,0])
//     show(f"CE_W_LS_IGN_{R}", F.cross_entropy(x,ti,weight=w,label_smoothing=0.2,ignore_index=1,reduction=red))
//     show(f"NLL_W_IGN_{R}", F.nll_loss(x.log_softmax(1),torch.tensor([3,-100,1]),weight=w,reduction=red))
// xx = x.clone().requires_grad_()
// F.cross_entropy(xx,torch.tensor([3,1,0]),weight=w,label_smoothing=0.2,ignore_index=1).backward()
// show("CE_W_LS_IGN_GRAD", xx.grad)
// show("CE_IGN_DEFAULT_MEAN", F.cross_entropy(x,torch.tensor([3,-100,1])))
// show("CE_W_LS_IGN_DEFAULT_MEAN", F.cross_entropy(x,torch.tensor([-100,0,2]),weight=w,label_smoothing=0.3))
// x3 = torch.tensor([[[0.5,-0.2],[1.5,0.1],[-1.0,0.7]],[[0.0,2.0],[0.3,-0.4],[0.9,0.2]]])
// t3 = torch.tensor([[2,0],[1,-100]])
// w3 = torch.tensor([1.5,0.5,1.0])
// show("CE3_W_LS_MEAN", F.cross_entropy(x3,t3,weight=w3,label_smoothing=0.15))
// show("CE3_W_LS_NONE", F.cross_entropy(x3,t3,weight=w3,label_smoothing=0.15,reduction='none'))
// x1 = torch.tensor([0.3,-0.5,1.2,0.0])
// show("CE1_MEAN", F.cross_entropy(x1,torch.tensor(2)))
// show("CE1_LS_W_NONE", F.cross_entropy(x1,torch.tensor(2),weight=w,label_smoothing=0.1,reduction='none'))
// p = torch.tensor([[0.1,0.2,0.3,0.4],[0.0,1.0,0.0,0.0],[0.25,0.25,0.25,0.25]])
// for red in ['mean','sum','none']:
//     R=red.upper()
//     show(f"CEP_{R}", F.cross_entropy(x,p,reduction=red))
//     show(f"CEP_W_LS_{R}", F.cross_entropy(x,p,weight=w,label_smoothing=0.1,reduction=red))
// xx = x.clone().requires_grad_(); pp = p.clone().requires_grad_()
// F.cross_entropy(xx,pp,weight=w,label_smoothing=0.1).backward()
// show("CEP_W_LS_GRAD_X", xx.grad); show("CEP_W_LS_GRAD_P", pp.grad)
// p3 = torch.tensor([[[0.2,0.5],[0.3,0.1],[0.5,0.4]],[[1.0,0.0],[0.0,0.5],[0.0,0.5]]])
// show("CEP3_MEAN", F.cross_entropy(x3,p3))
// xp = torch.tensor([[0.1,0.5,0.9],[0.0,1.0,0.3]])
// yp = torch.tensor([[0.0,1.0,0.7],[1.0,0.0,0.3]])
// wb = torch.tensor([1.0,2.0,0.5])
// for red in ['mean','sum','none']:
//     R=red.upper()
//     show(f"BCE_{R}", F.binary_cross_entropy(xp,yp,reduction=red))
//     show(f"BCE_W_{R}", F.binary_cross_entropy(xp,yp,weight=wb,reduction=red))
// xx = xp.clone().requires_grad_(); yy=yp.clone().requires_grad_()
// F.binary_cross_entropy(xx,yy,weight=wb).backward()
// show("BCE_W_GRAD_X", xx.grad)
// z = torch.tensor([[-100.0,-3.5,0.0,2.0],[100.0,0.7,-1.2,100.0]])
// yz = torch.tensor([[1.0,0.0,0.5,1.0],[0.0,0.2,1.0,1.0]])
// wz = torch.tensor([[1.0],[0.5]])
// pw = torch.tensor([2.0,0.5,1.0,3.0])
// for red in ['mean','sum','none']:
//     R=red.upper()
//     show(f"BCEL_{R}", F.binary_cross_entropy_with_logits(z,yz,reduction=red))
//     show(f"BCEL_W_PW_{R}", F.binary_cross_entropy_with_logits(z,yz,weight=wz,pos_weight=pw,reduction=red))
// zz = z.clone().requires_grad_(); yy=yz.clone().requires_grad_()
// F.binary_cross_entropy_with_logits(zz,yy).backward()
// show("BCEL_GRAD_Z", zz.grad); show("BCEL_GRAD_Y", yy.grad)
// zz = z.clone().requires_grad_(); yy=yz.clone().requires_grad_()
// F.binary_cross_entropy_with_logits(zz,yy,weight=wz,pos_weight=pw).backward()
// show("BCEL_W_PW_GRAD_Z", zz.grad); show("BCEL_W_PW_GRAD_Y", yy.grad)
// z32 = torch.tensor([100.0,-100.0,100.0,-100.0],dtype=torch.float32).requires_grad_()
// y32 = torch.tensor([1.0,0.0,0.0,1.0],dtype=torch.float32)
// l = F.binary_cross_entropy_with_logits(z32,y32,reduction='none'); l.sum().backward()
// show("BCEL_F32_EDGE_NONE", l); show("BCEL_F32_EDGE_GRAD", z32.grad)
// a = torch.tensor([[0.5,-1.0,2.0],[3.0,0.0,-0.25]])
// b = torch.tensor([[1.0,1.0,1.5],[-1.0,0.0,0.75]])
// for red in ['mean','sum','none']:
//     R=red.upper()
//     show(f"MSE_{R}", F.mse_loss(a,b,reduction=red))
//     show(f"L1_{R}", F.l1_loss(a,b,reduction=red))
// aa=a.clone().requires_grad_()
// F.l1_loss(aa,b).backward(); show("L1_GRAD", aa.grad)

const CE_MEAN: &[f64] = &[0.7721406913012587];
const CE_W_MEAN: &[f64] = &[0.917842738202208];
const CE_LS_MEAN: &[f64] = &[0.8863073579679254];
const CE_W_LS_IGN_MEAN: &[f64] = &[1.7494778982691916];
const NLL_W_IGN_MEAN: &[f64] = &[0.9581217385619133];
const CE_SUM: &[f64] = &[2.316422073903776];
const CE_W_SUM: &[f64] = &[1.6521169287639743];
const CE_LS_SUM: &[f64] = &[2.658922073903776];
const CE_W_LS_IGN_SUM: &[f64] = &[1.3995823186153533];
const NLL_W_IGN_SUM: &[f64] = &[1.43718260784287];
const CE_NONE: &[f64] = &[0.32558345931445104, 0.7164477364036809, 1.2743908781856446];
const CE_W_NONE: &[f64] = &[0.16279172965722552, 0.21493432092110426, 1.2743908781856446];
const CE_LS_NONE: &[f64] = &[0.4980834593144511, 0.8014477364036809, 1.3593908781856445];
const CE_W_LS_IGN_NONE: &[f64] = &[0.5505942409955262, 0.0, 0.8489880776198271];
const NLL_W_IGN_NONE: &[f64] = &[0.16279172965722552, 0.0, 1.2743908781856446];
const CE_W_LS_IGN_GRAD: &[f64] = &[
    0.0609032332617098,
    -0.04472696130597446,
    -0.017479381529775188,
    0.0013031095740398543,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.2734848291293373,
    0.08778565981824853,
    0.20946688689100804,
    -0.023767717579919318,
];
const CE_IGN_DEFAULT_MEAN: &[f64] = &[0.7999871687500478];
const CE_W_LS_IGN_DEFAULT_MEAN: &[f64] = &[0.7593435909837534];
const CE3_W_LS_MEAN: &[f64] = &[1.868403151052748];
const CE3_W_LS_NONE: &[f64] = &[
    2.696539031852683,
    2.1855839251802123,
    0.723086496125349,
    0.0,
];
const CE1_MEAN: &[f64] = &[0.636813518362947];
const CE1_LS_W_NONE: &[f64] = &[1.2710116172977846];
const CEP_MEAN: &[f64] = &[1.7388073579679257];
const CEP_W_LS_MEAN: &[f64] = &[1.5909443758057982];
const CEP_SUM: &[f64] = &[5.216422073903777];
const CEP_W_LS_SUM: &[f64] = &[4.772833127417394];
const CEP_NONE: &[f64] = &[1.6755834593144514, 1.416447736403681, 2.124390878185644];
const CEP_W_LS_NONE: &[f64] = &[2.039296295419369, 1.4578654977216625, 1.2756713342763621];
const CEP_W_LS_GRAD_X: &[f64] = &[
    0.02529349351117171,
    -0.06012359523376537,
    -0.14700064538912103,
    0.18183074711171465,
    0.15951399365477098,
    -0.2278795650758194,
    0.012930620640044285,
    0.055434950781004085,
    0.0016678526059718097,
    0.005207055396797588,
    0.030383592276872953,
    -0.037258500279642386,
];
const CEP_W_LS_GRAD_P: &[f64] = &[
    0.2003025113383006,
    1.1176750377943352,
    1.1553500755886708,
    0.048837518897167656,
    0.06448029627633128,
    0.4249343209211043,
    1.4498686418422086,
    0.2574671604605521,
    0.22269517903670796,
    0.38231726345569333,
    0.28463452691138663,
    0.6411586317278467,
];
const CEP3_MEAN: &[f64] = &[1.7251637324901727];
const BCE_MEAN: &[f64] = &[33.69564998118856];
const BCE_W_MEAN: &[f64] = &[50.36322516203908];
const BCE_SUM: &[f64] = &[202.17389988713137];
const BCE_W_SUM: &[f64] = &[302.1793509722345];
const BCE_NONE: &[f64] = &[
    0.10536051565782631,
    0.6931471805599453,
    0.7645278888586923,
    100.0,
    100.0,
    0.6108643020548934,
];
const BCE_W_NONE: &[f64] = &[
    0.10536051565782631,
    1.3862943611198906,
    0.38226394442934614,
    100.0,
    200.0,
    0.3054321510274467,
];
const BCE_W_GRAD_X: &[f64] = &[
    0.18518518518518515,
    -0.6666666666666666,
    0.18518518518518526,
    -166666667332.63382,
    333333334665.26764,
    0.0,
];
const BCEL_MEAN: &[f64] = &[25.409536765762375];
const BCEL_W_PW_MEAN: &[f64] = &[31.537094573453622];
const BCEL_SUM: &[f64] = &[203.276294126099];
const BCEL_W_PW_SUM: &[f64] = &[252.29675658762898];
const BCEL_NONE: &[f64] = &[
    100.0,
    0.029750418272620482,
    0.6931471805599453,
    0.1269280110429725,
    100.0,
    0.9631860488854578,
    1.4632824673380311,
    3.720075976020836e-44,
];
const BCEL_W_PW_NONE: &[f64] = &[
    200.0,
    0.029750418272620482,
    0.6931471805599453,
    0.3807840331289175,
    50.0,
    0.461433721998456,
    0.7316412336690156,
    5.580113964031254e-44,
];
const BCEL_GRAD_Z: &[f64] = &[
    -0.125,
    0.00366402884391954,
    0.0,
    -0.01490036525276471,
    0.125,
    0.05852347152102077,
    -0.0960655979373772,
    0.0,
];
const BCEL_GRAD_Y: &[f64] = &[12.5, 0.4375, -0.0, -0.25, -12.5, -0.0875, 0.15, -12.5];
const BCEL_W_PW_GRAD_Z: &[f64] = &[
    -0.25,
    0.00366402884391954,
    0.0,
    -0.04470109575829412,
    0.0625,
    0.031335562184459355,
    -0.0480327989686886,
    0.0,
];
const BCEL_W_PW_GRAD_Y: &[f64] = &[
    25.0,
    0.21689059885796122,
    0.0,
    -0.21826799723925688,
    -6.25,
    -0.05634956402767056,
    0.075,
    -6.25,
];
const BCEL_F32_EDGE_NONE: &[f64] = &[3.923635700109488e-44, 0.0, 100.0, 100.0];
const BCEL_F32_EDGE_GRAD: &[f64] = &[0.0, 0.0, 1.0, -1.0];
const MSE_MEAN: &[f64] = &[3.5833333333333335];
const L1_MEAN: &[f64] = &[1.3333333333333333];
const MSE_SUM: &[f64] = &[21.5];
const L1_SUM: &[f64] = &[8.0];
const MSE_NONE: &[f64] = &[0.25, 4.0, 0.25, 16.0, 0.0, 1.0];
const L1_NONE: &[f64] = &[0.5, 2.0, 0.5, 4.0, 0.0, 1.0];
const L1_GRAD: &[f64] = &[
    -0.16666666666666666,
    -0.16666666666666666,
    0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.16666666666666666,
];

// ---------------------------------------------------------------- inputs and helpers

fn f64s(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape)
}

fn i64s(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape)
}

/// The logits `x` of the script, `[3, 4]`.
fn x() -> Tensor {
    f64s(
        &[
            0.2, -1.3, 0.5, 2.1, 1.0, 0.3, -0.7, 0.0, -0.4, 0.8, 1.6, -2.2,
        ],
        &[3, 4],
    )
}

/// The class weights `w` of the script.
fn w() -> Tensor {
    f64s(&[0.3, 1.0, 2.0, 0.5], &[4])
}

/// The class probabilities `p` of the script, `[3, 4]`.
fn p() -> Tensor {
    f64s(
        &[
            0.1, 0.2, 0.3, 0.4, 0.0, 1.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25,
        ],
        &[3, 4],
    )
}

/// `x3`, `[2, 3, 2]` (N = 2, C = 3, d1 = 2).
fn x3() -> Tensor {
    f64s(
        &[
            0.5, -0.2, 1.5, 0.1, -1.0, 0.7, 0.0, 2.0, 0.3, -0.4, 0.9, 0.2,
        ],
        &[2, 3, 2],
    )
}

/// The logits `z` of the script, `[2, 4]`, with ±100 entries.
fn z() -> Tensor {
    f64s(&[-100.0, -3.5, 0.0, 2.0, 100.0, 0.7, -1.2, 100.0], &[2, 4])
}

fn yz() -> Tensor {
    f64s(&[1.0, 0.0, 0.5, 1.0, 0.0, 0.2, 1.0, 1.0], &[2, 4])
}

fn bce_logits_opts(reduction: Reduction) -> BceWithLogitsOptions {
    BceWithLogitsOptions {
        weight: Some(f64s(&[1.0, 0.5], &[2, 1])),
        pos_weight: Some(f64s(&[2.0, 0.5, 1.0, 3.0], &[4])),
        reduction,
    }
}

fn xp() -> Tensor {
    f64s(&[0.1, 0.5, 0.9, 0.0, 1.0, 0.3], &[2, 3])
}

fn yp() -> Tensor {
    f64s(&[0.0, 1.0, 0.7, 1.0, 0.0, 0.3], &[2, 3])
}

fn a() -> Tensor {
    f64s(&[0.5, -1.0, 2.0, 3.0, 0.0, -0.25], &[2, 3])
}

fn b() -> Tensor {
    f64s(&[1.0, 1.0, 1.5, -1.0, 0.0, 0.75], &[2, 3])
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64)
}

/// Uniform samples in (lo, hi), f64.
fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::rand_with(shape, &mut gen).to_dtype(DType::F64) * (hi - lo) + lo
}

/// Asserts `got` equals `want` elementwise within `tol` relative (and absolute near 0).
#[track_caller]
fn assert_close(got: &Tensor, want: &[f64], tol: f64) {
    let g = got.to_vec::<f64>();
    assert_eq!(g.len(), want.len(), "length: got {g:?}, want {want:?}");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {i}: got {a}, want {b} (got {g:?})"
        );
    }
}

/// Runs gradcheck and asserts it passed and checked every float input element.
#[track_caller]
fn check_grad(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    let report = gradcheck(f, inputs);
    let expected: usize = inputs
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.numel())
        .sum();
    assert_eq!(
        report.checked, expected,
        "not every element was checked: {report}"
    );
    assert!(report.passed, "{report}");
}

/// The tape gradient of `loss.forward` (seeded by a random `grad_out` of the
/// loss's shape) equals `Loss::backward` within 1e-10, and `forward_backward`
/// equals (the tape's value, the tape's gradient of the loss's sum).
#[track_caller]
fn check_paths(loss: &dyn Loss, input: &Tensor, target: &Tensor) {
    let x = input.detach().requires_grad_(true);
    let value = loss.forward(&x, target);
    let g = randn(value.shape(), 7);
    value.backward_with(&g);
    let tape = x.grad().expect("the tape reached the input");
    let compiled = loss.backward(input, target, &g);
    assert_eq!(compiled.shape(), input.shape());
    assert!(!compiled.requires_grad(), "Loss::backward must not record");
    assert_close(&compiled, &tape.to_vec::<f64>(), 1e-10);

    let x = input.detach().requires_grad_(true);
    let value = loss.forward(&x, target);
    value.backward_with(&value.ones_like());
    let (v2, g2) = loss.forward_backward(input, target);
    assert!(!v2.requires_grad() && !g2.requires_grad());
    assert_eq!(v2.shape(), value.shape());
    assert_close(&v2, &value.to_vec::<f64>(), 1e-12);
    assert_close(&g2, &x.grad().unwrap().to_vec::<f64>(), 1e-10);
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

fn ce_opts(
    weight: Option<Tensor>,
    reduction: Reduction,
    label_smoothing: f64,
    ignore_index: i64,
) -> CrossEntropyOptions {
    CrossEntropyOptions {
        weight,
        reduction,
        label_smoothing,
        ignore_index,
    }
}

fn red_name(r: Reduction) -> usize {
    match r {
        Reduction::Mean => 0,
        Reduction::Sum => 1,
        Reduction::None => 2,
    }
}

// ---------------------------------------------------------------- cross_entropy values

#[test]
fn cross_entropy_matches_pytorch() {
    let t = i64s(&[3, 0, 1], &[3]);
    let ti = i64s(&[3, 1, 0], &[3]);
    for r in REDUCTIONS {
        let k = red_name(r);
        let plain = [CE_MEAN, CE_SUM, CE_NONE][k];
        let weighted = [CE_W_MEAN, CE_W_SUM, CE_W_NONE][k];
        let smoothed = [CE_LS_MEAN, CE_LS_SUM, CE_LS_NONE][k];
        let all = [CE_W_LS_IGN_MEAN, CE_W_LS_IGN_SUM, CE_W_LS_IGN_NONE][k];
        let got = F::cross_entropy_with(&x(), &t, &ce_opts(None, r, 0.0, -100));
        assert_close(&got, plain, 1e-12);
        let got = F::cross_entropy_with(&x(), &t, &ce_opts(Some(w()), r, 0.0, -100));
        assert_close(&got, weighted, 1e-12);
        let got = F::cross_entropy_with(&x(), &t, &ce_opts(None, r, 0.1, -100));
        assert_close(&got, smoothed, 1e-12);
        // weight, label smoothing and ignore_index together.
        let got = F::cross_entropy_with(&x(), &ti, &ce_opts(Some(w()), r, 0.2, 1));
        assert_close(&got, all, 1e-12);
        // The module gives the same numbers.
        let m = CrossEntropyLoss::new()
            .weight(w())
            .label_smoothing(0.2)
            .ignore_index(1)
            .reduction(r);
        assert_close(&m.forward(&x(), &ti), all, 1e-12);
        assert_close(&m.forward_backward(&x(), &ti).0, all, 1e-12);
    }
    assert_close(&F::cross_entropy(&x(), &t), CE_MEAN, 1e-12);
    assert_close(
        &F::cross_entropy(&x(), &i64s(&[3, -100, 1], &[3])),
        CE_IGN_DEFAULT_MEAN,
        1e-12,
    );
    let got = F::cross_entropy_with(
        &x(),
        &i64s(&[-100, 0, 2], &[3]),
        &ce_opts(Some(w()), Reduction::Mean, 0.3, -100),
    );
    assert_close(&got, CE_W_LS_IGN_DEFAULT_MEAN, 1e-12);
}

#[test]
fn cross_entropy_gradient_matches_pytorch() {
    let opts = ce_opts(Some(w()), Reduction::Mean, 0.2, 1);
    let ti = i64s(&[3, 1, 0], &[3]);
    let xx = x().requires_grad_(true);
    F::cross_entropy_with(&xx, &ti, &opts).backward();
    assert_close(&xx.grad().unwrap(), CE_W_LS_IGN_GRAD, 1e-12);
    let (_, g) = CrossEntropyLoss::new()
        .weight(w())
        .label_smoothing(0.2)
        .ignore_index(1)
        .forward_backward(&x(), &ti);
    assert_close(&g, CE_W_LS_IGN_GRAD, 1e-12);
}

#[test]
fn cross_entropy_plain_gradient_is_softmax_minus_onehot_over_n() {
    // The documented formula, computed independently: (softmax - onehot) / N.
    let t = [3usize, 0, 1];
    let xv = x().to_vec::<f64>();
    let mut want = vec![0.0; 12];
    for n in 0..3 {
        let row = &xv[n * 4..n * 4 + 4];
        let s: f64 = row.iter().map(|v| v.exp()).sum();
        for c in 0..4 {
            want[n * 4 + c] = (row[c].exp() / s - if c == t[n] { 1.0 } else { 0.0 }) / 3.0;
        }
    }
    let (_, g) = CrossEntropyLoss::new().forward_backward(&x(), &i64s(&[3, 0, 1], &[3]));
    assert_close(&g, &want, 1e-14);
}

#[test]
fn cross_entropy_spatial_and_unbatched() {
    let t3 = i64s(&[2, 0, 1, -100], &[2, 2]);
    let w3 = f64s(&[1.5, 0.5, 1.0], &[3]);
    let got = F::cross_entropy_with(
        &x3(),
        &t3,
        &ce_opts(Some(w3.clone()), Reduction::Mean, 0.15, -100),
    );
    assert_close(&got, CE3_W_LS_MEAN, 1e-12);
    let got = F::cross_entropy_with(&x3(), &t3, &ce_opts(Some(w3), Reduction::None, 0.15, -100));
    assert_eq!(got.shape(), &[2, 2]);
    assert_close(&got, CE3_W_LS_NONE, 1e-12);

    let x1 = f64s(&[0.3, -0.5, 1.2, 0.0], &[4]);
    let t1 = Tensor::scalar(2i64);
    assert_close(&F::cross_entropy(&x1, &t1), CE1_MEAN, 1e-12);
    let got = F::cross_entropy_with(&x1, &t1, &ce_opts(Some(w()), Reduction::None, 0.1, -100));
    assert_eq!(got.shape(), &[] as &[usize]);
    assert_close(&got, CE1_LS_W_NONE, 1e-12);
}

#[test]
fn cross_entropy_with_probabilities_matches_pytorch() {
    for r in REDUCTIONS {
        let k = red_name(r);
        let got = F::cross_entropy_with(&x(), &p(), &ce_opts(None, r, 0.0, -100));
        assert_close(&got, [CEP_MEAN, CEP_SUM, CEP_NONE][k], 1e-12);
        let got = F::cross_entropy_with(&x(), &p(), &ce_opts(Some(w()), r, 0.1, -100));
        assert_close(&got, [CEP_W_LS_MEAN, CEP_W_LS_SUM, CEP_W_LS_NONE][k], 1e-12);
    }
    let xx = x().requires_grad_(true);
    let pp = p().requires_grad_(true);
    let loss = F::cross_entropy_with(&xx, &pp, &ce_opts(Some(w()), Reduction::Mean, 0.1, -100));
    assert_eq!(loss.grad_fn(), Some("SoftCrossEntropyBackward"));
    loss.backward();
    assert_close(&xx.grad().unwrap(), CEP_W_LS_GRAD_X, 1e-12);
    assert_close(&pp.grad().unwrap(), CEP_W_LS_GRAD_P, 1e-12);
    let opts = ce_opts(Some(w()), Reduction::Mean, 0.1, -100);
    let g = deriv::vjp::cross_entropy(&x(), &p(), &Tensor::scalar(1.0f64), &opts);
    assert_close(&g, CEP_W_LS_GRAD_X, 1e-12);
    let gp = deriv::vjp::cross_entropy_target(&x(), &p(), &Tensor::scalar(1.0f64), &opts);
    assert_close(&gp, CEP_W_LS_GRAD_P, 1e-12);

    let p3 = f64s(
        &[0.2, 0.5, 0.3, 0.1, 0.5, 0.4, 1.0, 0.0, 0.0, 0.5, 0.0, 0.5],
        &[2, 3, 2],
    );
    assert_close(&F::cross_entropy(&x3(), &p3), CEP3_MEAN, 1e-12);
}

#[test]
fn cross_entropy_with_every_target_ignored() {
    let t = i64s(&[-100, -100, -100], &[3]);
    // PyTorch: the mean is 0/0 = nan, the sum 0.
    assert!(F::cross_entropy(&x(), &t).item().is_nan());
    let sum = F::cross_entropy_with(&x(), &t, &ce_opts(None, Reduction::Sum, 0.1, -100));
    assert_eq!(sum.item(), 0.0);
    let (_, g) = CrossEntropyLoss::new()
        .reduction(Reduction::Sum)
        .forward_backward(&x(), &t);
    assert!(g.to_vec::<f64>().iter().all(|&v| v == 0.0));
}

#[test]
fn cross_entropy_in_f32() {
    let t = i64s(&[3, 0, 1], &[3]);
    let x32 = x().to_dtype(DType::F32).requires_grad_(true);
    let loss = F::cross_entropy(&x32, &t);
    assert_eq!(loss.dtype(), DType::F32);
    assert!((loss.item() - CE_MEAN[0]).abs() < 1e-6);
    loss.backward();
    let (v, g) = CrossEntropyLoss::new().forward_backward(&x32.detach(), &t);
    assert_eq!(g.dtype(), DType::F32);
    assert!((v.item() - CE_MEAN[0]).abs() < 1e-6);
    let tape = x32.grad().unwrap().to_vec::<f32>();
    for (a, b) in g.to_vec::<f32>().iter().zip(&tape) {
        assert!((a - b).abs() < 1e-6);
    }
}

// ---------------------------------------------------------------- nll_loss

#[test]
fn nll_loss_matches_pytorch() {
    let lp = x().log_softmax(1);
    let t = i64s(&[3, -100, 1], &[3]);
    for r in REDUCTIONS {
        let k = red_name(r);
        let opts = NllLossOptions {
            weight: Some(w()),
            reduction: r,
            ignore_index: -100,
        };
        let got = F::nll_loss_with(&lp, &t, &opts);
        assert_close(
            &got,
            [NLL_W_IGN_MEAN, NLL_W_IGN_SUM, NLL_W_IGN_NONE][k],
            1e-12,
        );
        let m = NLLLoss::new().weight(w()).reduction(r);
        assert_close(
            &m.forward(&lp, &t),
            [NLL_W_IGN_MEAN, NLL_W_IGN_SUM, NLL_W_IGN_NONE][k],
            1e-12,
        );
    }
    // cross_entropy is log_softmax + nll_loss.
    let t = i64s(&[3, 0, 1], &[3]);
    assert_close(&F::nll_loss(&lp, &t), CE_MEAN, 1e-12);
    // The documented gradient: -1/N at each target.
    let lpl = lp.detach().requires_grad_(true);
    F::nll_loss(&lpl, &t).backward();
    let mut want = vec![0.0; 12];
    for (n, c) in [3usize, 0, 1].iter().enumerate() {
        want[n * 4 + c] = -1.0 / 3.0;
    }
    assert_close(&lpl.grad().unwrap(), &want, 1e-15);
}

// ---------------------------------------------------------------- binary cross-entropy

#[test]
fn binary_cross_entropy_matches_pytorch() {
    let wb = f64s(&[1.0, 2.0, 0.5], &[3]);
    for r in REDUCTIONS {
        let k = red_name(r);
        let got = F::binary_cross_entropy_with(&xp(), &yp(), None, r);
        assert_close(&got, [BCE_MEAN, BCE_SUM, BCE_NONE][k], 1e-12);
        let got = F::binary_cross_entropy_with(&xp(), &yp(), Some(&wb), r);
        assert_close(&got, [BCE_W_MEAN, BCE_W_SUM, BCE_W_NONE][k], 1e-12);
        let m = BCELoss::new().weight(wb.clone()).reduction(r);
        assert_close(
            &m.forward(&xp(), &yp()),
            [BCE_W_MEAN, BCE_W_SUM, BCE_W_NONE][k],
            1e-12,
        );
    }
    assert_close(&F::binary_cross_entropy(&xp(), &yp()), BCE_MEAN, 1e-12);
    // The gradient, PyTorch's formula at x = 0 and 1 included.
    let xx = xp().requires_grad_(true);
    F::binary_cross_entropy_with(&xx, &yp(), Some(&wb), Reduction::Mean).backward();
    assert_close(&xx.grad().unwrap(), BCE_W_GRAD_X, 1e-12);
    let (_, g) = BCELoss::new().weight(wb).forward_backward(&xp(), &yp());
    assert_close(&g, BCE_W_GRAD_X, 1e-12);
}

#[test]
fn binary_cross_entropy_with_logits_matches_pytorch() {
    for r in REDUCTIONS {
        let k = red_name(r);
        let opts = BceWithLogitsOptions {
            reduction: r,
            ..Default::default()
        };
        let got = F::binary_cross_entropy_with_logits_with(&z(), &yz(), &opts);
        assert_close(&got, [BCEL_MEAN, BCEL_SUM, BCEL_NONE][k], 1e-12);
        let got = F::binary_cross_entropy_with_logits_with(&z(), &yz(), &bce_logits_opts(r));
        assert_close(
            &got,
            [BCEL_W_PW_MEAN, BCEL_W_PW_SUM, BCEL_W_PW_NONE][k],
            1e-12,
        );
    }
    let zz = z().requires_grad_(true);
    let yy = yz().requires_grad_(true);
    F::binary_cross_entropy_with_logits(&zz, &yy).backward();
    assert_close(&zz.grad().unwrap(), BCEL_GRAD_Z, 1e-12);
    assert_close(&yy.grad().unwrap(), BCEL_GRAD_Y, 1e-12);

    let zz = z().requires_grad_(true);
    let yy = yz().requires_grad_(true);
    F::binary_cross_entropy_with_logits_with(&zz, &yy, &bce_logits_opts(Reduction::Mean))
        .backward();
    assert_close(&zz.grad().unwrap(), BCEL_W_PW_GRAD_Z, 1e-12);
    assert_close(&yy.grad().unwrap(), BCEL_W_PW_GRAD_Y, 1e-12);
    let m = BCEWithLogitsLoss::new()
        .weight(f64s(&[1.0, 0.5], &[2, 1]))
        .pos_weight(f64s(&[2.0, 0.5, 1.0, 3.0], &[4]));
    let (v, g) = m.forward_backward(&z(), &yz());
    assert_close(&v, BCEL_W_PW_MEAN, 1e-12);
    assert_close(&g, BCEL_W_PW_GRAD_Z, 1e-12);
}

#[test]
fn binary_cross_entropy_with_logits_is_stable_at_100() {
    for dtype in [DType::F32, DType::F64] {
        let zz = f64s(&[100.0, -100.0, 100.0, -100.0], &[4])
            .to_dtype(dtype)
            .requires_grad_(true);
        let y = f64s(&[1.0, 0.0, 0.0, 1.0], &[4]).to_dtype(dtype);
        let opts = BceWithLogitsOptions {
            reduction: Reduction::None,
            ..Default::default()
        };
        let l = F::binary_cross_entropy_with_logits_with(&zz, &y, &opts);
        l.sum().backward();
        let lv = l.to_vec::<f64>();
        assert!(lv.iter().all(|v| v.is_finite()), "{dtype}: {lv:?}");
        // PyTorch (f32): [3.9236e-44, 0, 100, 100]; the first is e^-100 ≈ 3.72e-44,
        // a subnormal in f32.
        assert!(lv[0] > 0.0 && lv[0] < 4e-44, "{dtype}: {lv:?}");
        assert_close(&l.slice(0, 1..), &BCEL_F32_EDGE_NONE[1..], 1e-12);
        let gv = zz.grad().unwrap();
        assert!(gv.to_vec::<f64>().iter().all(|v| v.is_finite()));
        assert_close(&gv, BCEL_F32_EDGE_GRAD, 1e-12);
        let m = BCEWithLogitsLoss::new().reduction(Reduction::Sum);
        let (v, g) = m.forward_backward(&zz.detach(), &y);
        assert!((v.item() - 200.0).abs() < 1e-4, "{dtype}: {}", v.item());
        assert_close(&g, BCEL_F32_EDGE_GRAD, 1e-12);
        // With pos_weight too: (1 - y)·z + (1 + (pw - 1)·y)·softplus(-z).
        let m = m.pos_weight(Tensor::full([4], 3.0).to_dtype(dtype));
        let (v, g) = m.forward_backward(&zz.detach(), &y);
        assert!((v.item() - 400.0).abs() < 1e-3, "{dtype}: {}", v.item());
        // (pw·y + 1 - y)·σ(z) - pw·y: [0, 0, 1, -3].
        assert_close(&g, &[0.0, 0.0, 1.0, -3.0], 1e-12);
    }
}

// ---------------------------------------------------------------- mse and l1

#[test]
fn mse_and_l1_match_pytorch() {
    for r in REDUCTIONS {
        let k = red_name(r);
        assert_close(
            &F::mse_loss_with(&a(), &b(), r),
            [MSE_MEAN, MSE_SUM, MSE_NONE][k],
            1e-14,
        );
        assert_close(
            &F::l1_loss_with(&a(), &b(), r),
            [L1_MEAN, L1_SUM, L1_NONE][k],
            1e-14,
        );
        assert_close(
            &MSELoss::new().reduction(r).forward_backward(&a(), &b()).0,
            [MSE_MEAN, MSE_SUM, MSE_NONE][k],
            1e-14,
        );
        assert_close(
            &L1Loss::new().reduction(r).forward_backward(&a(), &b()).0,
            [L1_MEAN, L1_SUM, L1_NONE][k],
            1e-14,
        );
    }
    assert_close(&F::mse_loss(&a(), &b()), MSE_MEAN, 1e-14);
    assert_close(&F::l1_loss(&a(), &b()), L1_MEAN, 1e-14);
    // l1's gradient is sign(a - b)/n, 0 where they are equal.
    let aa = a().requires_grad_(true);
    F::l1_loss(&aa, &b()).backward();
    assert_close(&aa.grad().unwrap(), L1_GRAD, 1e-15);
    // mse's is 2(a - b)/n, computed here from the data.
    let (_, g) = MSELoss::new().forward_backward(&a(), &b());
    let want: Vec<f64> = a()
        .to_vec::<f64>()
        .iter()
        .zip(b().to_vec::<f64>())
        .map(|(x, y)| 2.0 * (x - y) / 6.0)
        .collect();
    assert_close(&g, &want, 1e-15);
    // An integer target promotes, as in PyTorch.
    let ti = i64s(&[1, 1, 2, -1, 0, 1], &[2, 3]);
    let bf = ti.to_dtype(DType::F64);
    assert_close(
        &F::mse_loss(&a(), &ti),
        &F::mse_loss(&a(), &bf).to_vec::<f64>(),
        1e-15,
    );
}

#[test]
fn empty_inputs_give_nan_means() {
    // PyTorch: the mean over no elements is nan.
    let e = Tensor::zeros([0, 3]).to_dtype(DType::F64);
    assert!(F::mse_loss(&e, &e).item().is_nan());
    assert!(F::l1_loss(&e, &e).item().is_nan());
    let (_, g) = MSELoss::new().forward_backward(&e, &e);
    assert_eq!(g.shape(), &[0, 3]);
    let empty_t = Tensor::zeros([0]).to_dtype(DType::I64);
    assert!(F::cross_entropy(&e, &empty_t).item().is_nan());
}

// ---------------------------------------------------------------- gradcheck (tape, f64)

#[test]
fn gradcheck_cross_entropy_every_option() {
    let t = i64s(&[3, 0, 1], &[3]);
    let ti = i64s(&[3, 1, 0], &[3]);
    let tn = i64s(&[3, -100, 1], &[3]);
    for r in REDUCTIONS {
        for (weight, eps, ignore, target) in [
            (None, 0.0, -100, &t),
            (Some(w()), 0.0, -100, &t),
            (None, 0.1, -100, &tn),
            (Some(w()), 0.2, 1, &ti),
            (Some(w()), 0.3, -100, &tn),
        ] {
            let opts = ce_opts(weight, r, eps, ignore);
            check_grad(
                |v| F::cross_entropy_with(&v[0], target, &opts),
                &[randn(&[3, 4], 1)],
            );
        }
        // [N, C, d1] and [C].
        let opts = ce_opts(Some(f64s(&[1.5, 0.5, 1.0], &[3])), r, 0.15, -100);
        let t3 = i64s(&[2, 0, 1, -100], &[2, 2]);
        check_grad(
            |v| F::cross_entropy_with(&v[0], &t3, &opts),
            &[randn(&[2, 3, 2], 2)],
        );
        let opts = ce_opts(Some(w()), r, 0.1, -100);
        let t1 = Tensor::scalar(2i64);
        check_grad(
            |v| F::cross_entropy_with(&v[0], &t1, &opts),
            &[randn(&[4], 3)],
        );
        // Class probabilities: both the logits and the target get gradients.
        let opts = ce_opts(Some(w()), r, 0.1, -100);
        check_grad(
            |v| F::cross_entropy_with(&v[0], &v[1], &opts),
            &[randn(&[3, 4], 4), uniform(&[3, 4], 0.0, 1.0, 5)],
        );
        let opts = ce_opts(None, r, 0.0, -100);
        check_grad(
            |v| F::cross_entropy_with(&v[0], &v[1], &opts),
            &[randn(&[2, 3, 2], 6), uniform(&[2, 3, 2], 0.0, 1.0, 7)],
        );
        let opts = ce_opts(Some(w()), r, 0.25, -100);
        check_grad(
            |v| F::cross_entropy_with(&v[0], &v[1], &opts),
            &[randn(&[4], 8), uniform(&[4], 0.0, 1.0, 9)],
        );
    }
}

#[test]
fn gradcheck_nll_loss() {
    let tn = i64s(&[3, -100, 1, 0], &[4]);
    for r in REDUCTIONS {
        for weight in [None, Some(w())] {
            let opts = NllLossOptions {
                weight,
                reduction: r,
                ignore_index: -100,
            };
            check_grad(
                |v| F::nll_loss_with(&v[0], &tn, &opts),
                &[randn(&[4, 4], 8)],
            );
            let t3 = i64s(&[1, 0, 3, 2, 2, 1], &[2, 3]);
            check_grad(
                |v| F::nll_loss_with(&v[0], &t3, &opts),
                &[randn(&[2, 4, 3], 9)],
            );
        }
    }
}

#[test]
fn gradcheck_binary_cross_entropy() {
    let wb = f64s(&[1.0, 2.0, 0.5], &[3]);
    for r in REDUCTIONS {
        for weight in [None, Some(&wb)] {
            check_grad(
                |v| F::binary_cross_entropy_with(&v[0], &v[1], weight, r),
                &[
                    uniform(&[2, 3], 0.05, 0.95, 10),
                    uniform(&[2, 3], 0.0, 1.0, 11),
                ],
            );
        }
    }
}

#[test]
fn gradcheck_binary_cross_entropy_with_logits() {
    for r in REDUCTIONS {
        for opts in [
            BceWithLogitsOptions {
                reduction: r,
                ..Default::default()
            },
            bce_logits_opts(r),
        ] {
            check_grad(
                |v| F::binary_cross_entropy_with_logits_with(&v[0], &v[1], &opts),
                &[randn(&[2, 4], 12) * 3.0, uniform(&[2, 4], 0.0, 1.0, 13)],
            );
        }
    }
}

#[test]
fn gradcheck_mse_and_l1() {
    for r in REDUCTIONS {
        check_grad(
            |v| F::mse_loss_with(&v[0], &v[1], r),
            &[randn(&[2, 3], 14), randn(&[2, 3], 15)],
        );
        check_grad(
            |v| F::l1_loss_with(&v[0], &v[1], r),
            &[randn(&[2, 3], 16), randn(&[2, 3], 17)],
        );
    }
}

// ---------------------------------------------------------------- compile-time path = tape

#[test]
fn loss_backward_equals_the_tape() {
    let t = i64s(&[3, -100, 1], &[3]);
    let ti = i64s(&[3, 1, 0], &[3]);
    let t3 = i64s(&[2, 0, 1, -100], &[2, 2]);
    let w3 = f64s(&[1.5, 0.5, 1.0], &[3]);
    for r in REDUCTIONS {
        check_paths(
            &CrossEntropyLoss::new().reduction(r),
            &randn(&[3, 4], 20),
            &t,
        );
        check_paths(
            &CrossEntropyLoss::new()
                .reduction(r)
                .weight(w())
                .label_smoothing(0.2)
                .ignore_index(1),
            &randn(&[3, 4], 21),
            &ti,
        );
        check_paths(
            &CrossEntropyLoss::new()
                .reduction(r)
                .weight(w3.clone())
                .label_smoothing(0.1),
            &randn(&[2, 3, 2], 22),
            &t3,
        );
        check_paths(
            &CrossEntropyLoss::new()
                .reduction(r)
                .weight(w())
                .label_smoothing(0.1),
            &randn(&[4], 23),
            &Tensor::scalar(1i64),
        );
        check_paths(
            &CrossEntropyLoss::new()
                .reduction(r)
                .weight(w())
                .label_smoothing(0.1),
            &randn(&[3, 4], 24),
            &p(),
        );
        check_paths(
            &CrossEntropyLoss::new().reduction(r).label_smoothing(0.3),
            &randn(&[4], 34),
            &uniform(&[4], 0.0, 1.0, 35),
        );
        check_paths(
            &NLLLoss::new().reduction(r).weight(w()),
            &randn(&[3, 4], 25).log_softmax(1),
            &t,
        );
        check_paths(
            &NLLLoss::new().reduction(r).ignore_index(1),
            &randn(&[2, 3, 2], 26),
            &t3.clamp(Some(0.0), None),
        );
        check_paths(
            &BCELoss::new()
                .reduction(r)
                .weight(f64s(&[1.0, 2.0, 0.5], &[3])),
            &uniform(&[2, 3], 0.05, 0.95, 27),
            &uniform(&[2, 3], 0.0, 1.0, 28),
        );
        check_paths(
            &BCEWithLogitsLoss::new().reduction(r),
            &(randn(&[2, 4], 29) * 5.0),
            &yz(),
        );
        check_paths(
            &BCEWithLogitsLoss::new()
                .reduction(r)
                .weight(f64s(&[1.0, 0.5], &[2, 1]))
                .pos_weight(f64s(&[2.0, 0.5, 1.0, 3.0], &[4])),
            &z(),
            &yz(),
        );
        check_paths(
            &MSELoss::new().reduction(r),
            &randn(&[2, 3], 30),
            &randn(&[2, 3], 31),
        );
        check_paths(
            &L1Loss::new().reduction(r),
            &randn(&[2, 3], 32),
            &randn(&[2, 3], 33),
        );
    }
}

#[test]
fn vjp_rules_match_the_tape_for_targets_too() {
    // The target gradients of the float-target losses, against the tape.
    let g = Tensor::scalar(0.7f64);
    let x = uniform(&[2, 3], 0.05, 0.95, 40);
    let y = uniform(&[2, 3], 0.0, 1.0, 41).requires_grad_(true);
    F::binary_cross_entropy(&x, &y).backward_with(&g);
    let rule = deriv::vjp::binary_cross_entropy_target(&x, &y.detach(), None, &g, Reduction::Mean);
    assert_close(&rule, &y.grad().unwrap().to_vec::<f64>(), 1e-12);

    let opts = bce_logits_opts(Reduction::Mean);
    let y = yz().requires_grad_(true);
    F::binary_cross_entropy_with_logits_with(&z(), &y, &opts).backward_with(&g);
    let rule = deriv::vjp::binary_cross_entropy_with_logits_target(&z(), &yz(), &g, &opts);
    assert_close(&rule, &y.grad().unwrap().to_vec::<f64>(), 1e-12);

    // The log-probs rule of cross_entropy's NllLossBackward node.
    let opts = ce_opts(Some(w()), Reduction::Sum, 0.2, 1);
    let ti = i64s(&[3, 1, 0], &[3]);
    let lp = x3().reshape([3i64, 4]).log_softmax(1).requires_grad_(true);
    let loss = F::nll_loss_with(
        &lp,
        &ti,
        &NllLossOptions {
            weight: Some(w()),
            reduction: Reduction::Sum,
            ignore_index: 1,
        },
    );
    loss.backward_with(&g);
    let smoothed = deriv::vjp::cross_entropy_log_probs(&lp.detach(), &ti, &g, &opts);
    let plain = deriv::vjp::nll_loss(
        &lp.detach(),
        &ti,
        &g,
        &NllLossOptions {
            weight: Some(w()),
            reduction: Reduction::Sum,
            ignore_index: 1,
        },
    );
    assert_close(&plain, &lp.grad().unwrap().to_vec::<f64>(), 1e-15);
    // Smoothing adds -(ε/C)·w_c·g at every class of each non-ignored sample.
    let (sv, pv) = (smoothed.to_vec::<f64>(), plain.to_vec::<f64>());
    let wv = w().to_vec::<f64>();
    for n in 0..3 {
        for c in 0..4 {
            let extra = if n == 1 {
                0.0
            } else {
                -(0.2 / 4.0) * wv[c] * 0.7
            };
            let want = pv[n * 4 + c] * 0.8 + extra;
            assert!((sv[n * 4 + c] - want).abs() < 1e-15, "{n},{c}");
        }
    }
}

// ---------------------------------------------------------------- shapes and names

#[test]
fn reduction_shapes() {
    let t = i64s(&[3, 0, 1], &[3]);
    let t3 = i64s(&[2, 0, 1, 1], &[2, 2]);
    type Case = (Box<dyn Fn(Reduction) -> Tensor>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (Box::new(|r| F::mse_loss_with(&a(), &b(), r)), vec![2, 3]),
        (Box::new(|r| F::l1_loss_with(&a(), &b(), r)), vec![2, 3]),
        (
            Box::new(|r| F::binary_cross_entropy_with(&xp(), &yp(), None, r)),
            vec![2, 3],
        ),
        (
            Box::new(|r| {
                F::binary_cross_entropy_with_logits_with(&z(), &yz(), &bce_logits_opts(r))
            }),
            vec![2, 4],
        ),
        (
            Box::new(move |r| F::cross_entropy_with(&x(), &t, &ce_opts(None, r, 0.0, -100))),
            vec![3],
        ),
        (
            Box::new(move |r| F::cross_entropy_with(&x3(), &t3, &ce_opts(None, r, 0.1, -100))),
            vec![2, 2],
        ),
        (
            Box::new(|r| F::cross_entropy_with(&x(), &p(), &ce_opts(None, r, 0.0, -100))),
            vec![3],
        ),
        (
            Box::new(|r| {
                F::cross_entropy_with(&x3(), &x3().softmax(1), &ce_opts(None, r, 0.0, -100))
            }),
            vec![2, 2],
        ),
        (
            Box::new(|r| {
                F::nll_loss_with(
                    &f64s(&[-1.0, -2.0], &[2]),
                    &Tensor::scalar(1i64),
                    &NllLossOptions {
                        reduction: r,
                        ..Default::default()
                    },
                )
            }),
            vec![],
        ),
    ];
    for (f, none_shape) in &cases {
        assert_eq!(f(Reduction::None).shape(), none_shape.as_slice());
        assert_eq!(f(Reduction::Sum).shape(), &[] as &[usize]);
        assert_eq!(f(Reduction::Mean).shape(), &[] as &[usize]);
        // The mean of the unreduced loss is the mean (except for weighted classes).
        let none = f(Reduction::None);
        assert!((none.sum().item() - f(Reduction::Sum).item()).abs() < 1e-12);
    }
    assert_eq!(Reduction::default(), Reduction::Mean);
}

#[test]
fn grad_fn_names() {
    let xr = x().requires_grad_(true);
    let t = i64s(&[3, 0, 1], &[3]);
    assert_eq!(F::mse_loss(&xr, &p()).grad_fn(), Some("MseLossBackward"));
    assert_eq!(F::l1_loss(&xr, &p()).grad_fn(), Some("L1LossBackward"));
    let probs = xr.sigmoid();
    assert_eq!(
        F::binary_cross_entropy(&probs, &p()).grad_fn(),
        Some("BinaryCrossEntropyBackward")
    );
    assert_eq!(
        F::binary_cross_entropy_with_logits(&xr, &p()).grad_fn(),
        Some("BinaryCrossEntropyWithLogitsBackward")
    );
    assert_eq!(F::nll_loss(&xr, &t).grad_fn(), Some("NllLossBackward"));
    assert_eq!(F::cross_entropy(&xr, &t).grad_fn(), Some("NllLossBackward"));
    let opts = ce_opts(Some(w()), Reduction::None, 0.1, -100);
    assert_eq!(
        F::cross_entropy_with(&xr, &t, &opts).grad_fn(),
        Some("NllLossBackward")
    );
    assert_eq!(
        F::cross_entropy(&xr, &p()).grad_fn(),
        Some("SoftCrossEntropyBackward")
    );
    assert_eq!(
        CrossEntropyLoss::new().forward(&xr, &t).grad_fn(),
        Some("NllLossBackward")
    );
    // Nothing is recorded when nothing requires grad, or under no_grad.
    assert_eq!(F::cross_entropy(&x(), &t).grad_fn(), None);
    assert_eq!(no_grad(|| F::mse_loss(&xr, &p())).grad_fn(), None);
}

// ---------------------------------------------------------------- errors

#[track_caller]
fn err_contains(r: deriv::Result<Tensor>, words: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should contain {w:?}");
    }
}

#[test]
fn bad_targets_are_refused_with_clear_messages() {
    let d = CrossEntropyOptions::default();
    // Wrong dtype: float class indices.
    err_contains(
        F::try_cross_entropy_with(&x(), &f64s(&[3.0, 0.0, 1.0], &[3]), &d),
        &[
            "cross_entropy",
            "i64",
            "f64",
            "[3]",
            "to_dtype(DType::I64)",
            "[3, 4]",
        ],
    );
    err_contains(
        F::try_nll_loss_with(
            &x(),
            &f64s(&[3.0, 0.0, 1.0], &[3]),
            &NllLossOptions::default(),
        ),
        &["nll_loss", "i64"],
    );
    // Integer class probabilities (a target of the input's shape).
    err_contains(
        F::try_cross_entropy_with(&x(), &p().to_dtype(DType::I64), &d),
        &["float target of class probabilities", "i64"],
    );
    // Class index out of range, both ends.
    err_contains(
        F::try_cross_entropy_with(&x(), &i64s(&[3, 5, 1], &[3]), &d),
        &["target 5 is out of bounds", "[0, 4)", "4 classes"],
    );
    err_contains(
        F::try_cross_entropy_with(&x(), &i64s(&[3, -1, 1], &[3]), &d),
        &["target -1 is out of bounds"],
    );
    // Shape mismatches.
    err_contains(
        F::try_cross_entropy_with(&x(), &i64s(&[3, 0], &[2]), &d),
        &["expected a target of shape [3]", "[3, 4]", "got [2]"],
    );
    err_contains(
        F::try_cross_entropy_with(&x3(), &i64s(&[0, 1], &[2]), &d),
        &["expected a target of shape [2, 2]", "got [2]"],
    );
    err_contains(
        F::try_mse_loss_with(&a(), &f64s(&[1.0, 2.0, 3.0], &[3]), Reduction::Mean),
        &["mse_loss", "[3]", "[2, 3]"],
    );
    err_contains(
        F::try_l1_loss_with(&a(), &f64s(&[1.0, 2.0, 3.0], &[3]), Reduction::Mean),
        &["l1_loss", "[3]", "[2, 3]"],
    );
    err_contains(
        F::try_binary_cross_entropy_with_logits_with(
            &z(),
            &f64s(&[1.0; 4], &[4]),
            &Default::default(),
        ),
        &["binary_cross_entropy_with_logits", "[4]", "[2, 4]"],
    );
    // Non-float inputs and targets.
    err_contains(
        F::try_mse_loss_with(&i64s(&[1, 2], &[2]), &i64s(&[1, 2], &[2]), Reduction::Mean),
        &["mse_loss", "float input", "i64"],
    );
    err_contains(
        F::try_binary_cross_entropy_with(&xp(), &yp().to_dtype(DType::F32), None, Reduction::Mean),
        &["binary_cross_entropy", "f32", "f64"],
    );
    err_contains(
        F::try_binary_cross_entropy_with_logits_with(
            &z(),
            &yz().to_dtype(DType::I64),
            &Default::default(),
        ),
        &["float target", "i64"],
    );
    // BCE wants probabilities.
    err_contains(
        F::try_binary_cross_entropy_with(&z(), &yz(), None, Reduction::Mean),
        &["between 0 and 1", "binary_cross_entropy_with_logits"],
    );
    // Weights.
    err_contains(
        F::try_cross_entropy_with(
            &x(),
            &i64s(&[3, 0, 1], &[3]),
            &ce_opts(Some(f64s(&[1.0; 3], &[3])), Reduction::Mean, 0.0, -100),
        ),
        &[
            "weight tensor should be defined either for all 4 classes",
            "[3]",
        ],
    );
    err_contains(
        F::try_binary_cross_entropy_with(
            &xp(),
            &yp(),
            Some(&f64s(&[1.0; 2], &[2])),
            Reduction::Mean,
        ),
        &["weight of shape [2] must broadcast to the input's shape [2, 3]"],
    );
    let wg = w().requires_grad_(true);
    err_contains(
        F::try_cross_entropy_with(
            &x(),
            &i64s(&[3, 0, 1], &[3]),
            &ce_opts(Some(wg), Reduction::Mean, 0.0, -100),
        ),
        &["not differentiable with respect to `weight`", "detach"],
    );
    // Options.
    err_contains(
        F::try_cross_entropy_with(
            &x(),
            &i64s(&[3, 0, 1], &[3]),
            &ce_opts(None, Reduction::Mean, 1.5, -100),
        ),
        &["label_smoothing must be between 0.0 and 1.0", "1.5"],
    );
    err_contains(
        F::try_cross_entropy_with(&x(), &p(), &ce_opts(None, Reduction::Mean, 0.0, 1)),
        &["ignore_index", "not supported", "probabilities"],
    );
}

#[test]
#[should_panic(expected = "cross_entropy: target 7 is out of bounds")]
fn out_of_range_class_panics_in_the_module() {
    CrossEntropyLoss::new().forward(&x(), &i64s(&[3, 7, 1], &[3]));
}

#[test]
#[should_panic(expected = "expected a target of shape [3]")]
fn wrong_target_shape_panics_on_the_compile_time_path() {
    CrossEntropyLoss::new().forward_backward(&x(), &i64s(&[3, 0, 1, 2], &[4]));
}

#[test]
#[should_panic(expected = "grad_out must have the loss's shape []")]
fn grad_out_of_the_wrong_shape_panics() {
    MSELoss::new().backward(&a(), &b(), &Tensor::zeros([2, 3]));
}

// ---------------------------------------------------------------- huber_loss
//
// Printed by PyTorch 2.15 (CPU) for a() and b() above (`show` as above):
//
// for d in [1.0, 0.5, 2.5]:
//     for red in ['mean','sum','none']:
//         show(f"HUBER_{d}_{red.upper()}", F.huber_loss(a,b,reduction=red,delta=d))
//     aa = a.clone().requires_grad_()
//     F.huber_loss(aa,b,delta=d).backward()
//     show(f"HUBER_{d}_GRAD", aa.grad)
// x = torch.tensor([2.0, -2.0, 1.0]).requires_grad_()
// F.huber_loss(x, torch.zeros(3), reduction='sum', delta=2.0).backward()
// show("HUBER_EDGE_GRAD", x.grad)

const HUBER_1_0: [&[f64]; 3] = [
    &[0.9583333333333334],
    &[5.75],
    &[0.125, 1.5, 0.125, 3.5, 0.0, 0.5],
];
const HUBER_1_0_GRAD: &[f64] = &[
    -0.08333333333333333,
    -0.16666666666666666,
    0.08333333333333333,
    0.16666666666666666,
    0.0,
    -0.16666666666666666,
];
const HUBER_0_5: [&[f64]; 3] = [
    &[0.5625],
    &[3.375],
    &[0.125, 0.875, 0.125, 1.875, 0.0, 0.375],
];
const HUBER_0_5_GRAD: &[f64] = &[
    -0.08333333333333333,
    -0.08333333333333333,
    0.08333333333333333,
    0.08333333333333333,
    0.0,
    -0.08333333333333333,
];
const HUBER_2_5: [&[f64]; 3] = [
    &[1.6041666666666667],
    &[9.625],
    &[0.125, 2.0, 0.125, 6.875, 0.0, 0.5],
];
const HUBER_2_5_GRAD: &[f64] = &[
    -0.08333333333333333,
    -0.3333333333333333,
    0.08333333333333333,
    0.41666666666666663,
    0.0,
    -0.16666666666666666,
];
const HUBER_EDGE_GRAD: &[f64] = &[2.0, -2.0, 1.0];

#[test]
fn huber_matches_pytorch() {
    use deriv::nn::HuberLoss;
    let cases = [
        (1.0, HUBER_1_0, HUBER_1_0_GRAD),
        (0.5, HUBER_0_5, HUBER_0_5_GRAD),
        (2.5, HUBER_2_5, HUBER_2_5_GRAD),
    ];
    for (delta, values, grad) in cases {
        for r in REDUCTIONS {
            let want = values[red_name(r)];
            assert_close(&F::huber_loss_with(&a(), &b(), r, delta), want, 1e-14);
            let module = HuberLoss::new().delta(delta).reduction(r);
            assert_close(&module.forward(&a(), &b()), want, 1e-14);
            assert_close(&module.forward_backward(&a(), &b()).0, want, 1e-14);
        }
        let aa = a().requires_grad_(true);
        let loss = HuberLoss::new().delta(delta).forward(&aa, &b());
        assert_eq!(loss.grad_fn(), Some("HuberLossBackward"));
        loss.backward();
        assert_close(&aa.grad().unwrap(), grad, 1e-15);
    }
    // The defaults are PyTorch's: delta 1, the mean.
    assert_close(&F::huber_loss(&a(), &b()), HUBER_1_0[0], 1e-14);
    assert_close(&HuberLoss::new().forward(&a(), &b()), HUBER_1_0[0], 1e-14);
    // On the band's edge the gradient is ±delta.
    let x = f64s(&[2.0, -2.0, 1.0], &[3]).requires_grad_(true);
    F::huber_loss_with(&x, &x.zeros_like(), Reduction::Sum, 2.0).backward();
    assert_close(&x.grad().unwrap(), HUBER_EDGE_GRAD, 0.0);
}

#[test]
fn gradcheck_huber_and_both_paths_agree() {
    use deriv::nn::HuberLoss;
    for r in REDUCTIONS {
        for delta in [0.3, 1.0, 2.0] {
            // Inputs spread over both sides of the band.
            check_grad(
                |v| F::huber_loss_with(&v[0], &v[1], r, delta),
                &[randn(&[3, 4], 20) * 2.0, randn(&[3, 4], 21)],
            );
            check_paths(
                &HuberLoss::new().delta(delta).reduction(r),
                &(randn(&[3, 4], 22) * 2.0),
                &randn(&[3, 4], 23),
            );
        }
    }
}

#[test]
fn huber_refuses_a_non_positive_delta_and_bad_targets() {
    for delta in [0.0, -1.0] {
        let err = F::try_huber_loss_with(&a(), &b(), Reduction::Mean, delta)
            .unwrap_err()
            .to_string();
        assert!(err.contains("huber_loss: delta must be positive"), "{err}");
    }
    let err = F::try_huber_loss_with(&a(), &b().reshape([6]), Reduction::Mean, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must have the input's shape [2, 3]"), "{err}");
}

// ---------------------------------------------------------------- smooth_l1_loss and kl_div
//
// PyTorch's values: tests/data/make_loss_reference.py (a() and b() above).

const SMOOTH_L1_1_0_MEAN: &[f64] = &[0.9583333333333334];
const SMOOTH_L1_1_0_SUM: &[f64] = &[5.75];
const SMOOTH_L1_1_0_NONE: &[f64] = &[0.125, 1.5, 0.125, 3.5, 0.0, 0.5];
const SMOOTH_L1_1_0_GRAD: &[f64] = &[
    -0.08333333333333333,
    -0.16666666666666666,
    0.08333333333333333,
    0.16666666666666666,
    0.0,
    -0.16666666666666666,
];
const SMOOTH_L1_0_5_MEAN: &[f64] = &[1.125];
const SMOOTH_L1_0_5_SUM: &[f64] = &[6.75];
const SMOOTH_L1_0_5_NONE: &[f64] = &[0.25, 1.75, 0.25, 3.75, 0.0, 0.75];
const SMOOTH_L1_0_5_GRAD: &[f64] = &[
    -0.16666666666666666,
    -0.16666666666666666,
    0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.16666666666666666,
];
const SMOOTH_L1_0_0_MEAN: &[f64] = &[1.3333333333333333];
const SMOOTH_L1_0_0_SUM: &[f64] = &[8.0];
const SMOOTH_L1_0_0_NONE: &[f64] = &[0.5, 2.0, 0.5, 4.0, 0.0, 1.0];
const SMOOTH_L1_0_0_GRAD: &[f64] = &[
    -0.16666666666666666,
    -0.16666666666666666,
    0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.16666666666666666,
];
const KL_MEAN: &[f64] = &[0.1174578145631831];
const KL_LOGT_MEAN: &[f64] = &[0.4046369715157802];
const KL_BATCHMEAN: &[f64] = &[0.3523734436895493];
const KL_LOGT_BATCHMEAN: &[f64] = &[1.2139109145473406];
const KL_SUM: &[f64] = &[0.7047468873790986];
const KL_LOGT_SUM: &[f64] = &[2.427821829094681];
const KL_NONE: &[f64] = &[
    0.12249072869130251,
    0.5335936572830979,
    -0.24990969202069713,
    -0.2283968055822382,
    0.5269689990076336,
    0.0,
];
const KL_LOGT_NONE: &[f64] = &[
    0.12249072869130254,
    0.533593657283098,
    -0.24990969202069716,
    -0.22839680558223824,
    0.5269689990076336,
    1.723074941715583,
];
const KL_BATCHMEAN_GRAD_INPUT: &[f64] = &[
    -0.1370343095305985,
    -0.1370343095305985,
    -0.22593138093880302,
    -0.052782233306480096,
    -0.14347698566249065,
    -0.0,
];
const KL_BATCHMEAN_GRAD_TARGET: &[f64] = &[
    0.723467263619757,
    1.473467263619757,
    0.22346726361975694,
    -0.5817882802346195,
    1.4182117197653805,
    f64::NAN,
];
const KL_LOGT_SUM_GRAD_INPUT: &[f64] = &[
    -0.274068619061197,
    -0.274068619061197,
    -0.45186276187760605,
    -0.10556446661296019,
    -0.2869539713249813,
    -0.6074815620620584,
];
const KL_LOGT_SUM_GRAD_TARGET: &[f64] = &[
    0.39655934775249957,
    0.8076622763442951,
    0.2019530698569089,
    -0.12283233896927805,
    0.813922970332615,
    2.3305565037776415,
];
const KL_INPUT: &[f64] = &[
    -1.7413112966571571,
    -3.241311296657157,
    -0.24131129665715703,
    -0.0848568942739113,
    -3.084856894273911,
    -3.334856894273911,
];
const KL_TARGET: &[f64] = &[
    0.274068619061197,
    0.274068619061197,
    0.45186276187760605,
    0.10556446661296019,
    0.2869539713249813,
    0.0,
];
const KL_LOG_TARGET: &[f64] = &[
    -1.2943767694176431,
    -1.2943767694176431,
    -0.7943767694176431,
    -2.24843345474315,
    -1.24843345474315,
    -0.49843345474315,
];

#[test]
fn smooth_l1_matches_pytorch() {
    type Case = (f64, [&'static [f64]; 3], &'static [f64]);
    let cases: [Case; 3] = [
        (
            1.0,
            [SMOOTH_L1_1_0_MEAN, SMOOTH_L1_1_0_SUM, SMOOTH_L1_1_0_NONE],
            SMOOTH_L1_1_0_GRAD,
        ),
        (
            0.5,
            [SMOOTH_L1_0_5_MEAN, SMOOTH_L1_0_5_SUM, SMOOTH_L1_0_5_NONE],
            SMOOTH_L1_0_5_GRAD,
        ),
        (
            0.0,
            [SMOOTH_L1_0_0_MEAN, SMOOTH_L1_0_0_SUM, SMOOTH_L1_0_0_NONE],
            SMOOTH_L1_0_0_GRAD,
        ),
    ];
    for (beta, values, grad) in cases {
        for r in REDUCTIONS {
            let want = values[red_name(r)];
            assert_close(&F::smooth_l1_loss_with(&a(), &b(), r, beta), want, 1e-14);
            let module = SmoothL1Loss::new().beta(beta).reduction(r);
            assert_close(&module.forward(&a(), &b()), want, 1e-14);
            assert_close(&module.forward_backward(&a(), &b()).0, want, 1e-14);
        }
        let aa = a().requires_grad_(true);
        let loss = SmoothL1Loss::new().beta(beta).forward(&aa, &b());
        assert_eq!(loss.grad_fn(), Some("SmoothL1LossBackward"));
        loss.backward();
        assert_close(&aa.grad().unwrap(), grad, 1e-15);
        let (_, g) = SmoothL1Loss::new().beta(beta).forward_backward(&a(), &b());
        assert_close(&g, grad, 1e-15);
    }
    assert_close(&F::smooth_l1_loss(&a(), &b()), SMOOTH_L1_1_0_MEAN, 1e-14);
    let err = F::try_smooth_l1_loss_with(&a(), &b(), Reduction::Mean, -1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("beta must not be negative"), "{err}");
}

#[test]
fn gradcheck_smooth_l1_and_both_paths_agree() {
    for r in REDUCTIONS {
        for beta in [0.3, 1.0, 2.0] {
            check_grad(
                |v| F::smooth_l1_loss_with(&v[0], &v[1], r, beta),
                &[randn(&[3, 4], 30) * 2.0, randn(&[3, 4], 31)],
            );
            check_paths(
                &SmoothL1Loss::new().beta(beta).reduction(r),
                &(randn(&[3, 4], 32) * 2.0),
                &randn(&[3, 4], 33),
            );
        }
    }
}

fn kl_inputs() -> (Tensor, Tensor, Tensor) {
    (
        f64s(KL_INPUT, &[2, 3]),
        f64s(KL_TARGET, &[2, 3]),
        f64s(KL_LOG_TARGET, &[2, 3]),
    )
}

#[test]
fn kl_div_matches_pytorch() {
    let (input, target, log_target) = kl_inputs();
    let reds = [
        (KlDivReduction::Mean, KL_MEAN, KL_LOGT_MEAN),
        (KlDivReduction::BatchMean, KL_BATCHMEAN, KL_LOGT_BATCHMEAN),
        (KlDivReduction::Sum, KL_SUM, KL_LOGT_SUM),
        (KlDivReduction::None, KL_NONE, KL_LOGT_NONE),
    ];
    for (reduction, want, want_log) in reds {
        let o = KlDivOptions {
            reduction,
            log_target: false,
        };
        assert_close(&F::kl_div_with(&input, &target, &o), want, 1e-14);
        let kl = KLDivLoss::new().reduction(reduction);
        assert_close(&kl.forward_backward(&input, &target).0, want, 1e-14);
        let o = KlDivOptions {
            reduction,
            log_target: true,
        };
        assert_close(&F::kl_div_with(&input, &log_target, &o), want_log, 1e-14);
    }
    assert_close(&F::kl_div(&input, &target), KL_MEAN, 1e-14);

    // Both gradients; the zero target's is NaN, as PyTorch's.
    let (x, t) = (input.requires_grad_(true), target.requires_grad_(true));
    let loss = KLDivLoss::new()
        .reduction(KlDivReduction::BatchMean)
        .forward(&x, &t);
    assert_eq!(loss.grad_fn(), Some("KlDivBackward"));
    loss.backward();
    assert_close(&x.grad().unwrap(), KL_BATCHMEAN_GRAD_INPUT, 1e-14);
    let tg = t.grad().unwrap().to_vec::<f64>();
    assert!(tg[5].is_nan(), "{tg:?}");
    assert_close(&f64s(&tg[..5], &[5]), &KL_BATCHMEAN_GRAD_TARGET[..5], 1e-14);
    let (x, lt) = (
        f64s(KL_INPUT, &[2, 3]).requires_grad_(true),
        log_target.requires_grad_(true),
    );
    let o = KlDivOptions {
        reduction: KlDivReduction::Sum,
        log_target: true,
    };
    F::kl_div_with(&x, &lt, &o).backward();
    assert_close(&x.grad().unwrap(), KL_LOGT_SUM_GRAD_INPUT, 1e-14);
    assert_close(&lt.grad().unwrap(), KL_LOGT_SUM_GRAD_TARGET, 1e-14);
}

#[test]
fn gradcheck_kl_div_and_both_paths_agree() {
    let logp = |seed| randn(&[3, 4], seed).log_softmax(1);
    for reduction in [
        KlDivReduction::Mean,
        KlDivReduction::BatchMean,
        KlDivReduction::Sum,
        KlDivReduction::None,
    ] {
        for log_target in [false, true] {
            let o = KlDivOptions {
                reduction,
                log_target,
            };
            let t = if log_target { logp(41) } else { logp(41).exp() };
            check_grad(|v| F::kl_div_with(&v[0], &v[1], &o), &[logp(40), t.clone()]);
            check_paths(
                &KLDivLoss::new().reduction(reduction).log_target(log_target),
                &logp(42),
                &t,
            );
        }
    }
    let err = F::try_kl_div_with(&a(), &b().reshape([6]), &KlDivOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("must have the input's shape [2, 3]"), "{err}");
}
