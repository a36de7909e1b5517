//! f16 tensors: creation, conversion, readback, typed errors, and every operation on f16
//! data (f32 accumulation) against the f16 CPU reference.

mod common;

use common::ctx;
use wgconv::half::f16;
use wgconv::{DType, ErrorKind, Tensor};

#[test]
fn f16_round_trip_is_bit_exact() {
    let ctx = ctx();
    // Odd length: the last word's high half is padding, never read back.
    let bits: Vec<u16> = vec![
        0x0000, 0x8000, 0x3c00, 0x7bff, 0x0001, 0x83ff, 0x7c00, 0xfc00, 0x3555,
    ];
    let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
    let t = Tensor::from_f16(ctx, &h, &[3, 3]).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.storage_bytes(), 20);
    let back: Vec<u16> = t.read_f16().unwrap().iter().map(|v| v.to_bits()).collect();
    assert_eq!(back, bits);
    let as32 = t.read().unwrap();
    for (a, b) in as32.iter().zip(&h) {
        assert_eq!(a.to_bits(), f32::from(*b).to_bits());
    }
}

#[test]
fn f32_to_f16_rounds_to_nearest_even() {
    let ctx = ctx();
    // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: even is 1. 1 + 3·2^-11 ties to 1 + 2^-9.
    let v = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65519.0,
        65520.0,
        -1e9,
        2f32.powi(-25),
        3.0 * 2f32.powi(-26),
    ];
    let t = Tensor::from_f32(ctx, &v, &[7], DType::F16).unwrap();
    let got = t.read().unwrap();
    let want: Vec<f32> = v.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(got, want);
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 1.0 + 2f32.powi(-9));
    assert_eq!(got[2], 65504.0);
    assert!(got[3].is_infinite() && got[4] == f32::NEG_INFINITY);
    assert_eq!(got[5], 0.0);
    assert_eq!(got[6], 2f32.powi(-24));
}

#[test]
fn f16_fill_write_reshape_zeros() {
    let ctx = ctx();
    let t = Tensor::full_of(ctx, &[5], 1.5, DType::F16).unwrap();
    assert_eq!(t.read().unwrap(), vec![1.5; 5]);
    t.write(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let r = t.reshape(&[1, 5]).unwrap();
    assert_eq!(r.dtype(), DType::F16);
    assert_eq!(r.read().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    t.write_f16(&[f16::from_f32(-2.0); 5]).unwrap();
    assert_eq!(t.read().unwrap(), vec![-2.0; 5]);
    let z = Tensor::zeros_of(ctx, &[3], DType::F16).unwrap();
    assert_eq!(z.read().unwrap(), vec![0.0; 3]);
    // f32 API unchanged.
    let f = Tensor::from_slice(ctx, &[1.0, 2.0], &[2]).unwrap();
    assert_eq!(f.dtype(), DType::F32);
    assert_eq!(f.storage_bytes(), 8);
}

#[test]
fn f16_typed_errors() {
    let ctx = ctx();
    let f = Tensor::from_slice(ctx, &[1.0, 2.0], &[2]).unwrap();
    let e = f.read_f16().unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::DTypeMismatch {
            expected: DType::F16,
            got: DType::F32,
            ..
        }
    ));
    let e = f.write_f16(&[f16::ONE; 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DTypeMismatch { .. }));
    let h = Tensor::zeros_of(ctx, &[3], DType::F16).unwrap();
    let e = h.write_f16(&[f16::ONE; 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ShapeMismatch { .. }));
    let e = Tensor::from_f16(ctx, &[f16::ONE; 3], &[2, 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ShapeMismatch { .. }));
    assert!(DType::from_name("bf16").is_err());
    assert_eq!(DType::from_name("float16").unwrap(), DType::F16);
}

#[test]
fn f16_from_buffer_checks_size_per_dtype() {
    let ctx = ctx();
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 8,
        usage,
        mapped_at_creation: false,
    });
    // 4 f16 values fit in 8 bytes, 4 f32 values do not.
    let t = Tensor::from_buffer_of(ctx, buf.clone(), &[4], DType::F16).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert!(Tensor::from_buffer(ctx, buf.clone(), &[4]).is_err());
    assert!(Tensor::from_buffer_of(ctx, buf, &[5], DType::F16).is_err());
}
