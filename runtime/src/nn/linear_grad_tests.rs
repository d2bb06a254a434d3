//! Where the compile-time backward puts a parameter's gradient: into the
//! buffer `zero_grad()` recycled, in place into an existing `.grad()`, or
//! into a new tensor when someone else still holds the old one.

use super::Linear;
use crate::nn::{Differentiable, Module};
use crate::optim::{Optimizer, SGD};
use crate::{Device, Tensor};
use std::sync::{Arc, Weak};

fn layer_and_batch() -> (Linear, Tensor, Tensor) {
    let mut rng = crate::Generator::new(7);
    let fc = Linear::new(3, 2, &Device::Cpu);
    let x = Tensor::randn_with([4, 3], &mut rng);
    let g = Tensor::randn_with([4, 2], &mut rng);
    (fc, x, g)
}

/// One compile-time backward of `fc` at `x` seeded with `g`.
fn backward(fc: &Linear, x: &Tensor, g: &Tensor) {
    let (_, saved) = fc.forward_train(x);
    assert!(fc.backward(saved, g, false).is_none());
}

/// A weak reference to `p`'s gradient storage: it keeps the allocation (so
/// a new storage cannot land at the same address) but not the storage,
/// and does not count as a holder (`Arc::strong_count` stays 1).
fn grad_storage(p: &Tensor) -> Weak<crate::backend::Storage> {
    Arc::downgrade(p.grad().expect("a gradient").storage())
}

fn grads(fc: &Linear) -> Vec<Vec<f32>> {
    fc.parameters()
        .iter()
        .map(|p| p.grad().expect("a gradient").to_vec::<f32>())
        .collect()
}

#[test]
fn zero_grad_recycles_the_dropped_buffer_and_backward_overwrites_it() {
    let (fc, x, g) = layer_and_batch();
    let mut opt = SGD::new(fc.parameters(), 0.1);
    backward(&fc, &x, &g);
    let first = grads(&fc);
    let old: Vec<_> = fc.parameters().iter().map(grad_storage).collect();
    opt.zero_grad();
    assert!(fc.parameters().iter().all(|p| p.grad().is_none()));
    backward(&fc, &x, &g);
    // Written over, not added to what the recycled buffer held.
    assert_eq!(grads(&fc), first);
    for (p, old) in fc.parameters().iter().zip(old) {
        let old = old.upgrade().expect("the recycled buffer was freed");
        assert!(
            Arc::ptr_eq(&old, p.grad().unwrap().storage()),
            "the recycled buffer was not reused"
        );
    }
}

#[test]
fn a_gradient_someone_holds_is_not_recycled() {
    let (fc, x, g) = layer_and_batch();
    let mut opt = SGD::new(fc.parameters(), 0.1);
    backward(&fc, &x, &g);
    let first = grads(&fc);
    let held = fc.weight.grad().unwrap();
    opt.zero_grad();
    backward(&fc, &x, &(&g * 2.0));
    assert_eq!(held.to_vec::<f32>(), first[0], "a held gradient changed");
    assert!(!held.shares_storage(&fc.weight.grad().unwrap()));
    let doubled: Vec<f32> = first[0].iter().map(|v| v * 2.0).collect();
    assert_eq!(fc.weight.grad().unwrap().to_vec::<f32>(), doubled);
}

#[test]
fn an_existing_gradient_accumulates_in_place() {
    let (fc, x, g) = layer_and_batch();
    backward(&fc, &x, &g);
    let first = grads(&fc);
    let held = fc.weight.grad().unwrap();
    backward(&fc, &x, &g);
    let twice: Vec<Vec<f32>> = first
        .iter()
        .map(|v| v.iter().map(|x| x + x).collect())
        .collect();
    // The kernel adds its terms onto what is there, so the last bit may
    // differ from summing first and adding once.
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs().max(1.0))
    };
    for (got, want) in grads(&fc).iter().zip(&twice) {
        assert!(close(got, want), "{got:?} != {want:?}");
    }
    // In place, as the tape accumulates: a handle sees the sum.
    assert!(close(&held.to_vec::<f32>(), &twice[0]));
}

#[test]
fn the_tape_and_set_grad_free_the_recycled_buffer() {
    let (fc, x, g) = layer_and_batch();
    let mut opt = SGD::new(fc.parameters(), 0.1);
    backward(&fc, &x, &g);
    opt.zero_grad();
    assert!(fc.weight.grad_slot().spare.is_some());
    crate::nn::Forward::forward(&fc, &x)
        .mul(&g)
        .sum()
        .backward();
    assert!(fc.weight.grad_slot().spare.is_none());
    assert!(fc.weight.grad().is_some());

    backward(&fc, &x, &g);
    opt.zero_grad();
    assert!(fc.bias.as_ref().unwrap().grad_slot().spare.is_some());
    fc.bias.as_ref().unwrap().set_grad(None);
    assert!(fc.bias.as_ref().unwrap().grad_slot().spare.is_none());
}
