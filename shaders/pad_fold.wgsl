// Adjoint of reflect / replicate / circular padding: folds the gradient of a padded input
// (extent (H+top+bottom) x (W+left+right)) back onto the H x W input. Every input pixel
// sums, in a fixed order, the padded positions that copy it:
//   reflect:   i, -i, 2(H-1)-i            (pad < H)
//   replicate: i; all of [-top, 0) for i == 0; all of [H, H+bottom) for i == H-1
//   circular:  i, i-H, i+H                (pad <= H)
// (listed along one dimension; the 2-D preimage is the product of both dimensions' sets).

struct Params {
    planes: u32, h: u32, w: u32, hp: u32,
    wp: u32, top: u32, left: u32, bottom: u32,
    right: u32, total: u32, dst_off: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_w: u32;
var<private> p_h: u32;
var<private> p_top: u32;
var<private> p_bottom: u32;
var<private> p_left: u32;
var<private> p_right: u32;
var<private> p_hp: u32;
var<private> p_wp: u32;
var<private> p_dst_off: u32;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 64u;
// 1 reflect, 2 replicate, 3 circular.
override PAD_MODE: u32 = 1u;

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
    p_total = P.total;
    p_w = P.w;
    p_h = P.h;
    p_top = P.top;
    p_bottom = P.bottom;
    p_left = P.left;
    p_right = P.right;
    p_hp = P.hp;
    p_wp = P.wp;
    p_dst_off = P.dst_off;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let x = id % p_w;
    let t = id / p_w;
    let y = t % p_h;
    let plane = t / p_h;
    let rows = segments(i32(y), i32(p_h), i32(p_top), i32(p_bottom));
    let cols = segments(i32(x), i32(p_w), i32(p_left), i32(p_right));
    let base = plane * p_hp * p_wp;
    var acc = 0.0;
    for (var a = 0; a < 3; a++) {
        let rs = rows.s[a];
        for (var yy = rs.x; yy < rs.y; yy++) {
            for (var b = 0; b < 3; b++) {
                let cs = cols.s[b];
                for (var xx = cs.x; xx < cs.y; xx++) {
                    acc += src[base + u32(yy) * p_wp + u32(xx)];
                }
            }
        }
    }
    dst[p_dst_off + id] = acc;
}
