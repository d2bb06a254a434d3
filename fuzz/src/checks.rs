//! What the fuzz targets check on each input, shared with the stable test
//! that replays saved inputs (tests/fuzz_regressions.rs). Every function
//! must return normally on any bytes: a file is read or refused with an
//! `Err`, and what is read is consistent. A panic is a finding.

use deriv_runtime::data::{read_csv_bytes, read_csv_xy_bytes, Column, CsvOptions};
use deriv_runtime::io::{self, Checkpoint};
use deriv_runtime::nn::{Linear, Module};
use deriv_runtime::optim::lr_scheduler::{LrScheduler, SequentialLR};
use deriv_runtime::optim::{Adagrad, Adam, AdamW, Optimizer, RMSprop, SGD};
use deriv_runtime::train::History;
use deriv_runtime::{DType, Device, Tensor};

/// Every element's bits, for exact comparison (NaN payloads included).
fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::F64 => t.to_vec::<f64>().iter().map(|x| x.to_bits()).collect(),
        DType::I64 => t.to_vec::<i64>().iter().map(|&x| x as u64).collect(),
        DType::Bool => t.to_vec::<bool>().iter().map(|&x| x as u64).collect(),
    }
}

/// A safetensors file loads or is an `Err`; what loads saves and loads back
/// to the same tensors (bit for bit) and metadata.
pub fn safetensors(data: &[u8]) {
    let Ok((sd, meta)) = io::deserialize(data) else {
        return;
    };
    let bytes = io::serialize(&sd, (!meta.is_empty()).then_some(&meta))
        .expect("a state dict that loaded saves");
    let (back, meta_back) = io::deserialize(&bytes).expect("a state dict that saved loads");
    assert_eq!(meta, meta_back);
    assert_eq!(sd.len(), back.len());
    for (name, t) in sd.iter() {
        let b = &back[name];
        assert_eq!((t.dtype(), t.shape()), (b.dtype(), b.shape()), "{name}");
        assert_eq!(bits(t), bits(b), "{name}");
    }
}

/// A checkpoint loads or is an `Err`, and then everything `resume_from`
/// does with it returns or is an `Err`: the history, the model's tensors
/// (into a small Linear), the optimizer's state (into each optimizer, which
/// must then step) and a scheduler's state.
pub fn checkpoint(data: &[u8]) {
    let Ok(ckpt) = Checkpoint::deserialize(data) else {
        return;
    };
    if let Some(csv) = ckpt.metadata.get("history") {
        if let Ok(h) = History::from_csv(csv) {
            let text = h.to_csv();
            let again = History::from_csv(&text).expect("a history that loaded saves");
            // Compared as text: a NaN metric (a diverged loss) round-trips,
            // but NaN != NaN would fail a comparison of the values.
            assert_eq!(again.to_csv(), text);
        }
    }
    let mut model = Linear::new(3, 2, &Device::Cpu);
    let before: Vec<Vec<u64>> = model.parameters().iter().map(bits).collect();
    if model.load_state_dict(&ckpt.model).is_err() {
        let after: Vec<Vec<u64>> = model.parameters().iter().map(bits).collect();
        assert_eq!(before, after, "a refused load_state_dict changed the model");
    }
    let _ = model.load_state_dict_with(&ckpt.model, false);
    let Some(state) = &ckpt.optimizer else {
        return;
    };
    let params = || model.parameters();
    let mut optimizers: Vec<Box<dyn Optimizer>> = vec![
        Box::new(SGD::new(params(), 0.1).momentum(0.9)),
        Box::new(Adam::new(params(), 1e-3).amsgrad(true)),
        Box::new(AdamW::new(params(), 1e-3)),
        Box::new(RMSprop::new(params(), 1e-2)),
        Box::new(Adagrad::new(params(), 1e-2)),
    ];
    for p in model.parameters() {
        p.set_grad(Some(p.ones_like()));
    }
    for opt in &mut optimizers {
        let before = opt.state_dict();
        if opt.load_state_dict(state).is_ok() {
            opt.step();
        } else {
            let after = opt.state_dict();
            assert_eq!(
                before.scalars, after.scalars,
                "a refused load changed the optimizer"
            );
        }
    }
    let scalars: Vec<(String, f64)> = ckpt
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("scheduler.")?.to_string(), v.parse().ok()?)))
        .collect();
    let opt = &mut *optimizers[0];
    let mut sched = SequentialLR::warmup_cosine(opt, 0.1, 2, 10, 0.0);
    if sched.load_state_dict(&scalars).is_ok() {
        sched.step(opt);
    }
}

/// The options the first byte picks: header, delimiter, dtype, comments.
pub fn csv_options(flags: u8) -> CsvOptions {
    CsvOptions::new()
        .has_header(flags & 1 != 0)
        .delimiter([b',', b';', b'\t', b' '][(flags >> 1 & 3) as usize])
        .dtype([DType::F32, DType::F64, DType::I64, DType::Bool][(flags >> 3 & 3) as usize])
        .comment((flags & 32 != 0).then_some(b'#'))
}

/// A CSV file (options from the first byte) reads or is an `Err`; what
/// reads is a 2-D tensor of the asked dtype with no infinity unless the
/// text (quotes aside) spells one, and class labels are whole numbers from 0.
pub fn csv(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let opts = csv_options(flags);
    // Quotes are dropped first: the CSV field `"i"nf` reads as `inf`.
    let unquoted: Vec<u8> = body.iter().filter(|&&b| b != b'"').copied().collect();
    let spells_inf = unquoted
        .to_ascii_lowercase()
        .windows(3)
        .any(|w| w == b"inf");
    let finite = |t: &Tensor| {
        spells_inf || !t.dtype().is_float() || t.to_vec::<f64>().iter().all(|v| !v.is_infinite())
    };
    match read_csv_bytes(body, &opts) {
        Ok(t) => {
            assert_eq!((t.ndim(), t.dtype()), (2, opts.dtype));
            assert!(finite(&t), "an overflow became infinity");
        }
        Err(e) => assert!(e.to_string().contains("read_csv")),
    }
    let label = Column::Index(if flags & 64 != 0 { 0 } else { -1 });
    if let Ok((x, y)) = read_csv_xy_bytes(body, &opts, label) {
        assert_eq!((x.ndim(), y.ndim(), y.dtype()), (2, 1, DType::I64));
        assert_eq!(x.shape()[0], y.shape()[0]);
        assert!(finite(&x), "an overflow became infinity");
        assert!(
            y.to_vec::<i64>().iter().all(|&v| v >= 0),
            "a negative class label"
        );
    }
}
