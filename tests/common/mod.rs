//! Shared test helpers: context creation (fails, never skips, without an adapter), a seeded
//! RNG, and tolerance-aware comparison that reports the first bad index and the max error.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgconv::Context;

/// The shared context of a test binary. Panics with the install hint when no adapter exists:
/// GPU tests fail, they never skip.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        match Context::new_blocking() {
            Ok(c) => {
                eprintln!("adapter: {}", c.adapter_summary());
                c
            }
            Err(e) => panic!("GPU test needs a WebGPU adapter and found none: {e}"),
        }
    })
}

/// Small deterministic RNG (SplitMix64).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.range(0, v.len() - 1)]
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    /// Small integers in -3..=3 (sums stay exact in f32).
    pub fn int_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(0, 6) as f32 - 3.0).collect()
    }
}

/// Tolerance for an output whose terms' absolute values sum to `scale` over a reduction of
/// `len` terms: f32 accumulation error grows with the reduction length.
pub fn tol(scale: f32, len: usize) -> f32 {
    1e-6 + scale * 2.0 * f32::EPSILON * (len as f32).sqrt().max(4.0)
}

/// Compares `got` with `want` element-wise with per-element tolerance `tol[i]`; NaN never
/// passes (outputs are poisoned with NaN first, so unwritten elements show).
pub fn check(label: &str, got: &[f32], want: &[f32], tols: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{label}: length {} != expected {}",
            got.len(),
            want.len()
        ));
    }
    let mut first = None;
    let mut bad = 0usize;
    let mut max_err = 0f32;
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        let ok = err <= tols[i] || (got[i] == want[i]);
        if !ok || err.is_nan() {
            bad += 1;
            first.get_or_insert(i);
        }
        if err.is_nan() {
            max_err = f32::NAN;
        } else if !max_err.is_nan() {
            max_err = max_err.max(err);
        }
    }
    match first {
        None => Ok(()),
        Some(i) => Err(format!(
            "{label}: {bad}/{} elements differ; first at index {i}: got {} want {} (tol {}); max error {max_err}",
            got.len(),
            got[i],
            want[i],
            tols[i]
        )),
    }
}

use wgconv::{Conv2dParams, Conv2dProblem, Padding, PaddingMode};

/// One convolution configuration of the seeded sweeps.
#[derive(Clone, Debug)]
pub struct ConvCase {
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub bias: bool,
    pub params: Conv2dParams,
    pub problem: Conv2dProblem,
}

const MODES: [PaddingMode; 4] = [
    PaddingMode::Zeros,
    PaddingMode::Reflect,
    PaddingMode::Replicate,
    PaddingMode::Circular,
];

fn random_case(rng: &mut Rng, max_macs: usize) -> Option<ConvCase> {
    let n = rng.range(1, 4);
    let groups_kind = rng.range(0, 5);
    let sizes = [1, 2, 3, 5, 7, 8, 11, 13, 16, 17, 19, 24];
    let h = rng.pick(&sizes);
    let w = if rng.range(0, 2) == 0 {
        h
    } else {
        rng.pick(&sizes)
    };
    let (c, k, g) = match groups_kind {
        0 | 1 => {
            let c = rng.pick(&[1, 2, 3, 4, 5, 8, 13, 16, 32, 64]);
            (c, rng.pick(&[1, 2, 3, 4, 6, 8, 9, 16, 32, 64]), 1)
        }
        2 => {
            let g = rng.pick(&[2, 4]);
            (g * rng.range(1, 8), g * rng.range(1, 8), g)
        }
        3 => {
            let c = rng.pick(&[1, 2, 3, 8, 16, 32]);
            (c, c, c) // depthwise
        }
        4 => {
            let c = rng.pick(&[2, 3, 8]);
            (c, c * rng.range(2, 3), c) // depthwise with channel multiplier
        }
        _ => {
            let g = rng.pick(&[2, 4]);
            (g * rng.range(1, 16), g * rng.range(1, 16), g)
        }
    };
    let r = rng.pick(&[1, 1, 2, 3, 3, 3, 4, 5, 7]);
    let s = if rng.range(0, 3) == 0 {
        rng.pick(&[1, 2, 3, 5, 7])
    } else {
        r
    };
    let stride = [rng.pick(&[1, 1, 1, 2, 2, 3]), rng.pick(&[1, 1, 1, 2, 2, 3])];
    let dilation = if rng.range(0, 3) == 0 {
        [rng.range(1, 3), rng.range(1, 3)]
    } else {
        [1, 1]
    };
    let padding = match rng.range(0, 9) {
        0 => Padding::Valid,
        1 => Padding::Same,
        2 | 3 => Padding::PerSide([
            rng.range(0, 3),
            rng.range(0, 3),
            rng.range(0, 3),
            rng.range(0, 3),
        ]),
        _ => Padding::Symmetric([rng.range(0, 3), rng.range(0, 3)]),
    };
    let stride = if padding == Padding::Same {
        [1, 1]
    } else {
        stride
    };
    let mode = MODES[rng.range(0, 3)];
    let params = Conv2dParams {
        stride,
        padding,
        dilation,
        groups: g,
        padding_mode: mode,
        flip: rng.range(0, 3) == 0,
    };
    let bias = rng.bool();
    let wshape = [k, c / g, r, s];
    let problem = Conv2dProblem::new([n, c, h, w], wshape, bias.then_some(k), &params).ok()?;
    let macs = problem.flops() as usize / 2;
    if macs > max_macs {
        return None;
    }
    Some(ConvCase {
        x: [n, c, h, w],
        w: wshape,
        bias,
        params,
        problem,
    })
}

/// Hand-picked edge cases: 1x1 inputs, kernel equal to the padded input, extreme pads.
fn edge_cases() -> Vec<ConvCase> {
    let mut v = Vec::new();
    let mut add = |x: [usize; 4], w: [usize; 4], bias: bool, params: Conv2dParams| {
        let problem =
            Conv2dProblem::new(x, w, bias.then_some(w[0]), &params).expect("edge case is valid");
        v.push(ConvCase {
            x,
            w,
            bias,
            params,
            problem,
        });
    };
    let d = Conv2dParams::default();
    add([1, 1, 1, 1], [1, 1, 1, 1], false, d);
    add([2, 3, 1, 1], [5, 3, 1, 1], true, d);
    add([1, 2, 3, 3], [4, 2, 3, 3], true, d); // kernel == input
    add(
        [1, 2, 3, 4],
        [3, 2, 5, 6],
        false,
        d.with_padding(Padding::Symmetric([1, 1])),
    ); // kernel == padded input
    add(
        [1, 2, 3, 4],
        [3, 2, 5, 6],
        true,
        d.with_padding(Padding::Symmetric([1, 1]))
            .with_padding_mode(PaddingMode::Reflect),
    );
    add(
        [1, 2, 3, 4],
        [3, 2, 9, 12],
        true,
        d.with_padding(Padding::Symmetric([3, 4]))
            .with_padding_mode(PaddingMode::Circular),
    );
    add(
        [1, 1, 2, 2],
        [1, 1, 3, 3],
        false,
        d.with_padding(Padding::Symmetric([5, 5]))
            .with_padding_mode(PaddingMode::Replicate),
    );
    add(
        [1, 3, 13, 17],
        [6, 1, 3, 3],
        true,
        d.with_groups(3)
            .with_padding(Padding::Same)
            .with_padding_mode(PaddingMode::Reflect),
    );
    add(
        [2, 4, 13, 17],
        [8, 2, 2, 4],
        true,
        d.with_groups(2)
            .with_padding(Padding::Same)
            .with_dilation([2, 3])
            .with_flip(true),
    );
    add(
        [1, 1, 5, 5],
        [1, 1, 5, 5],
        false,
        d.with_padding(Padding::PerSide([4, 0, 0, 4]))
            .with_padding_mode(PaddingMode::Reflect),
    );
    add([3, 2, 8, 8], [2, 2, 2, 2], false, d.with_stride([3, 3])); // rows never read
    add(
        [1, 64, 7, 7],
        [64, 1, 3, 3],
        true,
        d.with_groups(64).with_padding(Padding::Symmetric([1, 1])),
    );
    add(
        [1, 5, 9, 1],
        [3, 5, 3, 1],
        true,
        d.with_padding(Padding::Symmetric([1, 0]))
            .with_stride([2, 1]),
    );
    add(
        [4, 1, 1, 9],
        [2, 1, 1, 7],
        true,
        d.with_padding(Padding::PerSide([0, 0, 3, 3]))
            .with_padding_mode(PaddingMode::Circular)
            .with_dilation([1, 1]),
    );
    v
}

/// The seeded sweep: edge cases plus `count` random valid configurations of at most
/// `max_macs` multiply-adds each, every padding mode, groups, depthwise, flip...
pub fn conv_sweep(seed: u64, count: usize, max_macs: usize) -> Vec<ConvCase> {
    let mut rng = Rng::new(seed);
    let mut v = edge_cases();
    while v.len() < count {
        if let Some(c) = random_case(&mut rng, max_macs) {
            v.push(c);
        }
    }
    v
}
