//! Tensor conveniences: reshape (a view), write, typed submit of caller-recorded work.

mod common;

use common::ctx;
use wgconv::{Algorithm, Conv2dParams, ErrorKind, Tensor};

#[test]
fn reshape_write_and_submit() {
    let ctx = ctx();
    let t = Tensor::from_slice(ctx, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let v = t.reshape(&[1, 1, 2, 3]).unwrap();
    assert_eq!(v.shape(), &[1, 1, 2, 3]);
    assert!(matches!(
        t.reshape(&[4]).unwrap_err().kind(),
        ErrorKind::ShapeMismatch { .. }
    ));
    // The view shares the buffer: a write through one is seen by the other.
    v.write(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]).unwrap();
    assert_eq!(t.read().unwrap(), vec![6.0, 5.0, 4.0, 3.0, 2.0, 1.0]);
    assert!(matches!(
        t.write(&[1.0]).unwrap_err().kind(),
        ErrorKind::ShapeMismatch { .. }
    ));
    // Work recorded by the caller, submitted through the library (typed errors).
    let w = Tensor::from_slice(ctx, &[1.0, 1.0], &[1, 1, 1, 2]).unwrap();
    let y = Tensor::full(ctx, &[1, 1, 2, 2], f32::NAN).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_conv2d(
        &mut enc,
        &v,
        &w,
        None,
        &Conv2dParams::default(),
        Algorithm::Direct,
        &y,
    )
    .unwrap();
    ctx.submit(enc).unwrap();
    assert_eq!(y.read().unwrap(), vec![11.0, 9.0, 5.0, 3.0]);
}
