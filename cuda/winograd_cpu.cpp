// Winograd F(4x4, 3x3) convolutions for 3x3, stride-1, padding-1 convolutions of NHWC float32 tensors on
// the CPU (Lavin & Gray 2016). Each 4x4 block of outputs (a tile) is
//     y = A^T [ sum_c (B^T d_c B) . U_c ] A + bias     (d_c: the tile's 6x6 input patch of channel c)
// with U = G w G^T [36, C, O] made once per weight (pv3d_core/nn/winograd.py): 36 products over channels
// per tile, 4x fewer multiply-adds than a direct convolution (36 per 4x4 outputs against 144); the
// transforms are additions and small constant multiples over each 6x6 tile.
//
// pv3d_wino_conv runs the whole convolution in one call: each thread takes blocks of tiles and runs
// the input transform, the 36 products (an AVX-512 register-blocked kernel where the compiler targets
// it, plain loops otherwise) and the output transform on its block in its own scratch (36 x block x
// (C + O) floats, in the L2 cache for most sizes), so the transformed tiles never travel to memory. Each output is computed by
// one thread in a fixed order: the same bits for any thread count.
//
// Built at first use by pv3d_core/native.py (-O3 -march=native -fopenmp, cached on disk) with a C
// interface for ctypes.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PV3D_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr int CB = 32;       // channels per inner block

inline int64_t tiles_of(int n, int h, int w) { return (int64_t)n * ((h + 3) / 4) * ((w + 3) / 4); }

}  // namespace

PV3D_EXPORT int pv3d_wino_version() { return 5; }

// x: [N, H, W, C] contiguous; tiles are numbered n-major, then by row and column (N * ceil(H/4) * ceil(W/4)
// of them). Tile (ty, tx) reads input rows 4ty-1 .. 4ty+4 and columns 4tx-1 .. 4tx+4 (zero outside: the
// padding of 1).
namespace {

// One tile t of x, transformed, to V[36][T][C] at row k.
inline void input_tile(const float* x, int N, int H, int W, int C, int64_t t, int64_t k, int64_t T, float* V) {
    const int th = (H + 3) / 4, tw = (W + 3) / 4;
    (void)N;
    const int n = (int)(t / ((int64_t)th * tw));
    const int r = (int)(t % ((int64_t)th * tw));
    const int y0 = (r / tw) * 4 - 1, x0 = (r % tw) * 4 - 1;
    alignas(64) float d[6][6][CB];
    alignas(64) float u[6][6][CB];
    for (int c0 = 0; c0 < C; c0 += CB) {
        const int cb = std::min(CB, C - c0);
        for (int i = 0; i < 6; i++) {
            const int yy = y0 + i;
            for (int j = 0; j < 6; j++) {
                const int xx = x0 + j;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) {
                    std::memset(d[i][j], 0, sizeof(float) * CB);
                } else {
                    const float* src = x + (((int64_t)n * H + yy) * W + xx) * C + c0;
                    std::memcpy(d[i][j], src, sizeof(float) * cb);
                    if (cb < CB) std::memset(d[i][j] + cb, 0, sizeof(float) * (CB - cb));
                }
            }
        }
        // B^T d: along the rows of the tile
        for (int j = 0; j < 6; j++) {
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float a0 = d[0][j][c], a1 = d[1][j][c], a2 = d[2][j][c], a3 = d[3][j][c],
                            a4 = d[4][j][c], a5 = d[5][j][c];
                u[0][j][c] = 4.f * a0 - 5.f * a2 + a4;
                u[1][j][c] = -4.f * (a1 + a2) + a3 + a4;
                u[2][j][c] = 4.f * (a1 - a2) - a3 + a4;
                u[3][j][c] = 2.f * (a3 - a1) - a2 + a4;
                u[4][j][c] = 2.f * (a1 - a3) - a2 + a4;
                u[5][j][c] = 4.f * a1 - 5.f * a3 + a5;
            }
        }
        // (B^T d) B: along the columns, written to V[i*6+j][t][c0:]
        for (int i = 0; i < 6; i++) {
            float* out[6];
            for (int j = 0; j < 6; j++) out[j] = V + ((int64_t)(i * 6 + j) * T + k) * C + c0;
            alignas(64) float v[6][CB];
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float a0 = u[i][0][c], a1 = u[i][1][c], a2 = u[i][2][c], a3 = u[i][3][c],
                            a4 = u[i][4][c], a5 = u[i][5][c];
                v[0][c] = 4.f * a0 - 5.f * a2 + a4;
                v[1][c] = -4.f * (a1 + a2) + a3 + a4;
                v[2][c] = 4.f * (a1 - a2) - a3 + a4;
                v[3][c] = 2.f * (a3 - a1) - a2 + a4;
                v[4][c] = 2.f * (a1 - a3) - a2 + a4;
                v[5][c] = 4.f * a1 - 5.f * a3 + a5;
            }
            for (int j = 0; j < 6; j++) std::memcpy(out[j], v[j], sizeof(float) * cb);
        }
    }
}

}  // namespace


// M: [36, T, O], the products of a block of tiles; bias: [Oc] or null. up == 1: O == Oc and y is
// [N, H, W, Oc]; y = A^T m A + bias for each tile's 4x4 outputs (those inside H x W). up == 2: O == 4 Oc,
// column p * Oc + o holding output phase p = 2 py + px, and y is [N, 2H, 2W, Oc]: input-grid output
// (i, j) of phase (py, px) goes to (2i + py, 2j + px) (a polyphase 2x upsampling convolution).
namespace {

// Row k of M[36][T][O] (tile t) to y, plus the bias.
inline void output_tile(const float* M, const float* bias, int N, int H, int W, int O, int Oc, int up, int64_t t,
                        int64_t k, int64_t T, float* y) {
    const int th = (H + 3) / 4, tw = (W + 3) / 4;
    (void)N;
    const int n = (int)(t / ((int64_t)th * tw));
    const int r = (int)(t % ((int64_t)th * tw));
    const int oy = (r / tw) * 4, ox = (r % tw) * 4;
    const int Ho = H * up, Wo = W * up;
    alignas(64) float m[6][6][CB];
    alignas(64) float u[4][6][CB];
    alignas(64) float b[CB];
    for (int ph = 0; ph < up * up; ph++)
    for (int oc0 = 0; oc0 < Oc; oc0 += CB) {
        const int o0 = ph * Oc + oc0, py = ph / 2, px = ph % 2;
        const int ob = std::min(CB, Oc - oc0);
        for (int q = 0; q < 36; q++) {
            const float* src = M + ((int64_t)q * T + k) * O + o0;
            std::memcpy(m[q / 6][q % 6], src, sizeof(float) * ob);
            if (ob < CB) std::memset(m[q / 6][q % 6] + ob, 0, sizeof(float) * (CB - ob));
        }
        if (bias) {
            std::memcpy(b, bias + oc0, sizeof(float) * ob);
            if (ob < CB) std::memset(b + ob, 0, sizeof(float) * (CB - ob));
        } else {
            std::memset(b, 0, sizeof(b));
        }
        // A^T m: along the rows
        for (int j = 0; j < 6; j++) {
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float a0 = m[0][j][c], a1 = m[1][j][c], a2 = m[2][j][c], a3 = m[3][j][c],
                            a4 = m[4][j][c], a5 = m[5][j][c];
                const float s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4;
                u[0][j][c] = a0 + s12 + s34;
                u[1][j][c] = d12 + 2.f * d34;
                u[2][j][c] = s12 + 4.f * s34;
                u[3][j][c] = d12 + 8.f * d34 + a5;
            }
        }
        // (A^T m) A + bias: along the columns, written to y
        for (int i = 0; i < 4; i++) {
            if (oy + i >= H) break;
            alignas(64) float v[4][CB];
#pragma omp simd
            for (int c = 0; c < CB; c++) {
                const float a0 = u[i][0][c], a1 = u[i][1][c], a2 = u[i][2][c], a3 = u[i][3][c],
                            a4 = u[i][4][c], a5 = u[i][5][c];
                const float s12 = a1 + a2, d12 = a1 - a2, s34 = a3 + a4, d34 = a3 - a4;
                v[0][c] = a0 + s12 + s34 + b[c];
                v[1][c] = d12 + 2.f * d34 + b[c];
                v[2][c] = s12 + 4.f * s34 + b[c];
                v[3][c] = d12 + 8.f * d34 + a5 + b[c];
            }
            float* dst = y + (((int64_t)n * Ho + (oy + i) * up + py) * Wo + ox * up + px) * Oc + oc0;
            for (int j = 0; j < 4 && ox + j < W; j++)
                std::memcpy(dst + (int64_t)j * up * Oc, v[j], sizeof(float) * ob);
        }
    }
}

}  // namespace


// ---------------------------------------------------------------------------------------------- conv
// U: [36, C, Oc * up²] (innermost: the output channels, phase-major for up == 2). y: [N, up H, up W, Oc].
// Returns 0, 1 for bad sizes, 2 when a thread's scratch cannot be had.
namespace {


// Cm[r][o] = sum_k A[r][k] B[k][o] for 8 rows, all O columns. A: rows of lda, B: [K][O], Cm: rows of ldc.
inline void gemm_rows8(const float* A, int lda, const float* B, int K, int O, float* Cm, int ldc) {
    int o0 = 0;
#if defined(__AVX512F__)
    for (; o0 + 32 <= O; o0 += 32) {
        __m512 c[8][2];
        for (int r = 0; r < 8; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
        const float* b = B + o0;
        for (int k = 0; k < K; k++, b += O) {
            const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            for (int r = 0; r < 8; r++) {
                const __m512 a = _mm512_set1_ps(A[(int64_t)r * lda + k]);
                c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
            }
        }
        for (int r = 0; r < 8; r++) {
            _mm512_storeu_ps(Cm + (int64_t)r * ldc + o0, c[r][0]);
            _mm512_storeu_ps(Cm + (int64_t)r * ldc + o0 + 16, c[r][1]);
        }
    }
    for (; o0 + 16 <= O; o0 += 16) {
        __m512 c[8];
        for (int r = 0; r < 8; r++) c[r] = _mm512_setzero_ps();
        const float* b = B + o0;
        for (int k = 0; k < K; k++, b += O) {
            const __m512 b0 = _mm512_loadu_ps(b);
            for (int r = 0; r < 8; r++) c[r] = _mm512_fmadd_ps(_mm512_set1_ps(A[(int64_t)r * lda + k]), b0, c[r]);
        }
        for (int r = 0; r < 8; r++) _mm512_storeu_ps(Cm + (int64_t)r * ldc + o0, c[r]);
    }
#endif
    if (o0 < O) {              // the columns left (or all of them without AVX-512)
        for (int r = 0; r < 8; r++) {
            float* cr = Cm + (int64_t)r * ldc;
            for (int o = o0; o < O; o++) cr[o] = 0.f;
            for (int k = 0; k < K; k++) {
                const float a = A[(int64_t)r * lda + k];
                const float* b = B + (int64_t)k * O;
#pragma omp simd
                for (int o = o0; o < O; o++) cr[o] += a * b[o];
            }
        }
    }
}

std::vector<float>& thread_scratch() {
    static thread_local std::vector<float> buf;
    return buf;
}

}  // namespace

PV3D_EXPORT int pv3d_wino_conv(const float* x, int N, int H, int W, int C, const float* U, const float* bias, int Oc,
                               int up, float* y, int nthreads, int tiles_per_block) {
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || Oc <= 0 || (up != 1 && up != 2) || tiles_per_block < 0 ||
        tiles_per_block % 8 != 0 || tiles_per_block > 256)
        return 1;
    const int O = Oc * up * up;
    const int64_t T = tiles_of(N, H, W);
    int TB = tiles_per_block;
    if (TB == 0) {
        // Small blocks keep V and the products in L1/L2 while U sits in the cache; a U too large for it
        // (36 x C x O floats over 8 MB: 512 channels) is streamed once per block, so blocks grow with it
        // (512 x 512 at 64²: 8 tiles 139 ms, 16: 78, 64: 41, 128: 37). Each thread gets at least a block.
        const double u_bytes = 36.0 * C * O * sizeof(float);
        TB = u_bytes <= 8e6 ? 8 : std::min(128, 8 * (int)((u_bytes / 300e3 + 7) / 8));
        const int per_thread = (int)std::min<int64_t>(128, T / std::max(1, nthreads)) / 8 * 8;
        TB = std::max(8, std::min(TB, per_thread));
    }
    const int64_t blocks = (T + TB - 1) / TB;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<float>& buf = thread_scratch();
        const size_t need = (size_t)36 * TB * (C + O);
        bool ok = true;
        try {
            if (buf.size() < need) buf.resize(need);
        } catch (...) {
            ok = false;
        }
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        float* V = ok ? buf.data() : nullptr;
        float* M = ok ? buf.data() + (size_t)36 * TB * C : nullptr;
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < blocks; blk++) {
            if (!ok) continue;
            const int64_t t0 = blk * TB;
            const int64_t count = std::min<int64_t>(TB, T - t0);
            // V: [36][TB][C], rows past count zero
            for (int64_t k = 0; k < count; k++) input_tile(x, N, H, W, C, t0 + k, k, TB, V);
            for (int q = 0; q < 36 && count < TB; q++)
                std::memset(V + ((size_t)q * TB + count) * C, 0, sizeof(float) * (TB - count) * C);
            for (int q = 0; q < 36; q++)
                for (int r0 = 0; r0 < TB; r0 += 8)
                    gemm_rows8(V + ((size_t)q * TB + r0) * C, C, U + (size_t)q * C * O, C, O,
                               M + ((size_t)q * TB + r0) * O, O);
            for (int64_t k = 0; k < count; k++) output_tile(M, bias, N, H, W, O, Oc, up, t0 + k, k, TB, y);
        }
    }
    return failed ? 2 : 0;
}

// ---------------------------------------------------------------------------------------------- weight
// U[q][i][o] = (G w[o][i] G^T)[q / 6][q % 6] for a 3x3 weight w[o][i][k] (k = 3 ky + kx) at element strides
// so, si, sk (a contiguous weight: 9I, 9, 1; a channels-last one: 9I, 1, I). In blocks of 16 x 16
// (out, in) pairs, vectorised over the output channels so that U's rows (the output channels) are
// written whole. A motion layer's weight is new every frame: this takes its
// transform from 0.39 ms (PyTorch: a strided copy and a product) to a fraction of that.
PV3D_EXPORT int pv3d_wino_weight(const float* w, int O, int I, int64_t so, int64_t si, int64_t sk, float* U,
                                 int nthreads) {
    if (O <= 0 || I <= 0) return 1;
    constexpr int BL = 16;
    const int ob_n = (O + BL - 1) / BL, ib_n = (I + BL - 1) / BL;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int blk = 0; blk < ob_n * ib_n; blk++) {
        const int o0 = (blk / ib_n) * BL, i0 = (blk % ib_n) * BL;
        const int on = std::min(BL, O - o0), in = std::min(BL, I - i0);
        alignas(64) float out[36][BL][BL];       // [q][i][o]
        for (int il = 0; il < in; il++) {
            alignas(64) float g[9][BL];             // lanes: output channels (a gather at stride so)
            const float* src = w + (int64_t)o0 * so + (int64_t)(i0 + il) * si;
            for (int k = 0; k < 9; k++) {
#pragma omp simd
                for (int ol = 0; ol < BL; ol++) g[k][ol] = ol < on ? src[(int64_t)ol * so + (int64_t)k * sk] : 0.f;
            }
            alignas(64) float t[6][3][BL];           // G g: along ky
            for (int c = 0; c < 3; c++) {
#pragma omp simd
                for (int ol = 0; ol < BL; ol++) {
                    const float g0 = g[c][ol], g1 = g[3 + c][ol], g2 = g[6 + c][ol];
                    t[0][c][ol] = 0.25f * g0;
                    t[1][c][ol] = -(g0 + g1 + g2) / 6.f;
                    t[2][c][ol] = -(g0 - g1 + g2) / 6.f;
                    t[3][c][ol] = g0 / 24.f + g1 / 12.f + g2 / 6.f;
                    t[4][c][ol] = g0 / 24.f - g1 / 12.f + g2 / 6.f;
                    t[5][c][ol] = g2;
                }
            }
            for (int a = 0; a < 6; a++) {            // (G g) G^T: along kx
#pragma omp simd
                for (int ol = 0; ol < BL; ol++) {
                    const float g0 = t[a][0][ol], g1 = t[a][1][ol], g2 = t[a][2][ol];
                    out[a * 6 + 0][il][ol] = 0.25f * g0;
                    out[a * 6 + 1][il][ol] = -(g0 + g1 + g2) / 6.f;
                    out[a * 6 + 2][il][ol] = -(g0 - g1 + g2) / 6.f;
                    out[a * 6 + 3][il][ol] = g0 / 24.f + g1 / 12.f + g2 / 6.f;
                    out[a * 6 + 4][il][ol] = g0 / 24.f - g1 / 12.f + g2 / 6.f;
                    out[a * 6 + 5][il][ol] = g2;
                }
            }
        }
        for (int q = 0; q < 36; q++)
            for (int il = 0; il < in; il++)
                std::memcpy(U + ((int64_t)q * I + i0 + il) * O + o0, out[q][il], sizeof(float) * on);
    }
    return 0;
}
