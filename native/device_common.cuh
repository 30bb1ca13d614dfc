// Device helpers shared by the ZipperEngine kernels (tiled: zipper_kernels.cu, small-M:
// gemv_kernels.cu): dtype traits of the magic-exponent int4 dequantization, the m16n8k16 MMA,
// programmatic dependent launch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

// Compile-time switch (NOTES.md v18; on by default since session 15, where it measured o / qkv at M = 64 -15 %):
// 1 = the cluster split-K fix-ups of the tiled (zipper_kernels.cu) and wgmma (wgmma_kernels.cu, classic tiles)
// kernels as run-time loops over the CTA's own slots; 0 = unrolled over all of them (the v17 form, kept for
// A/B: -DMOSAIC_COMPACT_CLUSTER_FIXUP=0).
#ifndef MOSAIC_COMPACT_CLUSTER_FIXUP
#define MOSAIC_COMPACT_CLUSTER_FIXUP 1
#endif
// Compile-time switch (NOTES.md v22, 1 by default since measured): 1 = the tiled kernel takes its split-K k ranges
// from Params::split_bounds when the host passes a table (the zipper's work-balanced cuts); 0 = the code is not
// compiled in (the pre-v22 build, kept for A/B: -DMOSAIC_BALANCED_SPLITK=0) and the binding refuses a table.
#ifndef MOSAIC_BALANCED_SPLITK
#define MOSAIC_BALANCED_SPLITK 1
#endif
// Compile-time switch (NOTES.md v25): 1 = the large-tile wgmma kernels' copies are issued by lanes of two producer
// warps (weights and residual / scales, zeros and X), 0 = by one lane (the v24 form, kept for A/B).
#ifndef MOSAIC_WS_BIG_SPLIT_PRODUCER
#define MOSAIC_WS_BIG_SPLIT_PRODUCER 0
#endif
// Experiment switch (NOTES.md v25, 0 = off, the default; probe builds only, their zipper outputs are wrong):
// 1 = the large-tile zipper's consumers never add the residual (the dense consumer); 2 = as 1, and the producer
// loads no bit words either (no residual copies). Tells the zipper's fixed cost at bt 128 apart by side.
#ifndef MOSAIC_WS_BIG_ZPROBE
#define MOSAIC_WS_BIG_ZPROBE 0
#endif
// Compile-time switch (NOTES.md v28): how the split large-tile wgmma kernels sum their K splits. 0 (default, v26) =
// fp32 partials in global memory, the last split of a tile to arrive sums them and stores the tile; 1 = the splits
// of a tile form a thread-block cluster (grid y), partials stay in shared memory and each split sums its share of
// the tile's 8-token row groups through DSMEM and stores those rows (prepared, not yet measured); 9 = probe build:
// no fix-up at all, split 0 stores its own partial (wrong outputs: measures what the fix-up costs).
// (v27's reduce-scatter through global memory measured 1-5 % slower than 0 and was removed, NOTES.md v27.)
#ifndef MOSAIC_WS_BIG_SPLIT_FIXUP
#define MOSAIC_WS_BIG_SPLIT_FIXUP 0
#endif
// Compile-time switch (NOTES.md v28, prepared, 0 by default): 1 = the split large-tile wgmma kernels take their
// k ranges from Params::split_bounds when the host passes a table (the zipper's work-balanced cuts of
// splitk_balance.py, as the tiled kernel since v22); 0 = the uniform ranges only (the launcher refuses a table).
#ifndef MOSAIC_WS_BIG_BALANCED
#define MOSAIC_WS_BIG_BALANCED 0
#endif
namespace zipper {
namespace dev {

template <typename T>
struct Traits;
template <>
struct Traits<half> {
  using T2 = half2;
  static constexpr uint32_t EX = 0x64006400u;  // fp16 1024.0 in both halves
  static constexpr unsigned short E8 = 0x6408;  // 1032.0
  __device__ static float to_f(half v) { return __half2float(v); }
  __device__ static half from_f(float v) { return __float2half_rn(v); }
  __device__ static T2 from_f2(float a, float b) { return __floats2half2_rn(a, b); }
};
template <>
struct Traits<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static constexpr uint32_t EX = 0x43004300u;  // bf16 128.0 in both halves
  static constexpr unsigned short E8 = 0x4308;  // 136.0
  __device__ static float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
  __device__ static T2 from_f2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

template <typename T2>
__device__ __forceinline__ T2 as_t2(uint32_t v) {
  return *reinterpret_cast<T2*>(&v);
}
template <typename T2>
__device__ __forceinline__ uint32_t as_u32(T2 v) {
  return *reinterpret_cast<uint32_t*>(&v);
}

// 16-byte global load that skips L1 (weights streamed once per launch; read-only for the kernel's lifetime)
__device__ __forceinline__ uint4 ldg_stream16(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm volatile("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

template <typename T>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b);
template <>
__device__ __forceinline__ void mma16816<half>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// scale group of k-tile kt: gs_shift = log2(k-tiles per group) when a power of two (31: per-channel),
// -1 otherwise (then gs_tiles divides)
__device__ __forceinline__ int group_of_tile(int kt, int gs_shift, int gs_tiles) {
  return gs_shift >= 0 ? kt >> gs_shift : kt / gs_tiles;
}

// programmatic dependent launch (sm_90): wait for the previous grid in the stream (its memory
// operations visible), and let the next grid start launching. Both are no-ops when the kernel was
// not launched with programmatic stream serialization.
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// launch attributes of the kernel families: programmatic dependent launch when pdl != 0, a
// 1 x cluster_y x 1 thread-block cluster when cluster_y > 1; returns how many were set (<= 2)
inline int launch_attrs(cudaLaunchAttribute* attrs, int pdl, int cluster_y) {
  int na = 0;
  if (pdl) {
    attrs[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  if (cluster_y > 1) {
    attrs[na].id = cudaLaunchAttributeClusterDimension;
    attrs[na].val.clusterDim.x = 1;
    attrs[na].val.clusterDim.y = cluster_y;
    attrs[na].val.clusterDim.z = 1;
    ++na;
  }
  return na;
}

// one launch of `kern` with launch_attrs (PDL when pdl != 0, a 1 x cluster_y x 1 cluster when cluster_y > 1);
// returns an empty string, or the launch's CUDA error
template <typename... KParams, typename... Args>
const char* launch_ex(void (*kern)(KParams...), dim3 grid, dim3 block, int smem, cudaStream_t stream, int pdl,
                      int cluster_y, Args&&... args) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attrs[2];
  lc.attrs = attrs;
  lc.numAttrs = launch_attrs(attrs, pdl, cluster_y);
  cudaError_t e = cudaLaunchKernelEx(&lc, kern, std::forward<Args>(args)...);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace dev
}  // namespace zipper
