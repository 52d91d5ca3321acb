// Builds cuda/triplane_render.cu for the CPU (see host_shim.h) and exports one C entry point per
// kernel: emu_<kernel>(grid, block, <the kernel's arguments>).
#include "host_shim.h"
#include PV3D_KERNEL_SOURCE

extern "C" void emu_pv3d_decode_f32(unsigned grid, unsigned block, const float* planes, int H, int W,
                                    const float* params, const float* origins, const float* dirs,
                                    const float* depths, int depth_ray_stride, int samples_per_ray,
                                    int rays_per_batch, int n_rays, int use_rays, double coord_scale,
                                    float* out_sigma, float* out_feat) {
    pv3d_emulate_launch(grid, block, [&] {
        pv3d_decode_f32(planes, H, W, params, origins, dirs, depths, depth_ray_stride, samples_per_ray,
                        rays_per_batch, n_rays, use_rays, coord_scale, out_sigma, out_feat);
    });
}

extern "C" void emu_pv3d_decode_f16(unsigned grid, unsigned block, const unsigned short* planes, int H, int W,
                                    const float* params, const float* origins, const float* dirs,
                                    const float* depths, int depth_ray_stride, int samples_per_ray,
                                    int rays_per_batch, int n_rays, int use_rays, double coord_scale,
                                    float* out_sigma, float* out_feat) {
    pv3d_emulate_launch(grid, block, [&] {
        pv3d_decode_f16(planes, H, W, params, origins, dirs, depths, depth_ray_stride, samples_per_ray,
                        rays_per_batch, n_rays, use_rays, coord_scale, out_sigma, out_feat);
    });
}

extern "C" void emu_pv3d_importance(unsigned grid, unsigned block, const float* depths_c, int c_ray_stride,
                                    const float* values, int values_are_weights, const float* u,
                                    int u_ray_stride, int n_rays, int n_c, int n_f, int sort_output,
                                    float* out_depths) {
    pv3d_emulate_launch(grid, block, [&] {
        pv3d_importance(depths_c, c_ray_stride, values, values_are_weights, u, u_ray_stride, n_rays, n_c, n_f,
                        sort_output, out_depths);
    });
}

extern "C" void emu_pv3d_composite(unsigned grid, unsigned block, const float* depths_a, int a_ray_stride,
                                   const float* sigma_a, const float* feat_a, int n_a, const float* depths_b,
                                   const float* sigma_b, const float* feat_b, int n_b, const float* bounds,
                                   int n_rays, int n_channels, float* out_rgb, float* out_depth, float* out_wsum,
                                   float* out_weights, int write_weights) {
    pv3d_emulate_launch(grid, block, [&] {
        pv3d_composite(depths_a, a_ray_stride, sigma_a, feat_a, n_a, depths_b, sigma_b, feat_b, n_b, bounds, n_rays,
                       n_channels, out_rgb, out_depth, out_wsum, out_weights, write_weights);
    });
}
