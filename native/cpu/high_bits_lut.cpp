// ZipperQuant's CPU kernel: Y[M, N] = X[M, K] . W_hi^T for the sparse high-order bits of a bit-split weight.
//
//   W_hi[n, k] = 2^L * v_hi[n, k] * s[n, k / group_size],  v_hi in [-2^(H-1), 2^(H-1)], mostly 0
//   (H = B - L high bits of a B-bit code split around a signed low field: 6 / 4 bits give v_hi in -2..2)
//   stored as CSR over rows n: indptr [N + 1], indices (k, ascending in a row) [nnz], codes (v_hi != 0) [nnz]
//
// Lookup table: v_hi takes only 2^H nonzero values (4 for H = 2), so every product v * X[m, k] is
// computed once per call into T[k][v][m] (a chunk of MT tokens at a time) and reused by every row that has
// a high-order bit in column k. A row then only looks up and accumulates:
//   Y[m, n] = 2^L sum_k s[n, g(k)] T[k][v_hi(n, k)][m]   (MT tokens side by side: SIMD over m)
// No code is dequantized and no product of X is recomputed per row; the per-group scale is one FMA per
// nonzero (folding it once per group of nonzeros branches at every group change: slower at ~1 nonzero per group).
// lut=false is the baseline it is measured against: X transposed into T[k][m] and the code multiplied per nonzero.
// Rows are split over at::parallel_for (torch's intra-op threads). Contents of indptr / indices / codes are
// validated once where the weight is built (mosaic_exp.formats.BitSplitWeight), not per call.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <vector>

// Argument errors as std::invalid_argument (Python ValueError), not TORCH_CHECK's c10::Error: on the H100 host
// (another torch and compiler) a c10::Error thrown out of this module crashed the interpreter (session 22).
#define MOSAIC_CHECK(cond, ...)                                          \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::ostringstream mosaic_msg_;                                    \
      mosaic_append(mosaic_msg_, "high_bits_mm: ", __VA_ARGS__);         \
      throw std::invalid_argument(mosaic_msg_.str());                    \
    }                                                                    \
  } while (0)

template <typename... Args>
void mosaic_append(std::ostringstream& os, const Args&... args) {
  (os << ... << args);
}

namespace {

template <int MT, bool LUT>
void high_bits_chunk(const float* x, int64_t K, int64_t m0, int64_t mt, const int32_t* indptr,
                     const int32_t* indices, const int8_t* codes, const float* scales, int64_t G,
                     int64_t group_size, int gshift, int ncodes, int offset, float step, float* table, float* y,
                     int64_t N) {
  // LUT: T[(k * ncodes + c) * MT + i] = (c - offset) * X[m0 + i, k]; direct: T[k * MT + i] = X[m0 + i, k]
  // (ncodes = 1, the code multiplied per nonzero). Tokens past mt stay 0. Direct with one token reads X's row
  // itself (T would be a copy of it: one parallel region less per call).
  if constexpr (!LUT && MT == 1) table = const_cast<float*>(x + m0 * K);
  else at::parallel_for(0, K, 256, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      float xv[MT];
      for (int i = 0; i < MT; ++i) xv[i] = i < mt ? x[(m0 + i) * K + k] : 0.f;
      for (int c = 0; c < ncodes; ++c) {
        float* t = table + (k * ncodes + c) * MT;
        const float v = LUT ? static_cast<float>(c - offset) : 1.f;
        for (int i = 0; i < MT; ++i) t[i] = v * xv[i];
      }
    }
  });
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float out[MT] = {0.f};
      const float* srow = scales + n * G;
      for (int64_t j = indptr[n]; j < indptr[n + 1]; ++j) {
        const int64_t k = indices[j];
        // the group's scale per nonzero, branch-free (a fold per group of nonzeros mispredicts at ~1 per group)
        float s = srow[gshift >= 0 ? (k >> gshift) : (k / group_size)];
        const float* t;
        if constexpr (LUT) {
          t = table + (k * ncodes + (codes[j] + offset)) * MT;
        } else {
          s *= static_cast<float>(codes[j]);
          t = table + k * MT;
        }
        for (int i = 0; i < MT; ++i) out[i] += s * t[i];
      }
      for (int64_t i = 0; i < mt; ++i) y[(m0 + i) * N + n] = step * out[i];
    }
  });
}

}  // namespace

// x float32 [M, K] contiguous; indptr int32 [N + 1]; indices int32 [nnz]; codes int8 [nnz];
// scales float32 [N, G] with G = ceil(K / group_size); returns float32 [M, N].
torch::Tensor high_bits_mm(torch::Tensor x, torch::Tensor indptr, torch::Tensor indices, torch::Tensor codes,
                           torch::Tensor scales, int64_t group_size, int64_t low_bits, int64_t high_bits,
                           bool lut) {
  MOSAIC_CHECK(x.device().is_cpu() && indptr.device().is_cpu() && indices.device().is_cpu() &&
                  codes.device().is_cpu() && scales.device().is_cpu(),
              "every tensor must be on the CPU");
  MOSAIC_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
              "x must be a contiguous float32 [M, K] tensor, got ", x.scalar_type(), " ", x.sizes());
  const int64_t M = x.size(0), K = x.size(1);
  MOSAIC_CHECK(indptr.dim() == 1 && indptr.scalar_type() == torch::kInt32 && indptr.is_contiguous() &&
                  indptr.size(0) >= 1,
              "indptr must be a contiguous int32 [N + 1] tensor, got ", indptr.sizes());
  const int64_t N = indptr.size(0) - 1;
  MOSAIC_CHECK(indices.dim() == 1 && indices.scalar_type() == torch::kInt32 && indices.is_contiguous() &&
                  codes.dim() == 1 && codes.scalar_type() == torch::kInt8 && codes.is_contiguous() &&
                  codes.size(0) == indices.size(0),
              "indices (int32) and codes (int8) must be contiguous 1-D of one length, got ",
              indices.sizes(), " and ", codes.sizes());
  MOSAIC_CHECK(group_size > 0, "group_size must be positive (per-channel: K), got ", group_size,
              " (m=", M, ", n=", N, ", k=", K, ")");
  const int64_t G = (K + group_size - 1) / group_size;
  MOSAIC_CHECK(scales.dim() == 2 && scales.scalar_type() == torch::kFloat32 && scales.is_contiguous() &&
                  scales.size(0) == N && scales.size(1) == G,
              "scales must be contiguous float32 [N, G] = [", N, ", ", G, "] for m=", M, ", n=", N,
              ", k=", K, ", group_size=", group_size, "; got ", scales.scalar_type(), " ", scales.sizes());
  MOSAIC_CHECK(low_bits >= 1 && low_bits <= 7 && high_bits >= 1 && high_bits <= 4,
              "low_bits in 1..7 and high_bits in 1..4, got ", low_bits, " and ", high_bits);
  auto y = torch::zeros({M, N}, x.options());
  if (M == 0 || N == 0 || indices.size(0) == 0) return y;
  // table slots c = v_hi + 2^(H-1) for v_hi in [-2^(H-1), 2^(H-1)]
  const int ncodes = lut ? (1 << high_bits) + 1 : 1, offset = lut ? 1 << (high_bits - 1) : 0;
  // group of column k: a shift for power-of-two groups (and 0 for one group), else a division
  int gshift = -1;
  if (G == 1) gshift = 62;
  else if ((group_size & (group_size - 1)) == 0) { gshift = 0; while ((int64_t{1} << gshift) < group_size) ++gshift; }
  const float step = static_cast<float>(1 << low_bits);
  // a chunk of MT tokens at a time: 1 (decode) or 16 (SIMD over tokens); the table is K x (2^H + 1) x MT.
  // (A 4-token chunk for M = 2..4 measured slower than 16 with 12 idle lanes: 170-174 vs 122-127 us on a
  // 4096 x 4096 weight at 1 %, bench/results/zipperquant_cpu_chunk4_vs_16_20261207.txt.)
  const int64_t mt_max = M == 1 ? 1 : 16;
  std::vector<float> table(static_cast<size_t>(K * ncodes * mt_max));
  const float* xp = x.data_ptr<float>();
  for (int64_t m0 = 0; m0 < M; m0 += mt_max) {
    const int64_t mt = std::min(mt_max, M - m0);
    auto args = std::make_tuple(xp, K, m0, mt, indptr.data_ptr<int32_t>(), indices.data_ptr<int32_t>(),
                                codes.data_ptr<int8_t>(), scales.data_ptr<float>(), G, group_size, gshift, ncodes, offset,
                                step, table.data(), y.data_ptr<float>(), N);
    if (lut) {
      if (mt_max == 1) std::apply(high_bits_chunk<1, true>, args);
      else std::apply(high_bits_chunk<16, true>, args);
    } else {
      if (mt_max == 1) std::apply(high_bits_chunk<1, false>, args);
      else std::apply(high_bits_chunk<16, false>, args);
    }
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("ABI_VERSION") = 1;
  m.def("high_bits_mm", &high_bits_mm,
        "Y[M, N] = X[M, K] . W_hi^T for CSR high-order bits (lut: products from a lookup table; else the "
        "code multiplied per nonzero)", py::arg("x"), py::arg("indptr"), py::arg("indices"), py::arg("codes"),
        py::arg("scales"), py::arg("group_size"), py::arg("low_bits"), py::arg("high_bits"), py::arg("lut") = true,
        // no Python object is touched inside: the GIL is released, so BitSplitLinear's worker thread runs this
        // kernel while the main thread launches the GPU's dense part
        py::call_guard<py::gil_scoped_release>());
}
