// Shared declarations of the volseg native kernels: parameter blocks, the thread pool and the
// kernel table that is compiled twice (AVX2+FMA and portable) and chosen at run time.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace volseg {

// ---------------------------------------------------------------------------------------------
// Thread pool: a persistent pool of hardware_concurrency threads (env VOLSEG_THREADS overrides).
// parallel_for runs fn(ctx, i, tid) for i in [0, n) on the calling thread (tid 0) and the workers
// (tid 1..threads-1) with dynamic scheduling in chunks of `grain`. It is synchronous. Only one
// parallel_for runs at a time; a concurrent caller (another JS thread) runs its loop serially.
// ---------------------------------------------------------------------------------------------
typedef void (*TaskFn)(void* ctx, int64_t i, int tid);
int pool_threads();
// Bytes of packed weights the conv kernels try to keep in L2 per pass (about half of L2).
size_t weight_cache_budget();
void pool_run(int64_t n, int64_t grain, TaskFn fn, void* ctx);

template <class F>
inline void parallel_for(int64_t n, const F& f, int64_t grain = 1) {
  if (n <= 0) return;
  pool_run(n, grain, [](void* c, int64_t i, int tid) { (*static_cast<const F*>(c))(i, tid); },
           const_cast<void*>(static_cast<const void*>(&f)));
}

// ---------------------------------------------------------------------------------------------
// Parameter blocks (everything already resolved by tfjs's computeConv3DInfo / computePool3DInfo).
// ---------------------------------------------------------------------------------------------
struct ConvParams {
  // x: [N, D, H, W, Ci]; filter: [KD, KH, KW, Ci, Co]; y: [N, Do, Ho, Wo, Co].
  int N, D, H, W, Ci;
  int Do, Ho, Wo, Co;
  int KD, KH, KW;
  int sd, sh, sw;
  int pf, pt, pl;  // front / top / left padding
};
enum { CONV_NPARAMS = 18 };

struct PoolParams {
  // x: [N, D, H, W, C]; y: [N, Do, Ho, Wo, C].
  int N, D, H, W, C;
  int Do, Ho, Wo;
  int fd, fh, fw;
  int sd, sh, sw;
  int pf, pt, pl;
};
enum { POOL_NPARAMS = 17 };

struct KernelTable {
  const char* name;
  void (*conv3d)(const ConvParams& p, const float* x, const float* w, float* y);
  void (*conv3d_bwd_input)(const ConvParams& p, const float* dy, const float* w, float* dx);
  void (*conv3d_bwd_filter)(const ConvParams& p, const float* x, const float* dy, float* dw);
  void (*pool3d)(const PoolParams& p, int isAvg, const float* x, float* y);
  void (*maxpool3d_grad)(const PoolParams& p, const float* x, const float* dy, float* dx);
  void (*avgpool3d_grad)(const PoolParams& p, const float* dy, float* dx);
  void (*inorm_fwd)(int N, int64_t S, int C, const float* x, const float* gamma, const float* beta,
                    float eps, float alpha, float* y, float* xhat, float* invStd);
  void (*inorm_bwd)(int N, int64_t S, int C, const float* dy, const float* xhat,
                    const float* invStd, const float* gamma, const float* beta, float alpha,
                    bool fromY, float* dx, float* dgamma, float* dbeta);
  void (*upsample)(int N, int D, int H, int W, int C, int f, const float* x, float* y);
  void (*upsample_grad)(int N, int D, int H, int W, int C, int f, const float* dy, float* dx);
  // Element-wise, same shape: op 0 add, 1 sub, 2 mul.
  void (*binary)(int op, int64_t n, const float* a, const float* b, float* out);
  void (*leaky_relu)(int64_t n, const float* x, double alpha, float* out);
  // Runs `iters` steps of 12 independent 8-lane FMA chains on every pool thread; returns flops.
  double (*fma_probe)(int64_t iters);
  // Broadcasting binary op (0 add, 1 sub, 2 mul, 3 div) over 6 dims with element strides.
  void (*binary_bcast)(int op, const int64_t* shape, const int64_t* as, const int64_t* bs,
                       const float* a, const float* b, float* out);
  // Unary op: 0 relu, 1 square, 2 sigmoid, 3 exp, 4 log.
  void (*unary)(int op, int64_t n, const float* x, float* out);
  // out[o, i] = sum_r x[o, r, i] (terms x / divisor when divisor != 0).
  void (*reduce_sum)(int64_t outer, int64_t red, int64_t inner, float divisor, const float* x,
                     float* out);
  void (*softmax)(int64_t rows, int64_t cols, const float* x, float* out);
  // The FMA probe with 512-bit vectors (AVX-512 builds; nullptr elsewhere).
  double (*fma_probe512)(int64_t iters);
  // Runs `iters` calls of the convolution micro-kernel a 16 -> 16 channel 3x3x3 layer's row interior
  // uses, on one tile's cached inputs, on every pool thread; returns flops, and in tile (when not
  // null) its positions, vectors and lanes (kernels_impl.inc).
  double (*tile_probe)(int64_t iters, int* tile);
};

namespace portable { extern const KernelTable table; }
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
namespace avx512z { extern const KernelTable table; }

// Small integer helpers (exact for negative numerators).
inline int floordiv(int a, int b) { int q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
inline int ceildiv(int a, int b) { return -floordiv(-a, b); }
inline int imod(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }
inline int round_up(int a, int m) { return (a + m - 1) / m * m; }

}  // namespace volseg
