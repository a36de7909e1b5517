//! Many operations recorded into one caller-owned `wgpu::CommandEncoder` through the
//! `encode_*` APIs and submitted once, including chains where one op's output is the next
//! op's input inside the same encoder; and a context built with `Context::from_device` on a
//! device the test creates itself, with caller-created buffers wrapped by
//! `Tensor::from_buffer` and results exported through `Tensor::buffer()`.

mod common;

use common::{check, ctx, tol, Rng};
use wgconv::{
    cpu, Algorithm, Context, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, ErrorKind,
    GemmParams, Padding, PaddingMode, Tensor,
};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn tols(scale: &[f32], len: usize) -> Vec<f32> {
    scale.iter().map(|&s| tol(s, len)).collect()
}

/// CPU forward reference and per-element tolerances.
fn conv_ref(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    b: Option<&[f32]>,
    params: &Conv2dParams,
) -> (Vec<f32>, Vec<f32>) {
    let p = Conv2dProblem::new(xs, ws, b.map(<[f32]>::len), params).expect("valid problem");
    let want = cpu::conv2d_problem(&p, x, w, b);
    let scale = cpu::conv2d_abs_scale(&p, x, w, b);
    (want, tols(&scale, p.reduction_len()))
}

/// A tensor poisoned with NaN, so an output the GPU never wrote fails the comparison.
fn poisoned(ctx: &Context, shape: &[usize]) -> Tensor {
    Tensor::full(ctx, shape, f32::NAN).expect("allocate output")
}

fn upload(ctx: &Context, data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx, data, shape).expect("upload")
}

fn expect_ok(results: Vec<Result<(), String>>) {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Thirteen operations (conv2d with each algorithm, conv_transpose2d, the three gradients
/// with several algorithms, GEMMs with bias / accumulate / transposes / batching) in one
/// encoder, one submission. The chain conv1 -> conv2 (on conv1's output) -> gradients of
/// conv2 taking conv2's output as the upstream gradient -> input gradient of conv1 taking
/// that result, all inside the encoder, checks the ordering between dependent ops.
#[test]
fn thirteen_ops_in_one_encoder() {
    let ctx = ctx();
    let mut rng = Rng::new(2024);

    // 1. conv2d, Direct: x1 [2,4,9,9] * w1 [6,4,3,3] + b1, pad 1 -> y1 [2,6,9,9].
    let (x1s, w1s) = ([2, 4, 9, 9], [6, 4, 3, 3]);
    let p1 = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (x1, w1, b1) = (rng.vec(648), rng.vec(216), rng.vec(6));
    // 2. conv2d, Im2colGemm, on y1: w2 [5,6,3,3] + b2, stride 2, pad 1 -> y2 [2,5,5,5].
    let w2s = [5, 6, 3, 3];
    let p2 = Conv2dParams::default()
        .with_stride([2, 2])
        .with_padding(Padding::Symmetric([1, 1]));
    let (w2, b2) = (rng.vec(270), rng.vec(5));
    // 3. conv2d, Gemm1x1: x3 [2,8,6,6] * w3 [4,8,1,1] + b3 -> y3 [2,4,6,6].
    let (x3s, w3s) = ([2, 8, 6, 6], [4, 8, 1, 1]);
    let p3 = Conv2dParams::default();
    let (x3, w3, b3) = (rng.vec(576), rng.vec(32), rng.vec(4));
    // 4. conv2d, Auto: grouped, dilated, reflect padding: x4 [1,6,10,10] * w4 [6,2,3,3].
    let (x4s, w4s) = ([1, 6, 10, 10], [6, 2, 3, 3]);
    let p4 = Conv2dParams::default()
        .with_groups(3)
        .with_dilation([2, 2])
        .with_padding(Padding::Symmetric([2, 2]))
        .with_padding_mode(PaddingMode::Reflect);
    let (x4, w4) = (rng.vec(600), rng.vec(108));
    // 5. conv_transpose2d, Im2colGemm: x5 [2,4,5,5], w5 [4,3,3,3] + b5, stride 2, pad 1,
    //    output padding 1 -> [2,3,10,10].
    let (x5s, w5s) = ([2, 4, 5, 5], [4, 3, 3, 3]);
    let tp5 = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_output_padding([1, 1]);
    let (x5, w5, b5) = (rng.vec(200), rng.vec(108), rng.vec(3));
    let y5s = tp5.output_shape(x5s, w5s).expect("valid transposed conv");
    // 6.-8. gradients of conv 2 with upstream gradient dy2 = y2 (L = |y2|^2 / 2):
    //    dx2 (Im2colGemm), dw2 (Direct, reads y1), db2.
    // 9. input gradient of conv 1 with upstream gradient dx2 (Direct).
    // 10. weight gradient of the 1x1 conv 3 (Gemm1x1) with a random dy3.
    let dy3 = rng.vec(2 * 4 * 6 * 6);
    // 11. GEMM + bias: a [7,13] * b [13,9] + bias [9].
    let (ga, gb, gbias) = (rng.vec(91), rng.vec(117), rng.vec(9));
    // 12. GEMM, both transposed, accumulating: c0 [9,7] += (a2 [13,9])^T * (b2 [7,13])^T.
    let (ga2, gb2, gc0) = (rng.vec(117), rng.vec(91), rng.vec(63));
    // 13. Batched GEMM: a3 [3,4,5] * b3 [5,6] (shared) -> [3,4,6].
    let (ga3, gb3) = (rng.vec(60), rng.vec(30));

    let t = |d: &[f32], s: &[usize]| upload(ctx, d, s);
    let (x1t, w1t, b1t) = (t(&x1, &x1s), t(&w1, &w1s), t(&b1, &[6]));
    let (w2t, b2t) = (t(&w2, &w2s), t(&b2, &[5]));
    let (x3t, w3t, b3t) = (t(&x3, &x3s), t(&w3, &w3s), t(&b3, &[4]));
    let (x4t, w4t) = (t(&x4, &x4s), t(&w4, &w4s));
    let (x5t, w5t, b5t) = (t(&x5, &x5s), t(&w5, &w5s), t(&b5, &[3]));
    let dy3t = t(&dy3, &[2, 4, 6, 6]);
    let (gat, gbt, gbiast) = (t(&ga, &[7, 13]), t(&gb, &[13, 9]), t(&gbias, &[9]));
    let (ga2t, gb2t) = (t(&ga2, &[13, 9]), t(&gb2, &[7, 13]));
    let gc = t(&gc0, &[9, 7]); // accumulated into
    let (ga3t, gb3t) = (t(&ga3, &[3, 4, 5]), t(&gb3, &[5, 6]));

    let y1 = poisoned(ctx, &[2, 6, 9, 9]);
    let y2 = poisoned(ctx, &[2, 5, 5, 5]);
    let y3 = poisoned(ctx, &[2, 4, 6, 6]);
    let y4 = poisoned(ctx, &[1, 6, 10, 10]);
    let y5 = poisoned(ctx, &y5s);
    let dx2 = poisoned(ctx, &[2, 6, 9, 9]);
    let dw2 = poisoned(ctx, &w2s);
    let db2 = poisoned(ctx, &[5]);
    let dx1 = poisoned(ctx, &x1s);
    let dw3 = poisoned(ctx, &w3s);
    let gy = poisoned(ctx, &[7, 9]);
    let gy3 = poisoned(ctx, &[3, 4, 6]);

    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("batched recording test"),
        });
    let plain = GemmParams::default();
    ctx.encode_conv2d(
        &mut enc,
        &x1t,
        &w1t,
        Some(&b1t),
        &p1,
        Algorithm::Direct,
        &y1,
    )
    .expect("record conv 1");
    ctx.encode_conv2d(
        &mut enc,
        &y1,
        &w2t,
        Some(&b2t),
        &p2,
        Algorithm::Im2colGemm,
        &y2,
    )
    .expect("record conv 2");
    ctx.encode_conv2d(
        &mut enc,
        &x3t,
        &w3t,
        Some(&b3t),
        &p3,
        Algorithm::Gemm1x1,
        &y3,
    )
    .expect("record conv 3");
    ctx.encode_conv2d(&mut enc, &x4t, &w4t, None, &p4, Algorithm::Auto, &y4)
        .expect("record conv 4");
    ctx.encode_conv_transpose2d(
        &mut enc,
        &x5t,
        &w5t,
        Some(&b5t),
        &tp5,
        Algorithm::Im2colGemm,
        &y5,
    )
    .expect("record conv_transpose2d");
    ctx.encode_conv2d_backward_input(&mut enc, &y2, &w2t, &p2, Algorithm::Im2colGemm, &dx2)
        .expect("record dx2");
    ctx.encode_conv2d_backward_weight(&mut enc, &y1, &y2, &p2, Algorithm::Direct, &dw2)
        .expect("record dw2");
    ctx.encode_conv2d_backward_bias(&mut enc, &y2, &db2)
        .expect("record db2");
    ctx.encode_conv2d_backward_input(&mut enc, &dx2, &w1t, &p1, Algorithm::Direct, &dx1)
        .expect("record dx1");
    ctx.encode_conv2d_backward_weight(&mut enc, &x3t, &dy3t, &p3, Algorithm::Gemm1x1, &dw3)
        .expect("record dw3");
    ctx.encode_gemm(&mut enc, &gat, &gbt, Some(&gbiast), &gy, false, &plain)
        .expect("record gemm + bias");
    let both = plain.with_transpose_a(true).with_transpose_b(true);
    ctx.encode_gemm(&mut enc, &ga2t, &gb2t, None, &gc, true, &both)
        .expect("record accumulating gemm");
    ctx.encode_gemm(&mut enc, &ga3t, &gb3t, None, &gy3, false, &plain)
        .expect("record batched gemm");

    // Nothing ran yet: the outputs are still poisoned.
    let before = y1.read().expect("read y1 before submitting");
    assert!(
        before.iter().all(|v| v.is_nan()),
        "y1 was written before the encoder was submitted"
    );

    ctx.queue().submit([enc.finish()]);
    let read = |t: &Tensor| t.read().expect("read result");
    let (y1g, y2g, dx2g) = (read(&y1), read(&y2), read(&dx2));

    let mut results = Vec::new();
    // Forwards.
    let (want, tl) = conv_ref(&x1, x1s, &w1, w1s, Some(&b1), &p1);
    results.push(check("1 conv2d direct", &y1g, &want, &tl));
    // Chained ops are checked against the reference applied to the GPU's own inputs (each
    // of which is checked too), so a wrong order (reading NaN) fails and tolerances stay
    // per-op.
    let (want, tl) = conv_ref(&y1g, [2, 6, 9, 9], &w2, w2s, Some(&b2), &p2);
    results.push(check("2 conv2d im2col on y1", &y2g, &want, &tl));
    let (want, tl) = conv_ref(&x3, x3s, &w3, w3s, Some(&b3), &p3);
    results.push(check("3 conv2d gemm1x1", &read(&y3), &want, &tl));
    let (want, tl) = conv_ref(&x4, x4s, &w4, w4s, None, &p4);
    results.push(check("4 conv2d auto grouped", &read(&y4), &want, &tl));
    let (want5, _) = cpu::conv_transpose2d(&x5, x5s, &w5, w5s, Some(&b5), &tp5).expect("cpu");
    let (scale5, _) =
        cpu::conv_transpose2d(&abs(&x5), x5s, &abs(&w5), w5s, Some(&abs(&b5)), &tp5).expect("cpu");
    results.push(check(
        "5 conv_transpose2d",
        &read(&y5),
        &want5,
        &tols(&scale5, 4 * 9),
    ));
    // Gradients of conv 2 with dy = y2.
    let pr2 = Conv2dProblem::new([2, 6, 9, 9], w2s, None, &p2).expect("problem 2");
    let dgrad_len = pr2.k_per_group() * pr2.r() * pr2.s();
    let pix_len = pr2.n() * pr2.oh() * pr2.ow();
    let want = cpu::conv2d_backward_input(&pr2, &y2g, &w2);
    let scale = cpu::conv2d_backward_input(&pr2, &abs(&y2g), &abs(&w2));
    results.push(check(
        "6 dx2 (dy = y2)",
        &dx2g,
        &want,
        &tols(&scale, dgrad_len),
    ));
    let want = cpu::conv2d_backward_weight(&pr2, &y1g, &y2g);
    let scale = cpu::conv2d_backward_weight(&pr2, &abs(&y1g), &abs(&y2g));
    results.push(check(
        "7 dw2 (x = y1, dy = y2)",
        &read(&dw2),
        &want,
        &tols(&scale, pix_len),
    ));
    let want = cpu::conv2d_backward_bias(&pr2, &y2g);
    let scale = cpu::conv2d_backward_bias(&pr2, &abs(&y2g));
    results.push(check(
        "8 db2 (dy = y2)",
        &read(&db2),
        &want,
        &tols(&scale, pix_len),
    ));
    // Input gradient of conv 1 with dy = dx2.
    let pr1 = Conv2dProblem::new(x1s, w1s, None, &p1).expect("problem 1");
    let want = cpu::conv2d_backward_input(&pr1, &dx2g, &w1);
    let scale = cpu::conv2d_backward_input(&pr1, &abs(&dx2g), &abs(&w1));
    let len = pr1.k_per_group() * pr1.r() * pr1.s();
    results.push(check(
        "9 dx1 (dy = dx2)",
        &read(&dx1),
        &want,
        &tols(&scale, len),
    ));
    let pr3 = Conv2dProblem::new(x3s, w3s, None, &p3).expect("problem 3");
    let want = cpu::conv2d_backward_weight(&pr3, &x3, &dy3);
    let scale = cpu::conv2d_backward_weight(&pr3, &abs(&x3), &abs(&dy3));
    results.push(check(
        "10 dw3 gemm1x1",
        &read(&dw3),
        &want,
        &tols(&scale, 2 * 36),
    ));
    // GEMMs.
    let (mut want, _) = cpu::gemm(&ga, &[7, 13], &gb, &[13, 9], &plain).expect("cpu gemm");
    let (mut scale, _) =
        cpu::gemm(&abs(&ga), &[7, 13], &abs(&gb), &[13, 9], &plain).expect("cpu gemm");
    for i in 0..want.len() {
        want[i] += gbias[i % 9];
        scale[i] += gbias[i % 9].abs();
    }
    results.push(check(
        "11 gemm + bias",
        &read(&gy),
        &want,
        &tols(&scale, 13),
    ));
    let (mut want, _) = cpu::gemm(&ga2, &[13, 9], &gb2, &[7, 13], &both).expect("cpu gemm");
    let (mut scale, _) =
        cpu::gemm(&abs(&ga2), &[13, 9], &abs(&gb2), &[7, 13], &both).expect("cpu gemm");
    for i in 0..want.len() {
        want[i] += gc0[i];
        scale[i] += gc0[i].abs();
    }
    results.push(check(
        "12 gemm^T^T accumulate",
        &read(&gc),
        &want,
        &tols(&scale, 13),
    ));
    let (want, shape) = cpu::gemm(&ga3, &[3, 4, 5], &gb3, &[5, 6], &plain).expect("cpu gemm");
    assert_eq!(shape, [3, 4, 6]);
    let (scale, _) =
        cpu::gemm(&abs(&ga3), &[3, 4, 5], &abs(&gb3), &[5, 6], &plain).expect("cpu gemm");
    results.push(check(
        "13 batched gemm",
        &read(&gy3),
        &want,
        &tols(&scale, 5),
    ));
    expect_ok(results);
}

/// A longer dependency chain in one encoder: the same tensor is overwritten and re-read
/// several times (y = conv(x); x2 = conv_transpose(y); y2 = conv(x2) ...), so any missing
/// barrier between passes shows as a mismatch with the CPU chain.
#[test]
fn write_after_read_chain_in_one_encoder() {
    let ctx = ctx();
    let mut rng = Rng::new(77);
    let xs = [1, 3, 8, 8];
    let ws = [3, 3, 3, 3];
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    // Small integers keep every intermediate exact in f32, so the chain can be compared
    // exactly against the CPU chain.
    let x = rng.int_vec(192);
    let w: Vec<f32> = rng.int_vec(81).iter().map(|v| v.signum()).collect();
    let xt = Tensor::from_slice(ctx, &x, &xs).expect("x");
    let wt = Tensor::from_slice(ctx, &w, &ws).expect("w");
    let a = Tensor::full(ctx, &xs, f32::NAN).expect("a");
    let b = Tensor::full(ctx, &xs, f32::NAN).expect("b");
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    // a = conv(x); b = conv(a); a = conv(b) (a is read, then overwritten); b = dgrad(a).
    let algos = [Algorithm::Direct, Algorithm::Im2colGemm, Algorithm::Auto];
    ctx.encode_conv2d(&mut enc, &xt, &wt, None, &params, algos[0], &a)
        .expect("record");
    ctx.encode_conv2d(&mut enc, &a, &wt, None, &params, algos[1], &b)
        .expect("record");
    ctx.encode_conv2d(&mut enc, &b, &wt, None, &params, algos[2], &a)
        .expect("record");
    ctx.encode_conv2d_backward_input(&mut enc, &a, &wt, &params, Algorithm::Im2colGemm, &b)
        .expect("record");
    ctx.queue().submit([enc.finish()]);

    let p = Conv2dProblem::new(xs, ws, None, &params).expect("problem");
    let c1 = cpu::conv2d_problem(&p, &x, &w, None);
    let c2 = cpu::conv2d_problem(&p, &c1, &w, None);
    let c3 = cpu::conv2d_problem(&p, &c2, &w, None);
    let c4 = cpu::conv2d_backward_input(&p, &c3, &w);
    assert!(
        c4.iter().all(|v| v.abs() < (1 << 23) as f32),
        "the chain left the exact f32 range"
    );
    let zero = vec![0.0; c3.len()];
    expect_ok(vec![
        check(
            "a = conv(conv(conv(x)))",
            &a.read().expect("read a"),
            &c3,
            &zero,
        ),
        check("b = dgrad(a)", &b.read().expect("read b"), &c4, &zero),
    ]);
}

/// Maps a `MAP_READ` buffer and returns its contents as f32.
fn read_mapped(device: &wgpu::Device, buf: &wgpu::Buffer) -> Vec<f32> {
    let (tx, rx) = std::sync::mpsc::channel();
    buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll the device");
    rx.recv()
        .expect("map callback ran")
        .expect("mapping succeeded");
    let out = {
        let view = buf.slice(..).get_mapped_range().expect("mapped range");
        bytemuck::pod_collect_to_vec::<u8, f32>(&view)
    };
    buf.unmap();
    out
}

/// The application owns the instance, adapter, device and queue; wgconv runs on them.
#[test]
fn context_from_caller_device_and_buffers() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("the test needs a WebGPU adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("application device"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("request a device");
    let ctx = Context::from_device(device.clone(), queue.clone());
    assert_eq!(ctx.adapter_info().name, adapter.get_info().name);
    assert_eq!(ctx.allocated_bytes(), 0);

    let mut rng = Rng::new(5);
    let (xs, ws) = ([2, 3, 7, 7], [4, 3, 3, 3]);
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_stride([2, 1]);
    let (x, w, b) = (rng.vec(294), rng.vec(108), rng.vec(4));
    let (want, tl) = conv_ref(&x, xs, &w, ws, Some(&b), &params);

    // 1. Ordinary library calls through the wrapped device.
    let xt = Tensor::from_slice(&ctx, &x, &xs).expect("x");
    let wt = Tensor::from_slice(&ctx, &w, &ws).expect("w");
    let bt = Tensor::from_slice(&ctx, &b, &[4]).expect("b");
    let y = ctx.conv2d(&xt, &wt, Some(&bt), &params).expect("conv2d");
    let yshape = y.shape().to_vec();
    expect_ok(vec![check(
        "conv2d via from_device",
        &y.read().expect("read"),
        &want,
        &tl,
    )]);
    let (ga, gb) = (rng.vec(5 * 6), rng.vec(6 * 4));
    let gc = ctx
        .gemm(
            &Tensor::from_slice(&ctx, &ga, &[5, 6]).expect("a"),
            &Tensor::from_slice(&ctx, &gb, &[6, 4]).expect("b"),
            &GemmParams::default(),
        )
        .expect("gemm");
    let (gwant, _) = cpu::gemm(&ga, &[5, 6], &gb, &[6, 4], &GemmParams::default()).expect("cpu");
    let (gscale, _) = cpu::gemm(
        &abs(&ga),
        &[5, 6],
        &abs(&gb),
        &[6, 4],
        &GemmParams::default(),
    )
    .expect("cpu");
    expect_ok(vec![check(
        "gemm via from_device",
        &gc.read().expect("read"),
        &gwant,
        &tols(&gscale, 6),
    )]);

    // 2. Caller-created buffers: the input is filled by the application at creation, the
    //    output is the application's too. Recorded into the application's encoder, followed
    //    by the application's own copy to a MAP_READ buffer, one submission on its queue.
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let x_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app input"),
        size: (x.len() * 4) as u64,
        usage,
        mapped_at_creation: true,
    });
    x_buf
        .slice(..)
        .get_mapped_range_mut()
        .expect("mapped at creation")
        .copy_from_slice(bytemuck::cast_slice(&x));
    x_buf.unmap();
    let y_len: usize = yshape.iter().product();
    // Larger than needed: the tensor uses the first 4 * numel bytes.
    let y_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app output"),
        size: (y_len * 4 + 64) as u64,
        usage,
        mapped_at_creation: false,
    });
    // The conv2d above (Auto) queued its bucket for background tuning, whose scratch tensors
    // count while it measures.
    ctx.wait_for_tuning();
    let before = ctx.allocated_bytes();
    let x_ext = Tensor::from_buffer(&ctx, x_buf.clone(), &xs).expect("wrap input");
    let y_ext = Tensor::from_buffer(&ctx, y_buf.clone(), &yshape).expect("wrap output");
    assert_eq!(
        ctx.allocated_bytes(),
        before,
        "wrapped buffers are not counted as library allocations"
    );
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app readback"),
        size: (y_len * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dx_readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app readback dx"),
        size: (x.len() * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dx = Tensor::full(&ctx, &xs, f32::NAN).expect("dx");
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("application encoder"),
    });
    ctx.encode_conv2d(
        &mut enc,
        &x_ext,
        &wt,
        Some(&bt),
        &params,
        Algorithm::Auto,
        &y_ext,
    )
    .expect("record conv2d on wrapped buffers");
    // The gradient of |y|^2 / 2 w.r.t. x, from the wrapped output, into a library tensor.
    ctx.encode_conv2d_backward_input(&mut enc, &y_ext, &wt, &params, Algorithm::Auto, &dx)
        .expect("record dgrad");
    // Export: the application copies from the tensors' buffers itself.
    enc.copy_buffer_to_buffer(y_ext.buffer(), 0, &readback, 0, (y_len * 4) as u64);
    enc.copy_buffer_to_buffer(dx.buffer(), 0, &dx_readback, 0, (x.len() * 4) as u64);
    queue.submit([enc.finish()]);
    let got = read_mapped(&device, &readback);
    let got_dx = read_mapped(&device, &dx_readback);
    let p = Conv2dProblem::new(xs, ws, None, &params).expect("problem");
    let want_dx = cpu::conv2d_backward_input(&p, &got, &w);
    let scale_dx = cpu::conv2d_backward_input(&p, &abs(&got), &abs(&w));
    expect_ok(vec![
        check("conv2d into a caller buffer", &got, &want, &tl),
        check(
            "dgrad exported via Tensor::buffer()",
            &got_dx,
            &want_dx,
            &tols(&scale_dx, 4 * 9),
        ),
    ]);
    // The caller's buffer is the tensor's buffer (shared, not copied).
    assert_eq!(y_ext.buffer(), &y_buf);
    drop(y_ext);
    drop(x_ext);
    // Still usable by the application after the tensors are gone.
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    enc.copy_buffer_to_buffer(&y_buf, 0, &readback, 0, (y_len * 4) as u64);
    queue.submit([enc.finish()]);
    assert_eq!(read_mapped(&device, &readback), got);

    // 3. Misuse of from_buffer gives typed errors.
    let small = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage,
        mapped_at_creation: false,
    });
    let err = Tensor::from_buffer(&ctx, small, &[2, 3]).expect_err("too small");
    assert!(
        matches!(err.kind(), ErrorKind::ShapeMismatch { .. }),
        "{err}"
    );
    let no_storage = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let err = Tensor::from_buffer(&ctx, no_storage, &[4]).expect_err("no STORAGE usage");
    assert!(
        matches!(err.kind(), ErrorKind::InvalidParam { .. }),
        "{err}"
    );
}
