use super::*;

/// The row-run path of `zip` against a plain element-by-element walk, for
/// broadcasts whose trailing block is shared, with rows cut by the
/// parallel chunking (sizes above PAR_THRESHOLD) and views with offsets.
#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; unsafe_paths::parallel_elementwise_kernels_write_every_element_once runs row runs at small sizes"
)]
fn zip_row_runs_match_elementwise_walk() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[64, 256], &[256]),
        (&[300, 257], &[257]),
        (&[5, 7, 64], &[7, 64]),
        (&[4, 3, 10], &[4, 1, 10]),
        (&[2, 9, 1, 33], &[9, 1, 33]),
    ];
    for (sa, sb) in cases {
        let la = Layout::contiguous(sa);
        let nb: usize = sb.iter().product();
        // Offset views into larger buffers, so offsets are exercised too.
        let lb = Layout {
            offset: 3,
            ..Layout::contiguous(sb)
        }
        .broadcast_to(sa);
        let a: Vec<f32> = (0..la.numel()).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..nb + 3).map(|i| i as f32 * -1.25).collect();
        let got = zip("test", &a, &la, &b, &lb, |x, y| x * 3.0 + y).unwrap();
        let mut want = Vec::with_capacity(la.numel());
        walk(
            &la.shape,
            [&la.strides, &lb.strides],
            [0, 3],
            0,
            la.numel(),
            |[oa, ob]| want.push(a[oa] * 3.0 + b[ob]),
        );
        assert_eq!(got, want, "{sa:?} with {sb:?}");
    }
}

#[test]
fn parallel_kernels_cover_every_element_once() {
    for n in [
        0,
        1,
        17,
        PAR_THRESHOLD - 1,
        PAR_THRESHOLD,
        3 * PAR_THRESHOLD + 5,
    ] {
        let v = build_vec("test", &[n], n, |start, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                o.write(start + i);
            }
        });
        assert!(v.iter().copied().eq(0..n), "build_vec, n = {n}");
        let l = Layout::contiguous(&[n]);
        let mut d: Vec<usize> = (0..n).collect();
        update("test", &mut d, &l, &v, &l, |x, y| x + y);
        update_scalar("test", &mut d, &l, |x| x + 1);
        assert!(
            d.iter().copied().eq((0..n).map(|i| 2 * i + 1)),
            "update, n = {n}"
        );
    }
}

#[test]
fn tile_split_covers_len_in_even_whole_tiles() {
    for (len, parts) in [
        (784, 4),
        (256, 4),
        (64, 4),
        (17, 4),
        (1, 3),
        (1000, 7),
        (32, 5),
    ] {
        let split = TileSplit::new(len, parts, 16);
        let mut next = 0;
        let sizes: Vec<usize> = (0..split.parts)
            .map(|p| {
                let (start, size) = split.block(p);
                assert_eq!(start, next, "len {len}, {parts} parts: contiguous");
                assert_eq!(start % 16, 0, "len {len}: starts on a tile");
                next = start + size;
                size
            })
            .collect();
        assert_eq!(next, len, "len {len}: covered");
        assert!(sizes.iter().all(|&s| s > 0), "len {len}: {sizes:?}");
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        // Full blocks differ by at most one tile (the last may be partial).
        assert!(
            hi - lo <= 16 || sizes[..sizes.len() - 1].iter().all(|&s| s == *hi),
            "{sizes:?}"
        );
    }
    assert_eq!(TileSplit::new(784, 4, 16).block(3), (576, 208));
}

/// Every kernel entry checks its layouts against its buffers once, in
/// release builds too, and names the op: a wrong layout (which no op
/// makes; `Array::new` refuses it too) fails loudly instead of
/// reading or writing out of bounds.
#[test]
fn kernels_refuse_layouts_past_their_buffers() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let message = |f: &mut dyn FnMut()| -> String {
        let e = catch_unwind(AssertUnwindSafe(f)).expect_err("a panic");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let buf = vec![1f32; 6];
    let mut dst = vec![0f32; 6];
    let fits = Layout::contiguous(&[2, 3]);
    // One element too far: offset 1 of a contiguous 2 x 3 view.
    let past = Layout {
        offset: 1,
        ..fits.clone()
    };
    // A strided walk that would step to element 1 + 2·(2^62): the old
    // kernels' wrapped arithmetic could land anywhere.
    let wild = Layout {
        shape: smallvec::smallvec![3],
        strides: smallvec::smallvec![1 << 62],
        offset: 1,
    };
    for (name, l) in [("past", &past), ("wild", &wild)] {
        let msg = message(&mut || drop(map("exp", &buf, l, |x| x)));
        assert!(msg.starts_with("exp: internal error"), "{name}: {msg}");
        let msg = message(&mut || drop(zip("add", &buf, l, &buf, l, |x, y| x + y)));
        assert!(msg.starts_with("add: internal error"), "{name}: {msg}");
        let msg = message(&mut || drop(zip3("where", &buf, l, &buf, l, &buf, l, |c, _, _| c)));
        assert!(msg.starts_with("where: internal error"), "{name}: {msg}");
        let msg = message(&mut || update("add_", &mut dst, l, &buf, l, |x, y| x + y));
        assert!(msg.starts_with("add_: internal error"), "{name}: {msg}");
        let msg = message(&mut || update_scalar("fill_", &mut dst, l, |_| 2.0));
        assert!(msg.starts_with("fill_: internal error"), "{name}: {msg}");
    }
    // Operands walked together must have one shape.
    let other = Layout::contiguous(&[3, 2]);
    let msg = message(&mut || drop(zip("mul", &buf, &fits, &buf, &other, |x, y| x * y)));
    assert!(msg.contains("mul: internal error: operand layouts of shapes [2, 3] and [3, 2]"));
    // Nothing was written.
    assert!(dst.iter().all(|&x| x == 0.0));
    // An impossible result is an error naming the op, the shape and the bytes.
    let huge = Layout {
        shape: smallvec::smallvec![1 << 62],
        strides: smallvec::smallvec![0],
        offset: 0,
    };
    let e = zip("add", &buf, &huge, &buf, &huge, |x, y| x + y).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("add: cannot allocate 18446744073709551616 bytes"));
    let msg = message(&mut || drop(map("exp", &buf, &huge, |x| x)));
    assert!(
        msg.contains("for a tensor of shape [4611686018427387904]"),
        "{msg}"
    );
}

#[test]
fn a_panicking_part_propagates_its_payload() {
    use std::panic::catch_unwind;
    let n = 4 * PAR_THRESHOLD;
    for bad_start in [true, false] {
        let r = catch_unwind(|| {
            build_vec("test", &[n], n, |start, chunk| {
                if (start == 0) == bad_start {
                    panic!("boom at {start}");
                }
                chunk.iter_mut().for_each(|o| {
                    o.write(0u8);
                });
            })
        });
        let msg = r.expect_err("a part panicked");
        let msg = msg
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(msg.starts_with("boom at"), "{msg}");
    }
}
