#[test]
fn smoke(){ assert!(deriv::Tensor::try_from_vec(vec![1.0f32], [2]).is_err()); }
