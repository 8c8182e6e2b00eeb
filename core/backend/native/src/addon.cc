// N-API entry points of volseg_native. Every function takes Float32Arrays allocated by the
// caller (outputs included, so tfjs owns the memory) plus an Int32Array of resolved geometry,
// validates every length against that geometry, and runs synchronously on the calling thread
// and the pool. The SIMD code path (AVX2+FMA or portable) is chosen once at load time.
#define NAPI_VERSION 8
#include <node_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace volseg {
// buffers.cc: recycled output buffers.
napi_value AllocBuffer(napi_env env, napi_callback_info info);
napi_value BufferCacheInfo(napi_env env, napi_callback_info info);
napi_value ReleaseBuffer(napi_env env, napi_callback_info info);

namespace {

const KernelTable* g_table = &portable::table;

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// AVX-512 Foundation + VL: the AVX2 code with 32 vector registers (kernels_avx512.cc).
// __builtin_cpu_supports also checks that the OS saves the AVX-512 state (XCR0).
bool cpu_has_avx512vl() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

// GFLOP/s of a throughput probe (`probe(iters)` does `iters` steps and returns the flops done) run for
// about `seconds`: calibrated on `calib` steps, then timed.
template <class Probe>
double timed_probe_gflops(Probe probe, int64_t calib, double seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  probe(calib);
  const double s0 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t iters = std::max<int64_t>(calib, static_cast<int64_t>(calib * seconds / std::max(s0, 1e-9)));
  const auto t1 = std::chrono::steady_clock::now();
  const double flops = probe(iters);
  const double s1 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  return flops / std::max(s1, 1e-9) / 1e9;
}

#if defined(__x86_64__) || defined(__i386__)
// Seconds for `iters` steps of 12 independent FMA chains on the calling thread only (the pool is
// not started: its size may not be set yet when the addon loads), with 256- or 512-bit vectors.
__attribute__((target("avx2,fma,avx512f"))) double fma_chains_seconds(bool wide, int64_t iters) {
  volatile float init = 1.0f, mul = 0.999999f, add = 1e-7f;
  const auto t0 = std::chrono::steady_clock::now();
  float sum = 0.f;
  if (wide) {
    __m512 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(init + i);
    const __m512 m = _mm512_set1_ps(mul), c = _mm512_set1_ps(add);
    for (int64_t k = 0; k < iters; ++k)
      for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
    for (int i = 0; i < 12; ++i) sum += _mm512_reduce_add_ps(a[i]);
  } else {
    __m256 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(init + i);
    const __m256 m = _mm256_set1_ps(mul), c = _mm256_set1_ps(add);
    for (int64_t k = 0; k < iters; ++k)
      for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
    alignas(32) float t[8];
    for (int i = 0; i < 12; ++i) {
      _mm256_store_ps(t, a[i]);
      for (float v : t) sum += v;
    }
  }
  volatile float keep = sum;
  (void)keep;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
#endif

// The ratio of this core's 512-bit to its 256-bit FMA rate (0 without AVX-512): about 2 with two
// full-width 512-bit units (AMD Zen 5, Xeons with two FMA ports), about 1 where a zmm FMA is split
// in two (Zen 4). Only at the former do the zmm convolutions (kernels_avx512z.cc) pay. Measured
// once on the loading thread, the best of five short runs of each width (~4 ms in all).
double zmm_fma_ratio() {
#if defined(__x86_64__) || defined(__i386__)
  static const double ratio = [] {
    if (!cpu_has_avx512vl()) return 0.0;
    double t256 = 1e30, t512 = 1e30;
    for (int round = 0; round < 5; ++round) {
      t256 = std::min(t256, fma_chains_seconds(false, 1 << 16));
      t512 = std::min(t512, fma_chains_seconds(true, 1 << 16));
    }
    // Same instruction count, twice the flops per 512-bit FMA.
    return 2.0 * t256 / std::max(t512, 1e-12);
  }();
  return ratio;
#else
  return 0.0;
#endif
}
// Whether the zmm convolutions are the default: the threshold sits between the two ratios above.
bool zmm_fma_faster() { return zmm_fma_ratio() >= 1.5; }

// The compiled code path of that name (its table's kIsaName: 'portable', 'avx2-fma', 'avx512vl',
// 'avx512-zmm'), or nullptr. (Off x86 every table is the portable code, named 'portable'.)
const KernelTable* table_named(const char* name) {
  for (const KernelTable* t : {&portable::table, &avx2::table, &avx512::table, &avx512z::table})
    if (std::strcmp(t->name, name) == 0) return t;
  return nullptr;
}

// What code path `t` needs that this CPU lacks, or nullptr where it runs here.
const char* cpu_lacks_for(const KernelTable* t) {
  if (t == &avx2::table) return cpu_has_avx2_fma() ? nullptr : "AVX2/FMA";
  if (t == &avx512::table || t == &avx512z::table) return cpu_has_avx512vl() ? nullptr : "AVX-512F/VL";
  return nullptr;
}

// The best code path this CPU runs: zmm convolutions only where 512-bit FMAs run faster than
// 256-bit ones (zmm_fma_faster).
const KernelTable* best_table() {
  if (!cpu_has_avx2_fma()) return &portable::table;
  if (!cpu_has_avx512vl()) return &avx2::table;
  return zmm_fma_faster() ? &avx512z::table : &avx512::table;
}

// Output arrays are freshly allocated by JS (calloc -> mmap for large sizes), so the kernel's
// first writes page-fault; on Linux with THP in 'madvise' mode, asking for huge pages makes those
// faults ~3x cheaper for large outputs. Purely advisory: errors are ignored.
bool huge_pages_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("VOLSEG_HUGEPAGES");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

void advise_output(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const size_t huge = size_t(2) << 20;
  if (bytes < 4 * huge || !huge_pages_enabled()) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(huge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

napi_value throw_error(napi_env env, const char* msg) {
  napi_throw_error(env, "VOLSEG_NATIVE", msg);
  return nullptr;
}

struct Args {
  size_t argc = 12;
  napi_value argv[12];
  bool ok(napi_env env, napi_callback_info info) {
    return napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) == napi_ok;
  }
};

bool typed_array(napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok) return false;
  return type == want;
}

bool f32(napi_env env, napi_value v, float** data, size_t* len) {
  void* d = nullptr;
  if (!typed_array(env, v, napi_float32_array, &d, len)) return false;
  *data = static_cast<float*>(d);
  return true;
}

bool i32(napi_env env, napi_value v, const int32_t** data, size_t* len) {
  void* d = nullptr;
  if (!typed_array(env, v, napi_int32_array, &d, len)) return false;
  *data = static_cast<const int32_t*>(d);
  return true;
}

bool number(napi_env env, napi_value v, double* out) {
  return napi_get_value_double(env, v, out) == napi_ok;
}

// Reads `count` ints into `out`; all must be >= `minValue` (per field minimums checked by callers).
bool read_params(napi_env env, napi_value v, int count, int* out) {
  const int32_t* p;
  size_t len;
  if (!i32(env, v, &p, &len) || len != static_cast<size_t>(count)) return false;
  for (int i = 0; i < count; ++i) out[i] = p[i];
  return true;
}

int64_t prod(std::initializer_list<int64_t> v) {
  int64_t r = 1;
  for (int64_t x : v) r *= x;
  return r;
}

bool conv_params(napi_env env, napi_value v, ConvParams* p) {
  int a[CONV_NPARAMS];
  if (!read_params(env, v, CONV_NPARAMS, a)) return false;
  *p = ConvParams{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                  a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17]};
  for (int i = 0; i < 15; ++i)
    if (a[i] < 1) return false;  // sizes and strides
  for (int i = 15; i < 18; ++i)
    if (a[i] < 0) return false;  // pads
  return true;
}

bool pool_params(napi_env env, napi_value v, PoolParams* p) {
  int a[POOL_NPARAMS];
  if (!read_params(env, v, POOL_NPARAMS, a)) return false;
  *p = PoolParams{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                  a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16]};
  for (int i = 0; i < 14; ++i)
    if (a[i] < 1) return false;
  for (int i = 14; i < 17; ++i)
    if (a[i] < 0) return false;
  return true;
}

int64_t conv_x_size(const ConvParams& p) { return prod({p.N, p.D, p.H, p.W, p.Ci}); }
int64_t conv_y_size(const ConvParams& p) { return prod({p.N, p.Do, p.Ho, p.Wo, p.Co}); }
int64_t conv_w_size(const ConvParams& p) { return prod({p.KD, p.KH, p.KW, p.Ci, p.Co}); }

#define CHECK(cond, msg) \
  if (!(cond)) return throw_error(env, msg)

// conv3d(x, w, y, params)
napi_value Conv3D(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "conv3d: expected (x, w, y, params)");
  ConvParams p;
  float *x, *w, *y;
  size_t nx, nw, ny;
  CHECK(conv_params(env, a.argv[3], &p), "conv3d: bad params");
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &w, &nw) && f32(env, a.argv[2], &y, &ny),
        "conv3d: x, w, y must be Float32Arrays");
  CHECK(static_cast<int64_t>(nx) == conv_x_size(p) && static_cast<int64_t>(nw) == conv_w_size(p) &&
            static_cast<int64_t>(ny) == conv_y_size(p),
        "conv3d: array lengths do not match params");
  advise_output(y, ny * sizeof(float));
  try {
    g_table->conv3d(p, x, w, y);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// conv3dBackpropInput(dy, w, dx, params)
napi_value Conv3DBackpropInput(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "conv3dBackpropInput: expected (dy, w, dx, params)");
  ConvParams p;
  float *dy, *w, *dx;
  size_t ndy, nw, ndx;
  CHECK(conv_params(env, a.argv[3], &p), "conv3dBackpropInput: bad params");
  CHECK(f32(env, a.argv[0], &dy, &ndy) && f32(env, a.argv[1], &w, &nw) && f32(env, a.argv[2], &dx, &ndx),
        "conv3dBackpropInput: dy, w, dx must be Float32Arrays");
  CHECK(static_cast<int64_t>(ndy) == conv_y_size(p) && static_cast<int64_t>(nw) == conv_w_size(p) &&
            static_cast<int64_t>(ndx) == conv_x_size(p),
        "conv3dBackpropInput: array lengths do not match params");
  advise_output(dx, ndx * sizeof(float));
  try {
    g_table->conv3d_bwd_input(p, dy, w, dx);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// conv3dBackpropFilter(x, dy, dw, params)
napi_value Conv3DBackpropFilter(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "conv3dBackpropFilter: expected (x, dy, dw, params)");
  ConvParams p;
  float *x, *dy, *dw;
  size_t nx, ndy, ndw;
  CHECK(conv_params(env, a.argv[3], &p), "conv3dBackpropFilter: bad params");
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &dy, &ndy) && f32(env, a.argv[2], &dw, &ndw),
        "conv3dBackpropFilter: x, dy, dw must be Float32Arrays");
  CHECK(static_cast<int64_t>(nx) == conv_x_size(p) && static_cast<int64_t>(ndy) == conv_y_size(p) &&
            static_cast<int64_t>(ndw) == conv_w_size(p),
        "conv3dBackpropFilter: array lengths do not match params");
  try {
    g_table->conv3d_bwd_filter(p, x, dy, dw);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

int64_t pool_x_size(const PoolParams& p) { return prod({p.N, p.D, p.H, p.W, p.C}); }
int64_t pool_y_size(const PoolParams& p) { return prod({p.N, p.Do, p.Ho, p.Wo, p.C}); }

// pool3d(x, y, params, isAvg)
napi_value Pool3D(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "pool3d: expected (x, y, params, isAvg)");
  PoolParams p;
  float *x, *y;
  size_t nx, ny;
  double isAvg;
  CHECK(pool_params(env, a.argv[2], &p), "pool3d: bad params");
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &y, &ny), "pool3d: x, y must be Float32Arrays");
  CHECK(number(env, a.argv[3], &isAvg), "pool3d: isAvg must be a number");
  CHECK(static_cast<int64_t>(nx) == pool_x_size(p) && static_cast<int64_t>(ny) == pool_y_size(p),
        "pool3d: array lengths do not match params");
  advise_output(y, ny * sizeof(float));
  try {
    g_table->pool3d(p, isAvg != 0 ? 1 : 0, x, y);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// maxPool3dGrad(x, dy, dx, params)
napi_value MaxPool3DGrad(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "maxPool3dGrad: expected (x, dy, dx, params)");
  PoolParams p;
  float *x, *dy, *dx;
  size_t nx, ndy, ndx;
  CHECK(pool_params(env, a.argv[3], &p), "maxPool3dGrad: bad params");
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &dy, &ndy) && f32(env, a.argv[2], &dx, &ndx),
        "maxPool3dGrad: x, dy, dx must be Float32Arrays");
  CHECK(static_cast<int64_t>(nx) == pool_x_size(p) && static_cast<int64_t>(ndy) == pool_y_size(p) &&
            static_cast<int64_t>(ndx) == pool_x_size(p),
        "maxPool3dGrad: array lengths do not match params");
  advise_output(dx, ndx * sizeof(float));
  try {
    g_table->maxpool3d_grad(p, x, dy, dx);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// avgPool3dGrad(dy, dx, params)
napi_value AvgPool3DGrad(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "avgPool3dGrad: expected (dy, dx, params)");
  PoolParams p;
  float *dy, *dx;
  size_t ndy, ndx;
  CHECK(pool_params(env, a.argv[2], &p), "avgPool3dGrad: bad params");
  CHECK(f32(env, a.argv[0], &dy, &ndy) && f32(env, a.argv[1], &dx, &ndx),
        "avgPool3dGrad: dy, dx must be Float32Arrays");
  CHECK(static_cast<int64_t>(ndy) == pool_y_size(p) && static_cast<int64_t>(ndx) == pool_x_size(p),
        "avgPool3dGrad: array lengths do not match params");
  advise_output(dx, ndx * sizeof(float));
  try {
    g_table->avgpool3d_grad(p, dy, dx);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// instanceNormForward(x, gamma, beta, y, xhat, invStd, params=[N, S, C], epsilon, alpha)
// xhat may be empty (not wanted); y may be x itself (in place).
napi_value InstanceNormForward(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 9, "instanceNormForward: expected 9 arguments");
  float *x, *g, *b, *y, *h, *is;
  size_t nx, ng, nb, ny, nh, nis;
  const int32_t* pr;
  size_t npr;
  double eps, alpha;
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &g, &ng) && f32(env, a.argv[2], &b, &nb) &&
            f32(env, a.argv[3], &y, &ny) && f32(env, a.argv[4], &h, &nh) && f32(env, a.argv[5], &is, &nis),
        "instanceNormForward: arrays must be Float32Arrays");
  CHECK(i32(env, a.argv[6], &pr, &npr) && npr == 3 && pr[0] >= 1 && pr[1] >= 1 && pr[2] >= 1,
        "instanceNormForward: bad params");
  CHECK(number(env, a.argv[7], &eps) && number(env, a.argv[8], &alpha), "instanceNormForward: bad epsilon/alpha");
  const int64_t N = pr[0], S = pr[1], C = pr[2];
  CHECK(static_cast<int64_t>(nx) == N * S * C && static_cast<int64_t>(ny) == N * S * C &&
            (nh == 0 || static_cast<int64_t>(nh) == N * S * C) && static_cast<int64_t>(ng) == C &&
            static_cast<int64_t>(nb) == C && static_cast<int64_t>(nis) == N * C,
        "instanceNormForward: array lengths do not match params");
  advise_output(y, ny * sizeof(float));
  if (nh) advise_output(h, nh * sizeof(float));
  try {
    g_table->inorm_fwd(static_cast<int>(N), S, static_cast<int>(C), x, g, b, static_cast<float>(eps),
                       static_cast<float>(alpha), y, nh ? h : nullptr, is);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// instanceNormBackward(dy, xhat, invStd, gamma, beta, dx, dgamma, dbeta, params=[N, S, C, fromY], alpha)
// fromY = 1: `xhat` holds the forward's output y (lean saves, in-place normalisation) and x̂ is rebuilt
// from it element by element (alpha > 0).
napi_value InstanceNormBackward(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 10, "instanceNormBackward: expected 10 arguments");
  float *dy, *h, *is, *g, *b, *dx, *dg, *db;
  size_t ndy, nh, nis, ng, nb, ndx, ndg, ndb;
  const int32_t* pr;
  size_t npr;
  double alpha;
  CHECK(f32(env, a.argv[0], &dy, &ndy) && f32(env, a.argv[1], &h, &nh) && f32(env, a.argv[2], &is, &nis) &&
            f32(env, a.argv[3], &g, &ng) && f32(env, a.argv[4], &b, &nb) && f32(env, a.argv[5], &dx, &ndx) &&
            f32(env, a.argv[6], &dg, &ndg) && f32(env, a.argv[7], &db, &ndb),
        "instanceNormBackward: arrays must be Float32Arrays");
  CHECK(i32(env, a.argv[8], &pr, &npr) && npr == 4 && pr[0] >= 1 && pr[1] >= 1 && pr[2] >= 1 &&
            (pr[3] == 0 || pr[3] == 1),
        "instanceNormBackward: bad params");
  CHECK(number(env, a.argv[9], &alpha), "instanceNormBackward: bad alpha");
  CHECK(pr[3] == 0 || alpha > 0, "instanceNormBackward: rebuilding x̂ from y needs alpha > 0");
  const int64_t N = pr[0], S = pr[1], C = pr[2];
  CHECK(static_cast<int64_t>(ndy) == N * S * C && static_cast<int64_t>(nh) == N * S * C &&
            static_cast<int64_t>(ndx) == N * S * C && static_cast<int64_t>(nis) == N * C &&
            static_cast<int64_t>(ng) == C && static_cast<int64_t>(nb) == C && static_cast<int64_t>(ndg) == C &&
            static_cast<int64_t>(ndb) == C,
        "instanceNormBackward: array lengths do not match params");
  advise_output(dx, ndx * sizeof(float));
  try {
    g_table->inorm_bwd(static_cast<int>(N), S, static_cast<int>(C), dy, h, is, g, b, static_cast<float>(alpha),
                       pr[3] == 1, dx, dg, db);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

bool upsample_params(napi_env env, napi_value v, int* q) {
  if (!read_params(env, v, 6, q)) return false;
  for (int i = 0; i < 6; ++i)
    if (q[i] < 1) return false;
  return true;
}

// upsampleNearest3d(x, y, params=[N, D, H, W, C, f]) and upsampleNearest3dGrad(dy, dx, params)
napi_value UpsampleImpl(napi_env env, napi_callback_info info, bool grad) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "upsample: expected (in, out, params)");
  int q[6];
  float *in, *out;
  size_t nin, nout;
  CHECK(upsample_params(env, a.argv[2], q), "upsample: bad params");
  CHECK(f32(env, a.argv[0], &in, &nin) && f32(env, a.argv[1], &out, &nout), "upsample: arrays must be Float32Arrays");
  const int64_t small = prod({q[0], q[1], q[2], q[3], q[4]});
  const int64_t big = small * q[5] * q[5] * q[5];
  CHECK(static_cast<int64_t>(grad ? nout : nin) == small && static_cast<int64_t>(grad ? nin : nout) == big,
        "upsample: array lengths do not match params");
  advise_output(out, nout * sizeof(float));
  try {
    if (grad)
      g_table->upsample_grad(q[0], q[1], q[2], q[3], q[4], q[5], in, out);
    else
      g_table->upsample(q[0], q[1], q[2], q[3], q[4], q[5], in, out);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}
napi_value Upsample(napi_env env, napi_callback_info info) { return UpsampleImpl(env, info, false); }
napi_value UpsampleGrad(napi_env env, napi_callback_info info) { return UpsampleImpl(env, info, true); }

// binary(op, a, b, out): op 0 add, 1 sub, 2 mul; all the same length.
napi_value Binary(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "binary: expected (op, a, b, out)");
  double op;
  float *x, *y, *o;
  size_t nx, ny, no;
  CHECK(number(env, a.argv[0], &op) && op >= 0 && op <= 2, "binary: bad op");
  CHECK(f32(env, a.argv[1], &x, &nx) && f32(env, a.argv[2], &y, &ny) && f32(env, a.argv[3], &o, &no),
        "binary: arrays must be Float32Arrays");
  CHECK(nx == ny && nx == no, "binary: lengths differ");
  advise_output(o, no * sizeof(float));
  try {
    g_table->binary(static_cast<int>(op), static_cast<int64_t>(nx), x, y, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// leakyRelu(x, alpha, out)
napi_value LeakyRelu(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "leakyRelu: expected (x, alpha, out)");
  double alpha;
  float *x, *o;
  size_t nx, no;
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[2], &o, &no) && nx == no,
        "leakyRelu: x, out must be Float32Arrays of one length");
  CHECK(number(env, a.argv[1], &alpha), "leakyRelu: bad alpha");
  advise_output(o, no * sizeof(float));
  try {
    g_table->leaky_relu(static_cast<int64_t>(nx), x, alpha, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// The seconds a probe call asks for: its first argument (default 0.1), within [0.005, 5].
double probe_seconds(napi_env env, const Args& a) {
  double seconds = 0.1;
  if (a.argc >= 1) number(env, a.argv[0], &seconds);
  return std::min(std::max(seconds, 0.005), 5.0);
}

// fmaPeak(seconds) -> measured FMA GFLOP/s of the active code path on all pool threads (the larger
// of its 256-bit and, on AVX-512 builds, 512-bit probes, each run for about `seconds`).
napi_value FmaPeak(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info), "fmaPeak: bad arguments");
  const double seconds = probe_seconds(env, a);
  // Each probe of the code path: the 256-bit one, and on AVX-512 builds also the 512-bit one; the
  // larger is the peak.
  double best = 0.0;
  for (double (*probe)(int64_t) : {g_table->fma_probe, g_table->fma_probe512})
    if (probe != nullptr) best = std::max(best, timed_probe_gflops(probe, 1 << 16, seconds));
  napi_value v;
  napi_create_double(env, best, &v);
  return v;
}

// tilePeak(seconds) -> { gflops, positions, vectors, lanes }: GFLOP/s of the active code path's
// convolution micro-kernel on all pool threads, for the tile a 3x3x3 16 -> 16 layer's row interior
// uses (positions x vectors of lanes output channels), on cached inputs (tile_probe), run for about
// `seconds`: the ceiling below the FMA peak that the convolutions' own loads and broadcasts set.
napi_value TilePeak(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info), "tilePeak: bad arguments");
  const double seconds = probe_seconds(env, a);
  int tile[3] = {0, 0, 0};
  g_table->tile_probe(1, tile);
  const double gflops = timed_probe_gflops([](int64_t n) { return g_table->tile_probe(n, nullptr); }, 1 << 8, seconds);
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_double(env, gflops, &v);
  napi_set_named_property(env, obj, "gflops", v);
  const char* names[3] = {"positions", "vectors", "lanes"};
  for (int i = 0; i < 3; ++i) {
    napi_create_int32(env, tile[i], &v);
    napi_set_named_property(env, obj, names[i], v);
  }
  return obj;
}

bool f64(napi_env env, napi_value v, const double** data, size_t* len) {
  void* d = nullptr;
  if (!typed_array(env, v, napi_float64_array, &d, len)) return false;
  *data = static_cast<const double*>(d);
  return true;
}

// adam(p, g, m, v, [stepSize, c2, beta1, beta2, epsilon]): one Adam update written into p, m and v
// (the optimizer's in-place path, core/training/optimizer.ts). The arithmetic is the JavaScript loop's,
// in double: m and v are rounded to float32 when stored, and p's update reads the unrounded double
// values. This file is compiled for the baseline ISA (no FMA), so nothing is contracted and the result
// is bit-identical to the JavaScript loop's on any thread count (the update is element-wise).
napi_value Adam(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 5, "adam: expected (p, g, m, v, hyper)");
  float *p, *g, *m, *v;
  size_t np, ng, nm, nv;
  CHECK(f32(env, a.argv[0], &p, &np) && f32(env, a.argv[1], &g, &ng) && f32(env, a.argv[2], &m, &nm) &&
            f32(env, a.argv[3], &v, &nv),
        "adam: p, g, m, v must be Float32Arrays");
  CHECK(np == ng && np == nm && np == nv, "adam: lengths differ");
  const double* hp;
  size_t nh;
  CHECK(f64(env, a.argv[4], &hp, &nh) && nh == 5, "adam: hyper must be a Float64Array of 5");
  const double stepSize = hp[0], c2 = hp[1], beta1 = hp[2], beta2 = hp[3], eps = hp[4];
  const double om1 = 1 - beta1, om2 = 1 - beta2;
  const int64_t n = static_cast<int64_t>(np);
  const int64_t chunk = 1 << 16;
  parallel_for((n + chunk - 1) / chunk, [&](int64_t i, int) {
    const int64_t s = i * chunk, e = std::min(n, s + chunk);
    for (int64_t k = s; k < e; ++k) {
      const double gi = g[k];
      const double mi = static_cast<double>(m[k]) * beta1 + gi * om1;
      const double vi = static_cast<double>(v[k]) * beta2 + gi * gi * om2;
      m[k] = static_cast<float>(mi);
      v[k] = static_cast<float>(vi);
      p[k] = static_cast<float>(static_cast<double>(p[k]) - (mi * stepSize) / (std::sqrt(vi / c2) + eps));
    }
  });
  return nullptr;
}


// The fused segmentation loss (core/training/loss.ts), both passes, on the pool. Positions are cut into
// fixed blocks whose float64 partial sums are added in block order, so the sums do not depend on the
// thread count. Compiled for the baseline ISA like the rest of this file (no FMA contraction).
const int64_t kLossBlock = 4096;  // positions per block

// lossSums(logits, target, probs, K, ce, softmax) -> Float64Array [I(K), P(K), T(K), ceSum]: the
// probabilities are written into probs.
napi_value LossSums(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 6, "lossSums: expected (logits, target, probs, K, ce, softmax)");
  float *l, *t, *pr;
  size_t nl, nt, np;
  double kd, ced, smd;
  CHECK(f32(env, a.argv[0], &l, &nl) && f32(env, a.argv[1], &t, &nt) && f32(env, a.argv[2], &pr, &np),
        "lossSums: logits, target, probs must be Float32Arrays");
  CHECK(number(env, a.argv[3], &kd) && kd >= 1 && kd == static_cast<double>(static_cast<int>(kd)) &&
            number(env, a.argv[4], &ced) && number(env, a.argv[5], &smd),
        "lossSums: bad K, ce or softmax");
  const int K = static_cast<int>(kd);
  CHECK(nl == nt && nl == np && nl % static_cast<size_t>(K) == 0, "lossSums: lengths differ or are not a multiple of K");
  const bool ce = ced != 0, softmax = smd != 0;
  const int64_t V = static_cast<int64_t>(nl) / K;
  const int64_t nb = (V + kLossBlock - 1) / kLossBlock;
  const int64_t stride = 3 * K + 1;
  std::vector<double> part(static_cast<size_t>(std::max<int64_t>(nb, 1) * stride), 0.0);
  try {
    parallel_for(nb, [&](int64_t b, int) {
      double* acc = part.data() + b * stride;  // I[K], P[K], T[K], ce
      const int64_t v0 = b * kLossBlock, v1 = std::min(V, v0 + kLossBlock);
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t o = v * K;
        if (!softmax) {
          for (int c = 0; c < K; ++c) {
            const double x = l[o + c];
            const double e = std::exp(-std::fabs(x));
            const double p = x >= 0 ? 1 / (1 + e) : e / (1 + e);
            pr[o + c] = static_cast<float>(p);
            const double y = t[o + c];
            acc[c] += p * y;
            acc[K + c] += p;
            acc[2 * K + c] += y;
            if (ce) acc[3 * K] += std::max(x, 0.0) - x * y + std::log1p(e);
          }
        } else {
          double mx = -INFINITY;
          for (int c = 0; c < K; ++c) mx = std::max(mx, static_cast<double>(l[o + c]));
          double z = 0;
          for (int c = 0; c < K; ++c) z += std::exp(l[o + c] - mx);
          const double logZ = std::log(z) + mx;
          for (int c = 0; c < K; ++c) {
            const double p = std::exp(l[o + c] - logZ);
            const double y = t[o + c];
            pr[o + c] = static_cast<float>(p);
            acc[c] += p * y;
            acc[K + c] += p;
            acc[2 * K + c] += y;
            if (ce) acc[3 * K] -= y * (l[o + c] - logZ);
          }
        }
      }
    });
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  napi_value ab, out;
  void* data = nullptr;
  CHECK(napi_create_arraybuffer(env, static_cast<size_t>(stride) * sizeof(double), &data, &ab) == napi_ok &&
            napi_create_typedarray(env, napi_float64_array, static_cast<size_t>(stride), ab, 0, &out) == napi_ok,
        "lossSums: could not allocate the result");
  double* r = static_cast<double*>(data);
  for (int64_t j = 0; j < stride; ++j) r[j] = 0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < stride; ++j) r[j] += part[b * stride + j];
  return out;
}

// lossGrad(target, grad, K, A, B, ce, softmax, count, weight): the gradient at the logits written over the
// probabilities in grad; A, B (Float64Array of K) are the Dice terms (dL/dp = A·t + B), count the divisor
// of the cross-entropy term (elements for sigmoid, positions for softmax).
napi_value LossGrad(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 9, "lossGrad: expected (target, grad, K, A, B, ce, softmax, count, weight)");
  float *t, *g;
  size_t nt, ng;
  const double *A, *B;
  size_t na, nbb;
  double kd, ced, smd, count, weight;
  CHECK(f32(env, a.argv[0], &t, &nt) && f32(env, a.argv[1], &g, &ng), "lossGrad: target, grad must be Float32Arrays");
  CHECK(number(env, a.argv[2], &kd) && kd >= 1 && kd == static_cast<double>(static_cast<int>(kd)), "lossGrad: bad K");
  const int K = static_cast<int>(kd);
  CHECK(f64(env, a.argv[3], &A, &na) && f64(env, a.argv[4], &B, &nbb) && na == static_cast<size_t>(K) &&
            nbb == static_cast<size_t>(K),
        "lossGrad: A, B must be Float64Arrays of K");
  CHECK(number(env, a.argv[5], &ced) && number(env, a.argv[6], &smd) && number(env, a.argv[7], &count) &&
            number(env, a.argv[8], &weight),
        "lossGrad: bad ce, softmax, count or weight");
  CHECK(nt == ng && ng % static_cast<size_t>(K) == 0, "lossGrad: lengths differ or are not a multiple of K");
  const bool ce = ced != 0, softmax = smd != 0;
  const int64_t V = static_cast<int64_t>(ng) / K;
  const int64_t nb = (V + kLossBlock - 1) / kLossBlock;
  try {
    parallel_for(nb, [&](int64_t b, int) {
      std::vector<double> gk(static_cast<size_t>(K));
      const int64_t v0 = b * kLossBlock, v1 = std::min(V, v0 + kLossBlock);
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t o = v * K;
        if (!softmax) {
          for (int c = 0; c < K; ++c) {
            const double p = g[o + c];
            const double y = t[o + c];
            double d = (A[c] * y + B[c]) * p * (1 - p);
            if (ce) d += (p - y) / count;
            g[o + c] = static_cast<float>(weight * d);
          }
        } else {
          double pg = 0, tSum = 0;
          for (int c = 0; c < K; ++c) {
            gk[c] = A[c] * t[o + c] + B[c];
            pg += g[o + c] * gk[c];
            tSum += t[o + c];
          }
          for (int c = 0; c < K; ++c) {
            const double p = g[o + c];
            double d = p * (gk[c] - pg);
            if (ce) d += (p * tSum - t[o + c]) / count;
            g[o + c] = static_cast<float>(weight * d);
          }
        }
      }
    });
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// Any numeric typed array: data, element count, element size in bytes, and its type.
bool any_typed(napi_env env, napi_value v, uint8_t** data, size_t* len, int* elemBytes,
               napi_typedarray_type* type) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_value ab;
  size_t off;
  void* d = nullptr;
  if (napi_get_typedarray_info(env, v, type, len, &d, &ab, &off) != napi_ok) return false;
  switch (*type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: *elemBytes = 1; break;
    case napi_int16_array: case napi_uint16_array: *elemBytes = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: *elemBytes = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: *elemBytes = 8; break;
    default: return false;
  }
  *data = static_cast<uint8_t*>(d);
  return true;
}

// binaryBroadcast(op, a, b, out, params: Float64Array [shape x6, aStrides x6, bStrides x6])
napi_value BinaryBroadcast(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 5, "binaryBroadcast: expected (op, a, b, out, params)");
  double op;
  float *x, *y, *o;
  size_t nx, ny, no, np;
  const double* pr;
  CHECK(number(env, a.argv[0], &op) && op >= 0 && op <= 3, "binaryBroadcast: bad op");
  CHECK(f32(env, a.argv[1], &x, &nx) && f32(env, a.argv[2], &y, &ny) && f32(env, a.argv[3], &o, &no),
        "binaryBroadcast: arrays must be Float32Arrays");
  CHECK(f64(env, a.argv[4], &pr, &np) && np == 18, "binaryBroadcast: bad params");
  int64_t shape[6], as[6], bs[6];
  int64_t total = 1, amax = 0, bmax = 0;
  for (int d = 0; d < 6; ++d) {
    shape[d] = static_cast<int64_t>(pr[d]);
    as[d] = static_cast<int64_t>(pr[6 + d]);
    bs[d] = static_cast<int64_t>(pr[12 + d]);
    CHECK(shape[d] >= 1 && as[d] >= 0 && bs[d] >= 0, "binaryBroadcast: bad params");
    total *= shape[d];
    amax += (shape[d] - 1) * as[d];
    bmax += (shape[d] - 1) * bs[d];
  }
  CHECK(static_cast<int64_t>(no) == total && amax < static_cast<int64_t>(nx) && bmax < static_cast<int64_t>(ny),
        "binaryBroadcast: array lengths do not match params");
  advise_output(o, no * sizeof(float));
  try {
    g_table->binary_bcast(static_cast<int>(op), shape, as, bs, x, y, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// unary(op, x, out): 0 relu, 1 square, 2 sigmoid, 3 exp, 4 log
napi_value Unary(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "unary: expected (op, x, out)");
  double op;
  float *x, *o;
  size_t nx, no;
  CHECK(number(env, a.argv[0], &op) && op >= 0 && op <= 4, "unary: bad op");
  CHECK(f32(env, a.argv[1], &x, &nx) && f32(env, a.argv[2], &o, &no) && nx == no,
        "unary: x, out must be Float32Arrays of one length");
  advise_output(o, no * sizeof(float));
  try {
    g_table->unary(static_cast<int>(op), static_cast<int64_t>(nx), x, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// reduceSum(x, out, outer, red, inner, divisor)
napi_value ReduceSum(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 6, "reduceSum: expected (x, out, outer, red, inner, divisor)");
  float *x, *o;
  size_t nx, no;
  double outer, red, inner, divisor;
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &o, &no), "reduceSum: arrays must be Float32Arrays");
  CHECK(number(env, a.argv[2], &outer) && number(env, a.argv[3], &red) && number(env, a.argv[4], &inner) &&
            number(env, a.argv[5], &divisor) && outer >= 1 && red >= 1 && inner >= 1,
        "reduceSum: bad sizes");
  const int64_t O = static_cast<int64_t>(outer), R = static_cast<int64_t>(red), I = static_cast<int64_t>(inner);
  CHECK(static_cast<int64_t>(nx) == O * R * I && static_cast<int64_t>(no) == O * I,
        "reduceSum: array lengths do not match sizes");
  try {
    g_table->reduce_sum(O, R, I, static_cast<float>(divisor), x, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// softmax(x, out, rows, cols): over the last axis
napi_value Softmax(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 4, "softmax: expected (x, out, rows, cols)");
  float *x, *o;
  size_t nx, no;
  double rows, cols;
  CHECK(f32(env, a.argv[0], &x, &nx) && f32(env, a.argv[1], &o, &no), "softmax: arrays must be Float32Arrays");
  CHECK(number(env, a.argv[2], &rows) && number(env, a.argv[3], &cols) && rows >= 1 && cols >= 1,
        "softmax: bad sizes");
  const int64_t R = static_cast<int64_t>(rows), Cc = static_cast<int64_t>(cols);
  CHECK(static_cast<int64_t>(nx) == R * Cc && nx == no, "softmax: array lengths do not match sizes");
  advise_output(o, no * sizeof(float));
  try {
    g_table->softmax(R, Cc, x, o);
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// Copies n bytes; short runs of common sizes are inlined fixed-size moves instead of memcpy calls.
inline void copy_run(uint8_t* dst, const uint8_t* src, size_t n) {
  switch (n) {
    case 16: std::memcpy(dst, src, 16); return;
    case 32: std::memcpy(dst, src, 32); return;
    case 64: std::memcpy(dst, src, 64); return;
    case 128: std::memcpy(dst, src, 128); return;
    default:
      if (n % 32 == 0 && n <= 512) {
        for (size_t k = 0; k < n; k += 32) std::memcpy(dst + k, src + k, 32);
      } else {
        std::memcpy(dst, src, n);
      }
  }
}

// Outputs at least this large (about the size of L3) are written with non-temporal (streaming)
// stores where aligned: they would not stay in cache for the next kernel anyway, and streaming
// skips reading each destination line first (on these machines writing 32 MiB takes ~1.7 ms
// instead of ~2.6 ms).
constexpr size_t kStreamBytes = size_t(32) << 20;

// copy_run with streaming stores (dst and src 16-byte aligned, n a multiple of 16; <emmintrin.h>
// comes from common.h).
inline void stream_run(uint8_t* dst, const uint8_t* src, size_t n) {
#if defined(__SSE2__)
  for (size_t k = 0; k < n; k += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + k), _mm_load_si128(reinterpret_cast<const __m128i*>(src + k)));
#else
  std::memcpy(dst, src, n);
#endif
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// slice(src, dst, params: Float64Array [shape x6, begin x6, size x6]); src and dst of one type.
napi_value Slice(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "slice: expected (src, dst, params)");
  uint8_t *src, *dst;
  size_t ns, nd, np;
  int es, ed;
  napi_typedarray_type ts, td;
  const double* pr;
  CHECK(any_typed(env, a.argv[0], &src, &ns, &es, &ts) && any_typed(env, a.argv[1], &dst, &nd, &ed, &td) &&
            ts == td,
        "slice: src and dst must be typed arrays of one type");
  CHECK(f64(env, a.argv[2], &pr, &np) && np == 18, "slice: bad params");
  int64_t shape[6], begin[6], size[6];
  int64_t total = 1, stotal = 1;
  for (int d = 0; d < 6; ++d) {
    shape[d] = static_cast<int64_t>(pr[d]);
    begin[d] = static_cast<int64_t>(pr[6 + d]);
    size[d] = static_cast<int64_t>(pr[12 + d]);
    CHECK(shape[d] >= 1 && size[d] >= 1 && begin[d] >= 0 && begin[d] + size[d] <= shape[d], "slice: bad params");
    total *= size[d];
    stotal *= shape[d];
  }
  CHECK(static_cast<int64_t>(ns) == stotal && static_cast<int64_t>(nd) == total,
        "slice: array lengths do not match params");
  // Merge trailing dims that are taken whole into one contiguous run.
  int inner = 5;
  int64_t run = size[5];
  while (inner > 0 && size[inner] == shape[inner]) {
    --inner;
    run *= size[inner];
  }
  // dims [0, inner) are iterated; dim `inner` contributes run = size[inner] * (whole dims after)
  int64_t sstr[6];
  sstr[5] = 1;
  for (int d = 4; d >= 0; --d) sstr[d] = sstr[d + 1] * shape[d + 1];
  int64_t rows = 1;
  for (int d = 0; d < inner; ++d) rows *= size[d];
  const size_t runBytes = static_cast<size_t>(run) * es;
  const int64_t base = [&] {
    int64_t b = 0;
    for (int d = 0; d < 6; ++d) b += begin[d] * sstr[d];
    return b;
  }();
  advise_output(dst, nd * es);
  // A task copies G consecutive rows: the source offset of its first row is computed once, then
  // advanced like an odometer (a channel slice of a volume is ~10^5 rows of a few dozen bytes, so
  // per-row index divisions and memcpy calls cost more than the copy itself).
  const int64_t G = std::max<int64_t>(1, 16384 / static_cast<int64_t>(std::max<size_t>(runBytes, 1)));
  const bool stream = nd * es >= kStreamBytes && aligned16(dst) && aligned16(src) && runBytes % 16 == 0 &&
                      (static_cast<size_t>(base) * es) % 16 == 0 && (static_cast<size_t>(sstr[inner > 0 ? inner - 1 : 0]) * es) % 16 == 0;
  try {
    parallel_for((rows + G - 1) / G, [&](int64_t task, int) {
      const int64_t r0 = task * G, r1 = std::min(rows, r0 + G);
      int64_t idx[6] = {0, 0, 0, 0, 0, 0};
      int64_t t = r0, off = base;
      for (int d = inner - 1; d >= 0; --d) {
        idx[d] = t % size[d];
        t /= size[d];
        off += idx[d] * sstr[d];
      }
      uint8_t* dp = dst + r0 * static_cast<int64_t>(runBytes);
      for (int64_t r = r0; r < r1; ++r) {
        if (stream)
          stream_run(dp, src + off * es, runBytes);
        else
          copy_run(dp, src + off * es, runBytes);
        dp += runBytes;
        for (int d = inner - 1; d >= 0; --d) {
          off += sstr[d];
          if (++idx[d] < size[d]) break;
          off -= sstr[d] * size[d];
          idx[d] = 0;
        }
      }
      if (stream) stream_fence();
    });
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

template <class T>
void copy_box_rows(const T* src, T* dst, const int64_t* shape, const int64_t* ss, const int64_t* ds,
                   int64_t so, int64_t dso) {
  const int64_t rows = shape[0] * shape[1] * shape[2] * shape[3] * shape[4];
  const int64_t n = shape[5];
  const int64_t s5 = ss[5], d5 = ds[5];
  // Tasks of G consecutive rows whose offsets advance like an odometer (no per-row divisions).
  const int64_t G = std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1));
  parallel_for((rows + G - 1) / G, [&](int64_t task, int) {
    const int64_t r0 = task * G, r1 = std::min(rows, r0 + G);
    int64_t idx[5];
    int64_t t = r0, si = so, di = dso;
    for (int d = 4; d >= 0; --d) {
      idx[d] = t % shape[d];
      t /= shape[d];
      si += idx[d] * ss[d];
      di += idx[d] * ds[d];
    }
    for (int64_t r = r0; r < r1; ++r) {
      const T* sp = src + si;
      T* dp = dst + di;
      if (s5 == 1 && d5 == 1) {
        copy_run(reinterpret_cast<uint8_t*>(dp), reinterpret_cast<const uint8_t*>(sp), static_cast<size_t>(n) * sizeof(T));
      } else {
        for (int64_t k = 0; k < n; ++k) dp[k * d5] = sp[k * s5];
      }
      for (int d = 4; d >= 0; --d) {
        si += ss[d];
        di += ds[d];
        if (++idx[d] < shape[d]) break;
        si -= ss[d] * shape[d];
        di -= ds[d] * shape[d];
        idx[d] = 0;
      }
    }
  });
}

// copyBox(src, dst, params: Float64Array [shape x6, srcStrides x6, dstStrides x6, srcOffset,
// dstOffset]): dst[dstOffset + sum i_d*dstStride_d] = src[srcOffset + sum i_d*srcStride_d] over
// the 6-D box `shape` (strides in elements; transpose and pad are both such copies).
napi_value CopyBox(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "copyBox: expected (src, dst, params)");
  uint8_t *src, *dst;
  size_t ns, nd, np;
  int es, ed;
  napi_typedarray_type ts, td;
  const double* pr;
  CHECK(any_typed(env, a.argv[0], &src, &ns, &es, &ts) && any_typed(env, a.argv[1], &dst, &nd, &ed, &td) &&
            ts == td,
        "copyBox: src and dst must be typed arrays of one type");
  CHECK(f64(env, a.argv[2], &pr, &np) && np == 20, "copyBox: bad params");
  int64_t shape[6], ss[6], ds[6];
  const int64_t so = static_cast<int64_t>(pr[18]), dso = static_cast<int64_t>(pr[19]);
  CHECK(so >= 0 && dso >= 0, "copyBox: bad offsets");
  int64_t smax = so, dmax = dso;
  for (int d = 0; d < 6; ++d) {
    shape[d] = static_cast<int64_t>(pr[d]);
    ss[d] = static_cast<int64_t>(pr[6 + d]);
    ds[d] = static_cast<int64_t>(pr[12 + d]);
    CHECK(shape[d] >= 1 && ss[d] >= 0 && ds[d] >= 0, "copyBox: bad params");
    smax += (shape[d] - 1) * ss[d];
    dmax += (shape[d] - 1) * ds[d];
  }
  CHECK(smax < static_cast<int64_t>(ns) && dmax < static_cast<int64_t>(nd), "copyBox: box outside the arrays");
  try {
    switch (es) {
      case 1: copy_box_rows(src, dst, shape, ss, ds, so, dso); break;
      case 2: copy_box_rows(reinterpret_cast<uint16_t*>(src), reinterpret_cast<uint16_t*>(dst), shape, ss, ds, so, dso); break;
      case 4: copy_box_rows(reinterpret_cast<uint32_t*>(src), reinterpret_cast<uint32_t*>(dst), shape, ss, ds, so, dso); break;
      default: copy_box_rows(reinterpret_cast<uint64_t*>(src), reinterpret_cast<uint64_t*>(dst), shape, ss, ds, so, dso); break;
    }
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

// concat(inputs: TypedArray[], dst, outer): input i is [outer, inner_i]; dst is
// [outer, sum inner_i], all of one type.
napi_value Concat(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 3, "concat: expected (inputs, dst, outer)");
  bool isArray = false;
  CHECK(napi_is_array(env, a.argv[0], &isArray) == napi_ok && isArray, "concat: inputs must be an array");
  uint32_t k = 0;
  napi_get_array_length(env, a.argv[0], &k);
  CHECK(k >= 1, "concat: no inputs");
  uint8_t* dst;
  size_t nd;
  int ed;
  napi_typedarray_type td;
  double outerD;
  CHECK(any_typed(env, a.argv[1], &dst, &nd, &ed, &td), "concat: dst must be a typed array");
  CHECK(number(env, a.argv[2], &outerD) && outerD >= 1, "concat: bad outer");
  const int64_t outer = static_cast<int64_t>(outerD);
  std::vector<const uint8_t*> src(k);
  std::vector<int64_t> innerBytes(k), offBytes(k);
  int64_t rowBytes = 0;
  for (uint32_t i = 0; i < k; ++i) {
    napi_value el;
    napi_get_element(env, a.argv[0], i, &el);
    uint8_t* d;
    size_t n;
    int e;
    napi_typedarray_type t;
    CHECK(any_typed(env, el, &d, &n, &e, &t) && t == td, "concat: inputs must be typed arrays of dst's type");
    CHECK(static_cast<int64_t>(n) % outer == 0, "concat: input length is not a multiple of outer");
    src[i] = d;
    innerBytes[i] = static_cast<int64_t>(n) / outer * e;
    offBytes[i] = rowBytes;
    rowBytes += innerBytes[i];
  }
  CHECK(static_cast<int64_t>(nd) * ed == outer * rowBytes, "concat: dst length does not match inputs");
  advise_output(dst, nd * ed);
  bool stream = static_cast<size_t>(nd) * ed >= kStreamBytes && aligned16(dst) && rowBytes % 16 == 0;
  for (uint32_t i = 0; i < k; ++i) stream = stream && aligned16(src[i]) && innerBytes[i] % 16 == 0;
  const int64_t G = std::max<int64_t>(1, 16384 / std::max<int64_t>(rowBytes, 1));
  try {
    parallel_for((outer + G - 1) / G, [&](int64_t task, int) {
      const int64_t o1 = std::min(outer, (task + 1) * G);
      for (int64_t o = task * G; o < o1; ++o) {
        uint8_t* row = dst + o * rowBytes;
        for (uint32_t i = 0; i < k; ++i) {
          if (stream)
            stream_run(row + offBytes[i], src[i] + o * innerBytes[i], static_cast<size_t>(innerBytes[i]));
          else
            copy_run(row + offBytes[i], src[i] + o * innerBytes[i], static_cast<size_t>(innerBytes[i]));
        }
      }
      if (stream) stream_fence();
    });
  } catch (const std::exception& e) {
    return throw_error(env, e.what());
  }
  return nullptr;
}

napi_value make_string(napi_env env, const char* s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

// info() -> { simd, threads, avx2Available, avx512Available, zmmFaster, fma512Ratio }
napi_value Info(napi_env env, napi_callback_info) {
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "simd", make_string(env, g_table->name));
  napi_create_int32(env, pool_threads(), &v);
  napi_set_named_property(env, obj, "threads", v);
  napi_get_boolean(env, cpu_has_avx2_fma(), &v);
  napi_set_named_property(env, obj, "avx2Available", v);
  napi_get_boolean(env, cpu_has_avx512vl(), &v);
  napi_set_named_property(env, obj, "avx512Available", v);
  napi_get_boolean(env, zmm_fma_faster(), &v);
  napi_set_named_property(env, obj, "zmmFaster", v);
  napi_create_double(env, zmm_fma_ratio(), &v);
  napi_set_named_property(env, obj, "fma512Ratio", v);
  return obj;
}

// setSimd('avx512-zmm' | 'avx512vl' | 'avx2-fma' | 'portable') -> the active code path (for tests
// and benchmarks).
napi_value SetSimd(napi_env env, napi_callback_info info) {
  Args a;
  CHECK(a.ok(env, info) && a.argc >= 1, "setSimd: expected a name");
  char buf[32] = {0};
  size_t len = 0;
  CHECK(napi_get_value_string_utf8(env, a.argv[0], buf, sizeof(buf), &len) == napi_ok, "setSimd: expected a string");
  const KernelTable* t = table_named(buf);
  CHECK(t != nullptr, "setSimd: unknown code path");
  if (const char* lacks = cpu_lacks_for(t)) {
    const std::string msg = std::string("setSimd: this CPU lacks ") + lacks;
    return throw_error(env, msg.c_str());
  }
  g_table = t;
  return make_string(env, g_table->name);
}

napi_value Init(napi_env env, napi_value exports) {
  // The best this CPU has, unless VOLSEG_NATIVE_SIMD names a path it runs (one it lacks, or an
  // unknown name, gives the best it has).
  const char* force = std::getenv("VOLSEG_NATIVE_SIMD");
  const KernelTable* forced = force ? table_named(force) : nullptr;
  g_table = forced && !cpu_lacks_for(forced) ? forced : best_table();
  const napi_property_descriptor props[] = {
      {"conv3d", nullptr, Conv3D, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv3dBackpropInput", nullptr, Conv3DBackpropInput, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"conv3dBackpropFilter", nullptr, Conv3DBackpropFilter, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pool3d", nullptr, Pool3D, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"maxPool3dGrad", nullptr, MaxPool3DGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"avgPool3dGrad", nullptr, AvgPool3DGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"instanceNormForward", nullptr, InstanceNormForward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"instanceNormBackward", nullptr, InstanceNormBackward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"upsampleNearest3d", nullptr, Upsample, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"upsampleNearest3dGrad", nullptr, UpsampleGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, Binary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"leakyRelu", nullptr, LeakyRelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binaryBroadcast", nullptr, BinaryBroadcast, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unary", nullptr, Unary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reduceSum", nullptr, ReduceSum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"softmax", nullptr, Softmax, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"slice", nullptr, Slice, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"copyBox", nullptr, CopyBox, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"concat", nullptr, Concat, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"lossSums", nullptr, LossSums, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"lossGrad", nullptr, LossGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"adam", nullptr, Adam, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"fmaPeak", nullptr, FmaPeak, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tilePeak", nullptr, TilePeak, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"allocBuffer", nullptr, AllocBuffer, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bufferCache", nullptr, BufferCacheInfo, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"releaseBuffer", nullptr, ReleaseBuffer, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setSimd", nullptr, SetSimd, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace
}  // namespace volseg

NAPI_MODULE(NODE_GYP_MODULE_NAME, volseg::Init)
