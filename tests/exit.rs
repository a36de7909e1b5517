//! A process may end while the library's background work (the tuning thread compiling the
//! steady-state kernel that a first call's stand-in replaced, or measuring) is still in
//! flight: the library waits for it at exit instead of letting lavapipe's LLVM abort the
//! process mid-compilation.

use std::process::Command;

use wgconv::{Algorithm, Context, Conv2dParams, Padding, Tensor};

const CHILD: &str = "WGCONV_EXIT_TEST_CHILD";

#[test]
fn exiting_with_background_work_in_flight_ends_normally() {
    if std::env::var_os(CHILD).is_some() {
        // The child: a first call (its background work queued right after it), then return
        // at once, so the process exits while that work runs.
        let ctx = Context::new_blocking().expect("GPU test needs a WebGPU adapter");
        let (xs, ws) = ([1, 64, 20, 20], [64, 64, 3, 3]);
        let x = Tensor::from_slice(&ctx, &vec![0.5; xs.iter().product()], &xs).unwrap();
        let w = Tensor::from_slice(&ctx, &vec![0.01; ws.iter().product()], &ws).unwrap();
        let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
        let y = ctx.conv2d_with(&x, &w, None, &p, Algorithm::Auto).unwrap();
        assert_eq!(y.read().unwrap().len(), 64 * 20 * 20);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for run in 0..4 {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "exiting_with_background_work_in_flight_ends_normally",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("MESA_SHADER_CACHE_DISABLE", "true")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {run}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
