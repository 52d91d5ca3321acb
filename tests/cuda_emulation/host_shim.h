// Host emulation of the few CUDA features used by cuda/triplane_render.cu, so that the tests can run
// the kernels' own source on the CPU (no GPU on developer machines and CI). Each emulated thread block
// runs its threads as std::threads (blocks one after another), so __syncthreads is a real barrier
// and __shared__ arrays (function statics here) are shared by the block's threads. No warp-level
// primitives are emulated: the kernels use none.
#pragma once
#define PV3D_HOST_EMULATION 1

#include <barrier>
#include <math.h>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct uint3 { unsigned x = 0, y = 0, z = 0; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
inline thread_local std::barrier<>* pv3d_block_barrier = nullptr;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline void __syncthreads() { pv3d_block_barrier->arrive_and_wait(); }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
// Round-to-nearest float ops (the build uses -ffp-contract=off, so nothing is fused).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }

inline float pv3d_host_half_to_float(unsigned h) {
    const unsigned sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    unsigned bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal half -> normal float
            int e = -1;
            unsigned m = man;
            do { m <<= 1; ++e; } while (!(m & 0x400u));
            bits = sign | (unsigned)(127 - 15 - e) << 23 | (m & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 112u) << 23 | man << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Run kernel(args...) over a 1-D grid.
template <class F>
void pv3d_emulate_launch(unsigned grid, unsigned block, F&& body) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar((std::ptrdiff_t)block);
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, b, t] {
                blockIdx = uint3{b, 0, 0};
                threadIdx = uint3{t, 0, 0};
                pv3d_block_barrier = &bar;
                body();
            });
        }
        for (auto& th : threads) th.join();
    }
}
