// PV3D Studio: the fused tri-plane volume renderer for CPUs (inference only, no backward).
//
// Data file, compiled at run time by pv3d_core/render/cpu_kernels.py with the system's C++ compiler
// (g++ -O3 -march=native -fopenmp) into a small shared library with a C interface, loaded with ctypes
// and cached on disk. It includes only the C++ standard library: no PyTorch or Python headers, so it
// builds in seconds and does not depend on PyTorch's ABI. OpenMP resolves to the runtime PyTorch has
// already loaded (one thread pool); every call takes its thread count from torch.get_num_threads().
//
// The same maths as cuda/triplane_render.cu and the PyTorch references:
//   pv3d_core/render/triplane.py   sample_planes            (bilinear, zeros padding, align_corners False)
//   pv3d_core/generator.py         OSGDecoder               (mean of planes -> FC -> softplus -> FC)
//   pv3d_core/render/volume.py     march_weights, importance_depths/sample_pdf, march
// but organised for a CPU core: one ray at a time through the whole pipeline, in cache-resident
// per-thread scratch (no rays x samples x channels tensor is ever written):
//   1. coarse samples: tri-plane features -> decoder hidden layer (kept) -> density
//   2. importance: coarse weights -> pooled pdf -> fine depths (sorted)
//   3. fine samples: as 1
//   4. merge the two sorted lists, composite densities -> per-sample weights, depth, opacity
//   5. decoder output layer + sigmoid only for samples whose compositing weight matters (see
//      skip_budget in pv3d_cpu_render), accumulated into the ray's features.
// The decoder's first layer runs on blocks of NB points (a register-blocked small matrix product)
// so that every weight vector loaded feeds NB multiply-adds.
//
// Compile-time sizes (the Python side passes the model's with -D):
//   PV3D_CIN      tri-plane channels C (decoder input)
//   PV3D_HIDDEN   decoder hidden width (64)
//   PV3D_COUT     decoder feature outputs (decoder output = 1 density + PV3D_COUT)
// Decoder parameters arrive in cuda_backend.pack_decoder's layout (the CUDA kernels' layout):
//   W1 (HIDDEN x CIN, gain applied) | b1 | W2^T (HIDDEN x OUT_PAD, zero padded) | b2 (OUT_PAD)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// Exported entry points (the library is built with -fvisibility=hidden).
#define PV3D_EXPORT __attribute__((visibility("default")))

#ifndef PV3D_CIN
#define PV3D_CIN 32
#endif
#ifndef PV3D_HIDDEN
#define PV3D_HIDDEN 64
#endif
#ifndef PV3D_COUT
#define PV3D_COUT 32
#endif

namespace {

constexpr int CIN = PV3D_CIN;
constexpr int HID = PV3D_HIDDEN;
constexpr int COUT = PV3D_COUT;
constexpr int OUT_PAD = (COUT + 1 + 3) / 4 * 4;
constexpr int OFF_W1 = 0;
constexpr int OFF_B1 = OFF_W1 + HID * CIN;
constexpr int OFF_W2T = OFF_B1 + HID;
constexpr int OFF_B2 = OFF_W2T + HID * OUT_PAD;
constexpr int N_PARAMS = OFF_B2 + OUT_PAD;
constexpr int NB = 4;                 // points per block in the decoder's matrix products
constexpr int MAX_SAMPLES = 1024;     // per list (coarse or fine), checked by the Python side

// ------------------------------------------------------------------------------------------------
// Element-wise functions written with plain arithmetic so that the compiler vectorises them (libm's
// expf/log1pf are not vectorised without -ffast-math, which this file must not use: NaN handling
// matters). Accuracy: a few ulp, far below the 1e-6 differences of summation order.

// exp(x) for x <= 0 (Cephes' expf: range reduction by ln 2, degree-6 polynomial, 2^n by exponent bits).
inline float exp_nonpos(float x) {
    x = std::max(x, -87.0f);
    const float n = std::floor(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    return p * scale;
}

// log1p(e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) in [0, 1/3] (series to s^17: relative error < 1e-9).
inline float log1p_unit(float e) {
    const float s = e / (2.0f + e);
    const float s2 = s * s;
    float p = 1.0f / 17;
    p = p * s2 + 1.0f / 15;
    p = p * s2 + 1.0f / 13;
    p = p * s2 + 1.0f / 11;
    p = p * s2 + 1.0f / 9;
    p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5;
    p = p * s2 + 1.0f / 3;
    p = p * s2 + 1.0f;
    return 2.0f * s * p;
}

// torch.nn.functional.softplus(x) (beta 1, threshold 20) = max(x, 0) + log1p(exp(-|x|)).
inline float softplus_v(float x) {
    const float y = std::max(x, 0.0f) + log1p_unit(exp_nonpos(-std::fabs(x)));
    return x > 20.0f ? x : y;
}

// torch.sigmoid, without overflow: e = exp(-|x|).
inline float sigmoid_v(float x) {
    const float e = exp_nonpos(-std::fabs(x));
    const float inv = 1.0f / (1.0f + e);
    return x >= 0.0f ? inv : e * inv;
}

// Scalar versions for the compositing (a few per interval): libm, as PyTorch's CPU kernels.
inline float softplus_s(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// ------------------------------------------------------------------------------------------------
// Decoder weights, repacked for the CPU: W1^T so that a point's hidden layer is a sum of rows scaled
// by its features; the density row of W2 apart from the feature rows.
struct alignas(64) Weights {
    float w1t[CIN][HID];
    float b1[HID];
    float w2s[HID];         // density output weights
    float w2ft[HID][COUT];  // feature output weights, W2^T rows 1..COUT
    float b2f[COUT];
    float b2s;
};

std::unique_ptr<Weights> unpack(const float* p) {
    std::unique_ptr<Weights> w(new Weights);
    for (int o = 0; o < HID; ++o)
        for (int k = 0; k < CIN; ++k) w->w1t[k][o] = p[OFF_W1 + o * CIN + k];
    for (int o = 0; o < HID; ++o) w->b1[o] = p[OFF_B1 + o];
    for (int j = 0; j < HID; ++j) {
        w->w2s[j] = p[OFF_W2T + j * OUT_PAD];
        for (int c = 0; c < COUT; ++c) w->w2ft[j][c] = p[OFF_W2T + j * OUT_PAD + 1 + c];
    }
    w->b2s = p[OFF_B2];
    for (int c = 0; c < COUT; ++c) w->b2f[c] = p[OFF_B2 + 1 + c];
    return w;
}

// ------------------------------------------------------------------------------------------------
// Tri-plane sampling. Planes channels-last (3, H, W, CIN) float32 per batch item.

struct Planes {
    const float* data;
    int H, W;
    int64_t plane_elems;  // H * W * CIN
};

// The bilinear taps of the three planes at one point: up to 12 (texel offset, weight) pairs, taps outside a
// plane left out (zeros padding). Gathered first, so that the accumulation below keeps its sums in
// registers over all taps.
struct Taps {
    int64_t off[12];
    float w[12];
    int n = 0;
};

inline void plane_taps(int64_t plane_off, int H, int W, int CH, float gx, float gy, Taps& T) {
    const float ix = ((gx + 1.f) * W - 1.f) / 2.f;
    const float iy = ((gy + 1.f) * H - 1.f) / 2.f;
    const float fx = std::floor(ix), fy = std::floor(iy);
    if (!(fx >= -1.f && fx < (float)W && fy >= -1.f && fy < (float)H)) return;  // also NaN / huge
    const int x0 = (int)fx, y0 = (int)fy, x1 = x0 + 1, y1 = y0 + 1;
    const float ax = ix - fx, ay = iy - fy, bx = (float)x1 - ix, by = (float)y1 - iy;
    if (y0 >= 0) {
        if (x0 >= 0) { T.off[T.n] = plane_off + ((int64_t)y0 * W + x0) * CH; T.w[T.n++] = bx * by; }
        if (x1 < W) { T.off[T.n] = plane_off + ((int64_t)y0 * W + x1) * CH; T.w[T.n++] = ax * by; }
    }
    if (y1 < H) {
        if (x0 >= 0) { T.off[T.n] = plane_off + ((int64_t)y1 * W + x0) * CH; T.w[T.n++] = bx * ay; }
        if (x1 < W) { T.off[T.n] = plane_off + ((int64_t)y1 * W + x1) * CH; T.w[T.n++] = ax * ay; }
    }
}

// Taps of the projections with the inverses of EG3D's plane axes: (x, y), (x, z), (z, x).
inline void triplane_taps(int64_t plane_elems, int H, int W, int CH, float x, float y, float z, Taps& T) {
    T.n = 0;
    plane_taps(0, H, W, CH, x, y, T);
    plane_taps(plane_elems, H, W, CH, x, z, T);
    plane_taps(2 * plane_elems, H, W, CH, z, x, T);
}

// acc[c] += sum over taps of w * base[off + c]
template <int CH>
inline void accumulate_taps(const float* __restrict base, const Taps& T, float* __restrict acc) {
    constexpr int V = 16;
    if constexpr (CH % V == 0) {
        for (int c0 = 0; c0 < CH; c0 += V) {
            float a[V];
            for (int c = 0; c < V; ++c) a[c] = acc[c0 + c];
            for (int t = 0; t < T.n; ++t) {
                const float* __restrict p = base + T.off[t] + c0;
                const float wt = T.w[t];
#pragma omp simd
                for (int c = 0; c < V; ++c) a[c] += wt * p[c];
            }
            for (int c = 0; c < V; ++c) acc[c0 + c] = a[c];
        }
    } else {
        for (int t = 0; t < T.n; ++t)
            for (int c = 0; c < CH; ++c) acc[c] += T.w[t] * base[T.off[t] + c];
    }
}

// Mean tri-plane feature of a point already scaled to the plane range ([-1, 1] inside the box).
inline void triplane_feature(const Planes& P, const float* base, float x, float y, float z, float* __restrict f) {
    alignas(64) float acc[CIN];
    for (int c = 0; c < CIN; ++c) acc[c] = 0.f;
    Taps T;
    triplane_taps(P.plane_elems, P.H, P.W, CIN, x, y, z, T);
    accumulate_taps<CIN>(base, T, acc);
    for (int c = 0; c < CIN; ++c) f[c] = acc[c] * (1.f / 3.f);
}

// Projected tri-planes: each texel already multiplied by W1 / 3 (HID channels), so that bilinear sampling
// of the three planes gives the decoder's first layer without bias (both are linear: only the rounding
// differs). Adds b1, applies softplus; returns the density.
inline float projected_hidden(const Weights& Wt, const float* projb, int H, int W, int64_t plane_elems, float x,
                              float y, float z, float* __restrict h) {
    alignas(64) float acc[HID];
    for (int o = 0; o < HID; ++o) acc[o] = Wt.b1[o];
    Taps T;
    triplane_taps(plane_elems, H, W, HID, x, y, z, T);
    accumulate_taps<HID>(projb, T, acc);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int o = 0; o < HID; ++o) {
        const float v = softplus_v(acc[o]);
        h[o] = v;
        s += v * Wt.w2s[o];
    }
    return s + Wt.b2s;
}

// ------------------------------------------------------------------------------------------------
// Decoder on blocks of NB points: hidden = softplus(W1 f + b1) (kept for the output layer) and the
// density sigma = w2s . hidden + b2s.
inline void decode_hidden_block(const Weights& Wt, const float (*__restrict feat)[CIN], float (*__restrict hidden)[HID],
                                float* __restrict sigma) {
    float acc[NB][HID];
    for (int i = 0; i < NB; ++i)
#pragma omp simd
        for (int o = 0; o < HID; ++o) acc[i][o] = Wt.b1[o];
    for (int k = 0; k < CIN; ++k) {
        const float* __restrict w = Wt.w1t[k];
        for (int i = 0; i < NB; ++i) {
            const float f = feat[i][k];
#pragma omp simd
            for (int o = 0; o < HID; ++o) acc[i][o] += f * w[o];
        }
    }
    for (int i = 0; i < NB; ++i) {
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int o = 0; o < HID; ++o) {
            const float h = softplus_v(acc[i][o]);
            hidden[i][o] = h;
            s += h * Wt.w2s[o];
        }
        sigma[i] = s + Wt.b2s;
    }
}

// Feature outputs of NB points: sigmoid(W2f h + b2f) * 1.002 - 0.001, weighted by coef[i] into out[].
inline void decode_features_block(const Weights& Wt, const float* const* __restrict hidden, const float* coef,
                                  float* __restrict out) {
    float acc[NB][COUT];
    for (int i = 0; i < NB; ++i)
#pragma omp simd
        for (int c = 0; c < COUT; ++c) acc[i][c] = Wt.b2f[c];
    for (int j = 0; j < HID; ++j) {
        const float* __restrict w = Wt.w2ft[j];
        for (int i = 0; i < NB; ++i) {
            const float h = hidden[i][j];
#pragma omp simd
            for (int c = 0; c < COUT; ++c) acc[i][c] += h * w[c];
        }
    }
    for (int i = 0; i < NB; ++i) {
        const float k = coef[i];
#pragma omp simd
        for (int c = 0; c < COUT; ++c) out[c] += k * (sigmoid_v(acc[i][c]) * 1.002f - 0.001f);
    }
}

// The same for the public query op: features written out, not accumulated.
inline void decode_features_store(const Weights& Wt, const float (*__restrict hidden)[HID], float (*__restrict out)[COUT]) {
    float acc[NB][COUT];
    for (int i = 0; i < NB; ++i)
#pragma omp simd
        for (int c = 0; c < COUT; ++c) acc[i][c] = Wt.b2f[c];
    for (int j = 0; j < HID; ++j) {
        const float* __restrict w = Wt.w2ft[j];
        for (int i = 0; i < NB; ++i) {
            const float h = hidden[i][j];
#pragma omp simd
            for (int c = 0; c < COUT; ++c) acc[i][c] += h * w[c];
        }
    }
    for (int i = 0; i < NB; ++i)
#pragma omp simd
        for (int c = 0; c < COUT; ++c) out[i][c] = sigmoid_v(acc[i][c]) * 1.002f - 0.001f;
}

// ------------------------------------------------------------------------------------------------
// Mid-point quadrature of one interval (as volume.march): alpha, and the transmittance update.
inline float interval_alpha(float d0, float d1, float s0, float s1) {
    const float delta = d1 - d0;
    const float sigma_mid = softplus_s((s0 + s1) * 0.5f - 1.f);
    return 1.f - std::exp(-sigma_mid * delta);
}
inline float transmit(float T, float alpha) { return T * ((1.f - alpha) + 1e-10f); }

// Importance sampling of one ray (volume.importance_depths + sample_pdf, EG3D's bin indexing):
// w (n_c - 1 coarse interval weights; overwritten) -> max-pool 2 / avg-pool 2 / + 0.01 / trim ->
// pdf (+1e-5, normalised) -> cdf -> inverse transform of the quantiles u. z: coarse depths.
void importance_one(const float* z, int n_c, float* w, float* cdf, const float* u, int n_f, float* out, bool sort) {
    const int n_w = n_c - 1, n_bins = n_c - 3;
    float m_prev = w[0], sum = 0.f;
    for (int k = 0; k < n_w; ++k) {
        const float m_next = (k + 1 < n_w) ? std::max(w[k], w[k + 1]) : w[k];
        const float a = (m_prev + m_next) * 0.5f;
        if (k >= 1 && k <= n_w - 2) {
            const float p = (a + 0.01f) + 1e-5f;
            w[k - 1] = p;
            sum += p;
        }
        m_prev = m_next;
    }
    cdf[0] = 0.f;
    float run = 0.f;
    for (int i = 0; i < n_bins; ++i) {
        run += w[i] / sum;
        cdf[i + 1] = run;
    }
    for (int j = 0; j < n_f; ++j) {
        const float q = u[j];
        const int lo = (int)(std::upper_bound(cdf, cdf + n_bins + 1, q) - cdf);  // searchsorted right
        const int below = std::max(lo - 1, 0), above = std::min(lo, n_bins);
        const float c0 = cdf[below], c1 = cdf[above];
        const float b0 = (z[below] + z[below + 1]) * 0.5f;
        const float b1 = (z[above] + z[above + 1]) * 0.5f;
        float denom = c1 - c0;
        if (denom < 1e-5f) denom = 1.f;
        out[j] = b0 + (q - c0) / denom * (b1 - b0);
    }
    if (sort) {  // nearly sorted already: insertion sort
        for (int j = 1; j < n_f; ++j) {
            const float v = out[j];
            int i = j - 1;
            while (i >= 0 && out[i] > v) {
                out[i + 1] = out[i];
                --i;
            }
            out[i + 1] = v;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Per-thread scratch of the fused renderer (allocated once per thread and call; a few hundred KB).
struct Scratch {
    int n_max;
    std::vector<float> feat, hidden, sigma, depth, coef, w, cdf;
    std::vector<int> order;
    explicit Scratch(int n_c, int n_f) {
        n_max = n_c + n_f + NB;
        feat.resize((size_t)NB * CIN);
        hidden.resize((size_t)n_max * HID);
        sigma.resize(n_max);
        depth.resize(n_max);
        coef.resize(n_max);
        w.resize(n_max);
        cdf.resize(n_max + 1);
        order.resize(n_max);
    }
};

// Decode n points on one ray (depths t[0..n)) into hidden rows / sigma at index base..base+n.
void decode_ray_points(const Weights& Wt, const Planes& P, const float* planes_b, const float* proj_b,
                       const float o[3], const float d[3], float scale, const float* t, int n, Scratch& S, int base) {
    if (proj_b) {
        const int64_t pe = (int64_t)P.H * P.W * HID;
        for (int i = 0; i < n; ++i) {
            const float tt = t[i];
            const float x = (o[0] + tt * d[0]) * scale;
            const float y = (o[1] + tt * d[1]) * scale;
            const float z = (o[2] + tt * d[2]) * scale;
            S.sigma[base + i] = projected_hidden(Wt, proj_b, P.H, P.W, pe, x, y, z,
                                                 S.hidden.data() + (size_t)(base + i) * HID);
        }
        return;
    }
    alignas(64) float feat[NB][CIN];
    alignas(64) float sig[NB];
    for (int s0 = 0; s0 < n; s0 += NB) {
        const int m = std::min(NB, n - s0);
        for (int i = 0; i < NB; ++i) {
            if (i < m) {
                const float tt = t[s0 + i];
                const float x = (o[0] + tt * d[0]) * scale;
                const float y = (o[1] + tt * d[1]) * scale;
                const float z = (o[2] + tt * d[2]) * scale;
                triplane_feature(P, planes_b, x, y, z, feat[i]);
            } else {
                for (int c = 0; c < CIN; ++c) feat[i][c] = 0.f;
            }
        }
        float(*hid)[HID] = reinterpret_cast<float(*)[HID]>(S.hidden.data() + (size_t)(base + s0) * HID);
        if (m == NB) {
            decode_hidden_block(Wt, feat, hid, sig);
        } else {
            alignas(64) float tmp[NB][HID];
            decode_hidden_block(Wt, feat, tmp, sig);
            for (int i = 0; i < m; ++i) std::memcpy(hid[i], tmp[i], sizeof(float) * HID);
        }
        for (int i = 0; i < m; ++i) S.sigma[base + s0 + i] = sig[i];
    }
}

template <class F>
void parallel_rays(int64_t n, int nthreads, int chunk, F&& body) {
#ifdef _OPENMP
    if (nthreads > 1 && n > chunk) {
        // dynamic chunks: when another process holds a core, the running thread takes the rest
#pragma omp parallel num_threads(nthreads)
        body(true);
        return;
    }
#endif
    (void)n;
    (void)chunk;
    body(false);
}

}  // namespace

extern "C" {

PV3D_EXPORT int pv3d_cpu_dims(int* cin, int* hidden, int* cout) {
    *cin = CIN;
    *hidden = HID;
    *cout = COUT;
    return N_PARAMS;
}

// The whole renderer (volume.render_rays with importance sampling), one pass per ray.
//   planes: (B, 3, H, W, CIN) float32 contiguous; params: pack_decoder's layout (N_PARAMS floats)
//   proj: null, or the projected planes (B, 3, H, W, HID) = planes . W1^T / 3 (then planes is unused)
//   origins, dirs: (n_rays, 3); ray r uses the planes of batch r / rays_per_batch
//   depths_c: coarse depths, ray r's at depths_c[r * c_stride + i] (stride 0: shared), ascending
//   u: importance quantiles u[r * u_stride + j] (stride 0: shared); n_f = 0: no fine pass
//   bounds: [min, max] of the coarse depths over the call (the reference clamps depth to the global range)
//   skip_budget: per ray, the feature decode of a sample is skipped while the sum of the compositing
//     coefficients of the skipped samples stays <= skip_budget (so |rgb error| <= 2.004 * skip_budget:
//     features are in [-0.001, 1.001]); 0 skips only samples whose coefficient is exactly 0
//   outputs: rgb (n_rays, COUT) in [-1, 1], depth (n_rays), wsum (n_rays); stats[0] += feature decodes
//     skipped, stats[1] += samples (may be null)
PV3D_EXPORT int pv3d_cpu_render(const float* planes, const float* proj, int H, int W, const float* params, const float* origins, const float* dirs,
                    int64_t n_rays, int64_t rays_per_batch, const float* depths_c, int c_stride, int n_c,
                    const float* u, int u_stride, int n_f, double coord_scale, const float* bounds,
                    double skip_budget, float* out_rgb, float* out_depth, float* out_wsum, int64_t* stats,
                    int nthreads) {
    if (n_c < 2 || n_c > MAX_SAMPLES || n_f < 0 || n_f > MAX_SAMPLES || (n_f > 0 && n_c < 4)) return 1;
    const std::unique_ptr<Weights> Wt = unpack(params);
    const Planes P{planes, H, W, (int64_t)H * W * CIN};
    const float scale = (float)coord_scale;
    const float lo = bounds[0], hi = bounds[1];
    const float budget0 = (float)skip_budget;
    int64_t skipped_total = 0;
    const int chunk = 8;
    parallel_rays(n_rays, nthreads, chunk, [&](bool in_parallel) {
        Scratch S(n_c, n_f);
        std::vector<float> fine(n_f + 1);
        int64_t skipped = 0;
        auto one_ray = [&](int64_t r) {
            const float* o = origins + 3 * r;
            const float* d = dirs + 3 * r;
            const float* zc = depths_c + r * c_stride;
            const float* planes_b = planes + (r / rays_per_batch) * 3 * P.plane_elems;
            const float* proj_b = proj ? proj + (r / rays_per_batch) * 3 * (int64_t)H * W * HID : nullptr;
            // 1. coarse samples at rows [0, n_c)
            decode_ray_points(*Wt, P, planes_b, proj_b, o, d, scale, zc, n_c, S, 0);
            // 2. fine depths from the coarse weights
            if (n_f > 0) {
                float T = 1.f;
                for (int i = 0; i < n_c - 1; ++i) {
                    const float a = interval_alpha(zc[i], zc[i + 1], S.sigma[i], S.sigma[i + 1]);
                    S.w[i] = a * T;
                    T = transmit(T, a);
                }
                importance_one(zc, n_c, S.w.data(), S.cdf.data(), u + r * u_stride, n_f, fine.data(), true);
                // 3. fine samples at rows [n_c, n_c + n_f)
                decode_ray_points(*Wt, P, planes_b, proj_b, o, d, scale, fine.data(), n_f, S, n_c);
            }
            // 4. merge (coarse first on ties) and composite
            const int n = n_c + n_f;
            for (int i = 0; i < n_c; ++i) S.depth[i] = zc[i];
            for (int j = 0; j < n_f; ++j) S.depth[n_c + j] = fine[j];
            {
                int ia = 0, ib = 0;
                for (int k = 0; k < n; ++k) {
                    if (ib < n_f && (ia >= n_c || fine[ib] < zc[ia])) S.order[k] = n_c + ib++;
                    else S.order[k] = ia++;
                }
            }
            for (int k = 0; k < n; ++k) S.coef[k] = 0.f;
            float T = 1.f, wsum = 0.f, dsum = 0.f;
            for (int k = 0; k + 1 < n; ++k) {
                const int a = S.order[k], b = S.order[k + 1];
                const float d0 = S.depth[a], d1 = S.depth[b];
                const float alpha = interval_alpha(d0, d1, S.sigma[a], S.sigma[b]);
                const float wgt = alpha * T;
                T = transmit(T, alpha);
                wsum += wgt;
                dsum += wgt * ((d0 + d1) * 0.5f);
                S.coef[a] += wgt * 0.5f;
                S.coef[b] += wgt * 0.5f;
            }
            float depth = dsum / wsum;
            if (depth != depth) depth = std::numeric_limits<float>::infinity();
            out_depth[r] = std::min(std::max(depth, lo), hi);
            out_wsum[r] = wsum;
            // 5. features of the samples that matter, blocks of NB
            float acc[COUT];
            for (int c = 0; c < COUT; ++c) acc[c] = 0.f;
            float budget = budget0;
            const float* rows[NB];
            float coefs[NB];
            int m = 0;
            for (int k = 0; k < n; ++k) {
                const float cf = S.coef[k];
                if (cf <= budget) {
                    budget -= cf;
                    ++skipped;
                    continue;
                }
                rows[m] = S.hidden.data() + (size_t)k * HID;
                coefs[m] = cf;
                if (++m == NB) {
                    decode_features_block(*Wt, rows, coefs, acc);
                    m = 0;
                }
            }
            if (m > 0) {
                for (int i = m; i < NB; ++i) {
                    rows[i] = rows[0];
                    coefs[i] = 0.f;
                }
                decode_features_block(*Wt, rows, coefs, acc);
            }
            float* dst = out_rgb + r * COUT;
            for (int c = 0; c < COUT; ++c) dst[c] = acc[c] * 2.f - 1.f;
        };
        if (in_parallel) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 8) nowait
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
#endif
        } else {
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
        }
        if (stats) {
#ifdef _OPENMP
#pragma omp atomic
#endif
            skipped_total += skipped;
        }
    });
    if (stats) {
        stats[0] += skipped_total;
        stats[1] += n_rays * (int64_t)(n_c + n_f);
    }
    return 0;
}

// volume.query: sigma (n_points) and features (n_points, COUT) at points (n_points, 3); point p uses
// the planes of batch p / points_per_batch. sigma_only: features are not computed (out_feat unused).
PV3D_EXPORT int pv3d_cpu_query(const float* planes, int H, int W, const float* params, const float* points, int64_t n_points,
                   int64_t points_per_batch, double coord_scale, float* out_sigma, float* out_feat, int sigma_only,
                   int nthreads) {
    const std::unique_ptr<Weights> Wt = unpack(params);
    const Planes P{planes, H, W, (int64_t)H * W * CIN};
    const float scale = (float)coord_scale;
    const int64_t n_blocks = (n_points + NB - 1) / NB;
    parallel_rays(n_blocks, nthreads, 64, [&](bool in_parallel) {
        auto one_block = [&](int64_t blk) {
            alignas(64) float feat[NB][CIN];
            alignas(64) float hid[NB][HID];
            alignas(64) float sig[NB];
            alignas(64) float out[NB][COUT];
            const int64_t p0 = blk * NB;
            const int m = (int)std::min<int64_t>(NB, n_points - p0);
            for (int i = 0; i < NB; ++i) {
                if (i < m) {
                    const float* q = points + 3 * (p0 + i);
                    const float* base = planes + ((p0 + i) / points_per_batch) * 3 * P.plane_elems;
                    triplane_feature(P, base, q[0] * scale, q[1] * scale, q[2] * scale, feat[i]);
                } else {
                    for (int c = 0; c < CIN; ++c) feat[i][c] = 0.f;
                }
            }
            decode_hidden_block(*Wt, feat, hid, sig);
            for (int i = 0; i < m; ++i) out_sigma[p0 + i] = sig[i];
            if (!sigma_only) {
                decode_features_store(*Wt, hid, out);
                for (int i = 0; i < m; ++i) std::memcpy(out_feat + (p0 + i) * COUT, out[i], sizeof(float) * COUT);
            }
        };
        if (in_parallel) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 64) nowait
            for (int64_t b = 0; b < n_blocks; ++b) one_block(b);
#endif
        } else {
            for (int64_t b = 0; b < n_blocks; ++b) one_block(b);
        }
    });
    return 0;
}

// volume.march on depth-sorted samples: colors (n_rays, n, C), sigma (n_rays, n), depths (n_rays, n);
// outputs rgb (n_rays, C) in [-1, 1], depth (n_rays) clamped to bounds, weights (n_rays, n - 1).
PV3D_EXPORT int pv3d_cpu_march(const float* colors, const float* sigma, const float* depths, int64_t n_rays, int n, int C,
                   const float* bounds, float* out_rgb, float* out_depth, float* out_weights, int nthreads) {
    if (n < 2) return 1;
    const float lo = bounds[0], hi = bounds[1];
    parallel_rays(n_rays, nthreads, 64, [&](bool in_parallel) {
        auto one_ray = [&](int64_t r) {
            const float* f = colors + r * (int64_t)n * C;
            const float* s = sigma + r * (int64_t)n;
            const float* z = depths + r * (int64_t)n;
            float* rgb = out_rgb + r * (int64_t)C;
            float* w = out_weights + r * (int64_t)(n - 1);
            for (int c = 0; c < C; ++c) rgb[c] = 0.f;
            float T = 1.f, wsum = 0.f, dsum = 0.f;
            for (int k = 0; k + 1 < n; ++k) {
                const float alpha = interval_alpha(z[k], z[k + 1], s[k], s[k + 1]);
                const float wgt = alpha * T;
                T = transmit(T, alpha);
                w[k] = wgt;
                wsum += wgt;
                dsum += wgt * ((z[k] + z[k + 1]) * 0.5f);
                const float* f0 = f + (int64_t)k * C;
                const float* f1 = f0 + C;
#pragma omp simd
                for (int c = 0; c < C; ++c) rgb[c] += wgt * ((f0[c] + f1[c]) * 0.5f);
            }
            for (int c = 0; c < C; ++c) rgb[c] = rgb[c] * 2.f - 1.f;
            float depth = dsum / wsum;
            if (depth != depth) depth = std::numeric_limits<float>::infinity();
            out_depth[r] = std::min(std::max(depth, lo), hi);
        };
        if (in_parallel) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 64) nowait
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
#endif
        } else {
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
        }
    });
    return 0;
}

// volume.importance_depths: coarse depths (n_rays, n_c), interval weights (n_rays, n_c - 1), quantiles
// u[r * u_stride + j] -> fine depths (n_rays, n_f) in quantile order (not sorted, as the reference).
PV3D_EXPORT int pv3d_cpu_importance(const float* depths_c, const float* weights, int64_t n_rays, int n_c, const float* u,
                        int u_stride, int n_f, float* out, int nthreads) {
    if (n_c < 4 || n_c > MAX_SAMPLES) return 1;
    parallel_rays(n_rays, nthreads, 256, [&](bool in_parallel) {
        std::vector<float> w(n_c), cdf(n_c + 1);
        auto one_ray = [&](int64_t r) {
            std::memcpy(w.data(), weights + r * (int64_t)(n_c - 1), sizeof(float) * (n_c - 1));
            importance_one(depths_c + r * (int64_t)n_c, n_c, w.data(), cdf.data(), u + r * u_stride, n_f,
                           out + r * (int64_t)n_f, false);
        };
        if (in_parallel) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 256) nowait
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
#endif
        } else {
            for (int64_t r = 0; r < n_rays; ++r) one_ray(r);
        }
    });
    return 0;
}

}  // extern "C"
