// Fused CPU forward of the modulated deformable convolution (DCNv2), float32, for inference.
//
// Same operator as torchvision::deform_conv2d (and the official DCNv2 kernel): per output pixel, deformable group g
// and kernel point k, the input is sampled bilinearly at p + p_k + offset_{g,k} (zero outside the image, per corner),
// multiplied by mask_{g,k}, and the samples of all (g, k, channel) are contracted with the weight.
// Unlike torchvision's CPU kernel (channel-by-channel im2col in NCHW), samples are gathered from a channels-last copy
// of the input so that each (pixel, g, k) reads 4 contiguous runs of C/G channels with one set of bilinear weights,
// written straight into a small per-thread column buffer for a 2-D tile of output pixels, which one GEMM turns into
// that tile's output.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace {

// Sample one tile of output pixels (rows [r0, r0+th) × columns [c0, c0+tw)) into cols (th·tw, G·K·Cg), row-major
// over the tile. x is one image channels-last (H, W, C); offset (2GK, Ho, Wo) and mask (GK, Ho, Wo) are read
// through their strides (channel, row, column), so NCHW and channels-last tensors are both read in place.
template <int64_t CG>  // channels per deformable group; 0 = any (known at compile time lets the loop vectorise fully)
void sample_tile(const float* x, const float* offset, const int64_t* os, const float* mask, const int64_t* ms,
                 float* cols, int64_t H, int64_t W, int64_t C, int64_t G, int64_t kh, int64_t kw, int64_t stride,
                 int64_t pad, int64_t dil, int64_t r0, int64_t th, int64_t c0, int64_t tw) {
  const int64_t K = kh * kw;
  const int64_t Cg = CG > 0 ? CG : C / G;
  const int64_t ncols = G * K * Cg;
  for (int64_t p = 0; p < th * tw; ++p) {
    const int64_t y = r0 + p / tw;
    const int64_t xo = c0 + p % tw;
    const float* off_pix = offset + y * os[1] + xo * os[2];
    const float* mask_pix = mask + y * ms[1] + xo * ms[2];
    float* dst_pixel = cols + p * ncols;
    for (int64_t g = 0; g < G; ++g) {
      const float* src_g = x + g * Cg;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t gk = g * K + k;
        float* dst = dst_pixel + gk * Cg;
        const float dy = off_pix[(2 * gk) * os[0]];
        const float dx = off_pix[(2 * gk + 1) * os[0]];
        const float m = mask_pix[gk * ms[0]];
        const float py = static_cast<float>(y * stride - pad + (k / kw) * dil) + dy;
        const float px = static_cast<float>(xo * stride - pad + (k % kw) * dil) + dx;
        if (!(py > -1.f && px > -1.f && py < static_cast<float>(H) && px < static_cast<float>(W))) {
          std::memset(dst, 0, sizeof(float) * Cg);
          continue;
        }
        const float fy = std::floor(py), fx = std::floor(px);
        const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
        const int64_t y1 = y0 + 1, x1 = x0 + 1;
        const float ly = py - fy, lx = px - fx, hy = 1.f - ly, hx = 1.f - lx;
        // a corner outside the image contributes zero; its (clamped) address is read but weighted by 0
        const bool vy0 = y0 >= 0, vy1 = y1 <= H - 1, vx0 = x0 >= 0, vx1 = x1 <= W - 1;
        const float w00 = (vy0 && vx0) ? hy * hx * m : 0.f;
        const float w01 = (vy0 && vx1) ? hy * lx * m : 0.f;
        const float w10 = (vy1 && vx0) ? ly * hx * m : 0.f;
        const float w11 = (vy1 && vx1) ? ly * lx * m : 0.f;
        const int64_t cy0 = std::max<int64_t>(y0, 0), cy1 = std::min<int64_t>(y1, H - 1);
        const int64_t cx0 = std::max<int64_t>(x0, 0), cx1 = std::min<int64_t>(x1, W - 1);
        const float* s00 = src_g + (cy0 * W + cx0) * C;
        const float* s01 = src_g + (cy0 * W + cx1) * C;
        const float* s10 = src_g + (cy1 * W + cx0) * C;
        const float* s11 = src_g + (cy1 * W + cx1) * C;
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c) {
          dst[c] = w00 * s00[c] + w01 * s01[c] + w10 * s10[c] + w11 * s11[c];
        }
      }
    }
  }
}

using SampleFn = decltype(&sample_tile<0>);

SampleFn pick_sampler(int64_t Cg) {
  switch (Cg) {
    case 8: return sample_tile<8>;
    case 16: return sample_tile<16>;
    case 32: return sample_tile<32>;
    case 64: return sample_tile<64>;
    default: return sample_tile<0>;
  }
}

}  // namespace

// x (N, C, H, W) any layout; offset (N, 2GK, Ho, Wo) and mask (N, GK, Ho, Wo); weight (Cout, C, kh, kw).
// Returns (N, Cout, Ho, Wo), channels-last when x is, else contiguous. The output is cut into 2-D tiles whose
// column buffer is at most max_cols_bytes (at least one pixel): each thread samples a tile (its samples then sit in
// that core's cache), multiplies it with the weight and writes the tile's output.
torch::Tensor modulated_deform_conv2d_forward(torch::Tensor x, torch::Tensor offset, torch::Tensor mask,
                                              torch::Tensor weight, c10::optional<torch::Tensor> bias,
                                              int64_t stride, int64_t pad, int64_t dil, int64_t max_cols_bytes) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "fused DCN: float32 CPU tensors only");
  TORCH_CHECK(offset.scalar_type() == at::kFloat && mask.scalar_type() == at::kFloat &&
                  weight.scalar_type() == at::kFloat, "fused DCN: float32 offset, mask and weight only");
  TORCH_CHECK(x.dim() == 4 && offset.dim() == 4 && mask.dim() == 4 && weight.dim() == 4, "fused DCN: 4-D tensors");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cout = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t K = kh * kw;
  const int64_t Ho = offset.size(2), Wo = offset.size(3);
  TORCH_CHECK(weight.size(1) == C, "fused DCN: weight expects ", weight.size(1), " input channels, input has ", C);
  TORCH_CHECK(offset.size(1) % (2 * K) == 0, "fused DCN: offset channels must be 2·G·", K);
  const int64_t G = offset.size(1) / (2 * K);
  TORCH_CHECK(G > 0 && C % G == 0, "fused DCN: channels not divisible by deformable groups");
  TORCH_CHECK(offset.size(0) == N && mask.size(0) == N && mask.size(1) == G * K && mask.size(2) == Ho &&
                  mask.size(3) == Wo, "fused DCN: offset/mask shape");
  const int64_t Cg = C / G;

  at::Tensor xl = x.permute({0, 2, 3, 1}).contiguous();  // (N, H, W, C): free when x is channels-last
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  const int64_t os[3] = {offset.stride(1), offset.stride(2), offset.stride(3)};
  const int64_t ms[3] = {mask.stride(1), mask.stride(2), mask.stride(3)};
  // weight columns in the buffer's order (g, k, c): (Cout, G, Cg, K) -> (Cout, G, K, Cg)
  at::Tensor wmat = weight.reshape({Cout, G, Cg, K}).permute({0, 1, 3, 2}).reshape({Cout, G * K * Cg}).contiguous();

  const int64_t ncols = G * K * Cg;
  const int64_t max_pixels = std::max<int64_t>(1, max_cols_bytes / (ncols * static_cast<int64_t>(sizeof(float))));
  const int64_t tw = std::max<int64_t>(1, std::min<int64_t>({Wo, max_pixels, 32}));
  const int64_t th = std::max<int64_t>(1, std::min<int64_t>(Ho, max_pixels / tw));
  const int64_t tiles_y = (Ho + th - 1) / th, tiles_x = (Wo + tw - 1) / tw;
  const int64_t tiles = N * tiles_y * tiles_x;

  at::Tensor out = at::empty({N, Cout, Ho, Wo}, x.options().memory_format(
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  at::Tensor bias_f = (bias.has_value() && bias->defined()) ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const SampleFn sample = pick_sampler(Cg);
  const float* xp = xl.data_ptr<float>();
  const float* op = offset.data_ptr<float>();
  const float* mp = mask.data_ptr<float>();

  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode guard;  // worker threads do not inherit the caller's mode; nothing here needs autograd
    // per-thread scratch: the tile's columns and its GEMM result ((pixels, Cout) for NHWC output, else transposed)
    at::Tensor cols = at::empty({th * tw, ncols}, x.options());
    at::Tensor res = channels_last ? at::empty({th * tw, Cout}, x.options()) : at::empty({Cout, th * tw}, x.options());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / (tiles_y * tiles_x);
      const int64_t ty = (t / tiles_x) % tiles_y, tx = t % tiles_x;
      const int64_t r0 = ty * th, c0 = tx * tw;
      const int64_t rh = std::min(th, Ho - r0), cw = std::min(tw, Wo - c0);
      sample(xp + n * H * W * C, op + n * offset.stride(0), os, mp + n * mask.stride(0), ms, cols.data_ptr<float>(),
             H, W, C, G, kh, kw, stride, pad, dil, r0, rh, c0, cw);
      at::Tensor cols_t = cols.narrow(0, 0, rh * cw);
      if (channels_last) {  // (pixels, Cout) rows go straight to the NHWC output
        at::Tensor res_t = res.narrow(0, 0, rh * cw);
        if (bias_f.defined()) {
          at::addmm_out(res_t, bias_f.view({1, Cout}), cols_t, wmat.t());
        } else {
          at::mm_out(res_t, cols_t, wmat.t());
        }
        out[n].permute({1, 2, 0}).narrow(0, r0, rh).narrow(1, c0, cw).copy_(res_t.view({rh, cw, Cout}));
      } else {
        at::Tensor res_t = res.narrow(1, 0, rh * cw);
        if (bias_f.defined()) {
          at::addmm_out(res_t, bias_f.view({Cout, 1}), wmat, cols_t.t());
        } else {
          at::mm_out(res_t, wmat, cols_t.t());
        }
        out[n].narrow(1, r0, rh).narrow(2, c0, cw).copy_(res_t.view({Cout, rh, cw}));
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulated_deform_conv2d_forward", &modulated_deform_conv2d_forward,
        "Fused modulated deformable conv forward (float32, CPU, inference)");
}
