// AVX2 + FMA build of the kernels. Every standard header is included BEFORE the target pragma,
// so inline library code keeps the default target and stays identical to the portable copy;
// only the functions defined in kernels_impl.inc (internal linkage) are compiled for AVX2+FMA.
// They are only called after __builtin_cpu_supports("avx2") && ("fma") said yes (addon.cc).
#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VOLSEG_AVX2 1
namespace volseg {
namespace avx2 {
#include "kernels_impl.inc"
}  // namespace avx2
}  // namespace volseg
#undef VOLSEG_AVX2
#pragma GCC pop_options
#else
// Not an x86 target: the "avx2" table is the portable code (never selected at run time).
namespace volseg {
namespace avx2 {
#include "kernels_impl.inc"
}  // namespace avx2
}  // namespace volseg
#endif
