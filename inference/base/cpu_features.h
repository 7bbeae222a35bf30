// Run-time CPU feature checks shared by the kernel dispatchers. F16C is read from CPUID directly:
// clang 14's __builtin_cpu_supports does not know "f16c".
#pragma once

#include <cpuid.h>

namespace airlock {

inline bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & bit_F16C) != 0;
}

// AVX2 + FMA + F16C: what every *_avx2.cc file is compiled for.
inline bool CpuHasAvx2Fma() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasF16c();
}

}  // namespace airlock
