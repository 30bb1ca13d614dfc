// ZipperEngine small-M path ("gemv"): Y[M,N] = X[M,K] . (dequant(base) + dequant(residual))^T for
// decode-sized M (8, 16 or 32 rows per grid z-slice: MB = 1, 2, 4 blocks of 8).
//
// Why a second kernel: at M <= 16 the tiled kernel (zipper_kernels.cu) is bound by each warp's
// instruction latency between cp.async waits and CTA barriers (NOTES.md v8/v9: ~0.55 issued
// instructions per scheduler and cycle, 264 instructions per 2048-weight tile). Here
//   - the weights are the MMA's A operand (swap AB: Y^T = W . X^T, m16n8k16 with n = M <= 8):
//     one MMA per 256 weights instead of per 128, and M pads to 8, not 16;
//   - every warp owns one n16 slice and a K range and streams its 512-byte slice of each 64x64
//     unit straight into registers, D k-tiles ahead (one 16-byte ld.global.nc per lane per tile into
//     a register ring, no shared memory, no cp.async, no barrier until the final cross-warp sum): a
//     warp waits only on its own loads. NOTES.md v13: a probe with the same loads and a trivial
//     consumer (native/exp/stream_bw.cu) streams 2.8 TB/s with 64 KB in flight per SM;
//   - the CTA's X rows are staged once in shared memory (ldmatrix per two k16 steps): no X load on a
//     warp's per-tile path; the base's scale is applied once per scale group to an fp32 group sum;
//   - kparts warps share a slice along K and sum their accumulators through shared memory in a
//     fixed order at the end (deterministic, no workspace, no second launch); the default plans
//     (ops.gemv_default_plan) put every CTA in one wave.
// The packed format is the tiled kernel's (packing.py): lane (g, t4) of warp slice ws holds, per
// k16 step, the B fragment of rows n = g, g+8 and k = 2t4 + {0,1} + {0,8}. Read as an A fragment
// (rows = n, cols = k) those are exactly a0..a3 in the order {n g k+0, n g+8 k+0, n g k+8,
// n g+8 k+8}, so no repacking. The zipper mode adds the residual unit of a (slice, k-tile), if the
// bit words say there is one, to the dequantized A fragment before the MMA: same X fragments, same
// accumulators, one extra 512-byte load per residual tile, loaded D tiles ahead with its base.
#include "zipper.cuh"
#include "device_common.cuh"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <climits>
#include <type_traits>

// Compile-time switch (NOTES.md v29, 0 = off, the default; an experiment): 1 = the bf16 one-block (MB = 1) dense
// kernels fold the base's zero point out of the weights (2 = the zipper kernels too, for the A/B only). The MMA
// then takes the magic-exponent value E + q as it is (exact) and the group's sum is corrected once per group:
// sum (q - z) x = sum (E + q) x - (E + z) sum x, with
// sum x per (k-tile, token) computed once per CTA while X is staged and summed per group by a running fp32 sum;
// E + z is read from shared memory where needed (group ends, residual tiles) instead of held in registers.
// Saves the 16 `q - z` subtractions (HADD2) of every tile for ~4 instructions per tile (SASS, 16-warp dense
// kernel, two g128 tiles: 179 -> 160). Value 2 only: the zipper kernels as well, where a residual tile keeps its
// subtraction and so stays out of the running sum; there ptxas pays for the running sums at the 64-register
// bound with re-read thread ids, and two base tiles stay at ~256 instructions (no static gain).
// bf16 only: the E offset's cancellation costs ~2^-24 E sum|x| per group, with E = 128 far below bf16's
// rounding; fp16's E = 1024 would come within a small factor of the tests' fp16 bound. (v19 folded the zero
// with a second MMA per k16 step instead and measured 3-5 % slower: a longer dependent MMA chain.)
#ifndef MOSAIC_GEMV_ZERO_FOLD
#define MOSAIC_GEMV_ZERO_FOLD 0
#endif
// Compile-time switch (NOTES.md v29, 0 = off, the default; an experiment): 1 = the zipper kernels fetch the next
// tile's weights through a loop-carried pointer (one 64-bit add per tile) instead of base + (t + D) * 128, and
// read the group's scales through one too: ptxas rebuilds both addresses from their parts every tile in the
// zipper kernels (~12 + ~5 instructions; also at 80 registers, so it is not the register bound), while it holds
// them in the dense ones (where the same pointers made the tile longer in SASS, so dense keeps the indexed form).
#ifndef MOSAIC_GEMV_ZIPPER_WPTR
#define MOSAIC_GEMV_ZIPPER_WPTR 0
#endif
// Compile-time switch (NOTES.md v29, 0 = off, the default; an experiment): 1 = lanes of X rows past M read row 0's
// data instead of a zero chunk (their output columns are never stored: an MMA's column depends on its own token's
// X only), so every lane steps 64 bytes per k16 step and the X fragment address is a compile-time offset from a
// base; the default rebuilds the per-lane step from the thread id every tile (~5 instructions).
#ifndef MOSAIC_GEMV_XSTEP_CONST
#define MOSAIC_GEMV_XSTEP_CONST 0
#endif

namespace zipper {
namespace {

using namespace dev;

constexpr int GEMV_MAX_SMEM = 200 * 1024;

// {v, v} of a 16-bit value in the low half of a register
__device__ __forceinline__ uint32_t dup16(uint32_t v) { return __byte_perm(v, v, 0x1010); }

// dynamic shared memory of a CTA: the scales (and zeros) of its slices for all groups, its X rows, the
// per-warp residual slots (zipper: `depth` per warp), the cross-warp sum buffer
// a residual ring slot: the warp's 512 B of codes, then its slice's 16 row scales (32 B, copied by lanes 0-1)
__host__ __device__ constexpr int gemv_res_slot() { return 512 + 32; }
// X rows of the CTA's K range staged once in shared memory: row pitch ktpc * 128 + 16 bytes (the 16
// keeps the 8 rows of an ldmatrix phase in distinct banks), then one 16-byte zero chunk that the lanes
// of rows past M point at
__host__ __device__ constexpr int gemv_x_pitch(int ktpc) { return ktpc * 128 + 16; }
struct GemvSmem {
  int sc, xs, rring, red, sx, total;  // sizes (bytes) of the scale block, X stage, residual rings (all warps), sum
                                      // buffer, the zero fold's X sums (MOSAIC_GEMV_ZERO_FOLD builds, dense MB = 1)
};
// xrows = rows of X a CTA stages: min(8 mb, M)
__host__ __device__ inline GemvSmem gemv_smem(int groups, int spc, bool zeros, int warps, int mode, int mb,
                                              int depth, int xrows, int ktpc) {
  GemvSmem m;
  m.sc = groups * 16 * spc * 2 * (zeros ? 2 : 1);
  m.sc = (m.sc + 15) & ~15;
  m.xs = xrows * gemv_x_pitch(ktpc) + 16;
  m.rring = mode == MODE_ZIPPER ? warps * depth * gemv_res_slot() : 0;
  m.red = warps * mb * 4 * 32 * 4;
  // fp32 sum of X over each k-tile, 8 token rows (allocated for fp16 too: gemv_smem_bytes does not know the dtype)
  m.sx = MOSAIC_GEMV_ZERO_FOLD && (mode == MODE_DENSE || MOSAIC_GEMV_ZERO_FOLD == 2) && mb == 1 ? ktpc * 8 * 4 : 0;
  m.total = m.sc + m.xs + m.rring + m.red + m.sx;
  return m;
}

// scale groups a CTA stages: those of its ktpc k-tiles (a K range may straddle one more group)
__host__ __device__ inline int gemv_groups(int kt, int gs_tiles, int ktpc) {
  if (gs_tiles == 0) return 1;
  const int all = (kt + gs_tiles - 1) / gs_tiles, per = (ktpc + gs_tiles - 1) / gs_tiles + 1;
  return all < per ? all : per;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// ring depth (k-tiles in flight per warp in its register ring), CTA size bound and CTAs per SM of a kernel:
// BIG = 16-warp CTAs. Dense: 16 warps x 4 or 8 warps x 8 tiles x 512 B x 2 CTAs = 64 KB in flight per SM,
// the stream_bw probe's knee (NOTES.md v13). The zipper's 8-warp kernel takes a ring of 4 under an
// 80-register bound (3 CTAs per SM: qkv's 384 CTAs in one wave), its 16-warp kernel a ring of 2 under 64
// registers. Deeper zipper rings spill and measured slower: 16 warps x 4 spills 48 B per thread (160 B
// before v14's leaner residual bookkeeping), 8 warps x 8 needs 106 registers (2 CTAs per SM) (NOTES.md
// v14, probe variants B and C); fewer registers beat a deeper ring here. Each warp of a zipper CTA has
// one residual slot per ring slot
// More 8-row blocks (MB = 2, 4) hold more accumulators: the 16-warp zipper kernel with MB = 2 spilled 56 B
// under 64 registers even with the X fragments loaded per k16-step pair, so it runs one CTA per SM under 128
// registers instead, as do the MB = 4 kernels with 16 warps (NOTES.md v15)
template <int MODE, bool BIG, int MB = 1>
struct GemvShape {
  static constexpr int D = MODE == MODE_ZIPPER ? (BIG ? 2 : 4) : (BIG ? 4 : 8);
  static constexpr int MAXT = BIG ? 512 : 256;
  static constexpr bool WIDE = MB == 4 || (MB == 2 && MODE == MODE_ZIPPER);  // the 16-warp kernel needs > 64 registers
  static constexpr int MINB = BIG ? (WIDE ? 1 : 2) : (MB == 4 ? 2 : MODE == MODE_ZIPPER ? 3 : 2);
};
// the ring depth of the kernel a launch with `warps` warps per CTA runs
inline int gemv_depth(int mode, int warps) {
  const bool big = warps == 16;
  if (mode == MODE_ZIPPER) return big ? GemvShape<MODE_ZIPPER, true>::D : GemvShape<MODE_ZIPPER, false>::D;
  return big ? GemvShape<MODE_DENSE, true>::D : GemvShape<MODE_DENSE, false>::D;
}

template <typename T, int MB, int MODE, bool BIG>
__global__ void __launch_bounds__(GemvShape<MODE, BIG, MB>::MAXT, GemvShape<MODE, BIG, MB>::MINB)
    w4a16_gemv_kernel(const Params p) {
  constexpr int D = GemvShape<MODE, BIG, MB>::D;
  // zero fold (MOSAIC_GEMV_ZERO_FOLD): bf16, one 8-row block
  constexpr bool ZF = MOSAIC_GEMV_ZERO_FOLD && (MODE == MODE_DENSE || MOSAIC_GEMV_ZERO_FOLD == 2) && MB == 1 &&
                     std::is_same<T, __nv_bfloat16>::value;
  static_assert(MODE == MODE_DENSE || MODE == MODE_ZIPPER, "gemv: dense or zipper");
  static_assert((D & (D - 1)) == 0 && D <= 32, "ring depth: a power of two (slot = t % D), <= 32 (rmask)");
  using Tr = Traits<T>;
  using T2 = typename Tr::T2;
  extern __shared__ __align__(16) uint8_t smem[];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int kparts = p.kparts, spc = nwarps / kparts;
  const int kp = warp % kparts;
  const int sl0 = blockIdx.x * spc;                  // first n16 slice of the CTA
  const int sl = sl0 + warp / kparts;                // n16 slice of this warp
  const int m0 = blockIdx.z * 8 * MB;
  const int nt = sl >> 2, ws = sl & 3;  // 64-wide unit row, slice inside the unit
  const int split = blockIdx.y, ktpc = kparts * p.ktpw;  // K split of the CTA (cluster rank), its k-tiles
  const int kb = split * ktpc + kp * p.ktpw;
  const int ns = p.Np >> 4;
  // k-tiles of this warp (0 for a slice past Np or a K range past KT: it still joins the barriers)
  const int ntl = sl < ns ? max(0, min(p.KT, kb + p.ktpw) - kb) : 0;
  const int groups = gemv_groups(p.KT, p.gs_tiles, ktpc);
  auto group_of = [&](int kt) { return group_of_tile(kt, p.gs_shift, p.gs_tiles); };
  const int g_lo = group_of(min(split * ktpc, p.KT - 1));  // first group of the CTA's K range
  const int g_n = min(groups, group_of(p.KT - 1) + 1 - g_lo);
  const GemvSmem L = gemv_smem(groups, spc, p.zeros != nullptr, nwarps, MODE, MB, D, min(8 * MB, p.M), ktpc);
  const int csl = min(spc, ns - sl0);  // slices of this CTA inside Np

  // -------- base codes: a register ring of D k-tiles (the lane's 16 bytes of the warp's 512-byte slice
  // of each unit), loaded D tiles ahead; the first use of a slot waits on its load (scoreboard). The
  // first D are requested before anything else (they depend on nothing, not even the previous kernel in
  // the stream): the kernel's first DRAM round trip then overlaps all of its setup
  const uint4* const wsrc = static_cast<const uint4*>(p.w) + ((size_t)nt * p.KT + kb) * 128 + ws * 32 + lane;
  uint4 wbuf[D];
#pragma unroll
  for (int i = 0; i < D; ++i) wbuf[i] = i < ntl ? ldg_stream16(wsrc + (size_t)i * 128) : make_uint4(0, 0, 0, 0);

  // -------- scales / zeros of the CTA's slices, all groups -> shared memory (cp.async group 0)
  {
    const T* S = static_cast<const T*>(p.scales);
    const T* Z = static_cast<const T*>(p.zeros);
    const int per = csl * 2;  // 16-byte chunks per group and array
    const int n = g_n * per * (Z != nullptr ? 2 : 1);
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
      const int arr = c / (g_n * per), r = c % (g_n * per), gi = r / per, ch = r % per;
      const T* src = (arr ? Z : S) + (size_t)(g_lo + gi) * p.Np + sl0 * 16 + ch * 8;
      cp_async16(smem + arr * (L.sc / 2) + (gi * spc * 16 + ch * 8) * 2, src);
    }
    cp_commit();
  }


  // -------- zipper: the residual unit of the tile in base ring slot i (if any) is loaded by cp.async into
  // the warp's residual slot i, D tiles ahead like its base codes. State kept small (registers bound the
  // ring depth, NOTES.md v14): zwin = residual bits of the warp's tiles [32 j, 32 j + 32) (relative to kb),
  // zrid = id of the next residual unit to load (ids along a unit row are consecutive), rmask bit i = the
  // tile in ring slot i has a residual
  uint32_t zwin = 0, rmask = 0;
  int zrid = 0;
  uint8_t* const ring = smem + L.sc + L.xs + warp * D * gemv_res_slot();
  const int roff = ws * 32 + lane;  // the lane's 16-byte chunk of a residual unit (and of its row scales)
  auto zbits_at = [&](int kt, uint32_t& lo) {  // the row's residual bits of k-tiles kt .. kt + 31
    const uint32_t* zb = p.res_bits + (size_t)nt * p.KW + (kt >> 5);
    lo = __ldg(zb);
    return __funnelshift_r(lo, (kt >> 5) + 1 < p.KW ? __ldg(zb + 1) : 0u, kt & 31);
  };
  auto load_r = [&](int t, int i) {  // tiles in order: t = 0, 1, 2, ...
    uint32_t lo;
    if (t > 0 && (t & 31) == 0) zwin = zbits_at(kb + t, lo);
    const uint32_t bit = (zwin >> (t & 31)) & 1u;
    rmask = (rmask & ~(1u << i)) | (bit << i);
    if (bit) {
      uint8_t* slot = ring + i * gemv_res_slot();
      cp_async16(slot + lane * 16, static_cast<const uint4*>(p.rw) + (size_t)zrid * 128 + roff);
      if (lane < 2) cp_async16(slot + 512 + lane * 16, static_cast<const T*>(p.rs) + (size_t)zrid * 64 + ws * 16 + lane * 8);
      ++zrid;
    }
  };
  if (MODE == MODE_ZIPPER) {
    if (ntl > 0) {
      uint32_t lo;
      zwin = zbits_at(kb, lo);
      // res_base: the row's first id at or after the word's start; skip the units in [32 (kb >> 5), kb)
      zrid = __ldg(p.res_base + (size_t)nt * p.KW + (kb >> 5)) + __popc(lo & ((1u << (kb & 31)) - 1u));
    }
  }
  // prologue (zipper): D groups (the residual units of tiles 0..D-1), all before griddep_wait(); empty
  // groups past the warp's tiles keep the wait counts static
  if (MODE == MODE_ZIPPER) {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      if (i < ntl) load_r(i, i);
      cp_commit();
    }
  }
  griddep_wait();  // X is the only input the previous kernel in the stream may write
  if (!(p.pdl & 2)) griddep_launch_dependents();
  // -------- X rows m0.. of the CTA's K range -> shared memory (16-byte loads and stores, zero past K):
  // staged once, so no X load sits on a warp's per-tile critical path (an L2 round trip per tile did:
  // v13). Plain loads, not cp.async: the wait below then covers the scales' group only, never the
  // prologue's residual units (their bit words arrive a DRAM round trip later than the weights)
  uint8_t* const xs = smem + L.sc;
  const int xrows = min(8 * MB, p.M - m0), xpitch = gemv_x_pitch(ktpc), kc0 = split * ktpc * 64;
  // zero fold: sum of X over each of the CTA's k-tiles per token row, [local k-tile][8 rows] (rows >= xrows: 0)
  float* const sxs = reinterpret_cast<float*>(smem + L.sc + L.xs + L.rring + L.red);
  {
    const T* X = static_cast<const T*>(p.x);
    const int chunks = ktpc * 8;
    if constexpr (ZF) {
      // the same copy, with a trip count uniform over the CTA (the shuffles need whole warps): chunk c is lane
      // c & 7 of an 8-lane group holding one row's k-tile (chunks % 8 == 0), which sums it in a fixed order
      const int n = xrows * chunks;
      for (int base = 0; base < n; base += blockDim.x) {
        const int c = base + threadIdx.x, r = c / chunks, ch = c % chunks, k = kc0 + ch * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (c < n) {
          if (k < p.K) v = __ldg(reinterpret_cast<const uint4*>(X + (size_t)(m0 + r) * p.K + k));
          *reinterpret_cast<uint4*>(xs + r * xpitch + ch * 16) = v;
        }
        auto pair = [](uint32_t w) { return __uint_as_float(w << 16) + __uint_as_float(w & 0xFFFF0000u); };
        float sum = ((pair(v.x) + pair(v.y)) + pair(v.z)) + pair(v.w);
        sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
        sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
        sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 4);
        if (c < n && (c & 7) == 0) sxs[(ch >> 3) * 8 + r] = sum;
      }
      for (int i = threadIdx.x; i < ktpc * 8; i += blockDim.x)
        if ((i & 7) >= xrows) sxs[i] = 0.f;
    } else {
      for (int c = threadIdx.x; c < xrows * chunks; c += blockDim.x) {
        const int r = c / chunks, ch = c % chunks, k = kc0 + ch * 8;
        const uint4 v = k < p.K ? __ldg(reinterpret_cast<const uint4*>(X + (size_t)(m0 + r) * p.K + k)) : make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(xs + r * xpitch + ch * 16) = v;
      }
    }
    if (threadIdx.x < 4) reinterpret_cast<uint32_t*>(xs + min(8 * MB, p.M) * xpitch)[threadIdx.x] = 0u;
  }
  if (MODE == MODE_ZIPPER)
    cp_wait<D>();  // the scales' group (the D residual groups after it may still be in flight)
  else
    cp_wait<0>();  // the scales' group
  __syncthreads();  // visible to every warp

  // X fragments (B operand = X^T, k16 x n8): ldmatrix.x4 from the staged rows gives two k16 steps:
  // lane l addresses row (token) l & 7 of matrix l >> 3 = (k16 step 2h + (l >> 4), k half (l >> 3) & 1);
  // lanes of rows past M address the zero chunk and do not advance (xstep 0)
  uint32_t xaddr[MB], xstep[MB];
#pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
    const int r = mb * 8 + (lane & 7);
#if MOSAIC_GEMV_XSTEP_CONST
    const int off = (r < xrows ? r : 0) * xpitch + (kp * p.ktpw) * 128 + (lane >> 4) * 32 + ((lane >> 3) & 1) * 16;
#else
    const int off = r < xrows ? r * xpitch + (kp * p.ktpw) * 128 + (lane >> 4) * 32 + ((lane >> 3) & 1) * 16
                              : min(8 * MB, p.M) * xpitch;
#endif
    xaddr[mb] = static_cast<uint32_t>(__cvta_generic_to_shared(xs + off));
    xstep[mb] = MOSAIC_GEMV_XSTEP_CONST || r < xrows ? 64u : 0u;
  }
  const T* const ssm = reinterpret_cast<const T*>(smem) + (warp / kparts) * 16 + g;
  const T* const zsm = reinterpret_cast<const T*>(smem + L.sc / 2) + (warp / kparts) * 16 + g;

  float acc[MB][4], accg[MB][4];  // scaled sum; unscaled sum of the current scale group's base products
  float gsx0 = 0.f, gsx1 = 0.f;   // zero fold: X summed over the group's tiles so far (tokens 2 t4, 2 t4 + 1)
#pragma unroll
  for (int mb = 0; mb < MB; ++mb)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[mb][c] = accg[mb][c] = 0.f;

  const T2 e8 = as_t2<T2>(dup16(Tr::E8));
  // one k-tile: dequantize the slice's 4 k16 steps into A fragments (plus the residual of ring
  // slot i when WR) and multiply with the X fragments
  // scale group of the current tile, tracked without a division: its offset in the staged scales and
  // the k-tile where the next group starts (never for per-channel scales)
  int go = ntl > 0 ? (group_of(kb) - g_lo) * spc * 16 : 0;
  // MOSAIC_GEMV_ZIPPER_WPTR (zipper kernels): the current group's scales of rows g, g + 8 through a loop-carried
  // pointer as well (ptxas otherwise rebuilds ssm + go from the thread id in every tile's header)
  constexpr bool SGO = MOSAIC_GEMV_ZIPPER_WPTR && MODE == MODE_ZIPPER;
  const T* sgo = ssm + go;
  int gend = p.gs_tiles > 0 && ntl > 0 ? (group_of(kb) + 1) * p.gs_tiles : INT_MAX;
  T2 za = e8, zb = e8;  // E + zero of rows g, g + 8 in the current group (E + 8 when symmetric)
  auto load_zeros = [&]() {
    if (p.zeros != nullptr && go < groups * spc * 16) {
      za = T2{zsm[go], zsm[go]};
      zb = T2{zsm[go + 8], zsm[go + 8]};
    }
  };
  load_zeros();
  // zero fold: E + z of rows g, g + 8 in the group at offset go, read when needed (a group end, a residual tile)
  // instead of held in registers across the tiles
  auto zeros_at = [&](int gofs, T2& a, T2& b) {
    a = b = e8;
    if (p.zeros != nullptr) {
      a = T2{zsm[gofs], zsm[gofs]};
      b = T2{zsm[gofs + 8], zsm[gofs + 8]};
    }
  };
  auto tile = [&](int t, int i, const uint4 wq, auto with_res) {
    constexpr bool WR = decltype(with_res)::value;
    const int kt = kb + t;
    // X fragments of the tile's two k16-step pairs: {b0, b1} of step s = xf[mb][4 (s >> 1) + 2 (s & 1) + {0, 1}].
    // With one 8-row block (and the dense MB = 2 kernel) all are loaded up front; otherwise each pair's
    // fragments are loaded just before its steps (half the live registers: the MB = 2 zipper kernels
    // spilled under their register bounds, NOTES.md v15)
    constexpr int XH = MB == 1 || (MB == 2 && MODE == MODE_DENSE) ? 2 : 1;  // k16-step pairs loaded at once
    uint32_t xf[MB][4 * XH];
    auto load_x = [&](int h0) {
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int h = 0; h < XH; ++h)
          asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                       : "=r"(xf[mb][4 * h]), "=r"(xf[mb][4 * h + 1]), "=r"(xf[mb][4 * h + 2]), "=r"(xf[mb][4 * h + 3])
                       : "r"(xaddr[mb] + (2 * t + h0 + h) * (MOSAIC_GEMV_XSTEP_CONST ? 64u : xstep[mb])));
    };
    load_x(0);
    // a residual tile joins the group sum too: d = (q - z) + (r - 8) (rs / s), one rounding FMA in the
    // dtype, scaled by s with the rest of the group (two roundings per weight, as in the tests' bound). No
    // residual codes or scales are held across the tile (registers bound the ring depth): the codes are
    // read from the slot per k16 step
    T2 ra = e8, rb = e8;
    T2 wza = za, wzb = zb;  // this tile's E + z (zero fold: read for residual tiles only)
    if constexpr (ZF && WR) zeros_at(go, wza, wzb);
    const uint8_t* const rslot = ring + i * gemv_res_slot();
    if constexpr (WR) {
      cp_wait<D - 1>();  // this tile's residual group; the D - 1 younger ones may still be in flight
      __syncwarp();  // the slot's row scales were copied by lanes 0-1: cp.async completion is per thread
      const T* rsl = reinterpret_cast<const T*>(rslot + 512) + g;
      const T va = Tr::from_f(__fdividef(Tr::to_f(rsl[0]), Tr::to_f(SGO ? sgo[0] : ssm[go])));
      const T vb = Tr::from_f(__fdividef(Tr::to_f(rsl[8]), Tr::to_f(SGO ? sgo[8] : ssm[go + 8])));
      ra = T2{va, va};
      rb = T2{vb, vb};
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (XH == 1 && s == 2) load_x(1);
      const uint32_t q = s == 0 ? wq.x : s == 1 ? wq.y : s == 2 ? wq.z : wq.w;
      const uint32_t rqw = WR ? *reinterpret_cast<const uint32_t*>(rslot + lane * 16 + s * 4) : 0u;
      uint32_t a[4];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {  // jj: (n half h = jj >> 1, k half r = jj & 1)
        const T2 v = as_t2<T2>(lop3_and_or(q >> (4 * jj), 0x000F000Fu, Tr::EX));
        // q - z: a small integer, exact in the dtype (the zero fold keeps E + q: corrected per group)
        T2 d = ZF && !WR ? v : __hsub2(v, jj >> 1 ? wzb : wza);
        if constexpr (WR) {
          const T2 rv = as_t2<T2>(lop3_and_or(rqw >> (4 * jj), 0x000F000Fu, Tr::EX));
          d = __hfma2(__hsub2(rv, e8), jj >> 1 ? rb : ra, d);
        }
        a[(jj & 1) * 2 + (jj >> 1)] = as_u32<T2>(d);  // a0 (g, k), a1 (g+8, k), a2 (g, k+8), a3 (g+8, k+8)
      }
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) {
        const int xi = XH == 2 ? 2 * s : 2 * (s & 1);
        const uint32_t bf[2] = {xf[mb][xi], xf[mb][xi + 1]};
        mma16816<T>(accg[mb], a, bf);
      }
    }
    if constexpr (ZF && !WR) {  // the tile's X sums (tokens 2 t4, 2 t4 + 1) join its group's (a residual tile
                                // subtracted its z above)
      const float2 sx = *reinterpret_cast<const float2*>(sxs + (kp * p.ktpw + t) * 8 + 2 * t4);
      gsx0 += sx.x;
      gsx1 += sx.y;
    }
    // the scale is applied once per group, to its fp32 sum (not to every weight: 16 fewer instructions
    // per tile)
    if (t + 1 == ntl || kt + 1 == gend) {
      const float fa = Tr::to_f(SGO ? sgo[0] : ssm[go]), fb = Tr::to_f(SGO ? sgo[8] : ssm[go + 8]);
      if constexpr (ZF) {  // sum (q - z) x = sum (E + q) x - (E + z) sum x over the group's base tiles
        T2 gza, gzb;
        zeros_at(go, gza, gzb);
        const float ea = Tr::to_f(gza.x), eb = Tr::to_f(gzb.x);
        acc[0][0] = fmaf(fa, fmaf(-ea, gsx0, accg[0][0]), acc[0][0]);
        acc[0][1] = fmaf(fa, fmaf(-ea, gsx1, accg[0][1]), acc[0][1]);
        acc[0][2] = fmaf(fb, fmaf(-eb, gsx0, accg[0][2]), acc[0][2]);
        acc[0][3] = fmaf(fb, fmaf(-eb, gsx1, accg[0][3]), acc[0][3]);
        gsx0 = gsx1 = 0.f;
      }
      gend += p.gs_tiles;
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!ZF) acc[mb][c] = fmaf(c < 2 ? fa : fb, accg[mb][c], acc[mb][c]);
          accg[mb][c] = 0.f;
        }
      go += spc * 16;
      if constexpr (SGO) sgo += spc * 16;
      load_zeros();
    }
  };

  // -------- mainloop: tile t sits in ring slot t % D (unrolled by D: the slot is a compile-time index)
  constexpr bool WPTR = MOSAIC_GEMV_ZIPPER_WPTR && MODE == MODE_ZIPPER;
  const uint4* wnext = wsrc + (size_t)D * 128;  // WPTR: tile t + D's weights, advanced by one tile per tile
  for (int t0 = 0; t0 < ntl; t0 += D) {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int t = t0 + i;
      if (t < ntl) {
        if (MODE == MODE_ZIPPER && ((rmask >> i) & 1u))
          tile(t, i, wbuf[i], std::true_type{});
        else
          tile(t, i, wbuf[i], std::false_type{});
        if constexpr (WPTR) {  // one test for both loads of tile t + D (a slot past the warp's tiles keeps a stale
                               // residual bit: it is never consumed)
          if (t + D < ntl) {
            wbuf[i] = ldg_stream16(wnext);  // after the use: no copy
            load_r(t + D, i);
          }
          wnext += 128;
          cp_commit();  // one group per tile: tile t + 1 waits with D - 1 younger
        } else {
          if (t + D < ntl) wbuf[i] = ldg_stream16(wsrc + (size_t)(t + D) * 128);  // after the use: no copy
          if (MODE == MODE_ZIPPER) {
            if (t + D < ntl) load_r(t + D, i);
            cp_commit();  // one group per tile: tile t + 1 waits with D - 1 younger
          }
        }
      }
    }
  }
  if (p.pdl & 2) griddep_launch_dependents();

  // -------- kparts warps of a slice -> one sum (in kp order: deterministic); with K split over a
  // cluster of p.splitk CTAs, rank 0 adds the other ranks' sums through DSMEM (in rank order); Y
  float* const red = reinterpret_cast<float*>(smem + L.sc + L.xs + L.rring);
  const bool lead = kp == 0;  // this warp ends with the slice's sum
  if (kparts > 1 && p.splitk == 1) {
    // every thread of the CTA sums one output of one slice over its kparts warps (in kp order:
    // deterministic) and stores it: no serial tail on one warp per slice
#pragma unroll
    for (int mb = 0; mb < MB; ++mb)
#pragma unroll
      for (int c = 0; c < 4; ++c) red[(warp * MB * 4 + mb * 4 + c) * 32 + lane] = acc[mb][c];
    __syncthreads();
    T* const Y = static_cast<T*>(p.y);
    for (int e = threadIdx.x; e < spc * MB * 128; e += blockDim.x) {
      const int sli = e / (MB * 128), r = e % (MB * 128);  // r = (mb * 4 + c) * 32 + lane of the source
      const int el = r & 31, mb = r >> 7, c = (r >> 5) & 3;
      float v = 0.f;
      for (int q = 0; q < kparts; ++q) v += red[(sli * kparts + q) * MB * 128 + r];
      const int n = (sl0 + sli) * 16 + (el >> 2) + (c >> 1) * 8;
      const int m = m0 + mb * 8 + 2 * (el & 3) + (c & 1);
      if (sl0 + sli < ns && m < p.M && n < p.N) Y[(size_t)m * p.N + n] = Tr::from_f(v);
    }
    return;
  }
  if (kparts > 1) {
#pragma unroll
    for (int mb = 0; mb < MB; ++mb)
#pragma unroll
      for (int c = 0; c < 4; ++c) red[(warp * MB * 4 + mb * 4 + c) * 32 + lane] = acc[mb][c];
    __syncthreads();
    if (lead) {
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float v = acc[mb][c];
          for (int q = 1; q < kparts; ++q) v += red[((warp + q) * MB * 4 + mb * 4 + c) * 32 + lane];
          acc[mb][c] = v;
        }
    }
  }
  bool store = lead;
  if (p.splitk > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    if (lead) {  // its own slot: only this warp reads or writes it after the kparts sum
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int c = 0; c < 4; ++c) red[(warp * MB * 4 + mb * 4 + c) * 32 + lane] = acc[mb][c];
    }
    cl.sync();
    store = lead && cl.block_rank() == 0;
    if (store) {
#pragma unroll
      for (int mb = 0; mb < MB; ++mb)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int idx = (warp * MB * 4 + mb * 4 + c) * 32 + lane;
          float v = acc[mb][c];
          for (int r = 1; r < p.splitk; ++r) v += cl.map_shared_rank(red, r)[idx];
          acc[mb][c] = v;
        }
    }
    cl.sync();  // keep every CTA's shared memory alive until rank 0 has read it
#endif
  }
  if (!store || sl >= ns) return;
  T* const Y = static_cast<T*>(p.y);
#pragma unroll
  for (int mb = 0; mb < MB; ++mb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int n = sl * 16 + g + (c >> 1) * 8;
      const int m = m0 + mb * 8 + 2 * t4 + (c & 1);
      if (m < p.M && n < p.N) Y[(size_t)m * p.N + n] = Tr::from_f(acc[mb][c]);
    }
}

template <typename T, int MB, int MODE, bool BIG>
const char* launch_t(const Params& p, int warps, cudaStream_t stream) {
  auto kern = w4a16_gemv_kernel<T, MB, MODE, BIG>;
  static bool attr_set = false;
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_MAX_SMEM);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    // all of the SM's 228 KB as shared memory: residency is set by registers and dynamic smem
    e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    e = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    attr_set = true;
  }
  const int spc = warps / p.kparts;
  const int groups = gemv_groups(p.KT, p.gs_tiles, p.kparts * p.ktpw);
  const GemvSmem L = gemv_smem(groups, spc, p.zeros != nullptr, warps, MODE, MB, GemvShape<MODE, BIG, MB>::D,
                               min(8 * MB, p.M), p.kparts * p.ktpw);
  if (L.total > GEMV_MAX_SMEM)
    return "the CTA's X rows and scales exceed shared memory (use more K splits or fewer slices per CTA)";
  // the K splits of a slice group: one cluster
  return launch_ex(kern, dim3((p.Np / 16 + spc - 1) / spc, p.splitk, (p.M + 8 * MB - 1) / (8 * MB)), dim3(32 * warps),
                   L.total, stream, p.pdl, p.splitk, p);
}

template <typename T, int MB, int MODE>
const char* launch_w(const Params& p, int warps, cudaStream_t stream) {
  return warps == 16 ? launch_t<T, MB, MODE, true>(p, warps, stream) : launch_t<T, MB, MODE, false>(p, warps, stream);
}

template <typename T, int MODE>
const char* launch_m(const Params& p, int mb, int warps, cudaStream_t stream) {
  if (mb == 1) return launch_w<T, 1, MODE>(p, warps, stream);
  return mb == 2 ? launch_w<T, 2, MODE>(p, warps, stream) : launch_w<T, 4, MODE>(p, warps, stream);
}

template <typename T>
const char* launch_dt(const Params& p, int mode, int mb, int warps, cudaStream_t stream) {
  return mode == MODE_DENSE ? launch_m<T, MODE_DENSE>(p, mb, warps, stream) : launch_m<T, MODE_ZIPPER>(p, mb, warps, stream);
}

}  // namespace

const char* launch_gemv(const Params& p, int dtype, int mode, int mb, int warps, void* stream_) {
  if (mode != MODE_DENSE && mode != MODE_ZIPPER) return "the small-M kernel has the dense and zipper modes only";
  if (!gemv_mb_valid(mb)) return "mb must be 1, 2 or 4";
  if (warps != 4 && warps != 8 && warps != 16) return "warps per CTA must be 4, 8 or 16";
  if (p.kparts < 1 || warps % p.kparts) return "kparts must divide the warps per CTA";
  if (p.splitk < 1 || p.splitk > 16) return "splitk (cluster size) must be in [1, 16]";
  if (p.ktpw < 1 || (long)p.splitk * p.kparts * p.ktpw < p.KT) return "splitk * kparts * ktpw must cover every k-tile";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  if (dtype == DT_FP16) return launch_dt<half>(p, mode, mb, warps, stream);
  if (dtype == DT_BF16) return launch_dt<__nv_bfloat16>(p, mode, mb, warps, stream);
  return "unknown dtype";
}

const int GEMV_SMEM_MAX = GEMV_MAX_SMEM;

int gemv_zero_fold() { return MOSAIC_GEMV_ZERO_FOLD; }

int gemv_zipper_wptr() { return MOSAIC_GEMV_ZIPPER_WPTR; }

int gemv_xstep_const() { return MOSAIC_GEMV_XSTEP_CONST; }

int gemv_ring_depth(int mode, int warps) { return gemv_depth(mode, warps); }

int gemv_smem_bytes(int kt, int gs_tiles, int ktpc, int spc, int zeros, int warps, int mode, int mb, int m) {
  return gemv_smem(gemv_groups(kt, gs_tiles, ktpc), spc, zeros != 0, warps, mode, mb, gemv_depth(mode, warps),
                   m < 8 * mb ? m : 8 * mb, ktpc).total;
}

int gemv_regs(int mode, int mb, int warps) {
  cudaFuncAttributes a;
  using B = __nv_bfloat16;
  cudaError_t e = cudaErrorInvalidValue;
  const bool big = warps == 16;
#define GEMV_ATTR(MBV, MD) \
  e = cudaFuncGetAttributes(&a, big ? w4a16_gemv_kernel<B, MBV, MD, true> : w4a16_gemv_kernel<B, MBV, MD, false>)
  if (mode == MODE_DENSE) {
    if (mb == 1) GEMV_ATTR(1, MODE_DENSE); else if (mb == 2) GEMV_ATTR(2, MODE_DENSE); else GEMV_ATTR(4, MODE_DENSE);
  }
  if (mode == MODE_ZIPPER) {
    if (mb == 1) GEMV_ATTR(1, MODE_ZIPPER); else if (mb == 2) GEMV_ATTR(2, MODE_ZIPPER); else GEMV_ATTR(4, MODE_ZIPPER);
  }
#undef GEMV_ATTR
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return a.numRegs;
}

}  // namespace zipper
