// Portable build of the kernels (plain C++; the compiler auto-vectorises for the baseline ISA).
#include "common.h"

namespace volseg {
namespace portable {
#include "kernels_impl.inc"
}  // namespace portable
}  // namespace volseg
