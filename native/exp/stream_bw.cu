// How fast can the H100 stream our packed weights with a trivial consumer? (session 7 probe)
//
// The small-M kernels (tiled, gemv, warp-specialized small tiles) reach 0.6-1.9 TB/s at M=1 where
// cuBLAS bf16 reaches 2.0-2.9 TB/s. This probe separates the data movement from the math: the same
// packed layout (64x64 units of 2 KB, unit (nt, kt) at (nt*KT + kt) * 2 KB), the same bytes, a
// consumer that only XORs what it loaded. Strategies:
//   quarter  4 warps per unit, each lane one 16-byte LDG per unit (its fragment), U units ahead
//            in registers (what a register-direct gemv would do)
//   whole    one warp per unit, 4 LDG.128 per lane per unit, U units ahead
//   bulk     cp.async.bulk (TMA engine) of CH bytes per stage into a ring of S stages, one
//            producer lane, all warps consume from shared memory (mbarrier full/empty)
// Each CTA (persistent grid) owns a contiguous range of units. Timing: CUDA graph of L launches over
// C rotated copies (> 4x the 50 MB L2), median of 15 replays.
//
// Build and run (device): nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/sbw native/exp/stream_bw.cu && /tmp/sbw
#include "../device_common.cuh"  // ldg_stream16: the small-M kernel's weight load

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x)                                                                                  \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

constexpr int UNIT = 2048;

using zipper::dev::ldg_stream16;
__device__ __forceinline__ uint32_t fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// the consumer of every register-direct strategy: cnt 16-byte loads per lane at p, p + stride, ...,
// U in flight, XOR-folded
template <int U>
__device__ __forceinline__ uint32_t stream_xor(const uint4* p, long cnt, long stride) {
  uint32_t acc = 0;
  uint4 buf[U];
#pragma unroll
  for (int i = 0; i < U; ++i) buf[i] = i < cnt ? ldg_stream16(p + i * stride) : make_uint4(0, 0, 0, 0);
  for (long t = 0; t < cnt; t += U) {
#pragma unroll
    for (int i = 0; i < U; ++i) {
      acc ^= fold(buf[i]);
      const long nx = t + U + i;
      buf[i] = nx < cnt ? ldg_stream16(p + nx * stride) : make_uint4(0, 0, 0, 0);
    }
  }
  return acc;
}

// range of units of CTA b out of G over T units (contiguous, balanced)
__device__ __forceinline__ void cta_range(long T, int b, int G, long& u0, long& u1) {
  u0 = T * b / G;
  u1 = T * (b + 1) / G;
}

// quarter: warp w of a 4-warp group reads bytes [512 q, 512 q + 512) of each unit of its group's range
template <int U>
__global__ void k_quarter(const uint4* __restrict__ w, long T, uint32_t* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, q = warp & 3, grp = warp >> 2;
  const int ngrp = blockDim.x >> 7;
  long c0, c1;
  cta_range(T, blockIdx.x, gridDim.x, c0, c1);
  const long n = c1 - c0;
  const long u0 = c0 + n * grp / ngrp, u1 = c0 + n * (grp + 1) / ngrp;
  const uint4* p = w + u0 * 128 + q * 32 + lane;
  const uint32_t acc = stream_xor<U>(p, u1 - u0, 128);
  if (acc == 0x12345678u) out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// slice: CTA b reads only quarter b % 4 of the units of range b / 4 (of G / 4 ranges): the four
// quarters of a unit come from four CTAs (on different SMs), as in the small-M kernel with one n16
// slice per CTA; the CTA's warps split the range into contiguous runs
template <int U>
__global__ void k_slice(const uint4* __restrict__ w, long T, uint32_t* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5, q = blockIdx.x & 3;
  long c0, c1;
  cta_range(T, blockIdx.x >> 2, gridDim.x >> 2, c0, c1);
  const long n = c1 - c0;
  const long u0 = c0 + n * warp / nw, u1 = c0 + n * (warp + 1) / nw;
  const uint4* p = w + u0 * 128 + q * 32 + lane;
  const uint32_t acc = stream_xor<U>(p, u1 - u0, 128);
  if (acc == 0x12345678u) out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// whole: warp reads whole units (4 x 512 B) of its contiguous sub-range
template <int U>
__global__ void k_whole(const uint4* __restrict__ w, long T, uint32_t* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  long c0, c1;
  cta_range(T, blockIdx.x, gridDim.x, c0, c1);
  const long n = c1 - c0;
  const long u0 = c0 + n * warp / nw, u1 = c0 + n * (warp + 1) / nw;
  const long cnt = (u1 - u0) * 4;  // 512-byte pieces
  const uint4* p = w + u0 * 128 + lane;
  const uint32_t acc = stream_xor<U>(p, cnt, 32);
  if (acc == 0x12345678u) out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(
          smem_u32(b)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}

// bulk: warp 0 lane 0 produces CH-byte stages; all warps (incl. warp 0) consume each stage
__global__ void k_bulk(const uint8_t* __restrict__ w, long T, int CH, int S, uint32_t* out) {
  extern __shared__ __align__(128) uint8_t sm[];
  uint64_t* full = reinterpret_cast<uint64_t*>(sm);
  uint64_t* empty = full + S;
  uint8_t* ring = sm + 1024;
  const int nw = blockDim.x >> 5;
  long c0, c1;
  cta_range(T, blockIdx.x, gridDim.x, c0, c1);
  const long b0 = c0 * UNIT, bytes = (c1 - c0) * UNIT;
  const long nst = (bytes + CH - 1) / CH;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, nw);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  long issued = 0;
  auto issue = [&]() {
    const int s = issued % S;
    if (issued >= S) mbar_wait(empty + s, ((issued / S) - 1) & 1);
    const uint32_t nb = (uint32_t)min((long)CH, bytes - issued * CH);
    mbar_expect_tx(full + s, nb);
    bulk_g2s(ring + (long)s * CH, w + b0 + issued * CH, nb, full + s);
    ++issued;
  };
  if (threadIdx.x == 0)
    while (issued < min((long)S, nst)) issue();
  uint32_t acc = 0;
  for (long i = 0; i < nst; ++i) {
    const int s = i % S;
    mbar_wait(full + s, (i / S) & 1);
    const uint32_t nb = (uint32_t)min((long)CH, bytes - i * CH);
    const uint4* src = reinterpret_cast<const uint4*>(ring + (long)s * CH);
    for (int j = threadIdx.x; j < (int)(nb / 16); j += blockDim.x) acc ^= fold(src[j]);
    __syncwarp();
    if ((threadIdx.x & 31) == 0) mbar_arrive(empty + s);
    if (threadIdx.x == 0 && issued < nst) issue();
  }
  if (acc == 0x12345678u) out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

__global__ void k_empty(uint32_t* out) {
  if (threadIdx.x == 9999) out[0] = 1;
}

struct Shape {
  const char* name;
  long units;
};

int main(int argc, char** argv) {
  const bool only_slice = argc > 1 && std::string(argv[1]) == "slice";
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int sms = prop.multiProcessorCount;
  std::printf("# stream_bw on %s (%d SMs)\n", prop.name, sms);
  const Shape shapes[] = {{"o", 64L * 64}, {"qkv", 96L * 64}, {"down", 64L * 224}, {"gate_up", 448L * 64}};
  const long maxb = 448L * 64 * UNIT;
  const long pool = 512L << 20;  // rotate over 512 MB
  uint8_t* buf;
  CK(cudaMalloc(&buf, pool + maxb));
  {  // random-ish content (never time zeros)
    std::vector<uint32_t> h(1 << 20);
    uint32_t s = 12345;
    for (auto& v : h) v = (s = s * 1664525u + 1013904223u);
    for (long off = 0; off < pool + maxb; off += h.size() * 4)
      CK(cudaMemcpy(buf + off, h.data(), std::min((long)h.size() * 4, pool + maxb - off), cudaMemcpyHostToDevice));
  }
  uint32_t* out;
  CK(cudaMalloc(&out, 64 << 20));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));

  auto time_graph = [&](auto launch, long bytes) -> double {
    const int C = (int)std::max(1L, pool / bytes);
    const int L = std::max(C, 24);
    for (int i = 0; i < 3; ++i) launch(buf, st);
    CK(cudaStreamSynchronize(st));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < L; ++i) launch(buf + (long)(i % C) * bytes, st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> ts;
    CK(cudaGraphLaunch(ge, st));
    for (int r = 0; r < 15; ++r) {
      CK(cudaEventRecord(a, st));
      CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float ms;
      CK(cudaEventElapsedTime(&ms, a, b));
      ts.push_back(ms * 1000.f / L);
    }
    CK(cudaGetLastError());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
  };

  const double e = time_graph([&](uint8_t*, cudaStream_t s) { k_empty<<<sms, 128, 0, s>>>(out); }, 1 << 20);
  std::printf("empty kernel (132 CTAs x 128): %.2f us per launch in a graph\n", e);

  std::printf("| shape | MB | variant | grid x threads | U/CH,S | us | GB/s |\n|---|---|---|---|---|---|---|\n");
  for (const Shape& sh : shapes) {
    const long bytes = sh.units * UNIT;
    auto row = [&](const char* v, int grid, int thr, const char* cfg, double us) {
      std::printf("| %s | %.1f | %s | %d x %d | %s | %.2f | %.0f |\n", sh.name, bytes / 1e6, v, grid, thr, cfg, us,
                  bytes / us / 1e3);
    };
    for (int cps : {1, 2, 4})
      for (int thr : {128, 256, 512}) {
        if (cps * thr > 2048) continue;
        const int grid = sms * cps;
        char cfg[32];
        // one register-direct strategy (all share the signature (w, units, out)): time it, print its row
        using StreamKernel = void (*)(const uint4*, long, uint32_t*);
        auto run = [&](const char* label, StreamKernel k, int u) {
          const double us = time_graph(
              [&](uint8_t* p, cudaStream_t s) { k<<<grid, thr, 0, s>>>(reinterpret_cast<const uint4*>(p), sh.units, out); },
              bytes);
          std::snprintf(cfg, sizeof cfg, "U=%d", u);
          row(label, grid, thr, cfg, us);
        };
        if (only_slice) {
          run("quarter", k_quarter<8>, 8);
          run("slice", k_slice<4>, 4);
          run("slice", k_slice<8>, 8);
        } else {
          run("quarter", k_quarter<4>, 4);
          run("quarter", k_quarter<8>, 8);
          run("quarter", k_quarter<16>, 16);
          run("whole", k_whole<8>, 8);
          run("whole", k_whole<16>, 16);
        }
      }
    if (only_slice) continue;
    for (int cps : {1, 2})
      for (int ch : {4096, 8192, 16384})
        for (int S : {4, 8}) {
          const int sm = 1024 + ch * S;
          if (sm * cps > 220 * 1024) continue;
          const int grid = sms * cps;
          CK(cudaFuncSetAttribute(k_bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
          double us = time_graph(
              [&](uint8_t* p, cudaStream_t s) { k_bulk<<<grid, 256, sm, s>>>(p, sh.units, ch, S, out); }, bytes);
          char cfg[32];
          std::snprintf(cfg, sizeof cfg, "CH=%d,S=%d", ch, S);
          row("bulk", grid, 256, cfg, us);
        }
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
