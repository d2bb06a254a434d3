use deriv::prelude::*;
#[test]
fn smoke(){ assert_eq!(Tensor::ones([2]).sum().item(), 2.0); }
