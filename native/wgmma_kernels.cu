// ZipperEngine large-M path ("wgmma", sm_90a): Y[M,N] = X[M,K] . (dequant(base) + dequant(residual))^T
// on Hopper's asynchronous warpgroup MMA.
//
// Why a third kernel: the tiled kernel (zipper_kernels.cu) issues mma.sync, whose practical ceiling on
// H100 is about 0.5x cuBLAS at M = 4096 (NOTES.md v8/v9). wgmma runs a 64 x N x 16 product per
// instruction asynchronously, so the dequantization of the next k-tile overlaps the tensor cores.
//   - Swap AB: Y^T = W . X^T. The weights are wgmma's A operand, dequantized into registers (A may come
//     from registers, B may not); the activations are B, read by the tensor cores straight from shared
//     memory. The packed format needs no change: per warp, the tiled kernel's B fragment of a 64 x 64
//     unit's n16 slice IS the 16 x 16 A fragment (a0 a2 a1 a3 order, see gemv_kernels.cu), and a
//     warpgroup's four warps cover one unit (64 rows of n).
//   - Two kernels. (1) w4a16_wgmma_kernel: CTA = WGS (2 or 4) warpgroups = WGS units x BT (64 or 128)
//     tokens; every thread issues cp.async copies of X in the 128-byte-swizzle layout that the wgmma
//     descriptor names (the tiled kernel's XOR swizzle is exactly it, on a 1024-byte aligned base), one
//     CTA barrier per k-tile; a warpgroup dequantizes the NEXT tile's A fragments while its wgmmas of
//     this tile run (two register buffers, wgmma.wait_group 1); optional split-K over a cluster.
//     (2) w4a16_wgmma_ws_kernel ("wgs 3", the default for M > 64 where it fills the SMs): a producer
//     warpgroup (setmaxnreg 40) whose one thread issues TMA loads of X (hardware swizzle, zero fill)
//     and bulk copies of the weight tiles onto per-stage full/empty mbarriers, and 2 consumer
//     warpgroups (setmaxnreg 232) with m64n128 or m64n256 wgmmas and no CTA barrier in the mainloop:
//     one warpgroup's dequantization overlaps the other's wgmmas (1.2-1.4x kernel (1), NOTES.md v11).
//   - Zipper: a residual unit at (n-tile, k-tile) is copied into the stage with its base tile and
//     added to the A fragment before the wgmma (same X tile, same accumulators, no extra MMA).
//   - Epilogue through shared memory (the accumulators are transposed: rows = n), 16-byte stores.
//   - Tile raster grouped by GROUP_M token tiles so that a wave's weights and activations stay in L2.
#include "zipper.cuh"
#include "device_common.cuh"
#include "wgmma_ops.cuh"

#include <cooperative_groups.h>
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <type_traits>

namespace zipper {
namespace {

using namespace dev;

constexpr int WG_GROUP_M = 8;    // token tiles per raster group
constexpr int WS_Y_PITCH = 128 + 8;  // warp-specialized epilogue tile row pitch (elements)

// CTA = WGS warpgroups = WGS units of 64 n (one per warpgroup) x BT tokens; per stage: the X tile, the
// units' base codes, scales, zeros and (zipper) residual codes, row scales and "has a residual" flags
template <int BT, int WGS, int MODE>
struct WgLayout {
  static constexpr int THREADS = 128 * WGS;
  static constexpr int OFF_X = 0;                    // BT rows x 128 B, 128-byte swizzle (1024-B aligned)
  static constexpr int OFF_W = BT * 128;             // WGS units x 2048 B base codes
  static constexpr int OFF_S = OFF_W + 2048 * WGS;   // WGS x 64 scales
  static constexpr int OFF_Z = OFF_S + 128 * WGS;    // WGS x 64 zeros (E + z)
  static constexpr int OFF_R = OFF_Z + 128 * WGS;    // zipper: WGS x 2048 B residual codes
  static constexpr int OFF_RS = OFF_R + (MODE == MODE_ZIPPER ? 2048 * WGS : 0);  // WGS x 64 residual row scales
  static constexpr int OFF_RF = OFF_RS + (MODE == MODE_ZIPPER ? 128 * WGS : 0);  // WGS ints: residual present
  static constexpr int END = OFF_RF + (MODE == MODE_ZIPPER ? 16 : 0);
  static constexpr int STAGE = (END + 1023) / 1024 * 1024;
  // as many stages as the CTAs per SM leave room for (WGS 4: one CTA, 2: two), up to 8: at small and
  // medium M a k-tile iteration is memory-latency bound, so the prefetch depth sets the bandwidth
  static constexpr int BUDGET = (WGS == 4 ? 227 * 1024 : 113 * 1024) - 1024;
  static constexpr int STAGES = BUDGET / STAGE > 8 ? 8 : BUDGET / STAGE;
  static constexpr int SMEM = STAGES * STAGE + 1024;  // + alignment slack for the dynamic base
  static_assert(STAGES >= 3, "pipeline too shallow");
  static constexpr int Y_PITCH = 64 * WGS + 8;  // epilogue tile row pitch (elements): conflict-free transposed writes
  static_assert(BT * Y_PITCH * 2 <= STAGES * STAGE, "epilogue tile must fit in the stages");
  // split-K: every thread's fp32 accumulators in the stages' shared memory
  static constexpr bool RED_FITS = (BT / 2) * THREADS * 4 <= STAGES * STAGE;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp16(uint32_t s, const void* g, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g), "r"(pred ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// keeps the compiler from moving accumulator accesses across the asynchronous wgmma section
__device__ __forceinline__ void fence_reg(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void fence_reg(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
#endif

// wgmma shared-memory matrix descriptor: K-major tile of 128-byte rows, 128-byte swizzle, 8-row atoms
// 1024 B apart (stride byte offset); the leading byte offset is unused for swizzled K-major layouts
__device__ __forceinline__ uint64_t x_desc(uint32_t saddr) {
  return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

// mbarriers, TMA and bulk copies (the warp-specialized kernel)
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {  // arrive + expect bytes
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, int bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
               ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar) : "memory");
}

// A fragments of one k-tile for n16 slice ws of a 64 x 64 unit in shared memory: w = its 2 KB of codes,
// S / Z its 64 scales / zeros (Z null: symmetric, z = 8), r / RS the residual unit and its 64 row
// scales (added when wr: the zipper's fused residual). 4 k16 steps x 4 registers in wgmma's A layout.
template <typename T>
__device__ __forceinline__ void dequant_slice(const uint8_t* w, const T* S, const T* Z, const uint8_t* r, const T* RS,
                                              bool wr, int ws, int lane, uint32_t (&a)[4][4]) {
  using Tr = Traits<T>;
  using T2 = typename Tr::T2;
  const int g = lane >> 2;
  const T2 e8 = as_t2<T2>((uint32_t)Tr::E8 | ((uint32_t)Tr::E8 << 16));
  const uint4 wq = *reinterpret_cast<const uint4*>(w + (ws * 32 + lane) * 16);
  S += ws * 16 + g;
  const T2 s0 = T2{S[0], S[0]}, s1 = T2{S[8], S[8]};
  T2 z0 = e8, z1 = e8;
  if (Z != nullptr) {
    Z += ws * 16 + g;
    z0 = T2{Z[0], Z[0]};
    z1 = T2{Z[8], Z[8]};
  }
  auto body = [&](auto with_res) {
    constexpr bool WR = decltype(with_res)::value;
    uint4 rq = make_uint4(0, 0, 0, 0);
    T2 r0 = e8, r1 = e8;
    if constexpr (WR) {
      rq = *reinterpret_cast<const uint4*>(r + (ws * 32 + lane) * 16);
      const T* R = RS + ws * 16 + g;
      r0 = T2{R[0], R[0]};
      r1 = T2{R[8], R[8]};
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t q = s == 0 ? wq.x : s == 1 ? wq.y : s == 2 ? wq.z : wq.w;
      const uint32_t rw = s == 0 ? rq.x : s == 1 ? rq.y : s == 2 ? rq.z : rq.w;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {  // jj: (n half jj >> 1: row g or g + 8, k half jj & 1)
        const T2 v = as_t2<T2>(lop3_and_or(q >> (4 * jj), 0x000F000Fu, Tr::EX));
        T2 d = __hmul2(__hsub2(v, jj >> 1 ? z1 : z0), jj >> 1 ? s1 : s0);
        if constexpr (WR) {
          const T2 rv = as_t2<T2>(lop3_and_or(rw >> (4 * jj), 0x000F000Fu, Tr::EX));
          d = __hfma2(__hsub2(rv, e8), jj >> 1 ? r1 : r0, d);
        }
        a[s][(jj & 1) * 2 + (jj >> 1)] = as_u32<T2>(d);  // a0 (g, k), a1 (g+8, k), a2 (g, k+8), a3 (g+8, k+8)
      }
    }
  };
  if (wr)
    body(std::true_type{});
  else
    body(std::false_type{});
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // the wgmma helpers exist in the sm_90a device pass only
// the 4 k16 wgmmas of one k-tile as one commit group: A fragments a from registers, X from shared memory at xs,
// k16 step s into accumulator set s % ACCS. The register fences keep the compiler from moving accumulator or
// fragment accesses across the asynchronous wgmmas.
template <typename T, int BT, int ACCS, int NACC>
__device__ __forceinline__ void wgmma_ktile(float (&acc)[ACCS][NACC], uint32_t (&a)[4][4], uint32_t xs) {
#pragma unroll
  for (int c = 0; c < ACCS; ++c)
#pragma unroll
    for (int i = 0; i < NACC; ++i) fence_reg(acc[c][i]);
#pragma unroll
  for (int s = 0; s < 4; ++s)
#pragma unroll
    for (int r = 0; r < 4; ++r) fence_reg(a[s][r]);
  wg_fence();
#pragma unroll
  for (int s = 0; s < 4; ++s) wgmma_rs<T, BT>(acc[s % ACCS], a[s], x_desc(xs + s * 32), 1);
  wg_commit();
#pragma unroll
  for (int c = 0; c < ACCS; ++c)
#pragma unroll
    for (int i = 0; i < NACC; ++i) fence_reg(acc[c][i]);
}
template <typename T, int BT, int NACC>
__device__ __forceinline__ void wgmma_ktile(float (&acc)[NACC], uint32_t (&a)[4][4], uint32_t xs) {
  wgmma_ktile<T, BT>(reinterpret_cast<float (&)[1][NACC]>(acc), a, xs);
}
#endif

template <typename T, int BT, int WGS, int MODE>
__global__ void __launch_bounds__(128 * WGS, 4 / WGS) w4a16_wgmma_kernel(const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = Traits<T>;
  using T2 = typename Tr::T2;
  using L = WgLayout<BT, WGS, MODE>;
  constexpr int NTHR = L::THREADS;
  constexpr int STAGES = L::STAGES;
  constexpr int NACC = BT / 2;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  // the 128-byte swizzle pattern is anchored at 1024-byte boundaries
  uint8_t* const smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sbase = smem_u32(smem);

  const int tid = threadIdx.x, wg = tid >> 7, ws = (tid >> 5) & 3, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  // grouped raster: WG_GROUP_M token tiles per group, n fastest inside it
  const int ntn = (p.NT + WGS - 1) / WGS, mtn = (p.M + BT - 1) / BT;
  const int pid = blockIdx.x, per_group = WG_GROUP_M * ntn;
  const int first_m = (pid / per_group) * WG_GROUP_M, gsz = min(mtn - first_m, WG_GROUP_M);
  const int mt = first_m + (pid % per_group) % gsz, ntile = (pid % per_group) / gsz;
  const int nt0 = ntile * WGS, m0 = mt * BT;
  const int KT = p.KT;
  // split-K (grid y = the splits of one output tile, one thread-block cluster): k-tiles kt0 .. kt0 + NTL - 1
  const int kt0 = blockIdx.y * p.kt_per_split, NTL = min(KT, kt0 + p.kt_per_split) - kt0;
  const bool unit_ok = nt0 + wg < p.NT;  // the last CTA's warpgroups past Np compute zeros, store nothing
  const T* __restrict__ X = static_cast<const T*>(p.x);

  // ---- copies. Weights (constant across launches) may be issued before griddep_wait(), X not.
  const uint4* const wsrc = static_cast<const uint4*>(p.w) + (unit_ok ? (size_t)(nt0 + wg) * KT * 128 : 0) + (tid & 127);
  // threads 0..8 WGS-1 copy the units' scales, 8 WGS..16 WGS-1 their zeros (16 B each, units inside Np)
  const T* sz_src = nullptr;
  int sz_off = 0;
  if (tid < 8 * WGS && nt0 + tid / 8 < p.NT) {
    sz_src = static_cast<const T*>(p.scales) + (size_t)nt0 * 64 + tid * 8;
    sz_off = L::OFF_S + tid * 16;
  } else if (tid >= 8 * WGS && tid < 16 * WGS && p.zeros != nullptr && nt0 + (tid - 8 * WGS) / 8 < p.NT) {
    sz_src = static_cast<const T*>(p.zeros) + (size_t)nt0 * 64 + (tid - 8 * WGS) * 8;
    sz_off = L::OFF_Z + (tid - 8 * WGS) * 16;
  }
  // zipper (issuer side): the bit word of unit wg's row covering the next k-tile to issue (k-tiles are
  // issued in order, so it is reloaded once per 32) and the id of that word's first residual unit
  const uint32_t* const zbits = MODE == MODE_ZIPPER && unit_ok ? p.res_bits + (size_t)(nt0 + wg) * p.KW : nullptr;
  const int* const zbase = MODE == MODE_ZIPPER && unit_ok ? p.res_base + (size_t)(nt0 + wg) * p.KW : nullptr;
  int zw = -1, zid0 = 0;
  uint32_t zword = 0;
  auto issue_w = [&](int kt, int slot) {
    const uint32_t st = sbase + slot * L::STAGE;
    cp16(st + L::OFF_W + tid * 16, wsrc + (size_t)kt * 128, unit_ok);
    if (sz_src != nullptr) {
      const int grp = group_of_tile(kt, p.gs_shift, p.gs_tiles);
      cp16(st + sz_off, sz_src + (size_t)grp * p.Np, true);
    }
    if (MODE == MODE_ZIPPER) {
      int rid = -1;  // warpgroup-uniform
      if (unit_ok) {
        if ((kt >> 5) != zw) {
          zw = kt >> 5;
          zword = __ldg(zbits + zw);
          zid0 = __ldg(zbase + zw);
        }
        if ((zword >> (kt & 31)) & 1u) rid = zid0 + __popc(zword & ((1u << (kt & 31)) - 1u));
      }
      const int wt = tid & 127;
      if (rid >= 0) {
        cp16(st + L::OFF_R + tid * 16, static_cast<const uint4*>(p.rw) + (size_t)rid * 128 + wt, true);
        if (wt < 8) cp16(st + L::OFF_RS + wg * 128 + wt * 16, static_cast<const T*>(p.rs) + (size_t)rid * 64 + wt * 8, true);
      }
      // the consumer reads the flag after the barrier that makes this stage's copies visible
      if (wt == 0) reinterpret_cast<int*>(smem + slot * L::STAGE + L::OFF_RF)[wg] = rid >= 0;
    }
  };
  auto issue_x = [&](int kt, int slot) {
    const uint32_t st = sbase + slot * L::STAGE + L::OFF_X;
#pragma unroll
    for (int i = 0; i < BT * 8 / NTHR; ++i) {
      const int c = tid + i * NTHR, r = c >> 3, ch = c & 7;
      const int tok = m0 + r, k = kt * 64 + ch * 8;
      const bool pred = tok < p.M && k < p.K;
      cp16(st + r * 128 + ((ch ^ (r & 7)) << 4), X + (pred ? (size_t)tok * p.K + k : 0), pred);
    }
  };

  float acc[NACC];
#pragma unroll
  for (int i = 0; i < NACC; ++i) acc[i] = 0.f;

  // prologue: tiles 0..STAGES-2 (weights first: they overlap the previous kernel under PDL)
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s)
    if (s < NTL) issue_w(kt0 + s, s);
  griddep_wait();
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < NTL) issue_x(kt0 + s, s);
    cp_commit();  // group s = tile s
  }

  // A fragments of k-tile kt (stage slot) for this warp's n16 slice of unit wg: 4 k16 steps x 4 regs
  auto dequant = [&](int kt, int slot, uint32_t (&a)[4][4]) {
    const uint8_t* st = smem + slot * L::STAGE;
    const bool wr = MODE == MODE_ZIPPER && reinterpret_cast<const int*>(st + L::OFF_RF)[wg];
    dequant_slice<T>(st + L::OFF_W + wg * 2048, reinterpret_cast<const T*>(st + L::OFF_S) + wg * 64,
                     p.zeros != nullptr ? reinterpret_cast<const T*>(st + L::OFF_Z) + wg * 64 : nullptr,
                     st + L::OFF_R + wg * 2048, reinterpret_cast<const T*>(st + L::OFF_RS) + wg * 64, wr, ws, lane, a);
  };
  // the 4 k16 wgmmas of k-tile in slot `slot` (one commit group)
  auto mma_tile = [&](int slot, uint32_t (&a)[4][4]) { wgmma_ktile<T, BT>(acc, a, sbase + slot * L::STAGE + L::OFF_X); };

  // mainloop. Groups committed before iteration t: tiles 0 .. t + STAGES - 2. Iteration t: wgmmas of
  // tile t (A in buffer t & 1); wait for this warpgroup's wgmmas of tile t - 1 and for tile t + 1's
  // copies; barrier (every warpgroup is past tile t - 1: its slot is free); copy tile t + STAGES - 1
  // into it; dequantize tile t + 1 into the other buffer while the tensor cores run tile t.
  uint32_t a0[4][4], a1[4][4];
  cp_wait<STAGES - 2>();
  __syncthreads();
  if (NTL > 0) dequant(0, 0, a0);
  auto step = [&](int t, uint32_t (&acur)[4][4], uint32_t (&anext)[4][4]) {
    const int slot = t % STAGES;
    mma_tile(slot, acur);
    wg_wait<1>();
    cp_wait<STAGES - 3>();
    __syncthreads();
    const int tn = t + STAGES - 1;
    if (tn < NTL) {
      const int sn = tn % STAGES;
      issue_w(kt0 + tn, sn);
      issue_x(kt0 + tn, sn);
    }
    cp_commit();
    if (t + 1 < NTL) dequant(t + 1, (t + 1) % STAGES, anext);
  };
  int t = 0;
  for (; t + 1 < NTL; t += 2) {
    step(t, a0, a1);
    step(t + 1, a1, a0);
  }
  if (t < NTL) step(t, a0, a1);
  wg_wait<0>();
  cp_wait<0>();
  if (p.pdl & 2) griddep_launch_dependents();
  __syncthreads();  // every warpgroup is done with the stages: reuse them for the output tile

  // ---- split-K: the splits' fp32 accumulators meet in shared memory; CTA (cluster rank) r sums, for
  // the 8-token groups q with q % splitk == r, every rank's values in rank order (deterministic) through
  // DSMEM and stores those rows
  const int S = p.splitk, rank = blockIdx.y;
  auto owns = [&](int q) { return S == 1 || q % S == rank; };
  constexpr int YP = L::Y_PITCH;
  // MOSAIC_COMPACT_CLUSTER_FIXUP (NOTES.md v18, on by default): the owned sums go straight from the remote
  // partials to an epilogue tile placed after them, in a run-time loop over the owned token groups, instead
  // of back into the (compile-time indexed) accumulators through a loop unrolled over all of them
  constexpr int RED_BYTES = NACC * NTHR * 4;
  constexpr bool COMPACT = MOSAIC_COMPACT_CLUSTER_FIXUP;
  // no silent fallback to the unrolled fix-up: ops names every split-K launch of this build ',compact'
  static_assert(!COMPACT || (L::RED_FITS && RED_BYTES + BT * YP * 2 <= STAGES * L::STAGE),
                "compact fix-up: the partials and the epilogue tile must fit in the stages");
  const bool compact = COMPACT && S > 1;
  if (S > 1) {
    if constexpr (L::RED_FITS) {
      namespace cg = cooperative_groups;
      cg::cluster_group cl = cg::this_cluster();
      float* const red = reinterpret_cast<float*>(smem);
#pragma unroll
      for (int j = 0; j < NACC; ++j) red[j * NTHR + tid] = acc[j];
      cl.sync();
      if constexpr (COMPACT) {
        T* const Yc = reinterpret_cast<T*>(smem + RED_BYTES);
#pragma unroll 1
        for (int q = rank; q < NACC / 4; q += S) {
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {  // j = 4 q + jj: (j >> 1) & 1 = jj >> 1, j & 1 = jj & 1
            const int j = 4 * q + jj;
            float v = 0.f;
            for (int r = 0; r < S; ++r) v += cl.map_shared_rank(red, r)[j * NTHR + tid];
            Yc[(8 * q + 2 * t4 + (jj & 1)) * YP + wg * 64 + ws * 16 + g + 8 * (jj >> 1)] = Tr::from_f(v);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < NACC; ++j)
          if (owns(j >> 2)) {
            float v = 0.f;
            for (int q = 0; q < S; ++q) v += cl.map_shared_rank(red, q)[j * NTHR + tid];
            acc[j] = v;
          }
      }
      cl.sync();  // every rank has read this CTA's partials: its shared memory may be reused
    }
  }

  // ---- epilogue: acc[j] = D[row n][col token], row = 16 ws + g + 8 ((j >> 1) & 1) of unit wg,
  // col = 8 (j >> 2) + 2 t4 + (j & 1) -> Ys[token][n] (T), then 16-byte row stores to Y
  T* const Ys = reinterpret_cast<T*>(smem + (compact ? RED_BYTES : 0));
  if (!compact) {
#pragma unroll
    for (int j = 0; j < NACC; ++j) {
      const int n = wg * 64 + ws * 16 + g + 8 * ((j >> 1) & 1);
      const int tok = 8 * (j >> 2) + 2 * t4 + (j & 1);
      if (owns(j >> 2)) Ys[tok * YP + n] = Tr::from_f(acc[j]);
    }
  }
  __syncthreads();
  T* const Y = static_cast<T*>(p.y);
  const bool vec = (p.N & 7) == 0 && (reinterpret_cast<uintptr_t>(Y) & 15) == 0;  // 16-byte row chunks
  constexpr int CPR = 8 * WGS;  // 16-byte chunks per token row
  for (int c = tid; c < BT * CPR; c += NTHR) {
    const int r = c / CPR, ch = c % CPR, tok = m0 + r, n = nt0 * 64 + ch * 8;
    if (tok >= p.M || n >= p.N || !owns(r >> 3)) continue;
    const T* src = Ys + r * YP + ch * 8;
    T* dst = Y + (size_t)tok * p.N + n;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int i = 0; i < 8 && n + i < p.N; ++i) dst[i] = src[i];
    }
  }
#else
  // built without sm_90a code: the host refuses to launch (wgmma_available() == 0)
  __trap();
#endif
}

// ---------------------------------------------------------------- warp-specialized kernel, large tiles (wgs 3, bt 128 / 256)
// CTA = 2 consumer warpgroups (one 64-wide unit each, wgmma m64nBT: all BT = 128 or 256 tokens) + one
// producer warp. The producer issues, per k-tile, bulk copies of the 2 units' codes, scales, zeros and
// residual units and a TMA load of the 256 x 64 X tile into a stage, all completing on the stage's
// "full" mbarrier; consumers wait on it, dequantize, run their wgmmas and release the stage on its
// "empty" mbarrier. No CTA barrier in the mainloop, so the two warpgroups drift apart and one's
// dequantization overlaps the other's wgmmas. The producer is a whole warpgroup so that setmaxnreg
// can hand its registers to the consumers (40 / 232 per thread) for the 128 accumulators.
constexpr int WS_BIG_THREADS = 384;
template <int BT, int MODE>
struct WsBigLayout {
  static constexpr int OFF_X = 0;                   // 256 rows x 128 B, 128-byte swizzle
  static constexpr int OFF_W = BT * 128;         // 2 units x 2048 B
  static constexpr int OFF_S = OFF_W + 4096;        // 2 x 64 scales
  static constexpr int OFF_Z = OFF_S + 256;         // 2 x 64 zeros
  static constexpr int OFF_R = OFF_Z + 256;         // zipper: 2 x 2048 B residual codes
  static constexpr int OFF_RS = OFF_R + (MODE == MODE_ZIPPER ? 4096 : 0);
  static constexpr int END = OFF_RS + (MODE == MODE_ZIPPER ? 256 : 0);
  static constexpr int STAGE = (END + 1023) / 1024 * 1024;
  static constexpr int ZRING = MODE == MODE_ZIPPER ? 16 : 0;  // zipper: 2 blocks x 2 units of residual bit words
  static constexpr int STAGES = ((227 * 1024 - 1024 - 128 - ZRING) / STAGE) > 8 ? 8 : (227 * 1024 - 1024 - 128 - ZRING) / STAGE;
  static constexpr int BARS = STAGES * STAGE;           // full[s], empty[s]: 8 B each
  static constexpr int OFF_ZRING = BARS + 16 * STAGES;
  static constexpr int SMEM = OFF_ZRING + ZRING + 1024;  // + base alignment slack
  static constexpr int Y_PITCH = WS_Y_PITCH;
  static_assert(STAGES >= 3 && BT * Y_PITCH * 2 <= BARS && SMEM <= 227 * 1024, "stages");
};

// SPLIT: K split over grid y (p.splitk > 1). A template parameter so that the unsplit kernel keeps its mainloop: the
// split's tile range costs the bt 128 consumers a register, and at their 168 they then re-read the thread index
// in the loop (SASS, NOTES.md v26)
template <typename T, int BT, int MODE, bool SPLIT>
__global__ void __launch_bounds__(WS_BIG_THREADS, 1) w4a16_wgmma_ws_big_kernel(const Params p, const __grid_constant__ CUtensorMap tmx) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = Traits<T>;
  using L = WsBigLayout<BT, MODE>;
  constexpr int STAGES = L::STAGES, NACC = BT / 2;
  constexpr int FIX = MOSAIC_WS_BIG_SPLIT_FIXUP;  // split-K fix-up (device_common.cuh, NOTES.md v28)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sbase = smem_u32(smem);
  const int tid = threadIdx.x, wg = tid >> 7, ws = (tid >> 5) & 3, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int ntn = p.NT / 2, mtn = (p.M + BT - 1) / BT;
  const int pid = blockIdx.x, per_group = WG_GROUP_M * ntn;
  const int first_m = (pid / per_group) * WG_GROUP_M, gsz = min(mtn - first_m, WG_GROUP_M);
  const int mt = first_m + (pid % per_group) % gsz, ntile = (pid % per_group) / gsz;
  const int nt0 = ntile * 2, m0 = mt * BT, KT = p.KT;
  // split-K (NOTES.md v26): CTA (tile, blockIdx.y) runs k-tiles [kt0, kt0 + nkt); loops count tiles i = kt - kt0.
  // MOSAIC_WS_BIG_BALANCED builds (v28): the cuts of n tile ntile from p.split_bounds [ntn][splitk + 1] when given
  const int split = SPLIT ? blockIdx.y : 0;
  int kt0 = SPLIT ? split * p.kt_per_split : 0, nkt = SPLIT ? min(KT, kt0 + p.kt_per_split) - kt0 : KT;
  if (SPLIT && MOSAIC_WS_BIG_BALANCED && p.split_bounds != nullptr) {
    const int* const b = p.split_bounds + ntile * (p.splitk + 1) + split;
    kt0 = __ldg(b);
    nkt = __ldg(b + 1) - kt0;
  }
  __shared__ int s_store;  // split-K: whether this CTA stores the output tile (the last split to finish)
  auto full_bar = [&](int s) { return sbase + L::BARS + 8 * s; };
  auto empty_bar = [&](int s) { return sbase + L::BARS + 8 * (STAGES + s); };
  if (tid == 0) {
    s_store = 0;
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full_bar(s), MOSAIC_WS_BIG_SPLIT_PRODUCER ? 2 : 1);  // one arrive.expect_tx per producer lane
      mbar_init(empty_bar(s), 8);  // the 8 consumer warps release a stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 2) {
    // ---- producer warpgroup (registers handed to the consumers). A lane of one warp issues every copy of a k-tile,
    // or (MOSAIC_WS_BIG_SPLIT_PRODUCER, NOTES.md v25) lanes of two warps share them: warp 8 the weight units and
    // the residual, warp 9 the scales, zeros and X, each with its own arrive.expect_tx on the stage's full barrier
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    auto produce = [&](auto weights_role, auto x_role) {
      constexpr bool WROLE = decltype(weights_role)::value, XROLE = decltype(x_role)::value;
      constexpr bool ZLOAD = WROLE && MODE == MODE_ZIPPER && MOSAIC_WS_BIG_ZPROBE < 2;
      // X may be written by the previous kernel in the stream; the weights are not (they are requested before)
      if constexpr (XROLE) griddep_wait();
      const uint8_t* const wb = static_cast<const uint8_t*>(p.w);
      const int own_bytes = (WROLE ? 2 * 2048 : 0) + (XROLE ? 256 + (p.zeros != nullptr ? 256 : 0) + BT * 128 : 0);
      uint32_t zword[2] = {0u, 0u}, zany = 0u;
      int zid0[2] = {0, 0};
      for (int i = 0; i < nkt; ++i) {
        const int kt = kt0 + i, slot = i % STAGES;
        if (i >= STAGES) mbar_wait(empty_bar(slot), (i / STAGES - 1) & 1);
        const uint32_t st = sbase + slot * L::STAGE, fb = full_bar(slot);
        int bytes = own_bytes;
        int rid[2] = {-1, -1};
        bool res_tile = false;  // whether either unit has a residual unit at this k-tile
        if constexpr (WROLE && MODE == MODE_ZIPPER) {
          if ((kt & 31) == 0 || i == 0) {  // a new 32-tile block (or the split's first): bit words and first unit ids
            const int zw = kt >> 5;
            if constexpr (ZLOAD) {
#pragma unroll
              for (int u = 0; u < 2; ++u) {
                const size_t row = (size_t)(nt0 + u) * p.KW + zw;
                zword[u] = __ldg(p.res_bits + row);
                zid0[u] = __ldg(p.res_base + row);
              }
            }
            // the consumers read block zw's word after the full barrier of its first tile in the split (this
            // thread's arrive on it releases the store); the slot is rewritten for block zw + 2 only after both
            // consumer warpgroups released tile 32 (zw + 2) - STAGES, past that first tile
#pragma unroll
            for (int u = 0; u < 2; ++u) reinterpret_cast<uint32_t*>(smem + L::OFF_ZRING)[(zw & 1) * 2 + u] = zword[u];
            zany = zword[0] | zword[1];
          }
          // one test on the common path (no residual at this tile: the dense kernel's copies and byte count);
          // the ids and bytes of the residual units only on the budget's share of tiles (NOTES.md v25)
          res_tile = (zany >> (kt & 31)) & 1u;
          if (res_tile) {
#pragma unroll
            for (int u = 0; u < 2; ++u) {
              const uint32_t w = zword[u];
              if ((w >> (kt & 31)) & 1u) {
                rid[u] = zid0[u] + __popc(w & ((1u << (kt & 31)) - 1u));
                bytes += 2048 + 128;
              }
            }
          }
        }
        mbar_expect_tx(fb, bytes);
        if constexpr (WROLE) {
#pragma unroll
          for (int u = 0; u < 2; ++u)
            bulk_g2s(st + L::OFF_W + u * 2048, wb + ((size_t)(nt0 + u) * KT + kt) * 2048, 2048, fb);
        }
        if constexpr (XROLE) {
          const size_t so = (size_t)group_of_tile(kt, p.gs_shift, p.gs_tiles) * p.Np + (size_t)nt0 * 64;
          bulk_g2s(st + L::OFF_S, static_cast<const T*>(p.scales) + so, 256, fb);
          if (p.zeros != nullptr) bulk_g2s(st + L::OFF_Z, static_cast<const T*>(p.zeros) + so, 256, fb);
        }
        if (WROLE && MODE == MODE_ZIPPER && res_tile) {
#pragma unroll
          for (int u = 0; u < 2; ++u)
            if (rid[u] >= 0) {
              bulk_g2s(st + L::OFF_R + u * 2048, static_cast<const uint8_t*>(p.rw) + (size_t)rid[u] * 2048, 2048, fb);
              bulk_g2s(st + L::OFF_RS + u * 128, static_cast<const T*>(p.rs) + (size_t)rid[u] * 64, 128, fb);
            }
        }
        if constexpr (XROLE) tma_load_2d(st + L::OFF_X, &tmx, kt * 64, m0, fb);
      }
    };
    if constexpr (MOSAIC_WS_BIG_SPLIT_PRODUCER) {
      if (tid == 256) produce(std::true_type{}, std::false_type{});
      if (tid == 288) produce(std::false_type{}, std::true_type{});
    } else {
      if (tid == 256) produce(std::true_type{}, std::true_type{});
    }
  } else {
    // ---- consumer warpgroup wg: unit nt0 + wg, all BT tokens
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    float acc[NACC];
#pragma unroll
    for (int i = 0; i < NACC; ++i) acc[i] = 0.f;
    // whether tile t has a residual unit: from the unit's bit word of the tile's 32-tile block, read from the
    // producer's ring once per block, not from a flag per stage, so that the dequantization's branch waits on a
    // shared load after the full barrier once per 32 tiles, not every tile (NOTES.md v23)
    uint32_t zcur = 0u;
    auto dequant = [&](int slot, bool wr, uint32_t (&a)[4][4]) {
      const uint8_t* st = smem + slot * L::STAGE;
      dequant_slice<T>(st + L::OFF_W + wg * 2048, reinterpret_cast<const T*>(st + L::OFF_S) + wg * 64,
                       p.zeros != nullptr ? reinterpret_cast<const T*>(st + L::OFF_Z) + wg * 64 : nullptr,
                       st + L::OFF_R + wg * 2048, reinterpret_cast<const T*>(st + L::OFF_RS) + wg * 64, wr, ws, lane, a);
    };
    auto mma_tile = [&](int slot, uint32_t (&a)[4][4]) { wgmma_ktile<T, BT>(acc, a, sbase + slot * L::STAGE + L::OFF_X); };
    // wait for tile t's stage and dequantize it into a
    auto prep = [&](int t, uint32_t (&a)[4][4]) {  // t: the split's t-th tile, k-tile kt0 + t
      const int slot = t % STAGES, kt = kt0 + t;
      mbar_wait(full_bar(slot), (t / STAGES) & 1);
      if (MODE == MODE_ZIPPER && MOSAIC_WS_BIG_ZPROBE == 0 && ((kt & 31) == 0 || t == 0))
        zcur = reinterpret_cast<const uint32_t*>(smem + L::OFF_ZRING)[((kt >> 5) & 1) * 2 + wg];
      dequant(slot, MODE == MODE_ZIPPER && MOSAIC_WS_BIG_ZPROBE == 0 && ((zcur >> (kt & 31)) & 1u), a);
    };
    auto retire = [&](int t) {
      wg_wait<0>();
      if (lane == 0) mbar_arrive(empty_bar(t % STAGES));
    };
    if constexpr (BT == 128) {
      // two A register buffers (NOTES.md v24): tile t + 1 is dequantized while tile t's wgmmas run, so the
      // dequantization leaves the warpgroup's critical path (ptxas compiles the kernel for 168 registers:
      // 64 accumulators + 2 x 16 fit at bt 128, not the 128 accumulators of bt 256)
      uint32_t a0[4][4], a1[4][4];
      prep(0, a0);
      for (int t = 0; t < nkt; t += 2) {
        mma_tile(t % STAGES, a0);
        if (t + 1 < nkt) prep(t + 1, a1);
        retire(t);
        if (t + 1 >= nkt) break;
        mma_tile((t + 1) % STAGES, a1);
        if (t + 2 < nkt) prep(t + 2, a0);
        retire(t + 1);
      }
    } else {
      // one register buffer (168 registers at launch: 128 accumulators leave no room for two): a warpgroup
      // dequantizes tile t, issues its wgmmas and waits for them; the other warpgroup's wgmmas keep the
      // tensor cores busy meanwhile (ping-pong without an explicit order)
      uint32_t a[4][4];
      for (int t = 0; t < nkt; ++t) {
        prep(t, a);
        mma_tile(t % STAGES, a);
        retire(t);
      }
    }
    // both consumer warpgroups are done with every stage (named barrier 1, 256 threads): the shared
    // memory takes the output tile; the accumulators die here, not in the producer's 40 registers
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
    if constexpr (SPLIT && FIX == 1) {
      // cluster fix-up: the partial stays in this CTA's shared memory (thread-fragment order: float j of
      // consumer thread tid at [j][tid]), summed after the cluster barrier below
      float* const red = reinterpret_cast<float*>(smem);
#pragma unroll
      for (int j = 0; j < NACC; ++j) red[j * 256 + tid] = acc[j];
    } else if constexpr (SPLIT && FIX == 9) {
      if (tid == 0) s_store = split == 0;  // probe build: no fix-up, split 0 stores its own partial
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
    } else if constexpr (SPLIT) {
      // split-K fix-up through global memory: every split writes its fp32 partial tile (thread-fragment order,
      // coalesced: float j of consumer thread tid at [j][tid] of the split's plane); the last split of the tile
      // to arrive (one counter per tile, self-resetting) sums all planes in split order, so the result does not
      // depend on which split is last (deterministic), and stores the tile
      float* const planes = p.ws + (size_t)blockIdx.x * p.splitk * NACC * 256 + tid;
#pragma unroll
      for (int j = 0; j < NACC; ++j) __stcg(planes + ((size_t)split * NACC + j) * 256, acc[j]);
      __threadfence();
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      if (tid == 0) {
        int* const counter = p.counters + blockIdx.x;
        const bool last = atomicAdd(counter, 1) == p.splitk - 1;
        if (last) *counter = 0;  // every split has arrived: reset for the next launch
        s_store = last;
      }
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      if (s_store) {
        __threadfence();
#pragma unroll
        for (int j = 0; j < NACC; ++j) acc[j] = 0.f;
        for (int s = 0; s < p.splitk; ++s)
#pragma unroll
          for (int j = 0; j < NACC; ++j) acc[j] += __ldcg(planes + ((size_t)s * NACC + j) * 256);
      }
    }
    if (!SPLIT || (FIX != 1 && s_store)) {
      T* const Ys = reinterpret_cast<T*>(smem);
#pragma unroll
      for (int j = 0; j < NACC; ++j) {
        const int n = wg * 64 + ws * 16 + g + 8 * ((j >> 1) & 1);
        const int tok = 8 * (j >> 2) + 2 * t4 + (j & 1);
        Ys[tok * L::Y_PITCH + n] = Tr::from_f(acc[j]);
      }
    }
  }
  if (p.pdl & 2) griddep_launch_dependents();
  __syncthreads();
  // the cluster fix-up's epilogue tile sits after the partials
  constexpr int RED_BYTES = FIX == 1 && SPLIT ? NACC * 256 * 4 : 0;
  static_assert(RED_BYTES + BT * L::Y_PITCH * 2 <= L::BARS, "cluster fix-up: partials and epilogue tile must fit the stages");
  if constexpr (SPLIT && FIX == 1) {
    // the splits of a tile are one cluster along grid y (rank = split): after the barrier every rank's partial is
    // in its shared memory; rank r sums the 8-token groups q with q % splitk == r over all ranks in rank order (the
    // global fix-up's order: the same bits) into its epilogue tile; the second barrier keeps every CTA's partials
    // alive until all ranks have read them
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    if (tid < 256) {
      float* const red = reinterpret_cast<float*>(smem);
      T* const Yc = reinterpret_cast<T*>(smem + RED_BYTES);
      auto sum_owned = [&](auto s_c) {  // S a compile-time count: all 4 S DSMEM loads of a group in flight
        constexpr int S = decltype(s_c)::value;
        const float* rp[S];
#pragma unroll
        for (int r = 0; r < S; ++r) rp[r] = cl.map_shared_rank(red, r) + tid;
#pragma unroll 1
        for (int q = split; q < NACC / 4; q += S) {
          float v[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int r = 0; r < S; ++r)
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) v[jj] += rp[r][(4 * q + jj) * 256];
#pragma unroll
          for (int jj = 0; jj < 4; ++jj)  // j = 4 q + jj: (j >> 1) & 1 = jj >> 1, j & 1 = jj & 1
            Yc[(8 * q + 2 * t4 + (jj & 1)) * L::Y_PITCH + wg * 64 + ws * 16 + g + 8 * (jj >> 1)] = Tr::from_f(v[jj]);
        }
      };
      switch (p.splitk) {
        case 2: sum_owned(std::integral_constant<int, 2>{}); break;
        case 3: sum_owned(std::integral_constant<int, 3>{}); break;
        case 4: sum_owned(std::integral_constant<int, 4>{}); break;
        case 5: sum_owned(std::integral_constant<int, 5>{}); break;
        case 6: sum_owned(std::integral_constant<int, 6>{}); break;
        case 7: sum_owned(std::integral_constant<int, 7>{}); break;
        default: sum_owned(std::integral_constant<int, 8>{}); break;
      }
    }
    cl.sync();
  }
  if (SPLIT && FIX != 1 && !s_store) return;  // split-K: another split of this tile stores it
  const T* const Ys = reinterpret_cast<const T*>(smem + RED_BYTES);
  constexpr int YP = L::Y_PITCH;
  T* const Y = static_cast<T*>(p.y);
  const bool vec = (p.N & 7) == 0 && (reinterpret_cast<uintptr_t>(Y) & 15) == 0;
  for (int c = tid; c < BT * 16; c += WS_BIG_THREADS) {
    const int r = c >> 4, ch = c & 15, tok = m0 + r, n = nt0 * 64 + ch * 8;
    if (tok >= p.M || n >= p.N || (SPLIT && FIX == 1 && (r >> 3) % p.splitk != split)) continue;
    const T* src = Ys + r * YP + ch * 8;
    T* dst = Y + (size_t)tok * p.N + n;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int i = 0; i < 8 && n + i < p.N; ++i) dst[i] = src[i];
    }
  }
#else
  __trap();
#endif
}

// cuTensorMapEncodeTiled from the driver, looked up once
using EncodeFn = PFN_cuTensorMapEncodeTiled_v12000;
const char* encoder(EncodeFn* fn) {
  static EncodeFn encode = nullptr;
  if (encode == nullptr) {
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode), 12000,
                                         cudaEnableDefault, &q) != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      encode = nullptr;
      cudaGetLastError();
      return "cuTensorMapEncodeTiled not available from the driver";
    }
  }
  *fn = encode;
  return "";
}
template <typename T>
constexpr CUtensorMapDataType tensor_dtype() {
  return std::is_same<T, half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
}

// X [M, K] as a 2-D TMA tensor: boxes of 64 k x BT rows, 128-byte swizzle (the wgmma B layout),
// rows past M and columns past K read as zeros
template <typename T, int BT>
const char* x_tensor_map_2d(const Params& p, CUtensorMap* map) {
  EncodeFn encode;
  const char* err = encoder(&encode);
  if (err[0]) return err;
  const cuuint64_t dims[2] = {(cuuint64_t)p.K, (cuuint64_t)p.M};
  const cuuint64_t strides[1] = {(cuuint64_t)p.K * sizeof(T)};
  const cuuint32_t box[2] = {64, BT};
  const cuuint32_t es[2] = {1, 1};
  const CUresult r = encode(map, tensor_dtype<T>(), 2, const_cast<void*>(p.x), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? "" : "cuTensorMapEncodeTiled failed for X (alignment or size)";
}

template <typename T, int BT, int MODE, bool SPLIT>
const char* launch_ws_big(const Params& p, cudaStream_t stream) {
  using L = WsBigLayout<BT, MODE>;
  auto kern = w4a16_wgmma_ws_big_kernel<T, BT, MODE, SPLIT>;
  static bool attr_set = false;
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, L::SMEM);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    attr_set = true;
  }
  if (p.splitk > 1 && (p.ws == nullptr || p.counters == nullptr))
    return "split-K of the warp-specialized large tiles needs a workspace and counters";
  if (p.split_bounds != nullptr && !(SPLIT && MOSAIC_WS_BIG_BALANCED))
    return "split_bounds given, but this build's large tiles take no balanced split ranges (MOSAIC_WS_BIG_BALANCED=0) or splitk is 1";
  CUtensorMap map;
  const char* err = x_tensor_map_2d<T, BT>(p, &map);
  if (err[0]) return err;
  // grid y = the K splits of a tile; with the cluster fix-up (MOSAIC_WS_BIG_SPLIT_FIXUP=1) they form one cluster,
  // else they meet in global memory
  const int cluster_y = SPLIT && MOSAIC_WS_BIG_SPLIT_FIXUP == 1 ? p.splitk : 1;
  return launch_ex(kern, dim3(p.NT / 2 * ((p.M + BT - 1) / BT), p.splitk), dim3(WS_BIG_THREADS), L::SMEM, stream, p.pdl,
                   cluster_y, p, map);
}

// ---------------------------------------------------------------- warp-specialized kernel, small tiles (wgs 3, bt 8..64)
// Opt-in ($MOSAIC_WS_SMALL_MAX_M): measured slower than the tiled kernel at M <= 16 (NOTES.md v12).
// CTA = 2 consumer warpgroups (one 64-wide unit each, wgmma m64nBT: all BT tokens) + a producer warp, 2 CTAs
// per SM. A pipeline stage holds KB k-tiles: the producer fills it with one bulk copy per unit (its KB
// tiles are contiguous), one TMA each for the X slabs (a 3-D tensor view when K % 64 == 0), the scales and
// the zeros, and a bulk copy per residual unit, all completing on the stage's "full" mbarrier; consumers
// wait on it, dequantize, run their wgmmas and release the stage on its "empty" mbarrier.
//   - Two A register buffers (tile t+1 is dequantized while tile t's wgmmas run) and independent
//     accumulator sets (a narrow wgmma is mostly latency).
//   - K split over a thread-block cluster, the partials summed through DSMEM in rank order (deterministic).
//   - The weights of the first stages are requested before griddepcontrol.wait (PDL).
//   - Zipper: the host bounds the residual units of any stage (both units) by p.rslots (from the densest
//     window of KB k-tiles); the producer assigns them slots in order and writes a (unit, tile) -> slot
//     table into the stage (and traps if the bound is wrong).
template <int BT>
struct WsShape {
  static_assert(BT == 8 || BT == 16 || BT == 32 || BT == 64, "small tiles only (bt 128 / 256: the large-tile kernel)");
  static constexpr int THREADS = 256 + 32;  // 2 consumer warpgroups + a producer warp
  static constexpr int CTAS = 2;            // per SM (registers: 288 x 112 x 2)
  static constexpr int MAX_STAGES = 6;
  static constexpr int ACCS = BT <= 8 ? 4 : BT <= 32 ? 2 : 1;  // independent accumulator sets
  static constexpr int KB = BT <= 32 ? 4 : 2;                  // k-tiles per stage
  static constexpr int BUDGET = 233472 / 2 - 1024 - 1024;      // per CTA, less the runtime reserve and alignment slack
};
struct WsStage {
  int off_w, off_s, off_z, off_r, off_rs, off_rt, bytes;
};
__host__ __device__ inline WsStage ws_stage(int bt, int kb, int rslots) {
  WsStage s;
  s.off_w = kb * bt * 128;             // X: kb slabs of bt rows x 128 B, 128-byte swizzle (1024-B aligned)
  s.off_s = s.off_w + kb * 2 * 2048;   // codes: unit 0's kb tiles, then unit 1's
  s.off_z = s.off_s + kb * 256;        // scales: kb rows (groups g0 .. g0 + kb - 1) x 128 n
  s.off_r = s.off_z + kb * 256;        // zeros, same
  s.off_rs = s.off_r + rslots * 2048;  // residual units (slots)
  s.off_rt = s.off_rs + rslots * 128;  // their row scales
  s.bytes = (s.off_rt + 2 * kb * 4 + 1023) / 1024 * 1024;  // + slot table [unit][tile] (-1: none)
  return s;
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
               ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}
__device__ __forceinline__ int group_of(const Params& p, int kt) { return group_of_tile(kt, p.gs_shift, p.gs_tiles); }

template <typename T, int BT, int MODE>
__global__ void __launch_bounds__(WsShape<BT>::THREADS, WsShape<BT>::CTAS)
    w4a16_wgmma_ws_kernel(const Params p, const __grid_constant__ CUtensorMap tmx, const __grid_constant__ CUtensorMap tms,
                          const __grid_constant__ CUtensorMap tmz) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tr = Traits<T>;
  using Sh = WsShape<BT>;
  constexpr int NACC = BT / 2, KB = Sh::KB;
  const WsStage L = ws_stage(BT, KB, MODE == MODE_ZIPPER ? p.rslots : 0);
  const int STAGES = p.ws_stages, SB = L.bytes;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const uint32_t sbase = smem_u32(smem);
  const int tid = threadIdx.x, wg = tid >> 7, ws = (tid >> 5) & 3, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int ntn = p.NT / 2, mtn = (p.M + BT - 1) / BT;
  const int pid = blockIdx.x, per_group = WG_GROUP_M * ntn;
  const int first_m = (pid / per_group) * WG_GROUP_M, gsz = min(mtn - first_m, WG_GROUP_M);
  const int mt = first_m + (pid % per_group) % gsz, ntile = (pid % per_group) / gsz;
  const int nt0 = ntile * 2, m0 = mt * BT, KT = p.KT;
  // split-K (grid y = the splits of one output tile, one thread-block cluster): k-tiles kt0 .. kt0 + NTL - 1
  const int S = p.splitk, rank = blockIdx.y;
  const int kt0 = rank * p.kt_per_split, NTL = min(KT, kt0 + p.kt_per_split) - kt0, NS = (NTL + KB - 1) / KB;
  const uint32_t bars = sbase + STAGES * SB;
  auto full_bar = [&](int s) { return bars + 8 * s; };
  auto empty_bar = [&](int s) { return bars + 8 * (STAGES + s); };
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full_bar(s), 1);
      mbar_init(empty_bar(s), 8);  // the 8 consumer warps release a stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  // the 8-wide n chunk (of 16) of token group q that split rank (c % S) sums and stores
  auto owns = [&](int q, int chunk) { return S == 1 || (q * 16 + chunk) % S == rank; };
  // PDL 'early': the dependent grid may start its weight prologue now; it reads what this grid writes only
  // after its own griddepcontrol.wait, which waits for this grid to complete
  if (p.pdl == 1 && tid != 256) griddep_launch_dependents();

  if (tid >= 256) {
    // ---- producer warp
    if (tid == 256) {
      const uint8_t* const wb = static_cast<const uint8_t*>(p.w);
      // zipper: the bit words of both units' rows covering the current k-tile (reloaded once per 32
      // k-tiles, the 4 loads independent) and the ids of their first residual units
      int zw = -1;
      uint32_t zword[2] = {0u, 0u};
      int zid0[2] = {0, 0};
      // codes, scales, zeros and residual units of stage i into its slot (after the consumers released
      // it); the slot's full barrier expects every byte of the stage, X included
      auto issue_w = [&](int i, int slot, int phase) {  // phase: of stage i's slot (its round over the slots)
        const int t0 = i * KB, nk = min(KB, NTL - t0), kt = kt0 + t0;
        if (i >= STAGES) mbar_wait(empty_bar(slot), phase ^ 1);
        const uint32_t st = sbase + slot * SB, fb = full_bar(slot);
        int bytes = 2 * nk * 2048 + KB * 256 * (p.zeros != nullptr ? 2 : 1) + (p.ws_x3d ? KB : nk) * BT * 128;
        int rid[2][KB];
        int nres = 0;
        if constexpr (MODE == MODE_ZIPPER) {
          int* const table = reinterpret_cast<int*>(smem + slot * SB + L.off_rt);
#pragma unroll
          for (int j = 0; j < KB; ++j) {
            const int k = kt + j;
            if (j < nk && (k >> 5) != zw) {
              zw = k >> 5;
#pragma unroll
              for (int u = 0; u < 2; ++u) {
                const size_t row = (size_t)(nt0 + u) * p.KW + zw;
                zword[u] = __ldg(p.res_bits + row);
                zid0[u] = __ldg(p.res_base + row);
              }
            }
#pragma unroll
            for (int u = 0; u < 2; ++u) {
              rid[u][j] = -1;
              if (j < nk && ((zword[u] >> (k & 31)) & 1u)) rid[u][j] = zid0[u] + __popc(zword[u] & ((1u << (k & 31)) - 1u));
              table[u * KB + j] = rid[u][j] >= 0 ? nres : -1;
              nres += rid[u][j] >= 0;
            }
          }
          if (nres > p.rslots) __trap();  // the host's bound was wrong: fail loudly, never overwrite
          bytes += nres * (2048 + 128);
        }
        mbar_expect_tx(fb, bytes);
#pragma unroll
        for (int u = 0; u < 2; ++u)
          bulk_g2s(st + L.off_w + u * KB * 2048, wb + ((size_t)(nt0 + u) * KT + kt) * 2048, nk * 2048, fb);
        tma_load_2d(st + L.off_s, &tms, nt0 * 64, group_of(p, kt), fb);
        if (p.zeros != nullptr) tma_load_2d(st + L.off_z, &tmz, nt0 * 64, group_of(p, kt), fb);
        if constexpr (MODE == MODE_ZIPPER) {
          int r = 0;
#pragma unroll
          for (int j = 0; j < KB; ++j)
#pragma unroll
            for (int u = 0; u < 2; ++u)
              if (rid[u][j] >= 0) {
                bulk_g2s(st + L.off_r + r * 2048, static_cast<const uint8_t*>(p.rw) + (size_t)rid[u][j] * 2048, 2048, fb);
                bulk_g2s(st + L.off_rs + r * 128, static_cast<const T*>(p.rs) + (size_t)rid[u][j] * 64, 128, fb);
                ++r;
              }
        }
      };
      auto issue_x = [&](int i, int slot) {
        const int t0 = i * KB, nk = min(KB, NTL - t0);
        const uint32_t st = sbase + slot * SB;
        if (p.ws_x3d) {
          tma_load_3d(st, &tmx, 0, m0, kt0 + t0, full_bar(slot));  // KB slabs; past K: zeros
        } else {
          for (int j = 0; j < nk; ++j) tma_load_2d(st + j * BT * 128, &tmx, (kt0 + t0 + j) * 64, m0, full_bar(slot));
        }
      };
      // weights do not depend on the previous kernel in the stream, X may: the first stages' weights
      // go out before griddepcontrol.wait (a no-op without PDL)
      const int pro = min(NS, STAGES);
      for (int i = 0; i < pro; ++i) issue_w(i, i, 0);
      griddep_wait();
      if (p.pdl == 1) griddep_launch_dependents();
      for (int i = 0; i < pro; ++i) issue_x(i, i);
      for (int i = pro, slot = 0, phase = 1; i < NS; ++i) {
        issue_w(i, slot, phase);
        issue_x(i, slot);
        if (++slot == STAGES) {
          slot = 0;
          phase ^= 1;
        }
      }
    }
    __syncwarp();
    if (S > 1) {  // the consumers' two cluster barriers of the split-K sum
      cluster_sync_all();
      cluster_sync_all();
    }
  } else {
    // ---- consumer warpgroup wg: unit nt0 + wg, all BT tokens
    // ACCS accumulator sets, k16 step s of every tile into set s % ACCS: a narrow wgmma (n8, n16) is
    // mostly pipeline latency, and 4 dependent ones per tile would serialize the tile on it
    constexpr int ACCS = Sh::ACCS;
    float acc[ACCS][NACC];
#pragma unroll
    for (int c = 0; c < ACCS; ++c)
#pragma unroll
      for (int i = 0; i < NACC; ++i) acc[c][i] = 0.f;
    // the stage slot and mbarrier phase of the next tile to dequantize, advanced per stage (no division by
    // the run-time stage count in the mainloop: at large M the consumers are issue bound)
    int dq_slot = 0, dq_phase = 0;
    auto dequant = [&](int t, uint32_t (&a)[4][4]) {  // local tile t (in order); waits for its stage at the stage's first tile
      const int j = t % KB, slot = dq_slot;
      if (j == 0) mbar_wait(full_bar(slot), dq_phase);
      if (j == KB - 1 || t == NTL - 1) {
        dq_phase ^= dq_slot == STAGES - 1;
        dq_slot = dq_slot == STAGES - 1 ? 0 : dq_slot + 1;
      }
      const uint8_t* st = smem + slot * SB;
      const int grow = KB == 1 ? 0 : group_of(p, kt0 + t) - group_of(p, kt0 + t - j);
      const int r = MODE == MODE_ZIPPER ? reinterpret_cast<const int*>(st + L.off_rt)[wg * KB + j] : -1;
      const int rr = r < 0 ? 0 : r;
      dequant_slice<T>(st + L.off_w + (wg * KB + j) * 2048, reinterpret_cast<const T*>(st + L.off_s + grow * 256) + wg * 64,
                       p.zeros != nullptr ? reinterpret_cast<const T*>(st + L.off_z + grow * 256) + wg * 64 : nullptr,
                       st + L.off_r + rr * 2048, reinterpret_cast<const T*>(st + L.off_rs + rr * 128), r >= 0, ws, lane, a);
      return slot;
    };
    auto mma_tile = [&](int t, int slot, uint32_t (&a)[4][4]) {
      wgmma_ktile<T, BT>(acc, a, sbase + slot * SB + (t % KB) * (BT * 128));
    };
    auto done_with = [&](int t, int slot) {  // tile t's wgmmas are complete: release its stage after its last tile
      if ((t % KB == KB - 1 || t == NTL - 1) && lane == 0) mbar_arrive(empty_bar(slot));
    };
    {
      // two buffers: tile t + 1 is dequantized while tile t's wgmmas run; tile t - 1's wgmmas (done at
      // wait_group 1) free its buffer (and its stage after the stage's last tile)
      uint32_t a0[4][4], a1[4][4];
      int slot_prev = 0, slot_cur = 0;
      auto step = [&](int t, uint32_t (&acur)[4][4], uint32_t (&anext)[4][4]) {
        mma_tile(t, slot_cur, acur);
        wg_wait<1>();
        if (t > 0) done_with(t - 1, slot_prev);
        slot_prev = slot_cur;
        if (t + 1 < NTL) slot_cur = dequant(t + 1, anext);
      };
      if (NTL > 0) slot_cur = dequant(0, a0);
      int t = 0;
      for (; t + 1 < NTL; t += 2) {
        step(t, a0, a1);
        step(t + 1, a1, a0);
      }
      if (t < NTL) step(t, a0, a1);
      wg_wait<0>();
    }
    // both consumer warpgroups are done with every stage (named barrier 1, 256 threads): the shared
    // memory takes the split-K partials, then the output tile; the accumulators die here, not in the
    // producer's registers
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
#pragma unroll
    for (int c = 1; c < ACCS; ++c)
#pragma unroll
      for (int i = 0; i < NACC; ++i) acc[0][i] += acc[c][i];
    {
      if (S > 1) {
        namespace cg = cooperative_groups;
        float* const red = reinterpret_cast<float*>(smem);
#pragma unroll
        for (int j = 0; j < NACC; ++j) red[j * 256 + tid] = acc[0][j];
        cluster_sync_all();
#pragma unroll
        for (int j = 0; j < NACC; ++j)
          if (owns(j >> 2, wg * 8 + ws * 2 + ((j >> 1) & 1))) {
            float v = 0.f;
            for (int q = 0; q < S; ++q) v += cg::this_cluster().map_shared_rank(red, q)[j * 256 + tid];
            acc[0][j] = v;
          }
        cluster_sync_all();  // every rank has read this CTA's partials: its shared memory may be reused
      }
    }
    T* const Ys = reinterpret_cast<T*>(smem);
#pragma unroll
    for (int j = 0; j < NACC; ++j) {
      const int n = wg * 64 + ws * 16 + g + 8 * ((j >> 1) & 1);
      const int tok = 8 * (j >> 2) + 2 * t4 + (j & 1);
      if (owns(j >> 2, n >> 3)) Ys[tok * WS_Y_PITCH + n] = Tr::from_f(acc[0][j]);
    }
  }
  if (p.pdl & 2) griddep_launch_dependents();
  __syncthreads();
  const T* const Ys = reinterpret_cast<const T*>(smem);
  T* const Y = static_cast<T*>(p.y);
  const bool vec = (p.N & 7) == 0 && (reinterpret_cast<uintptr_t>(Y) & 15) == 0;
  for (int c = tid; c < BT * 16; c += Sh::THREADS) {
    const int r = c >> 4, ch = c & 15, tok = m0 + r, n = nt0 * 64 + ch * 8;
    if (tok >= p.M || n >= p.N || !owns(r >> 3, ch)) continue;
    const T* src = Ys + r * WS_Y_PITCH + ch * 8;
    T* dst = Y + (size_t)tok * p.N + n;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int i = 0; i < 8 && n + i < p.N; ++i) dst[i] = src[i];
    }
  }
#else
  __trap();
#endif
}

// Tensor maps of the warp-specialized kernel. X [M, K]: 2-D boxes of 64 k x BT rows, or (K % 64 == 0) a
// 3-D view {64 k, M rows, K / 64 slabs} with boxes of KB slabs; 128-byte swizzle (the wgmma B layout), rows
// past M and k past K read as zeros. Scales / zeros [G, Np]: boxes of 128 n x KB groups.
template <typename T, int BT, int KB>
const char* ws_tensor_maps(const Params& p, CUtensorMap* mx, CUtensorMap* ms, CUtensorMap* mz) {
  EncodeFn encode;
  const char* err = encoder(&encode);
  if (err[0]) return err;
  const CUtensorMapDataType dt = tensor_dtype<T>();
  const cuuint32_t es[3] = {1, 1, 1};
  CUresult r;
  if (p.ws_x3d) {
    const cuuint64_t dims[3] = {64, (cuuint64_t)p.M, (cuuint64_t)(p.K / 64)};
    const cuuint64_t strides[2] = {(cuuint64_t)p.K * sizeof(T), 128};
    const cuuint32_t box[3] = {64, BT, KB};
    r = encode(mx, dt, 3, const_cast<void*>(p.x), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
               CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return "cuTensorMapEncodeTiled failed for X (alignment or size)";
  } else {
    err = x_tensor_map_2d<T, BT>(p, mx);
    if (err[0]) return err;
  }
  const int groups = p.gs_shift == 31 ? 1 : (p.KT + p.gs_tiles - 1) / p.gs_tiles;
  const cuuint64_t gdims[2] = {(cuuint64_t)p.Np, (cuuint64_t)groups};
  const cuuint64_t gstrides[1] = {(cuuint64_t)p.Np * sizeof(T)};
  const cuuint32_t gbox[2] = {128, KB};
  r = encode(ms, dt, 2, const_cast<void*>(p.scales), gdims, gstrides, gbox, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
             CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return "cuTensorMapEncodeTiled failed for the scales";
  if (p.zeros == nullptr) {
    *mz = *ms;
    return "";
  }
  r = encode(mz, dt, 2, const_cast<void*>(p.zeros), gdims, gstrides, gbox, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
             CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? "" : "cuTensorMapEncodeTiled failed for the zeros";
}

// stage geometry of a launch: fills p.ws_stages; returns the dynamic shared memory or
// -1 (and *why) when the pipeline or the epilogue does not fit
template <int BT>
int ws_plan(Params& p, int mode, int splitk, const char** why) {
  using Sh = WsShape<BT>;
  const int rs = mode == MODE_ZIPPER ? p.rslots : 0;
  if (mode == MODE_ZIPPER && (rs < 1 || rs > 2 * Sh::KB)) {
    *why = "residual slots per stage (rslots) must be in [1, 2 x k-tiles per stage]";
    return -1;
  }
  const WsStage st = ws_stage(BT, Sh::KB, rs);
  const int fit = Sh::BUDGET / (st.bytes + 16);
  const int stages = fit < Sh::MAX_STAGES ? fit : Sh::MAX_STAGES;
  if (stages < 2 || BT * WS_Y_PITCH * 2 > stages * st.bytes || (splitk > 1 && (BT / 2) * 256 * 4 > stages * st.bytes)) {
    *why = "the warp-specialized pipeline does not fit in shared memory";
    return -1;
  }
  p.ws_stages = stages;
  return stages * st.bytes + 16 * stages + 1024;
}

template <typename T, int BT, int MODE>
const char* launch_ws(Params p, cudaStream_t stream) {
  using Sh = WsShape<BT>;
  auto kern = w4a16_wgmma_ws_kernel<T, BT, MODE>;
  static bool attr_set = false;
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, Sh::BUDGET + 1024);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    attr_set = true;
  }
  const char* why = "";
  const int smem = ws_plan<BT>(p, MODE, p.splitk, &why);
  if (smem < 0) return why;
  // MOSAIC_WS_X2D=1 (an A/B switch for probes): one 2-D TMA per k-tile even where the 3-D view applies
  static const bool x2d = getenv("MOSAIC_WS_X2D") != nullptr && getenv("MOSAIC_WS_X2D")[0] == '1';
  p.ws_x3d = p.K % 64 == 0 && !x2d;
  CUtensorMap mx, ms, mz;
  const char* err = ws_tensor_maps<T, BT, Sh::KB>(p, &mx, &ms, &mz);
  if (err[0]) return err;
  // the K splits of an output tile: one cluster
  return launch_ex(kern, dim3(p.NT / 2 * ((p.M + BT - 1) / BT), p.splitk), dim3(Sh::THREADS), smem, stream, p.pdl, p.splitk,
                   p, mx, ms, mz);
}

template <typename T, int BT, int WGS, int MODE>
const char* launch_t(const Params& p, cudaStream_t stream) {
  using L = WgLayout<BT, WGS, MODE>;
  auto kern = w4a16_wgmma_kernel<T, BT, WGS, MODE>;
  static bool attr_set = false;
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, L::SMEM);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    attr_set = true;
  }
  if (p.splitk > 1 && !L::RED_FITS) return "split-K needs the accumulators to fit in the stages' shared memory";
  // the K splits of an output tile: one cluster
  return launch_ex(kern, dim3((p.NT + WGS - 1) / WGS * ((p.M + BT - 1) / BT), p.splitk), dim3(L::THREADS), L::SMEM, stream,
                   p.pdl, p.splitk, p);
}

template <typename T, int MODE>
const char* launch_m(const Params& p, int bt, int wgs, cudaStream_t stream) {
  if (wgs == 3) {
    switch (bt) {
      case 8: return launch_ws<T, 8, MODE>(p, stream);
      case 16: return launch_ws<T, 16, MODE>(p, stream);
      case 32: return launch_ws<T, 32, MODE>(p, stream);
      case 64: return launch_ws<T, 64, MODE>(p, stream);
      case 128: return p.splitk > 1 ? launch_ws_big<T, 128, MODE, true>(p, stream) : launch_ws_big<T, 128, MODE, false>(p, stream);
      default: return p.splitk > 1 ? launch_ws_big<T, 256, MODE, true>(p, stream) : launch_ws_big<T, 256, MODE, false>(p, stream);
    }
  }
  if (wgs == 2) return bt == 64 ? launch_t<T, 64, 2, MODE>(p, stream) : launch_t<T, 128, 2, MODE>(p, stream);
  return bt == 64 ? launch_t<T, 64, 4, MODE>(p, stream) : launch_t<T, 128, 4, MODE>(p, stream);
}
template <typename T>
const char* launch_dt(const Params& p, int mode, int bt, int wgs, cudaStream_t stream) {
  return mode == MODE_DENSE ? launch_m<T, MODE_DENSE>(p, bt, wgs, stream) : launch_m<T, MODE_ZIPPER>(p, bt, wgs, stream);
}

// the sm_90a image of one instantiation (0 when the module was built without sm_90a)
int image_arch() {
  cudaFuncAttributes a;
  if (cudaFuncGetAttributes(&a, w4a16_wgmma_kernel<__nv_bfloat16, 128, 2, MODE_DENSE>) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return a.binaryVersion;
}

}  // namespace

const char* launch_wgmma(const Params& p, int dtype, int mode, int bt, int wgs, void* stream_) {
  if (mode != MODE_DENSE && mode != MODE_ZIPPER) return "the wgmma kernel has the dense and zipper modes only";
  if (bt != 8 && bt != 16 && bt != 32 && bt != 64 && bt != 128 && bt != 256)
    return "token tile (bt) must be 8, 16, 32, 64, 128 or 256";
  if (wgs != 3 && bt != 64 && bt != 128) return "bt 8, 16, 32 and 256 are warp-specialized tiles: wgs must be 3";
  if (wgs < 2 || wgs > 4) return "warpgroups per CTA (wgs) must be 2, 3 (warp-specialized) or 4";
  if (p.Np % 64 || p.NT != p.Np / 64) return "padded n must be a multiple of 64";
  if (p.splitk < 1 || p.splitk > 8) return "splitk (cluster size) must be in [1, 8]";
  if (p.kt_per_split < 1 || (long)p.splitk * p.kt_per_split < p.KT || (long)(p.splitk - 1) * p.kt_per_split >= p.KT)
    return "split-K plan must cover every k-tile with no empty split";
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return "no CUDA device";
  }
  static const int arch = image_arch();  // a property of this module's binary: look it up once
  if (major != 9 || arch != 90) return "the wgmma kernels need an sm_90 GPU and a module built for sm_90a";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  if (dtype == DT_FP16) return launch_dt<half>(p, mode, bt, wgs, stream);
  if (dtype == DT_BF16) return launch_dt<__nv_bfloat16>(p, mode, bt, wgs, stream);
  return "unknown dtype";
}

template <int BT, int WGS>
int smem_of(int mode) {
  return mode == MODE_ZIPPER ? WgLayout<BT, WGS, MODE_ZIPPER>::SMEM : WgLayout<BT, WGS, MODE_DENSE>::SMEM;
}
template <int BT>
int ws_smem_of(int mode) {  // with the most residual slots a stage can need
  Params p = {};
  p.rslots = 2 * WsShape<BT>::KB;
  const char* why = "";
  return ws_plan<BT>(p, mode, 1, &why);
}
int wgmma_compact_cluster_fixup() { return MOSAIC_COMPACT_CLUSTER_FIXUP; }
int wgmma_split_producer() { return MOSAIC_WS_BIG_SPLIT_PRODUCER; }
int wgmma_split_fixup() { return MOSAIC_WS_BIG_SPLIT_FIXUP; }
int wgmma_balanced() { return MOSAIC_WS_BIG_BALANCED; }
int wgmma_zprobe() { return MOSAIC_WS_BIG_ZPROBE; }

int wgmma_ws_stage_ktiles(int bt) {
  switch (bt) {
    case 8: return WsShape<8>::KB;
    case 16: return WsShape<16>::KB;
    case 32: return WsShape<32>::KB;
    case 64: return WsShape<64>::KB;
    default: return 0;
  }
}

int wgmma_smem_bytes(int mode, int bt, int wgs) {
  if (wgs == 3) {
    switch (bt) {
      case 8: return ws_smem_of<8>(mode);
      case 16: return ws_smem_of<16>(mode);
      case 32: return ws_smem_of<32>(mode);
      case 64: return ws_smem_of<64>(mode);
      case 128: return mode == MODE_ZIPPER ? WsBigLayout<128, MODE_ZIPPER>::SMEM : WsBigLayout<128, MODE_DENSE>::SMEM;
      default: return mode == MODE_ZIPPER ? WsBigLayout<256, MODE_ZIPPER>::SMEM : WsBigLayout<256, MODE_DENSE>::SMEM;
    }
  }
  if (wgs == 2) return bt == 64 ? smem_of<64, 2>(mode) : smem_of<128, 2>(mode);
  return bt == 64 ? smem_of<64, 4>(mode) : smem_of<128, 4>(mode);
}

template <int BT, int WGS>
cudaError_t attrs_of(cudaFuncAttributes* a, int mode) {
  using B = __nv_bfloat16;
  return mode == MODE_ZIPPER ? cudaFuncGetAttributes(a, w4a16_wgmma_kernel<B, BT, WGS, MODE_ZIPPER>)
                             : cudaFuncGetAttributes(a, w4a16_wgmma_kernel<B, BT, WGS, MODE_DENSE>);
}
template <int BT>
cudaError_t ws_attrs_of(cudaFuncAttributes* a, int mode) {
  using B = __nv_bfloat16;
  return mode == MODE_ZIPPER ? cudaFuncGetAttributes(a, w4a16_wgmma_ws_kernel<B, BT, MODE_ZIPPER>)
                             : cudaFuncGetAttributes(a, w4a16_wgmma_ws_kernel<B, BT, MODE_DENSE>);
}
int wgmma_regs(int mode, int bt, int wgs) {
  cudaFuncAttributes a;
  cudaError_t e;
  if (wgs == 3) {
    switch (bt) {
      case 8: e = ws_attrs_of<8>(&a, mode); break;
      case 16: e = ws_attrs_of<16>(&a, mode); break;
      case 32: e = ws_attrs_of<32>(&a, mode); break;
      case 64: e = ws_attrs_of<64>(&a, mode); break;
      case 128: e = mode == MODE_ZIPPER ? cudaFuncGetAttributes(&a, w4a16_wgmma_ws_big_kernel<__nv_bfloat16, 128, MODE_ZIPPER, false>)
                                        : cudaFuncGetAttributes(&a, w4a16_wgmma_ws_big_kernel<__nv_bfloat16, 128, MODE_DENSE, false>); break;
      default: e = mode == MODE_ZIPPER ? cudaFuncGetAttributes(&a, w4a16_wgmma_ws_big_kernel<__nv_bfloat16, 256, MODE_ZIPPER, false>)
                                       : cudaFuncGetAttributes(&a, w4a16_wgmma_ws_big_kernel<__nv_bfloat16, 256, MODE_DENSE, false>);
    }
  } else {
    e = wgs == 2 ? (bt == 64 ? attrs_of<64, 2>(&a, mode) : attrs_of<128, 2>(&a, mode))
                 : (bt == 64 ? attrs_of<64, 4>(&a, mode) : attrs_of<128, 4>(&a, mode));
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return a.numRegs;
}

}  // namespace zipper
