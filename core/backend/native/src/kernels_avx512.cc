// AVX-512VL build of the kernels: the AVX2 + FMA code (the same 8-lane ymm arithmetic, so the
// same results bit for bit as kernels_avx2.cc's where the tiles match) with 32 vector registers
// instead of 16 (EVEX encodes ymm16-31), so the convolution micro-kernels keep larger register
// tiles (VOLSEG_REGS32: kMaxRW in kernels_impl.inc). As in kernels_avx2.cc every standard header
// is included before the target pragma. Only called after __builtin_cpu_supports said yes to
// avx2, fma, avx512f and avx512vl (addon.cc).
#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,prefer-vector-width=256")
#define VOLSEG_AVX2 1
#define VOLSEG_REGS32 1
namespace volseg {
namespace avx512 {
#include "kernels_impl.inc"
}  // namespace avx512
}  // namespace volseg
#undef VOLSEG_REGS32
#undef VOLSEG_AVX2
#pragma GCC pop_options
#else
namespace volseg {
namespace avx512 {
#include "kernels_impl.inc"
}  // namespace avx512
}  // namespace volseg
#endif
