// ZipperEngine W4A16 kernels: shared declarations (host side).
#pragma once
#include <cstdint>

namespace zipper {

// Packed layout (written by mosaic_exp/kernels/packing.py):
//   unit       = 64 (n) x 64 (k) weights = 2048 bytes = 128 threads x 16 bytes (fragment order)
//   w          [NT][KT][128] uint4         base codes, NT = Np/64, KT = Kp/64
//   scales     [G][Np]  T                  per-group scale (T = activation dtype)
//   zeros      [G][Np]  T  or null         E + z (E = 1024 fp16, 128 bf16); null -> symmetric z=8
//   rw         [R][128] uint4              residual units, same fragment order, code 8 = 0
//   rs         [R][64]  T                  residual scale per unit row
//   res_bits   [NT][KW] uint32             KW = ceil(KT/32): bit (kt & 31) of word kt >> 5 is set
//                                          where a residual unit exists at (nt, kt)   (zipper)
//   res_base   [NT][KW] int32              id of the first residual unit at or after (nt, 32w)
//                                          (units are sorted by (nt, kt): ids are consecutive);
//                                          the zipper kernel keeps residual tiles in a ring of
//                                          `rslots` slots per unit (slot = id % rslots), sized by
//                                          the host to the densest window of STAGES k-tiles
//   csr_ptr    [NT+1], csr_kt [R], csr_id [R]   residual units by n-tile (separate)
struct Params {
  const void* x;
  const void* w;
  const void* scales;
  const void* zeros;
  const void* rw;
  const void* rs;
  const uint32_t* res_bits;  // [NT][KW] (zipper)
  const int* csr_ptr;
  const int* csr_kt;
  const int* csr_id;
  void* y;
  float* ws;
  int* counters;
  const int* res_base;    // [NT][KW] (zipper)
  int rslots;             // residual ring slots per unit (tiled/wgmma zipper), 1..STAGES; the gemv kernel
                          // has one per register-ring slot (gemv_ring_depth)
  int zflags;             // zipper: must be 1 ('first' prologue: wait for the residual bit words
                          // before the prologue; v8's 'late' scheme (0) is gone since v9)
  int fixup;              // split-K fix-up: 0 = global partials + counters, 1 = thread-block
                          // cluster over the splits, partials summed through DSMEM (no workspace)
  int rlead;              // zipper 'first': residual units of tile t+rlead are issued while tile t is
                          // consumed (0 = STAGES-1, with the base tile); a smaller lead shrinks
                          // the ring to the densest window of rlead+1 tiles (host: rslots)
  int pdl;                // launch with programmatic dependent launch (griddepcontrol): the
                          // weight prologue overlaps the previous kernel's tail
  int M, N, K, Np, Kp, NT, KT;
  int KW;            // words of res_bits per n-tile row = ceil(KT / 32)
  int gs_tiles;      // group size in k-tiles of 64 (0 = per-channel)
  int gs_shift;      // log2(gs_tiles) when a power of two (31 for per-channel), else -1
  int splitk;        // number of K splits (1 = none)
  int kt_per_split;  // k-tiles per split
  int mpad;          // m_tiles * BM (workspace rows)
  // small-M path (gemv_kernels.cu): warps along K per n16 slice (in one CTA) and k-tiles per warp
  int kparts;
  int ktpw;
  // warp-specialized small-tile wgmma kernel (set by its launcher): pipeline stages, and whether X is
  // read as a 3-D tensor (one TMA per stage; needs K % 64 == 0)
  int ws_stages;
  int ws_x3d;
  // last, so that adding it moved no other field (the gemv kernels' register allocation followed the offsets):
  // tiled kernel, dense / zipper: null = split s takes k-tiles [s * kt_per_split, min(KT, (s+1) * kt_per_split));
  // else [b[s], b[s+1]) with b = split_bounds + ncta * (splitk + 1), ncta the CTA's n index (NOTES.md v22: the
  // zipper's k ranges balanced by work, residual tiles counted; every range non-empty, b[0] = 0, b[splitk] = KT)
  const int* split_bounds;
};

enum Mode { MODE_DENSE = 0, MODE_ZIPPER = 1, MODE_RESIDUAL = 2 };
enum DType { DT_FP16 = 0, DT_BF16 = 1 };

struct ConfigInfo {
  int bm, bn, stages, smem_bytes, ctas_per_sm;
  int ring_unit_bytes;  // zipper: dynamic smem per residual ring slot (x NW x rslots on top)
  int static_smem;      // static shared memory of the kernel (bookkeeping arrays)
  int threads;          // threads per CTA (128 x warps along K)
};

// resident clusters of 1 x splitk x 1 CTAs of a config's kernel (bf16), 0 on error / no device
int max_active_clusters(int cfg, int mode, int splitk, int rslots);

// registers per thread of a config's kernel (bf16 instantiation), -1 without a CUDA device
int kernel_regs(int cfg, int mode);

constexpr int NUM_CONFIGS = 13;
ConfigInfo config_info(int cfg, int mode);

// Returns an empty string on success, else an error message.
const char* launch(const Params& p, int dtype, int mode, int cfg, void* stream);  // stream: cudaStream_t

// Small-M path (gemv_kernels.cu): Y^T = W X^T with the weights as the MMA's A operand, one warp per
// (n16 slice, K range of ktpw k-tiles), kparts warps per slice summed in the CTA, p.splitk CTAs per
// slice group (a thread-block cluster) summed through DSMEM (deterministic).
// mb = 8-row blocks of M per CTA (1, 2 or 4: M <= 8, 16 or 32 per grid z-slice); warps = 4, 8 or 16 per CTA;
// mode MODE_DENSE or MODE_ZIPPER. Reads p.x/w/scales/zeros/rw/rs/res_bits/res_base, writes p.y.
constexpr bool gemv_mb_valid(int mb) { return mb == 1 || mb == 2 || mb == 4; }  // the compiled row blocks
const char* launch_gemv(const Params& p, int dtype, int mode, int mb, int warps, void* stream);
// registers per thread of a small-M kernel (bf16) for a CTA of `warps` warps, -1 without a CUDA device
int gemv_regs(int mode, int mb, int warps);
// dynamic shared memory of a small-M CTA (scales of its spc slices, its X rows, residual rings, cross-warp sum
// buffer) for M = m rows
int gemv_smem_bytes(int kt, int gs_tiles, int ktpc, int spc, int zeros, int warps, int mode, int mb, int m);
// k-tiles in flight per warp (its register ring; a zipper warp has as many residual slots) of the kernel
// that runs a CTA of `warps` warps
int gemv_ring_depth(int mode, int warps);
int gemv_zero_fold();     // MOSAIC_GEMV_ZERO_FOLD as gemv_kernels.cu was compiled (NOTES.md v29)
int gemv_zipper_wptr();   // MOSAIC_GEMV_ZIPPER_WPTR as gemv_kernels.cu was compiled (NOTES.md v29)
int gemv_xstep_const();   // MOSAIC_GEMV_XSTEP_CONST as gemv_kernels.cu was compiled (NOTES.md v29)
extern const int GEMV_SMEM_MAX;

// Large-M path (wgmma_kernels.cu, sm_90a): Y^T = W X^T on warpgroup MMAs, the weights dequantized into
// the A operand's registers, X tiles from shared memory; CTA = 64 wgs n x bt tokens (bt = 64 or 128), or
// with wgs = 3 the warp-specialized kernel (2 consumer warpgroups x 64 n, a TMA producer warpgroup; bt 8..64:
// split-K over a cluster, bt 128 / 256: split-K through p.ws / p.counters, the last split of a tile sums the
// fp32 partials in split order); wgs = 2 or 4 warpgroups (units of 64 n) per CTA, split-K over a cluster.
// Modes MODE_DENSE or MODE_ZIPPER. Reads p.x/w/scales/zeros/rw/rs/res_bits/res_base, writes p.y.
const char* launch_wgmma(const Params& p, int dtype, int mode, int bt, int wgs, void* stream);
int wgmma_regs(int mode, int bt, int wgs);        // registers per thread (bf16), -1 without a CUDA device
int wgmma_smem_bytes(int mode, int bt, int wgs);  // dynamic shared memory per CTA
// k-tiles per pipeline stage of a small warp-specialized tile (bt 8..64; the host bounds the residual
// units of a stage, p.rslots, over windows of this many k-tiles), 0 for other bt
int wgmma_ws_stage_ktiles(int bt);
// MOSAIC_COMPACT_CLUSTER_FIXUP as each kernel TU was compiled (NOTES.md v18: 1 by default, 0 = the v17 form),
// so that the launcher can name the variant that ran
int tiled_compact_cluster_fixup();
int wgmma_compact_cluster_fixup();
int wgmma_split_producer();  // MOSAIC_WS_BIG_SPLIT_PRODUCER as wgmma_kernels.cu was compiled (NOTES.md v25)
int wgmma_split_fixup();     // MOSAIC_WS_BIG_SPLIT_FIXUP as wgmma_kernels.cu was compiled (NOTES.md v28)
int wgmma_balanced();        // MOSAIC_WS_BIG_BALANCED as wgmma_kernels.cu was compiled (NOTES.md v28)
int wgmma_zprobe();          // MOSAIC_WS_BIG_ZPROBE (a probe build: its large-tile zipper outputs are wrong)
// MOSAIC_BALANCED_SPLITK as zipper_kernels.cu was compiled (NOTES.md v22): whether Params::split_bounds is read
int tiled_balanced_splitk();

}  // namespace zipper
