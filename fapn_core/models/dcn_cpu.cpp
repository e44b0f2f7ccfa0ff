// Fused CPU forward of the modulated deformable convolution (DCNv2), float32, for inference.
//
// Same operator as torchvision::deform_conv2d (and the official DCNv2 kernel): per output pixel, deformable group g
// and kernel point k, the input is sampled bilinearly at p + p_k + offset_{g,k} (zero outside the image, per corner),
// multiplied by mask_{g,k}, and the samples of all (g, k, channel) are contracted with the weight.
// Unlike torchvision's CPU kernel (channel-by-channel im2col in NCHW), samples are gathered from a group-planar copy
// of the input, (G, H, W, C/G), so that each (pixel, g, k) reads 4 contiguous runs of C/G channels (one cache line
// each at FaPN's 16) with one set of bilinear weights, and one group's neighbouring pixels are neighbouring lines.
// The bilinear corners of a row of pixels are computed at once in SIMD, offset/mask rows are prefetched a few steps
// ahead, and the samples go straight into a small per-thread column buffer for a 2-D tile of output pixels, which
// one GEMM turns into that tile's output.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace {

// Widest tile the sampler handles (its per-row corner arrays live on the stack).
constexpr int64_t kMaxTileWidth = 32;
// How many (group, row, kernel point) steps ahead the sampler prefetches offset and mask rows.
constexpr int64_t kPrefetchSteps = 4;

// Bilinear corners of one row of tw ≤ kMaxTileWidth samples: for sample j at (base_y + dy_j, base_x + j·stride + dx_j)
// with modulation m_j, the four corner addresses (into one group's (H, W, Cg) plane) and weights (bilinear · m).
// A sample outside (-1, H) × (-1, W), or with a NaN offset, gets four zero weights (torchvision's rule), and a corner
// outside the image gets weight 0 and a clamped, readable address. Branch-free (bitwise &, selects) so the loop
// vectorises across samples; kUnit: offsets and masks are contiguous along the row (NCHW), plain vector loads.
struct Corners {
  alignas(64) int32_t i00[kMaxTileWidth], i01[kMaxTileWidth], i10[kMaxTileWidth], i11[kMaxTileWidth];
  alignas(64) float w00[kMaxTileWidth], w01[kMaxTileWidth], w10[kMaxTileWidth], w11[kMaxTileWidth];
};

template <bool kUnit>
inline void row_corners(Corners& c, const float* __restrict off_y, const float* __restrict off_x,
                        const float* __restrict msk, int64_t os, int64_t ms, int64_t tw, float base_y, int64_t base_x,
                        int64_t stride, int32_t H, int32_t W, int32_t Cg) {
  const float Hf = static_cast<float>(H), Wf = static_cast<float>(W);
#pragma omp simd
  for (int64_t j = 0; j < tw; ++j) {
    const float py = base_y + off_y[kUnit ? j : j * os];
    const float px = static_cast<float>(base_x + j * stride) + off_x[kUnit ? j : j * os];
    const float m_raw = msk[kUnit ? j : j * ms];
    const bool inside = (py > -1.f) & (px > -1.f) & (py < Hf) & (px < Wf);  // false for NaN
    const float qy = inside ? py : 0.f, qx = inside ? px : 0.f;
    const float m = inside ? m_raw : 0.f;
    // floor via truncation (|q| < max(H, W), exact in int32), which vectorises where floorf does not
    const int32_t ty = static_cast<int32_t>(qy), tx = static_cast<int32_t>(qx);
    const int32_t y0 = ty - (static_cast<float>(ty) > qy), x0 = tx - (static_cast<float>(tx) > qx);
    const float fy = static_cast<float>(y0), fx = static_cast<float>(x0);
    const float ly = qy - fy, lx = qx - fx, hy = 1.f - ly, hx = 1.f - lx;
    const bool vy0 = y0 >= 0, vy1 = y0 + 1 <= H - 1, vx0 = x0 >= 0, vx1 = x0 + 1 <= W - 1;
    c.w00[j] = (vy0 & vx0) ? hy * hx * m : 0.f;
    c.w01[j] = (vy0 & vx1) ? hy * lx * m : 0.f;
    c.w10[j] = (vy1 & vx0) ? ly * hx * m : 0.f;
    c.w11[j] = (vy1 & vx1) ? ly * lx * m : 0.f;
    const int32_t cy0 = vy0 ? y0 : 0, cy1 = vy1 ? y0 + 1 : H - 1;
    const int32_t cx0 = vx0 ? x0 : 0, cx1 = vx1 ? x0 + 1 : W - 1;
    c.i00[j] = (cy0 * W + cx0) * Cg;  // < H·W·Cg < 2^31, checked by the caller
    c.i01[j] = (cy0 * W + cx1) * Cg;
    c.i10[j] = (cy1 * W + cx0) * Cg;
    c.i11[j] = (cy1 * W + cx1) * Cg;
  }
}

// Sample one tile of output pixels (rows [r0, r0+th) × columns [c0, c0+tw), tw ≤ kMaxTileWidth) into
// cols (th·tw, G·K·Cg), row-major over the tile. x is one image laid out group-planar (G, H, W, Cg): one group's
// channels at neighbouring pixels are neighbouring cache lines. offset (2GK, Ho, Wo) and mask (GK, Ho, Wo) are read
// through their strides (channel, row, column), so NCHW and channels-last tensors are both read in place.
// Per group, tile row and kernel point: the row's corners at once (row_corners), then a gather of Cg-channel runs.
template <int64_t CG>  // channels per deformable group; 0 = any (known at compile time lets the loop vectorise fully)
void sample_tile(const float* x, const float* offset, const int64_t* os, const float* mask, const int64_t* ms,
                 float* cols, int64_t H, int64_t W, int64_t C, int64_t G, int64_t kh, int64_t kw, int64_t stride,
                 int64_t pad, int64_t dil, int64_t r0, int64_t th, int64_t c0, int64_t tw) {
  const int64_t K = kh * kw;
  const int64_t Cg = CG > 0 ? CG : C / G;
  const int64_t ncols = G * K * Cg;
  const bool unit = os[2] == 1 && ms[2] == 1;
  const int64_t steps = G * th * K;  // (group, tile row, kernel point), group outermost
  Corners cr;
  for (int64_t q = 0; q < steps; ++q) {
    const int64_t g = q / (th * K), r = (q / K) % th, k = q % K;
    const int64_t y = r0 + r, gk = g * K + k;
    if (unit && q + kPrefetchSteps < steps) {
      // the offset and mask rows of a later step: the DCN reads 3·G·K channel rows per tile row, too many
      // streams for the hardware prefetcher, so without this nearly every one of them is a cache miss
      const int64_t q2 = q + kPrefetchSteps;
      const int64_t y2 = r0 + (q2 / K) % th, gk2 = (q2 / (th * K)) * K + q2 % K;
      const float* rows[3] = {offset + (2 * gk2) * os[0] + y2 * os[1] + c0, offset + (2 * gk2 + 1) * os[0] + y2 * os[1] + c0,
                              mask + gk2 * ms[0] + y2 * ms[1] + c0};
      for (const float* row : rows) {
        for (int64_t j = 0; j < tw; j += 16) __builtin_prefetch(row + j);
        __builtin_prefetch(row + tw - 1);
      }
    }
    const float* off_y = offset + (2 * gk) * os[0] + y * os[1] + c0 * os[2];
    const float* msk = mask + gk * ms[0] + y * ms[1] + c0 * ms[2];
    const float base_y = static_cast<float>(y * stride - pad + (k / kw) * dil);
    const int64_t base_x = c0 * stride - pad + (k % kw) * dil;
    if (unit) {
      row_corners<true>(cr, off_y, off_y + os[0], msk, 1, 1, tw, base_y, base_x, stride, H, W, Cg);
    } else {
      row_corners<false>(cr, off_y, off_y + os[0], msk, os[2], ms[2], tw, base_y, base_x, stride, H, W, Cg);
    }
    // one group's samples read only its own (H, W, Cg) plane
    const float* src_g = x + g * H * W * Cg;
    float* dst = cols + r * tw * ncols + gk * Cg;
    for (int64_t j = 0; j < tw; ++j, dst += ncols) {
      const float* s00 = src_g + cr.i00[j];
      const float* s01 = src_g + cr.i01[j];
      const float* s10 = src_g + cr.i10[j];
      const float* s11 = src_g + cr.i11[j];
      const float a = cr.w00[j], b = cr.w01[j], c = cr.w10[j], d = cr.w11[j];
#pragma omp simd
      for (int64_t ch = 0; ch < Cg; ++ch) {
        dst[ch] = a * s00[ch] + b * s01[ch] + c * s10[ch] + d * s11[ch];
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
  TORCH_CHECK(H * W * Cg < (int64_t{1} << 31), "fused DCN: input of ", H, "x", W, " with ", Cg,
              " channels per deformable group is too large (sample addresses are 32-bit)");

  at::Tensor xl = x.reshape({N, G, Cg, H, W}).permute({0, 1, 3, 4, 2}).contiguous();  // (N, G, H, W, Cg)
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  const int64_t os[3] = {offset.stride(1), offset.stride(2), offset.stride(3)};
  const int64_t ms[3] = {mask.stride(1), mask.stride(2), mask.stride(3)};
  // weight columns in the buffer's order (g, k, c): (Cout, G, Cg, K) -> (Cout, G, K, Cg)
  at::Tensor wmat = weight.reshape({Cout, G, Cg, K}).permute({0, 1, 3, 2}).reshape({Cout, G * K * Cg}).contiguous();

  const int64_t ncols = G * K * Cg;
  const int64_t max_pixels = std::max<int64_t>(1, max_cols_bytes / (ncols * static_cast<int64_t>(sizeof(float))));
  const int64_t tw = std::max<int64_t>(1, std::min<int64_t>({Wo, max_pixels, kMaxTileWidth}));
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
