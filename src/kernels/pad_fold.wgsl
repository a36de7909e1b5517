// Adjoint of reflect / replicate / circular padding: folds the gradient of a padded input
// (extent (H+top+bottom) x (W+left+right)) back onto the H x W input. Every input pixel
// sums, in a fixed order, the padded positions that copy it:
//   reflect:   i, -i, 2(H-1)-i            (pad < H)
//   replicate: i; all of [-top, 0) for i == 0; all of [H, H+bottom) for i == H-1
//   circular:  i, i-H, i+H                (pad <= H)
// (listed along one dimension; the 2-D preimage is the product of both dimensions' sets).

// Params and overrides are prepended by src/kernels/pad_fold.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

// Preimage segments of coordinate i (size n, pads lo/hi), as padded-coordinate ranges
// [start, end) in the padded frame (offset by lo). Up to three segments.
struct Segs {
    s: array<vec2<i32>, 3>,
}

fn segments(i: i32, n: i32, lo: i32, hi: i32) -> Segs {
    var out: Segs;
    out.s[0] = vec2<i32>(i + lo, i + lo + 1);
    out.s[1] = vec2<i32>(0, 0);
    out.s[2] = vec2<i32>(0, 0);
    switch PAD_MODE {
        case 1u: {
            let a = -i;
            if (i > 0 && a >= -lo) {
                out.s[1] = vec2<i32>(a + lo, a + lo + 1);
            }
            let b = 2 * (n - 1) - i;
            if (i < n - 1 && b < n + hi) {
                out.s[2] = vec2<i32>(b + lo, b + lo + 1);
            }
        }
        case 2u: {
            if (i == 0) {
                out.s[1] = vec2<i32>(0, lo);
            }
            if (i == n - 1) {
                out.s[2] = vec2<i32>(n + lo, n + lo + hi);
            }
        }
        default: {
            let a = i - n;
            if (a >= -lo) {
                out.s[1] = vec2<i32>(a + lo, a + lo + 1);
            }
            let b = i + n;
            if (b < n + hi) {
                out.s[2] = vec2<i32>(b + lo, b + lo + 1);
            }
        }
    }
    return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let x = id % P.w;
    let t = id / P.w;
    let y = t % P.h;
    let plane = t / P.h;
    let rows = segments(i32(y), i32(P.h), i32(P.top), i32(P.bottom));
    let cols = segments(i32(x), i32(P.w), i32(P.left), i32(P.right));
    let base = plane * P.hp * P.wp;
    var acc = T(0.0);
    for (var a = 0; a < 3; a++) {
        let rs = rows.s[a];
        for (var yy = rs.x; yy < rs.y; yy++) {
            for (var b = 0; b < 3; b++) {
                let cs = cols.s[b];
                for (var xx = cs.x; xx < cs.y; xx++) {
                    acc += src[base + u32(yy) * P.wp + u32(xx)];
                }
            }
        }
    }
    dst[P.dst_off + id] = acc;
}
