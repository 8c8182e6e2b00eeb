// AVX-512 build with 16-lane (zmm) convolution micro-kernels: kernels_avx512.cc's code (32 vector
// registers, ymm everywhere else) plus VOLSEG_ZMM, so the convolutions whose vector channels are a
// multiple of 16 run on zmm registers (kernels_impl.inc: V16, conv_lanes). The lanes regroup
// channels only, so the results are those of kernels_avx512.cc bit for bit. It pays on cores with
// two full-width 512-bit FMA units (AMD Zen 5, Intel Xeon with two FMA ports); on cores that split
// a zmm FMA in two (Zen 4) it cannot beat the ymm build, so addon.cc picks it only where a probe
// measures the 512-bit FMA rate well above the 256-bit one. As in kernels_avx2.cc every standard
// header is included before the target pragma; only called after __builtin_cpu_supports said yes
// to avx2, fma, avx512f and avx512vl (addon.cc).
#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,prefer-vector-width=256")
#define VOLSEG_AVX2 1
#define VOLSEG_REGS32 1
#define VOLSEG_ZMM 1
namespace volseg {
namespace avx512z {
#include "kernels_impl.inc"
}  // namespace avx512z
}  // namespace volseg
#undef VOLSEG_ZMM
#undef VOLSEG_REGS32
#undef VOLSEG_AVX2
#pragma GCC pop_options
#else
namespace volseg {
namespace avx512z {
#include "kernels_impl.inc"
}  // namespace avx512z
}  // namespace volseg
#endif
