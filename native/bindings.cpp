// Thin pybind11 binding of the ZipperEngine kernels.
// Tensors arrive as raw device pointers (tensor.data_ptr()) plus sizes: no libtorch ABI, so the
// module builds with nvcc + pybind11 alone. The Python wrapper (mosaic_exp/kernels/ops.py) checks
// dtypes/devices/shapes of the tensors; this layer re-checks everything it can see (sizes,
// pointer alignment, null pointers, config/mode/dtype codes) and raises ValueError naming m, n, k.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "zipper.cuh"

namespace py = pybind11;

namespace {

std::string shape_str(long m, long n, long k) {
  std::ostringstream os;
  os << "(m=" << m << ", n=" << n << ", k=" << k << ")";
  return os.str();
}

[[noreturn]] void fail(long m, long n, long k, const std::string& why) {
  throw py::value_error("zipper gemm " + shape_str(m, n, k) + ": " + why);
}

void check_ptr(long m, long n, long k, std::uintptr_t p, const char* name, bool required, int align) {
  if (p == 0) {
    if (required) fail(m, n, k, std::string(name) + " is a null pointer");
    return;
  }
  if (p % align) fail(m, n, k, std::string(name) + " is not " + std::to_string(align) + "-byte aligned");
}

// checks shared by both kernel families: sizes, padding of the packed weight, dtype code
void check_problem(long M, long N, long K, long Np, long Kp, int dtype) {
  if (M <= 0 || N <= 0 || K <= 0) fail(M, N, K, "m, n and k must be positive");
  if (M > (1L << 30) || N > (1L << 30) || K > (1L << 30)) fail(M, N, K, "dimension too large");
  if (K % 8) fail(M, N, K, "k must be a multiple of 8 (16-byte activation rows)");
  if (Np % 128 || Np < N || Np - N >= 128) fail(M, N, K, "padded n (" + std::to_string(Np) + ") is not N rounded up to 128");
  if (Kp % 64 || Kp < K || Kp - K >= 64) fail(M, N, K, "padded k (" + std::to_string(Kp) + ") is not K rounded up to 64");
  if (dtype != zipper::DT_FP16 && dtype != zipper::DT_BF16) fail(M, N, K, "dtype code must be 0 (fp16) or 1 (bf16)");
}

// programmatic dependent launch mode, one check for every family: 0 off, 1 trigger after griddepcontrol.wait,
// 3 after the mainloop (ops.PDL_MODES)
void check_pdl(long M, long N, long K, int pdl) {
  if (pdl < 0 || pdl > 3) fail(M, N, K, "pdl must be 0 (off), 1 (trigger after the wait) or 3 (trigger after the mainloop)");
}

// pointers of the dense / zipper kernels of the gemv and wgmma families (the residual only for zipper)
void check_dense_zipper_ptrs(long M, long N, long K, std::uintptr_t x, std::uintptr_t w, std::uintptr_t scales,
                             std::uintptr_t zeros, std::uintptr_t rw, std::uintptr_t rs, std::uintptr_t res_bits,
                             std::uintptr_t res_base, std::uintptr_t y, bool zipper_mode) {
  check_ptr(M, N, K, x, "x", true, 16);
  check_ptr(M, N, K, y, "y", true, 4);
  check_ptr(M, N, K, scales, "scales", true, 16);
  check_ptr(M, N, K, w, "qweight", true, 16);
  check_ptr(M, N, K, zeros, "zeros", false, 16);
  check_ptr(M, N, K, rw, "res_qweight", zipper_mode, 16);
  check_ptr(M, N, K, rs, "res_scales", zipper_mode, 16);
  check_ptr(M, N, K, res_bits, "res_bits", zipper_mode, 4);
  check_ptr(M, N, K, res_base, "res_base", zipper_mode, 4);
}

// derived tile counts of the packed weight: n/k tiles, bit words per row, group size in k-tiles
void set_tiles(zipper::Params& p, long Np, long KT, long gs_tiles) {
  p.NT = (int)(Np / 64); p.KT = (int)KT;
  p.KW = (int)((KT + 31) / 32);
  p.gs_tiles = (int)gs_tiles;
  p.gs_shift = -1;
  if (gs_tiles == 0) p.gs_shift = 31;
  for (int sh = 0; sh < 30; ++sh)
    if (gs_tiles == (1L << sh)) p.gs_shift = sh;
}

// the pointers both kernel families read (X, the packed weight and residual, Y)
zipper::Params weight_params(std::uintptr_t x, std::uintptr_t w, std::uintptr_t scales, std::uintptr_t zeros,
                             std::uintptr_t rw, std::uintptr_t rs, std::uintptr_t res_bits, std::uintptr_t res_base,
                             std::uintptr_t y) {
  zipper::Params p{};
  p.x = reinterpret_cast<const void*>(x);
  p.w = reinterpret_cast<const void*>(w);
  p.scales = reinterpret_cast<const void*>(scales);
  p.zeros = reinterpret_cast<const void*>(zeros);
  p.rw = reinterpret_cast<const void*>(rw);
  p.rs = reinterpret_cast<const void*>(rs);
  p.res_bits = reinterpret_cast<const uint32_t*>(res_bits);
  p.res_base = reinterpret_cast<const int*>(res_base);
  p.y = reinterpret_cast<void*>(y);
  return p;
}

void gemm(std::uintptr_t x, std::uintptr_t w, std::uintptr_t scales, std::uintptr_t zeros, std::uintptr_t rw,
          std::uintptr_t rs, std::uintptr_t res_bits, std::uintptr_t csr_ptr, std::uintptr_t csr_kt, std::uintptr_t csr_id,
          std::uintptr_t y, std::uintptr_t ws, std::uintptr_t counters, std::uintptr_t res_base, long rslots, long M, long N, long K, long Np, long Kp,
          long gs_tiles, long splitk, long kt_per_split, int dtype, int mode, int cfg, std::uintptr_t stream,
          int zflags, int fixup, int pdl, int rlead, std::uintptr_t split_bounds) {
  check_problem(M, N, K, Np, Kp, dtype);
  if (mode < 0 || mode > 2) fail(M, N, K, "mode must be 0 (dense), 1 (zipper) or 2 (residual)");
  if (cfg < 0 || cfg >= zipper::NUM_CONFIGS || (mode == zipper::MODE_RESIDUAL && cfg >= 3))
    fail(M, N, K, "kernel config " + std::to_string(cfg) + " not available for mode " + std::to_string(mode));
  if (gs_tiles < 0) fail(M, N, K, "group size must be a multiple of 64 or per-channel");
  const long KT = Kp / 64;
  zipper::ConfigInfo ci = zipper::config_info(cfg, mode);
  const long mtiles = (M + ci.bm - 1) / ci.bm;
  if (mode != zipper::MODE_RESIDUAL) {
    if (splitk < 1 || kt_per_split < 1 || (splitk - 1) * kt_per_split >= KT || splitk * kt_per_split < KT)
      fail(M, N, K, "bad split-K plan splitk=" + std::to_string(splitk) + " kt_per_split=" + std::to_string(kt_per_split));
    if (splitk > 1 && fixup == 0) {
      check_ptr(M, N, K, ws, "workspace", true, 16);
      check_ptr(M, N, K, counters, "counters", true, 4);
    }
    if (splitk > 16 && fixup == 1) fail(M, N, K, "cluster split-K fix-up needs splitk <= 16, got " + std::to_string(splitk));
  }
  check_ptr(M, N, K, x, "x", true, 16);
  check_ptr(M, N, K, y, "y", true, 4);
  check_ptr(M, N, K, scales, "scales", mode != zipper::MODE_RESIDUAL, 16);
  check_ptr(M, N, K, w, "qweight", mode != zipper::MODE_RESIDUAL, 16);
  check_ptr(M, N, K, zeros, "zeros", false, 16);
  check_ptr(M, N, K, rw, "res_qweight", mode != zipper::MODE_DENSE, 16);
  check_ptr(M, N, K, rs, "res_scales", mode != zipper::MODE_DENSE, 16);
  check_ptr(M, N, K, res_bits, "res_bits", mode == zipper::MODE_ZIPPER, 4);
  check_ptr(M, N, K, res_base, "res_base", mode == zipper::MODE_ZIPPER, 4);
  if (mode == zipper::MODE_ZIPPER && (rslots < 1 || rslots > ci.stages))
    fail(M, N, K, "rslots=" + std::to_string(rslots) + " outside [1, " + std::to_string(ci.stages) + "]");
  check_ptr(M, N, K, csr_ptr, "res_csr_ptr", mode == zipper::MODE_RESIDUAL, 4);
  check_ptr(M, N, K, csr_kt, "res_csr_kt", mode == zipper::MODE_RESIDUAL, 4);
  check_ptr(M, N, K, csr_id, "res_csr_id", mode == zipper::MODE_RESIDUAL, 4);

  zipper::Params p = weight_params(x, w, scales, zeros, rw, rs, res_bits, res_base, y);
  p.csr_ptr = reinterpret_cast<const int*>(csr_ptr);
  p.csr_kt = reinterpret_cast<const int*>(csr_kt);
  p.csr_id = reinterpret_cast<const int*>(csr_id);
  p.ws = reinterpret_cast<float*>(ws);
  p.counters = reinterpret_cast<int*>(counters);
  p.rslots = (int)rslots;
  if (zflags < 0 || zflags > 1) fail(M, N, K, "zflags must be 0 or 1");
  if (mode == zipper::MODE_ZIPPER && zflags != 1)
    fail(M, N, K, "the zipper kernel has only the 'first' prologue since v9 (zflags must be 1)");
  p.zflags = zflags;
  if (fixup < 0 || fixup > 1) fail(M, N, K, "fixup must be 0 (global) or 1 (cluster)");
  check_pdl(M, N, K, pdl);
  if (rlead != 0 && ci.stages <= 4) fail(M, N, K, "a residual lead (rlead) needs a config with more than 4 stages");
  if (rlead < 0 || rlead >= ci.stages) fail(M, N, K, "rlead=" + std::to_string(rlead) + " outside [0, " + std::to_string(ci.stages - 1) + "]");
  p.rlead = rlead;
  p.fixup = fixup;
  p.pdl = pdl;
  p.M = (int)M; p.N = (int)N; p.K = (int)K; p.Np = (int)Np; p.Kp = (int)Kp;
  set_tiles(p, Np, KT, gs_tiles);
  p.splitk = mode == zipper::MODE_RESIDUAL ? 1 : (int)splitk;
  p.kt_per_split = mode == zipper::MODE_RESIDUAL ? (int)KT : (int)kt_per_split;
  if (split_bounds != 0) {  // the table's values come from splitk_balance.balanced_split_bounds; here: its use
    if (!zipper::tiled_balanced_splitk())
      fail(M, N, K, "split_bounds given, but zipper_kernels.cu was built with -DMOSAIC_BALANCED_SPLITK=0");
    if (mode == zipper::MODE_RESIDUAL || splitk < 2)
      fail(M, N, K, "split_bounds needs the dense or zipper kernel with splitk >= 2, got splitk=" + std::to_string(splitk));
    check_ptr(M, N, K, split_bounds, "split_bounds", true, 4);
    p.split_bounds = reinterpret_cast<const int*>(split_bounds);
  }
  p.mpad = (int)(mtiles * ci.bm);
  const char* err = zipper::launch(p, dtype, mode, cfg, reinterpret_cast<void*>(stream));
  if (err && err[0]) throw std::runtime_error("zipper gemm " + shape_str(M, N, K) + ": launch failed: " + err);
}

// small-M path (native/gemv_kernels.cu): same packed weights, warps x kparts plan from the host
void gemv(std::uintptr_t x, std::uintptr_t w, std::uintptr_t scales, std::uintptr_t zeros, std::uintptr_t rw,
          std::uintptr_t rs, std::uintptr_t res_bits, std::uintptr_t res_base, std::uintptr_t y, long M,
          long N, long K, long Np, long Kp, long gs_tiles, long kparts, long ktpw, int warps, int mb, int dtype,
          int mode, std::uintptr_t stream, int pdl, long splitk) {
  check_problem(M, N, K, Np, Kp, dtype);
  if (mode != zipper::MODE_DENSE && mode != zipper::MODE_ZIPPER) fail(M, N, K, "small-M mode must be 0 (dense) or 1 (zipper)");
  if (!zipper::gemv_mb_valid(mb)) fail(M, N, K, "mb must be 1, 2 or 4 (8, 16 or 32 rows of M per CTA), got " + std::to_string(mb));
  if (warps != 4 && warps != 8 && warps != 16) fail(M, N, K, "warps per CTA must be 4, 8 or 16, got " + std::to_string(warps));
  if (kparts < 1 || warps % kparts) fail(M, N, K, "kparts=" + std::to_string(kparts) + " must divide warps=" + std::to_string(warps));
  const long KT = Kp / 64;
  if (splitk < 1 || splitk > 16) fail(M, N, K, "splitk (CTAs per slice group, one cluster) must be in [1, 16], got " + std::to_string(splitk));
  if (ktpw < 1 || splitk * kparts * ktpw < KT) fail(M, N, K, "splitk * kparts * ktpw must cover the " + std::to_string(KT) + " k-tiles");
  if (gs_tiles < 0) fail(M, N, K, "group size must be a multiple of 64 or per-channel");
  check_dense_zipper_ptrs(M, N, K, x, w, scales, zeros, rw, rs, res_bits, res_base, y, mode == zipper::MODE_ZIPPER);
  check_pdl(M, N, K, pdl);
  zipper::Params p = weight_params(x, w, scales, zeros, rw, rs, res_bits, res_base, y);
  p.pdl = pdl;
  p.M = (int)M; p.N = (int)N; p.K = (int)K; p.Np = (int)Np; p.Kp = (int)Kp;
  set_tiles(p, Np, KT, gs_tiles);
  p.splitk = (int)splitk;
  p.kt_per_split = (int)(kparts * ktpw);
  p.kparts = (int)kparts;
  p.ktpw = (int)ktpw;
  const char* err = zipper::launch_gemv(p, dtype, mode, mb, warps, reinterpret_cast<void*>(stream));
  if (err && err[0]) throw std::runtime_error("zipper gemv " + shape_str(M, N, K) + ": launch failed: " + err);
}

// large-M path (native/wgmma_kernels.cu, sm_90a): same packed weights, CTA = 64 wgs n x bt tokens
void wgmma(std::uintptr_t x, std::uintptr_t w, std::uintptr_t scales, std::uintptr_t zeros, std::uintptr_t rw,
           std::uintptr_t rs, std::uintptr_t res_bits, std::uintptr_t res_base, std::uintptr_t y, long M, long N,
           long K, long Np, long Kp, long gs_tiles, int bt, int dtype, int mode, std::uintptr_t stream, int pdl, int wgs, long splitk,
           int rslots, std::uintptr_t ws, std::uintptr_t counters, std::uintptr_t split_bounds) {
  check_problem(M, N, K, Np, Kp, dtype);
  if (mode != zipper::MODE_DENSE && mode != zipper::MODE_ZIPPER) fail(M, N, K, "wgmma mode must be 0 (dense) or 1 (zipper)");
  if (bt != 8 && bt != 16 && bt != 32 && bt != 64 && bt != 128 && bt != 256)
    fail(M, N, K, "token tile bt must be 8, 16, 32, 64, 128 or 256, got " + std::to_string(bt));
  if (wgs == 3 && bt >= 128 && splitk > 1) {  // the large warp-specialized tiles' splits meet in global memory
    check_ptr(M, N, K, ws, "workspace", true, 16);
    check_ptr(M, N, K, counters, "counters", true, 4);
  }
  if (wgs != 3 && bt != 64 && bt != 128)
    fail(M, N, K, "bt " + std::to_string(bt) + " is a warp-specialized tile: wgs must be 3, got " + std::to_string(wgs));
  if (wgs < 2 || wgs > 4) fail(M, N, K, "warpgroups per CTA wgs must be 2, 3 (warp-specialized) or 4, got " + std::to_string(wgs));
  const long KT = Kp / 64;
  if (splitk < 1 || splitk > 8 || splitk > KT)
    fail(M, N, K, "wgmma splitk must be in [1, min(8, k-tiles)], got " + std::to_string(splitk));
  if (gs_tiles < 0) fail(M, N, K, "group size must be a multiple of 64 or per-channel");
  check_pdl(M, N, K, pdl);
  check_dense_zipper_ptrs(M, N, K, x, w, scales, zeros, rw, rs, res_bits, res_base, y, mode == zipper::MODE_ZIPPER);
  zipper::Params p = weight_params(x, w, scales, zeros, rw, rs, res_bits, res_base, y);
  p.pdl = pdl;
  p.rslots = rslots;  // warp-specialized tiles: residual slots per pipeline stage (zipper)
  p.ws = reinterpret_cast<float*>(ws);  // the large warp-specialized tiles' split-K partials and per-tile counters
  p.counters = reinterpret_cast<int*>(counters);
  if (split_bounds != 0) {  // the large tiles' balanced split ranges [n tiles][splitk + 1] (v28 builds; the kernel
    if (!(wgs == 3 && bt >= 128 && splitk > 1))  // launcher refuses them in other builds)
      fail(M, N, K, "split_bounds needs a split warp-specialized bt 128 / 256 tile, got bt " + std::to_string(bt) +
                        ", wgs " + std::to_string(wgs) + ", splitk " + std::to_string(splitk));
    check_ptr(M, N, K, split_bounds, "split_bounds", true, 4);
    p.split_bounds = reinterpret_cast<const int*>(split_bounds);
  }
  p.M = (int)M; p.N = (int)N; p.K = (int)K; p.Np = (int)Np; p.Kp = (int)Kp;
  set_tiles(p, Np, Kp / 64, gs_tiles);
  p.kt_per_split = (int)((KT + splitk - 1) / splitk);
  p.splitk = (int)((KT + p.kt_per_split - 1) / p.kt_per_split);  // no empty split
  const char* err = zipper::launch_wgmma(p, dtype, mode, bt, wgs, reinterpret_cast<void*>(stream));
  if (err && err[0]) throw std::runtime_error("zipper wgmma " + shape_str(M, N, K) + ": launch failed: " + err);
}

py::dict config(int cfg, int mode) {
  zipper::ConfigInfo c = zipper::config_info(cfg, mode);
  py::dict d;
  d["bm"] = c.bm; d["bn"] = c.bn; d["stages"] = c.stages; d["smem_bytes"] = c.smem_bytes;
  d["ctas_per_sm"] = c.ctas_per_sm;
  d["ring_unit_bytes"] = c.ring_unit_bytes;
  d["static_smem"] = c.static_smem;
  d["threads"] = c.threads;
  return d;
}

}  // namespace

PYBIND11_MODULE(_mosaic_native, m) {
  m.doc() = "ZipperEngine W4A16 CUDA kernels (dense / zipper / residual-only)";
  m.def("gemm", &gemm, "Launch one W4A16 kernel on raw device pointers", py::arg("x"), py::arg("w"),
        py::arg("scales"), py::arg("zeros"), py::arg("rw"), py::arg("rs"), py::arg("res_bits"), py::arg("csr_ptr"),
        py::arg("csr_kt"), py::arg("csr_id"), py::arg("y"), py::arg("ws"), py::arg("counters"), py::arg("res_base"), py::arg("rslots"), py::arg("M"),
        py::arg("N"), py::arg("K"), py::arg("Np"), py::arg("Kp"), py::arg("gs_tiles"), py::arg("splitk"),
        py::arg("kt_per_split"), py::arg("dtype"), py::arg("mode"), py::arg("cfg"), py::arg("stream"),
        py::arg("zflags") = 0, py::arg("fixup") = 0, py::arg("pdl") = 0, py::arg("rlead") = 0,
        py::arg("split_bounds") = 0);
  m.def("config", &config, py::arg("cfg"), py::arg("mode"));
  m.def("max_active_clusters", &zipper::max_active_clusters,
        "resident 1 x splitk x 1 clusters of a config's kernel (0: none / no CUDA device)", py::arg("cfg"),
        py::arg("mode"), py::arg("splitk"), py::arg("rslots"));
  m.def("kernel_regs", &zipper::kernel_regs, "registers/thread of a config's kernel (-1: no CUDA device)",
        py::arg("cfg"), py::arg("mode"));
  m.def("gemv", &gemv, "Launch the small-M kernel (dense or zipper) on raw device pointers", py::arg("x"),
        py::arg("w"), py::arg("scales"), py::arg("zeros"), py::arg("rw"), py::arg("rs"), py::arg("res_bits"),
        py::arg("res_base"), py::arg("y"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("Np"),
        py::arg("Kp"), py::arg("gs_tiles"), py::arg("kparts"), py::arg("ktpw"), py::arg("warps"), py::arg("mb"),
        py::arg("dtype"), py::arg("mode"), py::arg("stream"), py::arg("pdl") = 0, py::arg("splitk") = 1);
  m.def("gemv_regs", &zipper::gemv_regs, "registers/thread of a small-M kernel (-1: no CUDA device)", py::arg("mode"),
        py::arg("mb"), py::arg("warps") = 8);
  m.def("gemv_smem_bytes", &zipper::gemv_smem_bytes, "dynamic shared memory of a small-M CTA", py::arg("kt"),
        py::arg("gs_tiles"), py::arg("ktpc"), py::arg("spc"), py::arg("zeros"), py::arg("warps"), py::arg("mode"), py::arg("mb"), py::arg("m"));
  m.def("gemv_ring_depth", &zipper::gemv_ring_depth,
        "k-tiles in flight per warp (zipper: residual slots per warp) of the small-M kernel for a CTA size",
        py::arg("mode"), py::arg("warps"));
  m.def("wgmma", &wgmma, "Launch the large-M wgmma kernel (dense or zipper, sm_90a) on raw device pointers",
        py::arg("x"), py::arg("w"), py::arg("scales"), py::arg("zeros"), py::arg("rw"), py::arg("rs"),
        py::arg("res_bits"), py::arg("res_base"), py::arg("y"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("Np"),
        py::arg("Kp"), py::arg("gs_tiles"), py::arg("bt"), py::arg("dtype"), py::arg("mode"), py::arg("stream"),
        py::arg("pdl") = 0, py::arg("wgs") = 2, py::arg("splitk") = 1, py::arg("rslots") = 2, py::arg("ws") = 0,
        py::arg("counters") = 0, py::arg("split_bounds") = 0);
  m.def("wgmma_regs", &zipper::wgmma_regs, "registers/thread of a wgmma kernel (-1: no CUDA device)", py::arg("mode"),
        py::arg("bt"), py::arg("wgs"));
  m.def("wgmma_ws_stage_ktiles", &zipper::wgmma_ws_stage_ktiles,
        "k-tiles per pipeline stage of a small warp-specialized tile (bt 8..64), 0 for other bt", py::arg("bt"));
  m.def("wgmma_smem_bytes", &zipper::wgmma_smem_bytes, "dynamic shared memory of a wgmma CTA", py::arg("mode"),
        py::arg("bt"), py::arg("wgs"));
  m.attr("GEMV_SMEM_MAX") = zipper::GEMV_SMEM_MAX;
  m.attr("GEMV_ZERO_FOLD") = zipper::gemv_zero_fold();  // v29: the bf16 one-block gemv folds the zero per group
  m.attr("GEMV_ZIPPER_WPTR") = zipper::gemv_zipper_wptr();  // v29: the gemv zipper's loop-carried weight pointer
  m.attr("GEMV_XSTEP_CONST") = zipper::gemv_xstep_const();  // v29: gemv X rows past M read row 0 (one step)
  m.attr("NUM_CONFIGS") = zipper::NUM_CONFIGS;
  // the v18 switch (MOSAIC_COMPACT_CLUSTER_FIXUP, 1 by default) as (tiled TU, wgmma TU) were compiled: 1 = compact cluster split-K fix-up
  m.attr("COMPACT_CLUSTER_FIXUP") = py::make_tuple(zipper::tiled_compact_cluster_fixup(), zipper::wgmma_compact_cluster_fixup());
  // the v22 switch (MOSAIC_BALANCED_SPLITK, 1 by default): 1 = the tiled kernel reads balanced split-K cuts
  m.attr("BALANCED_SPLITK") = zipper::tiled_balanced_splitk();
  // the v25 switches of the large-tile wgmma kernels: two producer lanes; the probe build (wrong zipper outputs)
  m.attr("WS_BIG_SPLIT_PRODUCER") = zipper::wgmma_split_producer();
  m.attr("WS_BIG_ZPROBE") = zipper::wgmma_zprobe();
  // v28: the split large tiles' fix-up: 0 = global partials, last arriver; 1 = cluster / DSMEM; 9 = none (probe)
  m.attr("WS_BIG_SPLIT_FIXUP") = zipper::wgmma_split_fixup();
  m.attr("WS_BIG_BALANCED") = zipper::wgmma_balanced();  // v28: balanced split ranges for the large tiles
  m.attr("ABI_VERSION") = 10;  // 10: wgmma(..., split_bounds) (v28)
}
