//! Conversions between `Tensor` and `ndarray` arrays (the `ndarray` feature).
#![cfg(feature = "ndarray")]

use deriv::ndarray::{array, s, Array, Array1, Array2, ArrayD, Axis, Ix2, IxDyn};
use deriv::{tensor, DType, Tensor};

#[test]
fn arrayd_round_trip_keeps_shape_and_values() {
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let a = ArrayD::from_shape_vec(IxDyn(&[2, 3, 4]), data.clone()).unwrap();
    let t = Tensor::from(a.clone());
    assert_eq!(t.shape(), &[2, 3, 4]);
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.to_vec::<f32>(), data);
    // Element [1, 2, 3] is at row-major position 1*12 + 2*4 + 3 = 23.
    assert_eq!(
        t.select(0, 1).select(0, 2).select(0, 3).item(),
        -3.0 + 23.0 * 0.5
    );
    let back = t.to_ndarray::<f32>();
    assert_eq!(back, a);
}

#[test]
fn array1_and_array2_convert_by_value_and_by_reference() {
    let v: Array1<f64> = array![1.5, -2.0, 3.25];
    let t = Tensor::from(&v);
    assert_eq!(t.shape(), &[3]);
    assert_eq!(t.dtype(), DType::F64);
    assert_eq!(t.to_vec::<f64>(), vec![1.5, -2.0, 3.25]);

    let m: Array2<i64> = array![[1, 2, 3], [4, 5, 6]];
    let t: Tensor = m.clone().into();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.dtype(), DType::I64);
    assert_eq!(t.to_vec::<i64>(), vec![1, 2, 3, 4, 5, 6]);
    let back = t.to_ndarray::<i64>().into_dimensionality::<Ix2>().unwrap();
    assert_eq!(back, m);

    let mask = array![true, false, true];
    let t = Tensor::from(mask);
    assert_eq!(t.dtype(), DType::Bool);
    assert_eq!(t.to_vec::<bool>(), vec![true, false, true]);
}

#[test]
fn transposed_and_sliced_arrays_convert_by_logical_index() {
    let m: Array2<f32> = array![[1., 2., 3.], [4., 5., 6.]];
    // A transposed view: memory order 1 2 3 4 5 6, logical order 1 4 2 5 3 6.
    let t = Tensor::from(m.t());
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.to_vec::<f32>(), vec![1., 4., 2., 5., 3., 6.]);

    // Reversed and strided slices (negative strides in ndarray).
    let big = Array::from_shape_vec((4, 5), (0..20).map(|i| i as f32).collect()).unwrap();
    let view = big.slice(s![..;2, ..;-1]);
    let t = Tensor::from(view);
    assert_eq!(t.shape(), &[2, 5]);
    let mut expected = Vec::new();
    for r in (0..4).step_by(2) {
        for c in (0..5).rev() {
            expected.push((r * 5 + c) as f32);
        }
    }
    assert_eq!(t.to_vec::<f32>(), expected);

    // A permuted 3-D array.
    let a3 = Array::from_shape_vec((2, 3, 4), (0..24).map(|i| i as f64).collect()).unwrap();
    let p = a3.view().permuted_axes([2, 0, 1]);
    let t = Tensor::from(p);
    assert_eq!(t.shape(), &[4, 2, 3]);
    let mut expected = Vec::new();
    for k in 0..4 {
        for i in 0..2 {
            for j in 0..3 {
                expected.push((i * 12 + j * 4 + k) as f64);
            }
        }
    }
    assert_eq!(t.to_vec::<f64>(), expected);
}

#[test]
fn to_ndarray_of_a_non_contiguous_tensor_and_dtype_conversion() {
    let t = tensor![[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]].t();
    assert!(!t.is_contiguous());
    let a = t.to_ndarray::<f32>();
    assert_eq!(a.shape(), &[3, 2]);
    assert_eq!(a[[0, 1]], 4.5);
    assert_eq!(a[[2, 0]], 3.5);
    // f32 -> i64 truncates, as `to_vec` does.
    let ai = t.to_ndarray::<i64>();
    assert_eq!(
        ai.iter().copied().collect::<Vec<_>>(),
        vec![1, 4, 2, 5, 3, 6]
    );
    // f32 -> f64 widens exactly.
    let ad = t.to_ndarray::<f64>();
    assert_eq!(
        ad.sum_axis(Axis(1)).iter().copied().collect::<Vec<_>>(),
        vec![6.0, 8.0, 10.0]
    );
}

#[test]
fn scalars_and_empty_shapes() {
    let t = Tensor::scalar(7.25f32);
    let a = t.to_ndarray::<f32>();
    assert_eq!(a.ndim(), 0);
    assert_eq!(a.shape(), &[] as &[usize]);
    assert_eq!(a[IxDyn(&[])], 7.25);
    let back = Tensor::from(a);
    assert_eq!(back.shape(), &[] as &[usize]);
    assert_eq!(back.item(), 7.25);

    let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
    let t = Tensor::from(empty);
    assert_eq!(t.shape(), &[0, 3]);
    assert_eq!(t.numel(), 0);
    assert_eq!(t.to_ndarray::<f32>().shape(), &[0, 3]);
}

#[test]
fn results_of_tensor_math_match_ndarray_math() {
    let a: Array2<f64> = array![[1., 2.], [3., 4.], [5., 6.]];
    let b: Array2<f64> = array![[0.5, -1., 2.], [1.5, 0., -0.5]];
    let prod = Tensor::from(&a).matmul(&Tensor::from(&b));
    let expected = a.dot(&b);
    assert_eq!(
        prod.to_ndarray::<f64>()
            .into_dimensionality::<Ix2>()
            .unwrap(),
        expected
    );
}
