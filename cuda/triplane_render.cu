// PV3D Studio: fused tri-plane volume rendering kernels (inference only, no backward).
//
// Data file, compiled at run time by pv3d_core/render/cuda_ops.py with NVRTC (CuPy's RawModule, or
// NVRTC + the driver API through ctypes). It includes no header, so NVRTC needs no include path;
// nvcc compiles it as is (tests/test_cuda_kernels.py checks both), and the tests also build it with
// a C++ compiler and a small shim that runs the kernels on the CPU (tests/cuda_emulation/).
//
// The PyTorch references, which these kernels must reproduce, are
//   pv3d_core/render/triplane.py   sample_planes    (kernel pv3d_decode_*: the sampling half)
//   pv3d_core/generator.py         OSGDecoder       (kernel pv3d_decode_*: the MLP half)
//   pv3d_core/render/volume.py     march_weights, importance_depths/sample_pdf (pv3d_importance)
//                                   march                                       (pv3d_composite)
// Element-wise steps that PyTorch runs as separate kernels are written with the non-contracting
// __fmul_rn / __fadd_rn / __fsub_rn intrinsics, so that no fused multiply-add changes their rounding;
// reductions (plane mean, matrix products, sums along rays) differ from PyTorch's only in summation
// order.
//
// Kernel arguments are only device pointers, 32-bit ints and doubles (never a null pointer: optional
// outputs come with an int flag), so that every launcher passes them the same way.
//
// Compile-time sizes (override with -D, the Python side passes the model's):
//   PV3D_CIN          tri-plane channels C (decoder input), multiple of 8
//   PV3D_HIDDEN       decoder hidden width (64)
//   PV3D_COUT         decoder feature outputs (decoder output = 1 density + PV3D_COUT), multiple of 4
//   PV3D_MAX_SAMPLES  upper bound on samples per ray in the importance kernel (local arrays)
//   PV3D_MAX_CPL      upper bound on channels per lane in the compositing kernel (C <= 32 * this)

#ifndef PV3D_CIN
#define PV3D_CIN 32
#endif
#ifndef PV3D_HIDDEN
#define PV3D_HIDDEN 64
#endif
#ifndef PV3D_COUT
#define PV3D_COUT 32
#endif
#ifndef PV3D_MAX_SAMPLES
#define PV3D_MAX_SAMPLES 256
#endif
#ifndef PV3D_MAX_CPL
#define PV3D_MAX_CPL 4
#endif

// Decoder outputs (density + features) padded to a multiple of 4 for float4 reads of the weights.
#define PV3D_OUT_PAD ((PV3D_COUT + 1 + 3) / 4 * 4)
// Offsets in the packed decoder parameter buffer (see cuda_ops.pack_decoder):
//   W1 (HIDDEN x CIN, row-major, gain applied) | b1 (HIDDEN) | W2^T (HIDDEN x OUT_PAD, gain applied,
//   zero padded) | b2 (OUT_PAD, zero padded)
#define PV3D_OFF_W1 0
#define PV3D_OFF_B1 (PV3D_OFF_W1 + PV3D_HIDDEN * PV3D_CIN)
#define PV3D_OFF_W2T (PV3D_OFF_B1 + PV3D_HIDDEN)
#define PV3D_OFF_B2 (PV3D_OFF_W2T + PV3D_HIDDEN * PV3D_OUT_PAD)
#define PV3D_N_PARAMS (PV3D_OFF_B2 + PV3D_OUT_PAD)

static_assert(PV3D_CIN % 8 == 0, "PV3D_CIN must be a multiple of 8 (vector loads)");
static_assert(PV3D_COUT % 4 == 0, "PV3D_COUT must be a multiple of 4 (vector stores)");
static_assert(PV3D_HIDDEN % 4 == 0 && PV3D_HIDDEN > 0, "PV3D_HIDDEN must be a positive multiple of 4");
static_assert(PV3D_N_PARAMS * 4 <= 48 * 1024, "decoder parameters exceed 48 KB of static shared memory");
static_assert(PV3D_MAX_SAMPLES >= 4, "PV3D_MAX_SAMPLES too small");

// ------------------------------------------------------------------------------------------------
// Scalar helpers

__device__ __forceinline__ float pv3d_inf() { return __int_as_float(0x7f800000); }

// torch.nn.functional.softplus(x, beta=1, threshold=20)
__device__ __forceinline__ float pv3d_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// torch.sigmoid
__device__ __forceinline__ float pv3d_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// IEEE half (bits) -> float, exact.
__device__ __forceinline__ float pv3d_half_to_float(unsigned int bits) {
#ifdef PV3D_HOST_EMULATION
    return pv3d_host_half_to_float(bits & 0xffffu);
#else
    float f;
    unsigned short h = (unsigned short)(bits & 0xffffu);
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// ------------------------------------------------------------------------------------------------
// (a) Tri-plane sampling + OSG decoder

// acc[c] += w * texel[c] for one texel of a channels-last plane, float32 storage.
__device__ __forceinline__ void pv3d_tap(const float* __restrict__ texel, float w, float* acc) {
    const float4* p = reinterpret_cast<const float4*>(texel);
#pragma unroll
    for (int i = 0; i < PV3D_CIN / 4; ++i) {
        const float4 v = p[i];
        acc[4 * i + 0] += v.x * w;
        acc[4 * i + 1] += v.y * w;
        acc[4 * i + 2] += v.z * w;
        acc[4 * i + 3] += v.w * w;
    }
}

// The same for float16 storage (IEEE half bits in unsigned short), 8 channels per 16-byte load.
__device__ __forceinline__ void pv3d_tap(const unsigned short* __restrict__ texel, float w, float* acc) {
    const uint4* p = reinterpret_cast<const uint4*>(texel);
#pragma unroll
    for (int i = 0; i < PV3D_CIN / 8; ++i) {
        const uint4 v = p[i];
        acc[8 * i + 0] += pv3d_half_to_float(v.x) * w;
        acc[8 * i + 1] += pv3d_half_to_float(v.x >> 16) * w;
        acc[8 * i + 2] += pv3d_half_to_float(v.y) * w;
        acc[8 * i + 3] += pv3d_half_to_float(v.y >> 16) * w;
        acc[8 * i + 4] += pv3d_half_to_float(v.z) * w;
        acc[8 * i + 5] += pv3d_half_to_float(v.z >> 16) * w;
        acc[8 * i + 6] += pv3d_half_to_float(v.w) * w;
        acc[8 * i + 7] += pv3d_half_to_float(v.w >> 16) * w;
    }
}

// Bilinear sample of one channels-last plane (H, W, CIN) at normalised coordinates (gx, gy) in
// [-1, 1] (gx along W, gy along H), as grid_sample(mode='bilinear', padding_mode='zeros',
// align_corners=False): out-of-range taps contribute zero. The weighted taps are ADDED to acc[]
// (the caller sums the three planes in one accumulator, saving 32 registers; this changes only the
// summation order against grid_sample-then-mean).
template <typename T>
__device__ __forceinline__ void pv3d_sample_plane(const T* __restrict__ plane, int H, int W, float gx, float gy,
                                                  float* acc) {
    const float ix = ((gx + 1.f) * W - 1.f) / 2.f;
    const float iy = ((gy + 1.f) * H - 1.f) / 2.f;
    const float fx = floorf(ix);
    const float fy = floorf(iy);
    // Bounds check before any float->int conversion: unless -1 <= floor < size, no tap is inside
    // (this also rejects NaN and huge coordinates).
    if (!(fx >= -1.f && fx < (float)W && fy >= -1.f && fy < (float)H)) return;
    const int x0 = (int)fx, y0 = (int)fy;
    const int x1 = x0 + 1, y1 = y0 + 1;
    const float w_nw = ((float)x1 - ix) * ((float)y1 - iy);
    const float w_ne = (ix - (float)x0) * ((float)y1 - iy);
    const float w_sw = ((float)x1 - ix) * (iy - (float)y0);
    const float w_se = (ix - (float)x0) * (iy - (float)y0);
    const bool in_x0 = x0 >= 0, in_x1 = x1 < W, in_y0 = y0 >= 0, in_y1 = y1 < H;
    const long long row0 = (long long)y0 * W, row1 = (long long)y1 * W;
    if (in_x0 && in_y0) pv3d_tap(plane + (row0 + x0) * PV3D_CIN, w_nw, acc);
    if (in_x1 && in_y0) pv3d_tap(plane + (row0 + x1) * PV3D_CIN, w_ne, acc);
    if (in_x0 && in_y1) pv3d_tap(plane + (row1 + x0) * PV3D_CIN, w_sw, acc);
    if (in_x1 && in_y1) pv3d_tap(plane + (row1 + x1) * PV3D_CIN, w_se, acc);
}

// Per point: position -> mean tri-plane feature -> FC(CIN->HIDDEN) -> softplus -> FC(HIDDEN->1+COUT);
// sigma = output 0 (raw), features = sigmoid(rest) * 1.002 - 0.001.
//
// Points are either on rays (use_rays = 1): point = origin[ray] + depth * dir[ray], with depths
// depths[ray * depth_ray_stride + s] (depth_ray_stride 0 = the same depths for every ray), or given
// directly (use_rays = 0): point = origin[ray] and samples_per_ray must be 1.
// Point index p = ray * samples_per_ray + s; its tri-planes are those of batch ray / rays_per_batch.
// Planes: (batch, 3, H, W, CIN) channels-last. Outputs: out_sigma[p], out_feat[p * COUT + c].
template <typename T>
__device__ __forceinline__ void pv3d_decode_body(
    const T* __restrict__ planes, int H, int W, const float* __restrict__ params,
    const float* __restrict__ origins, const float* __restrict__ dirs, const float* __restrict__ depths,
    int depth_ray_stride, int samples_per_ray, int rays_per_batch, int n_rays, int use_rays, double coord_scale,
    float* __restrict__ out_sigma, float* __restrict__ out_feat) {
    // Decoder weights in shared memory: every thread of a warp reads the same word (broadcast).
    __shared__ __align__(16) float s_params[PV3D_N_PARAMS];
    for (int i = threadIdx.x; i < PV3D_N_PARAMS; i += blockDim.x) s_params[i] = params[i];
    __syncthreads();
    const float* s_w1 = s_params + PV3D_OFF_W1;
    const float* s_b1 = s_params + PV3D_OFF_B1;
    const float* s_w2t = s_params + PV3D_OFF_W2T;
    const float* s_b2 = s_params + PV3D_OFF_B2;

    const float scale = (float)coord_scale;
    const long long n_points = (long long)n_rays * samples_per_ray;
    const long long plane_elems = (long long)H * W * PV3D_CIN;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n_points;
         p += (long long)gridDim.x * blockDim.x) {
        const long long ray = p / samples_per_ray;
        const int s = (int)(p - ray * samples_per_ray);
        const int batch = (int)(ray / rays_per_batch);
        float x = origins[3 * ray + 0], y = origins[3 * ray + 1], z = origins[3 * ray + 2];
        if (use_rays) {
            const float t = depths[ray * depth_ray_stride + s];
            x = __fadd_rn(x, __fmul_rn(t, dirs[3 * ray + 0]));
            y = __fadd_rn(y, __fmul_rn(t, dirs[3 * ray + 1]));
            z = __fadd_rn(z, __fmul_rn(t, dirs[3 * ray + 2]));
        }
        x = __fmul_rn(scale, x);
        y = __fmul_rn(scale, y);
        z = __fmul_rn(scale, z);

        // Projections with the inverses of EG3D's plane axes: (x, y), (x, z) and -- the quirk the
        // trained weights depend on -- (z, x) for the third plane.
        const T* base = planes + (long long)batch * 3 * plane_elems;
        float feat[PV3D_CIN];
#pragma unroll
        for (int c = 0; c < PV3D_CIN; ++c) feat[c] = 0.f;
        pv3d_sample_plane(base, H, W, x, y, feat);
        pv3d_sample_plane(base + plane_elems, H, W, x, z, feat);
        pv3d_sample_plane(base + 2 * plane_elems, H, W, z, x, feat);
#pragma unroll
        for (int c = 0; c < PV3D_CIN; ++c) feat[c] *= (1.f / 3.f);  // mean over the planes

        float out[PV3D_OUT_PAD];
#pragma unroll
        for (int o = 0; o < PV3D_OUT_PAD; ++o) out[o] = 0.f;
#pragma unroll 1
        for (int j = 0; j < PV3D_HIDDEN; ++j) {
            const float4* w1 = reinterpret_cast<const float4*>(s_w1 + j * PV3D_CIN);
            float h = 0.f;
#pragma unroll
            for (int k = 0; k < PV3D_CIN / 4; ++k) {
                const float4 w = w1[k];
                h += w.x * feat[4 * k + 0];
                h += w.y * feat[4 * k + 1];
                h += w.z * feat[4 * k + 2];
                h += w.w * feat[4 * k + 3];
            }
            h = pv3d_softplus(h + s_b1[j]);
            const float4* w2 = reinterpret_cast<const float4*>(s_w2t + j * PV3D_OUT_PAD);
#pragma unroll
            for (int k = 0; k < PV3D_OUT_PAD / 4; ++k) {
                const float4 w = w2[k];
                out[4 * k + 0] += w.x * h;
                out[4 * k + 1] += w.y * h;
                out[4 * k + 2] += w.z * h;
                out[4 * k + 3] += w.w * h;
            }
        }
        out_sigma[p] = out[0] + s_b2[0];
        float4* dst = reinterpret_cast<float4*>(out_feat + p * PV3D_COUT);
#pragma unroll
        for (int k = 0; k < PV3D_COUT / 4; ++k) {
            float v[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int o = 1 + 4 * k + i;
                v[i] = __fsub_rn(__fmul_rn(pv3d_sigmoid(out[o] + s_b2[o]), 1.002f), 0.001f);
            }
            dst[k] = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(128, 4) pv3d_decode_f32(
    const float* __restrict__ planes, int H, int W, const float* __restrict__ params,
    const float* __restrict__ origins, const float* __restrict__ dirs, const float* __restrict__ depths,
    int depth_ray_stride, int samples_per_ray, int rays_per_batch, int n_rays, int use_rays, double coord_scale,
    float* __restrict__ out_sigma, float* __restrict__ out_feat) {
    pv3d_decode_body<float>(planes, H, W, params, origins, dirs, depths, depth_ray_stride, samples_per_ray,
                            rays_per_batch, n_rays, use_rays, coord_scale, out_sigma, out_feat);
}

// Same, reading float16 planes (bits as unsigned short); all arithmetic stays float32.
extern "C" __global__ void __launch_bounds__(128, 4) pv3d_decode_f16(
    const unsigned short* __restrict__ planes, int H, int W, const float* __restrict__ params,
    const float* __restrict__ origins, const float* __restrict__ dirs, const float* __restrict__ depths,
    int depth_ray_stride, int samples_per_ray, int rays_per_batch, int n_rays, int use_rays, double coord_scale,
    float* __restrict__ out_sigma, float* __restrict__ out_feat) {
    pv3d_decode_body<unsigned short>(planes, H, W, params, origins, dirs, depths, depth_ray_stride,
                                     samples_per_ray, rays_per_batch, n_rays, use_rays, coord_scale, out_sigma,
                                     out_feat);
}

// ------------------------------------------------------------------------------------------------
// Mid-point quadrature shared by (b) and (c): the interval between samples (d0, s0) and (d1, s1).
// Returns alpha and advances the transmittance: weight = alpha * T (before the update),
// T <- T * (1 - alpha + 1e-10). As march()/march_weights() in volume.py.
__device__ __forceinline__ float pv3d_interval_alpha(float d0, float d1, float s0, float s1) {
    const float delta = __fsub_rn(d1, d0);
    const float sigma_mid = pv3d_softplus(__fsub_rn(__fmul_rn(__fadd_rn(s0, s1), 0.5f), 1.f));
    return __fsub_rn(1.f, expf(__fmul_rn(-sigma_mid, delta)));
}

__device__ __forceinline__ float pv3d_transmit(float T, float alpha) {
    return __fmul_rn(T, __fadd_rn(__fsub_rn(1.f, alpha), 1e-10f));
}

// ------------------------------------------------------------------------------------------------
// (c) Importance sampling (one thread per ray), as volume.importance_depths + sample_pdf:
//   coarse weights w (n_c - 1 of them: given, or from the coarse densities by mid-point quadrature)
//   -> max-pool(2, stride 1, pad 1) -> avg-pool(2, stride 1) -> + 0.01 -> drop first and last
//   -> + 1e-5, normalise -> cdf (leading 0) -> inverse transform of the quantiles u over the bins
//   z_mid (mid-points of the coarse depths), with EG3D's bin indexing.
// depths_c: coarse depths, ray r at depths_c[r * c_ray_stride + i] (stride 0: shared by all rays),
//           ascending. values: sigma (n_rays, n_c) or weights (n_rays, n_c - 1).
// u: quantiles, u[r * u_ray_stride + j] (stride 0: shared). out_depths: (n_rays, n_f), sorted
// ascending when sort_output (the compositing kernel merges sorted lists), else in quantile order.
extern "C" __global__ void __launch_bounds__(128) pv3d_importance(
    const float* __restrict__ depths_c, int c_ray_stride, const float* __restrict__ values, int values_are_weights,
    const float* __restrict__ u, int u_ray_stride, int n_rays, int n_c, int n_f, int sort_output,
    float* __restrict__ out_depths) {
    const int ray = blockIdx.x * blockDim.x + threadIdx.x;
    if (ray >= n_rays || n_c < 4 || n_c > PV3D_MAX_SAMPLES || n_f > PV3D_MAX_SAMPLES) return;
    const float* z = depths_c + (long long)ray * c_ray_stride;
    const int n_w = n_c - 1;         // coarse interval weights
    const int n_bins = n_c - 3;      // pdf entries after pooling and trimming
    float w[PV3D_MAX_SAMPLES];
    if (values_are_weights) {
        const float* src = values + (long long)ray * n_w;
        for (int i = 0; i < n_w; ++i) w[i] = src[i];
    } else {
        const float* sigma = values + (long long)ray * n_c;
        float T = 1.f;
        for (int i = 0; i < n_w; ++i) {
            const float alpha = pv3d_interval_alpha(z[i], z[i + 1], sigma[i], sigma[i + 1]);
            w[i] = __fmul_rn(alpha, T);
            T = pv3d_transmit(T, alpha);
        }
    }
    // Pooling in place. max-pool output k (0..n_w) = max(w[k-1], w[k]) (missing neighbours ignored);
    // avg-pool output k (0..n_w-1) = (m_k + m_{k+1}) / 2; keep k = 1..n_w-2 as pdf entry k-1.
    float m_prev = w[0];  // m_0
    float sum = 0.f;
    for (int k = 0; k < n_w; ++k) {
        const float m_next = (k + 1 < n_w) ? fmaxf(w[k], w[k + 1]) : w[k];  // m_{k+1}
        const float a = __fmul_rn(__fadd_rn(m_prev, m_next), 0.5f);
        if (k >= 1 && k <= n_w - 2) {
            const float p = __fadd_rn(__fadd_rn(a, 0.01f), 1e-5f);
            w[k - 1] = p;  // k - 1 < k: entries still needed (w[k], w[k+1]) are not overwritten
            sum += p;
        }
        m_prev = m_next;
    }
    float cdf[PV3D_MAX_SAMPLES];
    cdf[0] = 0.f;
    float run = 0.f;
    for (int i = 0; i < n_bins; ++i) {
        run = __fadd_rn(run, __fdiv_rn(w[i], sum));
        cdf[i + 1] = run;
    }
    float* out = out_depths + (long long)ray * n_f;
    const float* uu = u + (long long)ray * u_ray_stride;
    for (int j = 0; j < n_f; ++j) {
        const float q = uu[j];
        // first index in cdf[0..n_bins] with cdf > q (searchsorted right=True); n_bins + 1 if none
        int lo = 0, hi = n_bins + 1;
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (cdf[mid] > q) hi = mid; else lo = mid + 1;
        }
        const int below = lo - 1 > 0 ? lo - 1 : 0;
        const int above = lo < n_bins ? lo : n_bins;
        const float c0 = cdf[below], c1 = cdf[above];
        // bins = mid-points of the coarse depths; bins[i] = (z[i] + z[i+1]) / 2, i <= n_bins < n_c - 1
        const float b0 = __fmul_rn(__fadd_rn(z[below], z[below + 1]), 0.5f);
        const float b1 = __fmul_rn(__fadd_rn(z[above], z[above + 1]), 0.5f);
        float denom = __fsub_rn(c1, c0);
        if (denom < 1e-5f) denom = 1.f;
        const float t = __fdiv_rn(__fsub_rn(q, c0), denom);
        out[j] = __fadd_rn(b0, __fmul_rn(t, __fsub_rn(b1, b0)));
    }
    if (sort_output) {  // insertion sort: the list is nearly sorted already
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
// (b) Compositing (one warp per ray, lane = channel), as volume.march on the depth-sorted union of
// two sample lists A and B (each ascending; n_b = 0 for a single list). On equal depths A comes
// first (torch.sort's order for ties is unspecified). Per interval between consecutive samples:
// weight = alpha * T; features and depths composited at the interval mid-points. Outputs
//   out_rgb[ray * C + c] = 2 * sum(weight * feature_mid) - 1,
//   out_depth[ray] = clamp(sum(weight * depth_mid) / sum(weight), bounds[0], bounds[1]) (NaN -> +inf
//   first, as torch.nan_to_num), out_wsum[ray] = sum(weight), and when write_weights the interval
//   weights out_weights[ray * (n_a + n_b - 1) + k].
// A: depths_a[ray * a_ray_stride + i] (stride 0: shared), sigma_a (n_rays, n_a), feat_a (n_rays, n_a, C).
// B: depths_b (n_rays, n_b), sigma_b (n_rays, n_b), feat_b (n_rays, n_b, C).
// bounds: the min and max over all depths of the call (the reference clamps to the global range).
extern "C" __global__ void __launch_bounds__(128) pv3d_composite(
    const float* __restrict__ depths_a, int a_ray_stride, const float* __restrict__ sigma_a,
    const float* __restrict__ feat_a, int n_a, const float* __restrict__ depths_b,
    const float* __restrict__ sigma_b, const float* __restrict__ feat_b, int n_b, const float* __restrict__ bounds,
    int n_rays, int n_channels, float* __restrict__ out_rgb, float* __restrict__ out_depth,
    float* __restrict__ out_wsum, float* __restrict__ out_weights, int write_weights) {
    const int lane = threadIdx.x & 31;
    const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;
    if (n_channels > 32 * PV3D_MAX_CPL || n_a + n_b < 2) return;
    for (long long ray = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; ray < n_rays; ray += n_warps) {
        const float* da = depths_a + ray * a_ray_stride;
        const float* sa = sigma_a + ray * n_a;
        const float* fa = feat_a + ray * n_a * n_channels;
        const float* db = depths_b + ray * n_b;
        const float* sb = sigma_b + ray * n_b;
        const float* fb = feat_b + ray * n_b * n_channels;
        int ia = 0, ib = 0;
        // Next sample of the merged list: (depth, sigma, feature row).
        float d0, s0;
        const float* f0;
        if (n_b > 0 && (n_a == 0 || db[0] < da[0])) { d0 = db[0]; s0 = sb[0]; f0 = fb; ib = 1; }
        else { d0 = da[0]; s0 = sa[0]; f0 = fa; ia = 1; }
        float acc[PV3D_MAX_CPL], prev[PV3D_MAX_CPL];  // prev: this lane's channels of the previous sample
#pragma unroll
        for (int i = 0; i < PV3D_MAX_CPL; ++i) {
            const int c = lane + 32 * i;
            acc[i] = 0.f;
            prev[i] = c < n_channels ? f0[c] : 0.f;
        }
        float T = 1.f, wsum = 0.f, dsum = 0.f;
        const int n_total = n_a + n_b;
        for (int k = 1; k < n_total; ++k) {
            float d1, s1;
            const float* f1;
            if (ib < n_b && (ia >= n_a || db[ib] < da[ia])) { d1 = db[ib]; s1 = sb[ib]; f1 = fb + (long long)ib * n_channels; ++ib; }
            else { d1 = da[ia]; s1 = sa[ia]; f1 = fa + (long long)ia * n_channels; ++ia; }
            const float alpha = pv3d_interval_alpha(d0, d1, s0, s1);
            const float wgt = __fmul_rn(alpha, T);
            T = pv3d_transmit(T, alpha);
            wsum = __fadd_rn(wsum, wgt);
            dsum = __fadd_rn(dsum, __fmul_rn(wgt, __fmul_rn(__fadd_rn(d0, d1), 0.5f)));
#pragma unroll
            for (int i = 0; i < PV3D_MAX_CPL; ++i) {
                const int c = lane + 32 * i;
                if (c < n_channels) {
                    const float cur = f1[c];
                    const float mid = __fmul_rn(__fadd_rn(prev[i], cur), 0.5f);
                    acc[i] = __fadd_rn(acc[i], __fmul_rn(wgt, mid));
                    prev[i] = cur;
                }
            }
            if (write_weights && lane == 0) out_weights[ray * (n_total - 1) + (k - 1)] = wgt;
            d0 = d1; s0 = s1;
        }
#pragma unroll
        for (int i = 0; i < PV3D_MAX_CPL; ++i) {
            const int c = lane + 32 * i;
            if (c < n_channels) out_rgb[ray * n_channels + c] = __fsub_rn(__fmul_rn(acc[i], 2.f), 1.f);
        }
        if (lane == 0) {
            float depth = __fdiv_rn(dsum, wsum);
            if (depth != depth) depth = pv3d_inf();
            depth = fminf(fmaxf(depth, bounds[0]), bounds[1]);
            out_depth[ray] = depth;
            out_wsum[ray] = wsum;
        }
    }
}
