//! safetensors files, state dicts and checkpoints.

use std::path::PathBuf;

use deriv::io::{self, Checkpoint, StateDict};
use deriv::nn::{Linear, Module};
use deriv::optim::OptimizerState;
use deriv::prelude::*;
use deriv::{network, Error};

network! {
    struct Net {
        fc1: Linear(3, 4),
        fc2: Linear(4, 2),
    }
    fn forward(x) {
        fc2(relu(fc1(x)))
    }
}

/// A fresh folder under the system temp dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deriv-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_dtype_round_trips_through_a_file() {
    let dir = scratch("dtypes");
    let mut sd = StateDict::new();
    sd.insert("f32", Tensor::randn([3, 4]));
    sd.insert("f64", Tensor::randn([2, 2]).to_dtype(DType::F64) * 1e-3);
    sd.insert("i64", tensor![[1i64, -2], [1 << 40, 7]]);
    sd.insert("bool", tensor![true, false, true]);
    sd.insert("scalar", Tensor::scalar(2.5f32));
    // A transposed view is written in row-major order of its shape.
    let base = Tensor::arange(0.0, 6.0, 1.0).reshape([2, 3]);
    sd.insert("view", base.t());
    let path = dir.join("all.safetensors");
    io::save_file(&sd, &path).unwrap();
    let back = io::load_file(&path).unwrap();
    assert_eq!(back.len(), sd.len());
    for (name, t) in sd.iter() {
        let b = &back[name];
        assert_eq!(b.dtype(), t.dtype(), "{name}");
        assert_eq!(b.shape(), t.shape(), "{name}");
        assert_eq!(b.to_vec::<f64>(), t.to_vec::<f64>(), "{name}");
    }
    assert_eq!(back["view"].to_vec::<f32>(), vec![0., 3., 1., 4., 2., 5.]);
    // No temporary file is left beside the target.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("all.safetensors")]);
}

#[test]
fn reads_what_pytorch_safetensors_writes() {
    // tests/data/make_torch_safetensors.py wrote this with safetensors.torch.save_file.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/torch_written.safetensors"
    );
    let (sd, meta) = io::load_file_with_metadata(path).unwrap();
    assert_eq!(meta.get("note").map(String::as_str), Some("deriv fixture"));
    assert_eq!(sd["fc1.weight"].shape(), &[2, 3]);
    assert_eq!(
        sd["fc1.weight"].to_vec::<f32>(),
        vec![0., 0.25, 0.5, 0.75, 1., 1.25]
    );
    assert_eq!(sd["fc1.bias"].to_vec::<f32>(), vec![-1.5, 2.25]);
    assert_eq!(sd["table"].dtype(), DType::F64);
    assert_eq!(
        sd["table"].to_vec::<f64>(),
        vec![0.0, 0.1, 0.2, 0.30000000000000004]
    );
    assert_eq!(sd["labels"].to_vec::<i64>(), vec![3, -7, 1 << 40]);
    assert_eq!(sd["mask"].to_vec::<bool>(), vec![true, false, true]);
    assert_eq!(sd["half"].dtype(), DType::F32);
    assert_eq!(sd["half"].to_vec::<f32>(), vec![1.0, -2.0, 0.333_251_95]);
    assert_eq!(sd["bf"].to_vec::<f32>(), vec![1.0, -0.5, 3.0]);
    assert_eq!(sd["i32"].dtype(), DType::I64);
    assert_eq!(sd["i32"].to_vec::<i64>(), vec![1, -2]);
    assert_eq!(sd["u8"].to_vec::<i64>(), vec![0, 255]);
}

#[test]
fn state_dict_names_and_load_copies_in_place() {
    manual_seed(1);
    let a = Net::default();
    let mut b = Net::default();
    let sd = a.state_dict();
    let names: Vec<&str> = sd.keys().collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    // The state dict is detached but shares storage, as in PyTorch.
    assert!(!sd["fc1.weight"].requires_grad());
    let handle = b.fc1.weight.clone();
    b.load_state_dict(&sd).unwrap();
    // Copied into the existing parameter: handles (an optimizer's) see the new values.
    assert_eq!(handle.to_vec::<f32>(), a.fc1.weight.to_vec::<f32>());
    assert!(b.fc1.weight.requires_grad());
    let x = Tensor::randn([5, 3]);
    assert_eq!(a.forward(&x).to_vec::<f32>(), b.forward(&x).to_vec::<f32>());
}

#[test]
fn load_state_dict_refuses_missing_extra_and_misshaped_tensors() {
    let mut net = Net::default();
    let before = net.fc1.weight.to_vec::<f32>();
    let full = Net::default().state_dict();

    let mut missing = full.clone();
    missing.remove("fc2.bias");
    let e = net.load_state_dict(&missing).unwrap_err().to_string();
    assert!(e.contains("missing keys [fc2.bias]"), "{e}");

    let mut extra = full.clone();
    extra.insert("fc3.weight", Tensor::zeros([1]));
    let e = net.load_state_dict(&extra).unwrap_err().to_string();
    assert!(e.contains("unexpected keys [fc3.weight]"), "{e}");

    let mut bad = full.clone();
    bad.insert("fc1.weight", Tensor::zeros([3, 4]));
    let e = net.load_state_dict(&bad).unwrap_err().to_string();
    assert!(
        e.contains("fc1.weight") && e.contains("[3, 4]") && e.contains("[4, 3]"),
        "{e}"
    );
    // Nothing was copied by the failed loads.
    assert_eq!(net.fc1.weight.to_vec::<f32>(), before);

    // Non-strict loading reports the names and loads the rest.
    let keys = net.load_state_dict_with(&extra, false).unwrap();
    assert_eq!(keys.unexpected_keys, ["fc3.weight"]);
    assert!(keys.missing_keys.is_empty());
    assert_eq!(
        net.fc1.weight.to_vec::<f32>(),
        full["fc1.weight"].to_vec::<f32>()
    );
}

#[test]
fn load_state_dict_converts_dtype_like_pytorch() {
    let mut fc = Linear::new(2, 1, &Device::Cpu);
    let mut sd = StateDict::new();
    sd.insert("weight", tensor![[0.5f64, -0.25]]);
    sd.insert("bias", tensor![1.0f64]);
    fc.load_state_dict(&sd).unwrap();
    assert_eq!(fc.weight.dtype(), DType::F32);
    assert_eq!(fc.weight.to_vec::<f32>(), vec![0.5, -0.25]);
    assert_eq!(fc.bias.as_ref().unwrap().to_vec::<f32>(), vec![1.0]);
}

#[test]
fn module_save_and_load_round_trip() {
    let dir = scratch("module");
    let path = dir.join("net.safetensors");
    let a = Net::default();
    a.save_safetensors(&path).unwrap();
    let mut b = Net::default();
    b.load_safetensors(&path).unwrap();
    for ((na, ta), (nb, tb)) in a.named_parameters().iter().zip(b.named_parameters().iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec::<f32>(), tb.to_vec::<f32>(), "{na}");
    }
    // Overwriting an existing file replaces it whole.
    let c = Net::default();
    c.save_safetensors(&path).unwrap();
    b.load_safetensors(&path).unwrap();
    assert_eq!(b.fc2.weight.to_vec::<f32>(), c.fc2.weight.to_vec::<f32>());
}

#[test]
fn truncated_or_corrupt_files_are_errors_not_panics() {
    let dir = scratch("corrupt");
    let path = dir.join("net.safetensors");
    let net = Net::default();
    net.save_safetensors(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.safetensors");
    // Every truncation, from empty to one byte short.
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = io::load_file(&cut).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "len {len}: {e}");
        assert!(e.to_string().contains("cut.safetensors"), "{e}");
    }
    // Each header byte flipped: an error or, where the JSON stays valid, a file that loads.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..8 + header_len {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let _ = io::deserialize(&b);
    }
    // Hand-made headers: a header length past the end, offsets out of range, garbage.
    let cases: Vec<Vec<u8>> = vec![
        u64::MAX.to_le_bytes().to_vec(),
        {
            let h = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}}"#;
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(h);
            v.extend_from_slice(&[0; 16]);
            v
        },
        {
            let h = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(h);
            v.extend_from_slice(&[0; 16]);
            v
        },
        b"not a safetensors file at all".to_vec(),
    ];
    for (i, c) in cases.iter().enumerate() {
        assert!(io::deserialize(c).is_err(), "case {i} loaded");
    }
    // A failed load leaves the model untouched.
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut other = Net::default();
    let before = other.fc1.weight.to_vec::<f32>();
    assert!(other.load_safetensors(&cut).is_err());
    assert_eq!(other.fc1.weight.to_vec::<f32>(), before);
}

#[test]
fn missing_files_and_folders_are_io_errors_naming_the_path() {
    let dir = scratch("missing");
    let e = io::load_file(dir.join("nope.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
    let e = io::save_file(&StateDict::new(), dir.join("no/such/dir/x.safetensors")).unwrap_err();
    assert!(e.to_string().contains("x.safetensors"), "{e}");
}

#[test]
fn checkpoint_keeps_optimizer_state_and_scalars_exactly() {
    let dir = scratch("ckpt");
    let path = dir.join("last.safetensors");
    let net = Net::default();
    let opt = OptimizerState {
        tensors: vec![("state.0.momentum_buffer".into(), Tensor::randn([4, 3]))],
        scalars: vec![
            ("param_groups.0.lr".into(), 0.1 + 0.2),
            ("state.0.step".into(), 17.0),
        ],
    };
    let mut ckpt = Checkpoint {
        epoch: 4,
        model: net.state_dict(),
        optimizer: Some(opt.clone()),
        ..Default::default()
    };
    ckpt.metadata
        .insert("history".into(), "epoch,train_loss\n1,0.5\n".into());
    ckpt.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.epoch, 4);
    assert_eq!(back.model.keys().count(), 4);
    assert_eq!(
        back.model["fc2.bias"].to_vec::<f32>(),
        net.fc2.bias.as_ref().unwrap().to_vec::<f32>()
    );
    let o = back.optimizer.unwrap();
    let lr = o
        .scalars
        .iter()
        .find(|(n, _)| n == "param_groups.0.lr")
        .unwrap()
        .1;
    assert_eq!(lr.to_bits(), (0.1f64 + 0.2).to_bits());
    assert_eq!(o.tensors[0].0, "state.0.momentum_buffer");
    assert_eq!(
        o.tensors[0].1.to_vec::<f32>(),
        opt.tensors[0].1.to_vec::<f32>()
    );
    assert_eq!(back.metadata["history"], "epoch,train_loss\n1,0.5\n");

    // A plain weights file is not a checkpoint.
    net.save_safetensors(&dir.join("w.safetensors")).unwrap();
    let e = Checkpoint::load(dir.join("w.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a deriv checkpoint"), "{e}");
}

/// safetensors bytes with this JSON header and data.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// A header naming one tensor twice is an error (the `safetensors` crate
/// reads the header into a map, where the last entry would silently win).
#[test]
fn duplicate_tensor_names_are_an_error() {
    let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let dup = safetensors_bytes(
        &format!(r#"{{"w":{entry},"w":{entry}}}"#),
        &1f32.to_le_bytes(),
    );
    let e = io::deserialize(&dup).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("\"w\" twice"), "{msg}");
    // Through a file, the message names it.
    let dir = scratch("dup");
    let path = dir.join("dup.safetensors");
    std::fs::write(&path, &dup).unwrap();
    let msg = io::load_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("dup.safetensors") && msg.contains("twice"),
        "{msg}"
    );
    // The same entry once loads.
    let one = safetensors_bytes(&format!(r#"{{"w":{entry}}}"#), &1f32.to_le_bytes());
    assert_eq!(
        io::deserialize(&one).unwrap().0["w"].to_vec::<f32>(),
        vec![1.0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Headers whose sizes the data cannot back are refused before anything is
/// allocated for them: a 2^40-element tensor in a file of a few bytes, and
/// an empty tensor whose other sizes overflow the strides.
#[test]
fn headers_claiming_huge_tensors_are_errors() {
    let huge = safetensors_bytes(
        r#"{"x":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}}"#,
        &[0; 8],
    );
    assert!(matches!(io::deserialize(&huge), Err(Error::Format { .. })));
    let strides = safetensors_bytes(
        r#"{"x":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#,
        &[],
    );
    let msg = io::deserialize(&strides).unwrap_err().to_string();
    assert!(msg.contains("too many elements"), "{msg}");
    // An empty tensor of addressable shape is fine.
    let empty = safetensors_bytes(
        r#"{"x":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#,
        &[],
    );
    assert_eq!(io::deserialize(&empty).unwrap().0["x"].shape(), &[0, 3]);
}
