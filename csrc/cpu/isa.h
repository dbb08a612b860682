// Internal to the CPU kernels: functions built per x86-64 instruction set with a body templated
// on how to treat vectors of 64 bytes. RF_CLONES (common.h) compiles one body three times, which
// suits loops GCC vectorises itself; kernels written with 64-byte GCC vectors need a different body
// without AVX-512, since GCC lowers such vectors' selects to scalar code there (see Lanes8d in
// dtw_lanes.h).
#pragma once
#include <cstdlib>
#include <cstring>

namespace reactfast {

// The build RF_LANE_FUNCTION picks: 4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2) or 0 (baseline or
// not x86-64), read once per process. REACTFAST_CPU_ISA=x86-64 or x86-64-v3 caps it (tests run the
// narrower builds on a wider machine and compare their results); other values leave it as found.
inline int lane_isa() {
  static const int level = [] {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12 && \
    !defined(REACTFAST_ISA_BY_FEATURES)
    int hw = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    // GCC 11 names no x86-64 levels here: the levels' vector features (every processor with them
    // has the levels' other instructions).
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    int hw = v4 ? 4 : v3 ? 3 : 0;
#else
    int hw = 0;
#endif
    const char* cap = std::getenv("REACTFAST_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "x86-64") == 0) hw = 0;
    if (cap != nullptr && std::strcmp(cap, "x86-64-v3") == 0 && hw > 3) hw = 3;
    return hw;
  }();
  return level;
}

}  // namespace reactfast

// RF_LANE_FUNCTION(ret, name, params, args) defines name(params), which calls, picked once at run
// time, a build of name_body<Isa>(args) for Isa 4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2) or 0
// (baseline x86-64). Elsewhere (no GCC on x86-64) one portable build of name_body<0>.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RF_LANE_FUNCTION(ret, name, params, args)                                                   \
  __attribute__((target("arch=x86-64-v4"))) ret name##_v4 params { return name##_body<4> args; } \
  __attribute__((target("arch=x86-64-v3"))) ret name##_v3 params { return name##_body<3> args; } \
  ret name##_base params { return name##_body<0> args; }                                          \
  inline ret name params {                                                                          \
    const int isa = lane_isa();                                                                     \
    if (isa == 4) return name##_v4 args;                                                            \
    if (isa == 3) return name##_v3 args;                                                            \
    return name##_base args;                                                                        \
  }
#else
#define RF_LANE_FUNCTION(ret, name, params, args) \
  inline ret name params { return name##_body<0> args; }
#endif
