// ZipperEngine W4A16: Y[M,N] = X[M,K] . (dequant(base int4) + dequant(residual int4 blocks))^T
//
// One templated kernel, three modes:
//   MODE_DENSE    base only
//   MODE_ZIPPER   base + residual: per (n-tile, k-tile) a LUT entry says whether a residual
//                 unit exists; if so its codes are streamed through the same cp.async stage
//                 and its dequantized values are added to the base B fragment before the MMA.
//   MODE_RESIDUAL residual only, k-tiles taken from a CSR list, result added into Y
//                 (the second kernel of the `separate` variant).
// mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate), weights pre-shuffled into fragment
// order (one 16-byte load per thread per 64x64 unit), cp.async multi-stage pipeline,
// int4 -> fp16/bf16 via the magic-exponent trick, split-K with an in-kernel serial fix-up
// (last CTA of a tile sums the partials in split order: deterministic, one launch).
#include "zipper.cuh"
#include "device_common.cuh"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace zipper {

namespace {

using namespace dev;

constexpr int THREADS = 128;
constexpr int UNIT_BYTES = 2048;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* smem) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <int MT, int NW, int MODE>
struct Layout {
  static constexpr int BM = MT * 16;
  static constexpr int X_BYTES = BM * 128;                         // BM x 64 halves, swizzled
  static constexpr int W_BYTES = MODE == MODE_RESIDUAL ? 0 : NW * UNIT_BYTES;
  // per-stage residual buffers only for the residual-only kernel; zipper uses a ring after the stages
  static constexpr int R_BYTES = MODE == MODE_RESIDUAL ? NW * UNIT_BYTES : 0;
  static constexpr int S_BYTES = MODE == MODE_RESIDUAL ? 0 : NW * 128;  // 64 scales / unit
  static constexpr int Z_BYTES = S_BYTES;
  static constexpr int RS_BYTES = MODE == MODE_RESIDUAL ? NW * 128 : 0;
  static constexpr int RING_UNIT = UNIT_BYTES + 128;  // zipper ring slot: codes + 64 row scales
  static constexpr int OFF_W = X_BYTES;
  static constexpr int OFF_R = OFF_W + W_BYTES;
  static constexpr int OFF_S = OFF_R + R_BYTES;
  static constexpr int OFF_Z = OFF_S + S_BYTES;
  static constexpr int OFF_RS = OFF_Z + Z_BYTES;
  static constexpr int STAGE = OFF_RS + RS_BYTES;
  // residual-only kernel: CSR entries of the CTA prefetched to dynamic smem after the stages
  static constexpr int MAX_PRE = 128;
  static constexpr int PRE_BYTES = MODE == MODE_RESIDUAL ? 2 * MAX_PRE * 4 : 0;
};

// cp.async.wait_group with a run-time count (n <= 7)
__device__ __forceinline__ void cp_async_wait_dyn(int n) {
  switch (n) {
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    case 7: cp_async_wait<7>(); break;
    default: cp_async_wait<0>(); break;
  }
}

// WK = warps along K inside the CTA: with WK=2 (256 threads) warps 4-7 take the k16 steps
// 2,3 of every 64-wide k-tile and warps 0-3 steps 0,1; the two halves are summed through
// shared memory at the end. Twice the warps per CTA for the same shared memory. Measured
// (NOTES.md v6): slower at M=1 (register-limited to 3 CTAs/SM, fewer split-K CTAs), so the
// small-M configs use WK=1; cfg 8 / 9 (64- and 32-row tiles) use WK=2 for M = 17..64 (NOTES.md v17).
//
// Minimum CTAs per SM for __launch_bounds__. WK = 2 (two warps along K: cfg 8 / 9): 3 or 2. The
// two-unit zipper kernels for M <= 32 say 4 (MT = 1) or 3 (MT = 2), their shared-memory residency at the
// usual ring sizes: without it ptxas held the MT = 1 kernel at ~84 registers by recomputing the thread's
// shared-memory addresses from the thread index on every tile (~20 of ~300 instructions per tile, NOTES.md
// v16); with it they use 111 / 145 registers and keep them. Everything else: no bound (0).
// A config's ZMIN (cfg 10-12, NOTES.md v20 / v21) overrides the zipper kernel's bound; kernel_of passes the result as
// the kernel's MINB.
constexpr int min_ctas_per_sm(int mt, int nw, int mode, int wk) {
  return wk == 2 ? (mt * nw <= 2 ? 3 : 2) : (mode == MODE_ZIPPER && nw == 2 && mt <= 2 ? 5 - mt : 0);
}
//
// No static shared memory: everything (pipeline stages, zipper ring, residual-only CSR prefetch,
// the split-K "last CTA" flag) lives in the dynamic allocation, so its size alone sets residency.
template <typename T, int MT, int NW, int MODE, int STAGES, int WK, int TPI, int MINB>
__global__ void __launch_bounds__(THREADS * WK, MINB) w4a16_kernel(const Params p) {
  constexpr int NTHR = THREADS * WK;
  constexpr int KS_PER = 4 / WK;
  using Tr = Traits<T>;
  using T2 = typename Tr::T2;
  using L = Layout<MT, NW, MODE>;
  constexpr int BM = L::BM;
  constexpr int MAX_PRE = L::MAX_PRE;
  // TPI = k-tiles per mainloop iteration (one wait + one barrier per iteration). The stages
  // stay one k-tile each; PRO = tiles in flight ahead of the TPI being consumed.
  static_assert(TPI == 1 || (TPI == 2 && MODE != MODE_RESIDUAL && STAGES >= 4), "TPI");
  constexpr int PRO = STAGES - TPI;
  static_assert(NW == 1 || NW == 2, "a warp's n16 slices must lie in one 64-wide unit");
  extern __shared__ __align__(16) uint8_t smem[];

  // the block is NTHR threads: telling the compiler lets it drop the tid range checks, and with
  // WK == 1 the k16 step of every fragment below is a compile-time constant (no selects, no
  // per-tile swizzle address math)
  __builtin_assume(threadIdx.x < NTHR);
  const int tid = threadIdx.x, warp = (tid >> 5) & 3, wk = WK == 1 ? 0 : tid >> 7, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int ncta = blockIdx.x, split = blockIdx.y, mtile = blockIdx.z;
  const int nt0 = ncta * NW;
  const int m0 = mtile * BM;

  int t_begin, t_end;
  if (MODE == MODE_RESIDUAL) {
    t_begin = p.csr_ptr[nt0];
    t_end = p.csr_ptr[nt0 + 1];
    if (t_end <= t_begin) return;
  } else {
    if (MOSAIC_BALANCED_SPLITK && p.split_bounds != nullptr) {
      const int* b = p.split_bounds + ncta * (p.splitk + 1) + split;
      t_begin = __ldg(b);
      t_end = __ldg(b + 1);
    } else {
      t_begin = split * p.kt_per_split;
      t_end = min(p.KT, t_begin + p.kt_per_split);
    }
  }
  const int ntiles = t_end - t_begin;
  const T* __restrict__ X = static_cast<const T*>(p.x);

  // Zipper residual bookkeeping, all in registers (no shared-memory LUT, no extra barrier):
  // per unit u (n-tile nt0+u) a window of residual bit words (bit kt&31 of word kt>>5 says
  // whether a residual unit exists at k-tile kt): zlo = word of the consumer's k-tile, zhi the
  // next one (the issuer runs at most STAGES-1 < 32 tiles ahead, so it stays inside the
  // window), znx the one after (prefetched a word ahead: no load is waited for in the loop).
  // Residual units are stored sorted by (n-tile, k-tile), so the unit id of the next residual
  // of a row is a counter: zirid (issuer) and zcrid (consumer); ring slot = id % rslots.
  uint32_t zlo[NW], zhi[NW], znx[NW];
  int zirid[NW], zcrid[NW];
  int zwc = t_begin >> 5;  // consumer's word
  if (MODE == MODE_ZIPPER) {
#pragma unroll
    for (int u = 0; u < NW; ++u) {
      const size_t row = (size_t)(nt0 + u) * p.KW;
      zlo[u] = __ldg(p.res_bits + row + zwc);
      zhi[u] = zwc + 1 < p.KW ? __ldg(p.res_bits + row + zwc + 1) : 0u;
      znx[u] = zwc + 2 < p.KW ? __ldg(p.res_bits + row + zwc + 2) : 0u;
      zirid[u] = __ldg(p.res_base + row + zwc);
      zcrid[u] = 0;
    }
  }
  auto zbit = [&](int u, int kt) -> uint32_t {
    const uint32_t w = (kt >> 5) == zwc ? zlo[u] : zhi[u];
    return (w >> (kt & 31)) & 1u;
  };
  // first k-tile >= from (from >= 32 zwc) with a residual in any unit, inside the window;
  // 32 zwc + 64 (the window's end) if there is none. Only called on the slow paths: the
  // per-tile test is one compare of the loop's tile index against zi (issuer) / zc (consumer).
  auto znext = [&](int from) -> int {
    const int base = zwc << 5, off = from - base;
    if (off >= 64) return base + 64;
    uint64_t m = 0;
#pragma unroll
    for (int u = 0; u < NW; ++u) m |= (uint64_t)zlo[u] | ((uint64_t)zhi[u] << 32);
    m >>= off;
    return m ? from + __ffsll((long long)m) - 1 : base + 64;
  };
  // next tile (index relative to t_begin) the issuer / consumer must look at: relative, so that the
  // per-tile test needs neither t_begin nor the residual lead (NOTES.md v16: ptxas re-derived both
  // from the constant bank on every tile)
  int zi = 0, zc = 0;
  int* const pre_a = reinterpret_cast<int*>(smem + STAGES * L::STAGE);  // residual-only kernel
  int* const pre_b = pre_a + MAX_PRE;
  if (MODE == MODE_RESIDUAL) {
    for (int i = tid; i < min(ntiles, MAX_PRE); i += NTHR) {
      pre_a[i] = __ldg(p.csr_id + t_begin + i);
      pre_b[i] = __ldg(p.csr_kt + t_begin + i);
    }
    __syncthreads();
  }
  uint8_t* const ring = smem + STAGES * L::STAGE;

  // per-thread source pointers hoisted out of the mainloop (advanced by kt in issue())
  const uint4* const wsrc = static_cast<const uint4*>(p.w) + (size_t)nt0 * p.KT * THREADS;
  const T* sz_src = nullptr;  // threads 0..8NW-1 copy scales, 64..64+8NW-1 zeros (16 B each)
  int sz_dst = 0;
  if (MODE != MODE_RESIDUAL) {
    if (tid < 8 * NW) {
      sz_src = static_cast<const T*>(p.scales) + (size_t)nt0 * 64 + tid * 8;
      sz_dst = L::OFF_S + tid * 16;
    } else if (p.zeros != nullptr && tid >= 64 && tid < 64 + 8 * NW) {
      sz_src = static_cast<const T*>(p.zeros) + (size_t)nt0 * 64 + (tid - 64) * 8;
      sz_dst = L::OFF_Z + (tid - 64) * 16;
    }
  }
  const uint4* const R = static_cast<const uint4*>(p.rw);
  const T* const RSC = static_cast<const T*>(p.rs);
  // 16-byte copies of one residual unit (codes by threads 0..127, row scales by 8 threads)
  auto copy_res = [&](uint8_t* rb, uint8_t* rsb, int rid) {
    if (WK == 1 || tid < THREADS) cp_async16(rb + tid * 16, R + (size_t)rid * THREADS + tid, true);
    const int stid = WK == 1 ? tid - 32 : tid - THREADS;
    if (stid >= 0 && stid < 8) cp_async16(rsb + stid * 16, RSC + (size_t)rid * 64 + stid * 8, true);
  };
  // zipper issuer slow path, called for tile t == zi only (the caller's one compare): the residual
  // units of tile t (issuer side of the bit window), then the next tile to look at
  auto issue_zres = [&](int t) {
    const int kt = t_begin + t;
#pragma unroll
    for (int u = 0; u < NW; ++u) {
      if (zbit(u, kt)) {
        uint8_t* rb = ring + (u * p.rslots + zirid[u] % p.rslots) * L::RING_UNIT;
        copy_res(rb, rb + UNIT_BYTES, zirid[u]);
        ++zirid[u];
      }
    }
    zi = znext(kt + 1) - t_begin;
  };

  auto tile_kt = [&](int t) -> int {
    if (MODE == MODE_RESIDUAL) return t < MAX_PRE ? pre_b[t] : __ldg(p.csr_kt + t_begin + t);
    return t_begin + t;
  };
  // activations of tile t: BM rows x 8 chunks of 16 bytes, XOR-swizzled by row (the only input
  // that the previous kernel in the stream may write: issued after griddep_wait())
  auto issue_x = [&](int t, int slot) {
    uint8_t* st = smem + slot * L::STAGE;
    const int kt = tile_kt(t);
#pragma unroll
    for (int i = 0; i < (MT * THREADS + NTHR - 1) / NTHR; ++i) {
      int c = tid + i * NTHR;
      if (c >= MT * THREADS) break;
      int r = c >> 3, ch = c & 7;
      int grow = m0 + r, gk = kt * 64 + ch * 8;
      bool pred = grow < p.M && gk < p.K;
      const T* src = X + (pred ? (size_t)grow * p.K + gk : 0);
      cp_async16(st + r * 128 + ((ch ^ (r & 7)) << 4), src, pred);
    }
  };
  // weights of tile t (base codes + scales/zeros, or the residual unit of the residual-only
  // kernel): constant across launches, so the prologue issues them before griddep_wait()
  auto issue_w = [&](int t, int slot) {
    uint8_t* st = smem + slot * L::STAGE;
    const int kt = tile_kt(t);
    if (MODE != MODE_RESIDUAL) {
#pragma unroll
      for (int i = 0; i < (NW * THREADS + NTHR - 1) / NTHR; ++i) {
        const int c = tid + i * NTHR, u = c >> 7, lt = c & 127;
        if (c < NW * THREADS)
          cp_async16(st + L::OFF_W + u * UNIT_BYTES + lt * 16, wsrc + ((size_t)u * p.KT + kt) * THREADS + lt, true);
      }
      if (sz_src != nullptr) {
        const int grp = group_of_tile(kt, p.gs_shift, p.gs_tiles);
        cp_async16(st + sz_dst, sz_src + (size_t)grp * p.Np, true);
      }
    }
    if (MODE == MODE_RESIDUAL) {
      const int rid = t < MAX_PRE ? pre_a[t] : __ldg(p.csr_id + t_begin + t);
      copy_res(st + L::OFF_R, st + L::OFF_RS, rid);
    }
  };
  auto issue = [&](int t, int slot) {
    issue_x(t, slot);
    issue_w(t, slot);
  };

  float acc[MT][2 * NW][4];
#pragma unroll
  for (int a = 0; a < MT; ++a)
#pragma unroll
    for (int b = 0; b < 2 * NW; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;

  // zipper prologue ('first', the only scheme since v9; v8's 'late' scheme, which sent the
  // prologue tiles' residual units one group later, measured equal and is gone): wait for the
  // bit words (after every prologue base and X copy is out), then every tile sends its residual
  // units with (or RL tiles ahead of) its base.
  // residual lead (TPI == 1): the residual units of tile t + RL are issued at iteration t
  // (in that iteration's group), so the ring holds the units of RL + 1 tiles instead of STAGES;
  // a tile with a residual then waits for the group of iteration t - RL too (in the consumer's
  // slow path, so tiles without a residual keep the plain wait)
  // (compiled only for configs with more than 4 stages: with 4 the densest window of STAGES tiles
  // never exceeds the host's 4-slot cap, and the large-M configs have no registers to spare)
  constexpr bool LEAD_OK = MODE == MODE_ZIPPER && TPI == 1 && STAGES > 4;
  const int RL = (LEAD_OK && p.rlead > 0 && p.rlead < PRO) ? p.rlead : PRO;
  // first use of the bit words (the only wait on them): ids of the CTA's first residual
  // units and the first tiles issuer / consumer must look at
  auto zstart = [&]() {
#pragma unroll
    for (int u = 0; u < NW; ++u) {
      zirid[u] += __popc(zlo[u] & ((1u << (t_begin & 31)) - 1u));
      zcrid[u] = zirid[u];
    }
    const int zin = znext(t_begin);
    zi = zin - t_begin;
    zc = min(zin, (zwc + 1) << 5) - t_begin;
  };
  // prologue: weights (base codes, scales) of tiles 0..PRO-1 before griddep_wait() (they overlap
  // the previous kernel's tail under PDL), then X of tiles 0..PRO-1.
  //   dense / residual-only: group 0 = all prologue weights + X of tile 0, group s = X of tile s.
  //   zipper: group 0 = all prologue weights + all prologue X + the residual units of tile 0,
  //   group s = the residual units of tile s. The residual units need the bit words (one memory
  //   round trip, zstart), so every base and X copy goes out before that wait (NOTES.md v16: this
  //   order measured equal to waiting first). Either way tile t is complete when groups 0..t are.
#pragma unroll
  for (int s = 0; s < PRO; ++s)
    if (s < ntiles) issue_w(s, s);
  griddep_wait();
  // every CTA is past its wait: the previous grids are complete, so a dependent grid launched
  // now can only overlap this one (and reads nothing this one writes before its own wait).
  // p.pdl bit 1 ('late'): trigger after the mainloop instead, so the next grid's CTAs are placed
  // on an almost empty GPU (balanced) and overlap only this grid's epilogue and tail.
  if (!(p.pdl & 2)) griddep_launch_dependents();
  if (MODE == MODE_ZIPPER) {
#pragma unroll
    for (int s = 0; s < PRO; ++s)
      if (s < ntiles) issue_x(s, s);
    zstart();
#pragma unroll
    for (int s = 0; s < PRO; ++s) {
      if (s < ntiles && s < RL && s == zi) issue_zres(s);
      cp_async_commit();
    }
  } else {
#pragma unroll
    for (int s = 0; s < PRO; ++s) {
      if (s < ntiles) issue_x(s, s);
      cp_async_commit();
    }
  }

  const unsigned short e8_bits = Tr::E8;
  const T2 e8 = as_t2<T2>((uint32_t)e8_bits | ((uint32_t)e8_bits << 16));

  // stage slots of the next tile to issue (t + PRO) and of the tile consumed (t), advanced with
  // a wrap instead of a modulo per tile
  int islot = PRO % STAGES, cslot = 0;
  for (int t = 0; t < ntiles; t += TPI) {
    cp_async_wait<PRO - TPI>();  // the groups of tiles t .. t+TPI-1 (group index = tile index)
    __syncthreads();
    // refill the slots of the tiles consumed in the previous iteration
#pragma unroll
    for (int i = 0; i < TPI; ++i) {
      const int tn = t + PRO + i;
      if (tn < ntiles) issue(tn, islot);
      islot = islot + 1 == STAGES ? 0 : islot + 1;
      if (MODE == MODE_ZIPPER) {  // residual units of tile t + i + RL (RL == PRO: tn, with the base tile)
        const int tz = t + i + RL;
        if (tz == zi && tz < ntiles) issue_zres(tz);
      }
      cp_async_commit();
    }
#pragma unroll
    for (int i = 0; i < TPI; ++i) {
    const int tc = t + i;
    if (TPI > 1 && tc >= ntiles) break;
    // every warp's n16 slices lie in one unit (uw), so "this warp adds a residual" is
    // warp-uniform and the tile runs either the dense body or the residual body: a tile
    // without residual issues the dense instructions (the residual dequant is branched
    // around, not predicated off).
    const int uw = (warp * NW) >> 2;
    // zipper consumer slow path (uniform, taken at residual tiles and word boundaries only):
    // move the window when entering the next word, note which units of this tile have a
    // residual (bit u of hm), find the next tile to look at
    uint32_t hm = 0;
    int zring_w = 0;  // ring offset of the residual unit of the warp's unit in this tile (if any)
    if (MODE == MODE_ZIPPER && tc == zc) {
      const int kt_c = t_begin + tc;
      if ((kt_c & 31) == 0 && (kt_c >> 5) != zwc) {
        ++zwc;
#pragma unroll
        for (int u = 0; u < NW; ++u) {
          zlo[u] = zhi[u];
          zhi[u] = znx[u];
          znx[u] = zwc + 2 < p.KW ? __ldg(p.res_bits + (size_t)(nt0 + u) * p.KW + zwc + 2) : 0u;
        }
      }
#pragma unroll
      for (int u = 0; u < NW; ++u) hm |= zbit(u, kt_c) << u;
      zc = min(znext(kt_c + 1), (zwc + 1) << 5) - t_begin;
      // the warp's residual slot, and the ids past this tile's units (here, not after the body:
      // the common path then carries no id update)
      int crid = zcrid[0];
#pragma unroll
      for (int uu = 1; uu < NW; ++uu)
        if (uw == uu) crid = zcrid[uu];
      zring_w = (uw * p.rslots + crid % p.rslots) * L::RING_UNIT;
#pragma unroll
      for (int u = 0; u < NW; ++u) zcrid[u] += (hm >> u) & 1u;
      // shorter residual lead (TPI == 1): this tile's residual units went out with the group of
      // iteration tc - RL, newer than the tile's own group; wait for it (RL newer groups may stay
      // pending) and make every thread's copies visible. Block-uniform: hm, RL and tc are.
      if (RL < PRO && hm && tc >= RL) {
        cp_async_wait_dyn(RL);
        __syncthreads();
      }
    }
    const uint8_t* st = smem + cslot * L::STAGE;
    cslot = cslot + 1 == STAGES ? 0 : cslot + 1;

    auto tile_body = [&](auto with_res) {
      constexpr bool WR = decltype(with_res)::value;  // add a residual unit (zipper/residual)
      uint4 wq[NW], rq[NW];
      T2 s2[NW][2], z2[NW][2], rs2[NW][2];
      const uint8_t* rb = st + L::OFF_R + uw * UNIT_BYTES;
      const uint8_t* rsb = st + L::OFF_RS + uw * 128;
      if constexpr (WR && MODE == MODE_ZIPPER) {
        rb = ring + zring_w;
        rsb = rb + UNIT_BYTES;
      }
#pragma unroll
      for (int j = 0; j < NW; ++j) {
        const int sl = warp * NW + j;  // n16 slice of the CTA tile (unit uw = sl >> 2)
        const int ws = sl & 3;
        if (MODE != MODE_RESIDUAL) {
          wq[j] = *reinterpret_cast<const uint4*>(st + L::OFF_W + uw * UNIT_BYTES + (ws * 32 + lane) * 16);
          const T* S = reinterpret_cast<const T*>(st + L::OFF_S) + uw * 64 + ws * 16 + g;
          s2[j][0] = T2{S[0], S[0]};
          s2[j][1] = T2{S[8], S[8]};
          if (p.zeros != nullptr) {
            const T* Z = reinterpret_cast<const T*>(st + L::OFF_Z) + uw * 64 + ws * 16 + g;
            z2[j][0] = T2{Z[0], Z[0]};
            z2[j][1] = T2{Z[8], Z[8]};
          } else {
            z2[j][0] = e8;
            z2[j][1] = e8;
          }
        }
        if constexpr (WR) {
          rq[j] = *reinterpret_cast<const uint4*>(rb + (ws * 32 + lane) * 16);
          const T* RS = reinterpret_cast<const T*>(rsb) + ws * 16 + g;
          rs2[j][0] = T2{RS[0], RS[0]};
          rs2[j][1] = T2{RS[8], RS[8]};
        }
      }

#pragma unroll
      for (int kk = 0; kk < KS_PER; ++kk) {
        const int ks = wk * KS_PER + kk;
        uint32_t bfrag[NW][2][2];
#pragma unroll
        for (int j = 0; j < NW; ++j) {
          uint32_t q = 0, rqw = 0;
          if (MODE != MODE_RESIDUAL) q = ks == 0 ? wq[j].x : ks == 1 ? wq[j].y : ks == 2 ? wq[j].z : wq[j].w;
          if constexpr (WR) rqw = ks == 0 ? rq[j].x : ks == 1 ? rq[j].y : ks == 2 ? rq[j].z : rq[j].w;
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            T2 d;
            if (MODE != MODE_RESIDUAL) {
              const T2 v = as_t2<T2>(lop3_and_or(q >> (4 * jj), 0x000F000Fu, Tr::EX));
              d = __hmul2(__hsub2(v, z2[j][jj >> 1]), s2[j][jj >> 1]);
            }
            if constexpr (WR) {
              const T2 rv = as_t2<T2>(lop3_and_or(rqw >> (4 * jj), 0x000F000Fu, Tr::EX));
              if (MODE == MODE_RESIDUAL)
                d = __hmul2(__hsub2(rv, e8), rs2[j][jj >> 1]);
              else
                d = __hfma2(__hsub2(rv, e8), rs2[j][jj >> 1], d);
            }
            bfrag[j][jj >> 1][jj & 1] = as_u32<T2>(d);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          uint32_t afrag[4];
          const int mi = lane >> 3;
          const int row = mt * 16 + (lane & 7) + (mi & 1) * 8;
          const int chunk = ks * 2 + (mi >> 1);
          ldmatrix_x4(afrag, st + row * 128 + ((chunk ^ (row & 7)) << 4));
#pragma unroll
          for (int j = 0; j < NW; ++j) {
            mma16816<T>(acc[mt][2 * j + 0], afrag, bfrag[j][0]);
            mma16816<T>(acc[mt][2 * j + 1], afrag, bfrag[j][1]);
          }
        }
      }
    };
    if (MODE == MODE_RESIDUAL || (MODE == MODE_ZIPPER && ((hm >> uw) & 1u)))
      tile_body(std::true_type{});
    else
      tile_body(std::false_type{});
    }
  }
  cp_async_wait<0>();
  if (p.pdl & 2) griddep_launch_dependents();

  // k-warp halves -> one accumulator set (warps 0-3 keep it; warps 4-7 only join barriers)
  const bool active = wk == 0;
  if (WK > 1) {
    __syncthreads();  // every warp is done with the pipeline stages: reuse them
    float* red = reinterpret_cast<float*>(smem);
    if (!active) {
#pragma unroll
      for (int a = 0; a < MT; ++a)
#pragma unroll
        for (int b = 0; b < 2 * NW; ++b)
#pragma unroll
          for (int c = 0; c < 4; ++c) red[((a * 2 * NW + b) * 4 + c) * THREADS + (tid & (THREADS - 1))] = acc[a][b][c];
    }
    __syncthreads();
    if (active) {
#pragma unroll
      for (int a = 0; a < MT; ++a)
#pragma unroll
        for (int b = 0; b < 2 * NW; ++b)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[a][b][c] += red[((a * 2 * NW + b) * 4 + c) * THREADS + tid];
    }
  }

  // ------------------------------------------------------------------ epilogue
  T* Y = static_cast<T*>(p.y);
  const bool vec_ok = (p.N & 1) == 0;
  auto store = [&](int row, int col, float v0, float v1) {
    if (!active || row >= p.M || col >= p.N) return;
    T* dst = Y + (size_t)row * p.N + col;
    if (MODE == MODE_RESIDUAL) {
      v0 += Tr::to_f(dst[0]);
      if (col + 1 < p.N) v1 += Tr::to_f(dst[1]);
    }
    if (vec_ok) {
      *reinterpret_cast<T2*>(dst) = Tr::from_f2(v0, v1);
    } else {
      dst[0] = Tr::from_f(v0);
      if (col + 1 < p.N) dst[1] = Tr::from_f(v1);
    }
  };
  const int nbase = ncta * 64 * NW;
  // the accumulator tile -> Y (both the direct and the split-K fix-up path end here)
  auto store_acc = [&]() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NW; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int col = nbase + (warp * NW + j) * 16 + h * 8 + 2 * t4;
          const int row = m0 + mt * 16 + g;
          store(row, col, acc[mt][2 * j + h][0], acc[mt][2 * j + h][1]);
          store(row + 8, col, acc[mt][2 * j + h][2], acc[mt][2 * j + h][3]);
        }
  };

  if (MODE == MODE_RESIDUAL || p.splitk == 1) {
    store_acc();
    return;
  }

  if (p.fixup == 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // split-K through a thread-block cluster of the splitk CTAs of this output tile (cluster
    // dims 1 x splitk x 1: cluster rank = split): every CTA puts its accumulators in its own
    // shared memory, then CTA r sums pair-slots q = r, r + splitk, ... over all splits in
    // split order (deterministic, the same order as the global path) and stores them.
    // No workspace, no counters, no global round trips.
    constexpr int NP = MT * 2 * NW * 2;  // (row, col pair) slots per thread
    static_assert(NP * 2 * THREADS * 4 <= STAGES * L::STAGE, "cluster fix-up buffer exceeds the stages");
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    __syncthreads();  // all warps are done with the stages (WK == 1: cp.async drained above)
    float2* red = reinterpret_cast<float2*>(smem);
    if (active) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int c = 0; c < 2 * NW; ++c) {
          red[((mt * 2 * NW + c) * 2 + 0) * THREADS + tid] = make_float2(acc[mt][c][0], acc[mt][c][1]);
          red[((mt * 2 * NW + c) * 2 + 1) * THREADS + tid] = make_float2(acc[mt][c][2], acc[mt][c][3]);
        }
    }
    cl.sync();
    const int rank = (int)cl.block_rank();
    if (active) {
#if MOSAIC_COMPACT_CLUSTER_FIXUP
      // a run-time loop over this CTA's own slots (NOTES.md v18, the default). Unrolled over all NP slots,
      // each body guarded by q % splitk == rank (the #else, v17), the fix-up is NP copies of the reduction:
      // ~10.5k of the dense cfg6 kernel's 14.2k static instructions (3.6k without), which a short split-K
      // CTA walks through cold. Same slots, same split order: bit-identical sums.
#pragma unroll 1
      for (int q = rank; q < NP; q += p.splitk) {
#else
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        if (q % p.splitk != rank) continue;
#endif
        const int mt = q / (4 * NW), c = (q >> 1) % (2 * NW), h = q & 1;
        const int row = m0 + mt * 16 + g + 8 * h;
        if (row >= p.M) continue;
        float2 v = make_float2(0.f, 0.f);
        for (int s = 0; s < p.splitk; ++s) {
          const float2 r = cl.map_shared_rank(red, s)[q * THREADS + tid];
          v.x += r.x;
          v.y += r.y;
        }
        const int col = nbase + (warp * NW + (c >> 1)) * 16 + (c & 1) * 8 + 2 * t4;
        store(row, col, v.x, v.y);
      }
    }
    cl.sync();  // keep every CTA's shared memory alive until all remote reads are done
#endif
    return;
  }

  // split-K: write fp32 partials (valid rows only), the last CTA of this output tile sums them
  // in split order (deterministic), CH splits per round of independent loads.
  const size_t plane = (size_t)p.mpad * p.Np;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = nbase + (warp * NW + j) * 16 + h * 8 + 2 * t4;
        const int row = m0 + mt * 16 + g;
        float* w0 = p.ws + split * plane + (size_t)row * p.Np + col;
        if (active && row < p.M) __stcg(reinterpret_cast<float2*>(w0), make_float2(acc[mt][2 * j + h][0], acc[mt][2 * j + h][1]));
        if (active && row + 8 < p.M)
          __stcg(reinterpret_cast<float2*>(w0 + 8 * (size_t)p.Np), make_float2(acc[mt][2 * j + h][2], acc[mt][2 * j + h][3]));
      }
  __threadfence();
  __syncthreads();  // all warps are past the mainloop (and its smem reads): smem[0] is free
  int* counter = p.counters + (size_t)mtile * gridDim.x + ncta;
  int* const is_last_s = reinterpret_cast<int*>(smem);
  if (tid == 0) {
    const int old = atomicAdd(counter, 1);
    *is_last_s = old == p.splitk - 1;
  }
  __syncthreads();
  if (!*is_last_s) return;
  __threadfence();
  constexpr int MG = MT * NW >= 8 ? 1 : MT;               // m-tiles per round
  constexpr int CH = MG * NW >= 4 ? 1 : 4 / (MG * NW);     // splits per round
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int c = 0; c < 2 * NW; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][c][e] = 0.f;
#pragma unroll
  for (int mg = 0; mg < MT; mg += MG) {
    if (m0 + mg * 16 >= p.M) break;
    for (int s0 = 0; s0 < p.splitk; s0 += CH) {
      float2 v[CH][MG][2 * NW][2];
#pragma unroll
      for (int q = 0; q < CH; ++q)
#pragma unroll
        for (int mi = 0; mi < MG; ++mi)
#pragma unroll
          for (int c = 0; c < 2 * NW; ++c) {
            const int col = nbase + (warp * NW + (c >> 1)) * 16 + (c & 1) * 8 + 2 * t4;
            const int row = m0 + (mg + mi) * 16 + g;
            const float* w0 = p.ws + (size_t)(s0 + q) * plane + (size_t)row * p.Np + col;
            const bool okq = active && s0 + q < p.splitk;
            v[q][mi][c][0] = okq && row < p.M ? __ldcg(reinterpret_cast<const float2*>(w0)) : make_float2(0.f, 0.f);
            v[q][mi][c][1] = okq && row + 8 < p.M ? __ldcg(reinterpret_cast<const float2*>(w0 + 8 * (size_t)p.Np))
                                                  : make_float2(0.f, 0.f);
          }
#pragma unroll
      for (int q = 0; q < CH; ++q)
#pragma unroll
        for (int mi = 0; mi < MG; ++mi)
#pragma unroll
          for (int c = 0; c < 2 * NW; ++c) {
            acc[mg + mi][c][0] += v[q][mi][c][0].x;
            acc[mg + mi][c][1] += v[q][mi][c][0].y;
            acc[mg + mi][c][2] += v[q][mi][c][1].x;
            acc[mg + mi][c][3] += v[q][mi][c][1].y;
          }
    }
  }
  store_acc();
  if (tid == 0) *counter = 0;  // self-reset for the next launch
}
// ------------------------------------------------------------------ configs
// cfg: 0 = BM16 BN64 8 stages; 1 = BM32 BN64 6 stages; 2 = BM64 BN64 4 stages; 3 = BM128 BN128 4 stages
//      4 = BM16 BN128 6 stages; 5 = BM32 BN128 5 stages; 6 = BM64 BN128 4 stages;
//      7 = cfg4 with 2 k-tiles per mainloop iteration; 8 / 9 = cfg6 / cfg5 with 8 warps (2 along K);
//      10 / 11 = cfg2 / cfg4 with 3 / 5 stages, zipper kernel bounded to 5 CTAs per SM; 12 = cfg5 with 4 stages,
//      zipper kernel bounded to 4 CTAs per SM
//      (NW=2 configs: not for MODE_RESIDUAL)
template <int MT_, int NW_, int STAGES_, int TPI_ = 1, int WK_ = 1, int ZMIN_ = 0>
struct CfgT {
  // ZMIN: the zipper kernel's minimum CTAs per SM for __launch_bounds__ (0: min_ctas_per_sm's rule)
  static constexpr int MT = MT_, NW = NW_, STAGES = STAGES_, WK = WK_, TPI = TPI_, ZMIN = ZMIN_;
};
template <int CFG>
struct Cfg;
// clang-format off
template <> struct Cfg<0> : CfgT<1, 1, 8> {};
template <> struct Cfg<1> : CfgT<2, 1, 6> {};
template <> struct Cfg<2> : CfgT<4, 1, 4> {};
template <> struct Cfg<3> : CfgT<8, 2, 4> {};
// wide-n configs for small M: two n16 slices per warp amortize the per-tile overhead
// (address math, barrier, scale loads, A fragments) over twice the weight bytes
template <> struct Cfg<4> : CfgT<1, 2, 6> {};
template <> struct Cfg<5> : CfgT<2, 2, 5> {};
template <> struct Cfg<6> : CfgT<4, 2, 4> {};
// cfg4 with two k-tiles per mainloop iteration: one wait + one barrier (and one round of
// loop/zipper bookkeeping) per two tiles; 4 tiles in flight while 2 are consumed
// (measured v8e: 3.6% slower than cfg4 for dense, so the planner does not pick it)
template <> struct Cfg<7> : CfgT<1, 2, 6, 2> {};
// cfg6 / cfg5 with 8 warps: two warps along K per (m, n) warp tile (k16 steps 0-1 and 2-3 of every k-tile),
// summed through shared memory at the end. Same tile, same dequantization work per CTA (split by k, not
// repeated), twice the warps per SM: for M = 17..64, where the 4-warp configs run 2 CTAs (8 warps) per SM
// and the HMMA-heavy loop is issue-latency bound (NOTES.md v17)
template <> struct Cfg<8> : CfgT<4, 2, 4, 1, 2> {};
template <> struct Cfg<9> : CfgT<2, 2, 5, 1, 2> {};
// cfg 2 / cfg 4 tiles whose zipper kernel fits 5 CTAs per SM like their dense kernels (NOTES.md v20): a split-8 grid of
// 8-CTA clusters is then resident at once (77 clusters on 132 SMs instead of 62), and with PDL two such grids.
// cfg 10: 3 stages (~38 KB with a 3-slot ring), 96 registers; o / qkv at M = 33..64 (cfg 2 keeps 4 stages for
// down's long splits). cfg 11: 5 stages (~42 KB with the 2-slot ring of residual lead 1), 92 registers; o at
// M = 9..16 with lead 1 (ops.resident_lead). Their dense kernels are cfg 2 / 4 with fewer stages.
template <> struct Cfg<10> : CfgT<4, 1, 3, 1, 1, 5> {};
template <> struct Cfg<11> : CfgT<1, 2, 5, 1, 1, 5> {};
// cfg 12 (NOTES.md v21): the cfg 5 tile (M = 17..32) with 4 stages and its zipper kernel at 4 CTAs per SM (cfg 5's
// holds 145 registers: 3 per SM, where its dense kernel fits 5), so that wide layers keep the dense kernel's K split
// in one wave (gate_up: split 2; down: 16-CTA clusters).
template <> struct Cfg<12> : CfgT<2, 2, 4, 1, 1, 4> {};
// clang-format on

// the kernel instance of a config in one mode (the launcher, the occupancy query and kernel_regs must agree on it)
template <typename T, int CFG, int MODE>
constexpr auto kernel_of() {
  using C = Cfg<CFG>;
  constexpr int MINB = MODE == MODE_ZIPPER && C::ZMIN ? C::ZMIN : min_ctas_per_sm(C::MT, C::NW, MODE, C::WK);
  return w4a16_kernel<T, C::MT, C::NW, MODE, C::STAGES, C::WK, C::TPI, MINB>;
}

// dynamic shared memory without the zipper ring (the ring adds NW * rslots * RING_UNIT)
template <int CFG, int MODE>
constexpr int smem_bytes() {
  using L = Layout<Cfg<CFG>::MT, Cfg<CFG>::NW, MODE>;
  return L::STAGE * Cfg<CFG>::STAGES + L::PRE_BYTES;
}
template <int CFG, int MODE>
constexpr int smem_max_bytes() {
  return smem_bytes<CFG, MODE>() +
         (MODE == MODE_ZIPPER ? Cfg<CFG>::NW * Cfg<CFG>::STAGES * Layout<1, 1, MODE>::RING_UNIT : 0);
}

// The one list of tile configs that the launcher, config_info, max_active_clusters and kernel_regs dispatch
// through: with_cfg<MODE>(cfg, none, f) returns f(std::integral_constant<int, cfg>{}) for a config that MODE
// has (the residual-only kernel: the BN=64 ones, 0-2), else none; with_mode does the same for the mode.
template <int MODE>
constexpr int num_cfgs() { return MODE == MODE_RESIDUAL ? 3 : NUM_CONFIGS; }
template <int MODE, int C = 0, typename R, typename F>
R with_cfg(int cfg, R none, F&& f) {
  if constexpr (C >= num_cfgs<MODE>())
    return none;
  else
    return cfg == C ? R(f(std::integral_constant<int, C>{})) : with_cfg<MODE, C + 1>(cfg, none, f);
}
template <typename R, typename F>
R with_mode(int mode, R none, F&& f) {
  switch (mode) {
    case MODE_DENSE: return f(std::integral_constant<int, MODE_DENSE>{});
    case MODE_ZIPPER: return f(std::integral_constant<int, MODE_ZIPPER>{});
    case MODE_RESIDUAL: return f(std::integral_constant<int, MODE_RESIDUAL>{});
  }
  return none;
}

template <typename T, int CFG, int MODE>
const char* launch_t(const Params& p, cudaStream_t stream) {
  using C = Cfg<CFG>;
  constexpr int SMEM_MAX = smem_max_bytes<CFG, MODE>();
  if (MODE == MODE_ZIPPER && (p.rslots < 1 || p.rslots > C::STAGES)) return "rslots out of range [1, STAGES]";
  const int SMEM = smem_bytes<CFG, MODE>() +
                   (MODE == MODE_ZIPPER ? C::NW * p.rslots * Layout<1, 1, MODE>::RING_UNIT : 0);
  auto kern = kernel_of<T, CFG, MODE>();
  static bool attr_set = false;
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_MAX);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    // all of the SM's 228 KB as shared memory: residency is set by dynamic smem alone
    e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    if (MODE != MODE_RESIDUAL) {  // split-K clusters of up to 16 CTAs (8 is the portable limit)
      e = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (e != cudaSuccess) return cudaGetErrorString(e);
    }
    attr_set = true;
  }
  const int bm = C::MT * 16, bn = 64 * C::NW;
  const int mtiles = (p.M + bm - 1) / bm;
  const bool cluster = MODE != MODE_RESIDUAL && p.splitk > 1 && p.fixup == 1;
  if (cluster && p.splitk > 16) return "cluster split-K fix-up needs splitk <= 16";
  return launch_ex(kern, dim3(p.Np / bn, MODE == MODE_RESIDUAL ? 1 : p.splitk, mtiles), dim3(THREADS * C::WK), SMEM,
                   stream, p.pdl, cluster ? p.splitk : 1, p);
}

// resident clusters of splitk CTAs of config CFG (0 on error): the planner keeps a cluster
// split-K grid within one wave
template <typename T, int CFG, int MODE>
int max_clusters_t(int splitk, int rslots) {
  using C = Cfg<CFG>;
  const int SMEM = smem_bytes<CFG, MODE>() +
                   (MODE == MODE_ZIPPER ? C::NW * rslots * Layout<1, 1, MODE>::RING_UNIT : 0);
  auto kern = kernel_of<T, CFG, MODE>();
  if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max_bytes<CFG, MODE>()) != cudaSuccess ||
      cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) != cudaSuccess ||
      cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(1, splitk, 1);
  lc.blockDim = dim3(THREADS * C::WK, 1, 1);
  lc.dynamicSmemBytes = SMEM;
  cudaLaunchAttribute a;
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = 1;
  a.val.clusterDim.y = splitk;
  a.val.clusterDim.z = 1;
  lc.attrs = &a;
  lc.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kern, &lc) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

template <typename T, int MODE>
const char* launch_mode(const Params& p, int cfg, cudaStream_t stream) {
  if (MODE == MODE_RESIDUAL && cfg >= num_cfgs<MODE>() && cfg < NUM_CONFIGS)
    return "configs >= 3 are not available for the residual kernel (only the BN=64 configs 0-2)";
  return with_cfg<MODE>(cfg, "unknown kernel config",
                        [&](auto c) { return launch_t<T, decltype(c)::value, MODE>(p, stream); });
}

template <typename T>
const char* launch_dtype(const Params& p, int mode, int cfg, cudaStream_t stream) {
  switch (mode) {
    case MODE_DENSE: return launch_mode<T, MODE_DENSE>(p, cfg, stream);
    case MODE_ZIPPER: return launch_mode<T, MODE_ZIPPER>(p, cfg, stream);
    case MODE_RESIDUAL: return launch_mode<T, MODE_RESIDUAL>(p, cfg, stream);
  }
  return "unknown mode";
}

}  // namespace

template <int CFG, int MODE>
int regs_of() {
  cudaFuncAttributes a;
  if (cudaFuncGetAttributes(&a, kernel_of<__nv_bfloat16, CFG, MODE>()) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return a.numRegs;
}

int tiled_compact_cluster_fixup() { return MOSAIC_COMPACT_CLUSTER_FIXUP; }
int tiled_balanced_splitk() { return MOSAIC_BALANCED_SPLITK; }

ConfigInfo config_info(int cfg, int mode) {
  const ConfigInfo none{0, 0, 0, 0, 0};
  return with_mode(mode, none, [&](auto md) {
    constexpr int MODE = decltype(md)::value;
    return with_cfg<MODE>(cfg, none, [](auto cc) {
      using C = Cfg<decltype(cc)::value>;
      ConfigInfo c;
      c.threads = THREADS * C::WK;
      c.bm = C::MT * 16;
      c.bn = C::NW * 64;
      c.stages = C::STAGES;
      c.smem_bytes = smem_bytes<decltype(cc)::value, MODE>();
      c.ring_unit_bytes = MODE == MODE_ZIPPER ? Layout<1, 1, MODE_ZIPPER>::RING_UNIT : 0;
      c.static_smem = 0;  // no static shared memory in any mode (see w4a16_kernel)
      const int per = (228 * 1024) / (c.smem_bytes + c.static_smem + 1024);
      c.ctas_per_sm = per < 1 ? 1 : (per > 8 ? 8 : per);
      return c;
    });
  });
}

int max_active_clusters(int cfg, int mode, int splitk, int rslots) {
  using B = __nv_bfloat16;  // same resources for both dtypes (checked by the ptxas report)
  return with_mode(mode, 0, [&](auto md) {
    constexpr int MODE = decltype(md)::value;
    if constexpr (MODE == MODE_RESIDUAL)
      return 0;  // the residual-only kernel has no split-K clusters
    else
      return with_cfg<MODE>(cfg, 0, [&](auto c) { return max_clusters_t<B, decltype(c)::value, MODE>(splitk, rslots); });
  });
}

int kernel_regs(int cfg, int mode) {
  return with_mode(mode, -1, [&](auto md) {
    constexpr int MODE = decltype(md)::value;
    return with_cfg<MODE>(cfg, -1, [](auto c) { return regs_of<decltype(c)::value, MODE>(); });
  });
}

const char* launch(const Params& p, int dtype, int mode, int cfg, void* stream_) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  if (dtype == DT_FP16) return launch_dtype<half>(p, mode, cfg, stream);
  if (dtype == DT_BF16) return launch_dtype<__nv_bfloat16>(p, mode, cfg, stream);
  return "unknown dtype";
}

}  // namespace zipper
