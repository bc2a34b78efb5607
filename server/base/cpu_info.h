// What the CPU is and which vector instructions it (and the OS) supports,
// read with cpuid/xgetbv. Torch-free; used to pick the BLAS kernel
// (blas_core.h) and to describe the machine in start-up banners and
// benchmark results.
//
// Thread safety: ReadCpuInfo() may be called from any thread; CpuInfo is a
// plain value.
#ifndef FREEZETUNE_SERVER_BASE_CPU_INFO_H_
#define FREEZETUNE_SERVER_BASE_CPU_INFO_H_

#include <string>

namespace freezetune::base {

// Instruction-set extensions, each true only when the CPU reports it AND the
// OS saves the registers it needs (XCR0), so "avx512f" means usable.
struct CpuFeatures {
  bool sse3 = false;
  bool ssse3 = false;
  bool sse4_2 = false;
  bool avx = false;
  bool f16c = false;
  bool fma = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512cd = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
  bool amx_tile = false;

  // AVX-512 as OpenBLAS's SkylakeX kernels (and ATen's AVX512 kernels) need
  // it: F, CD, BW, DQ and VL.
  bool avx512_skylake() const { return avx512f && avx512cd && avx512bw && avx512dq && avx512vl; }
  // AVX2 with FMA3, as OpenBLAS's Haswell/Zen kernels need it.
  bool avx2_fma() const { return avx && avx2 && fma; }
  // "avx2,fma,avx512f,...": the usable extensions from AVX up, for logs.
  std::string ToString() const;
};

struct CpuInfo {
  std::string vendor;  // cpuid vendor: "GenuineIntel", "AuthenticAMD"; "" off x86
  std::string brand;   // cpuid brand string, trimmed ("AMD EPYC", "Intel(R) Xeon(R) ...")
  int family = 0;      // display family and model (base + extended)
  int model = 0;
  int stepping = 0;
  CpuFeatures features;

  bool is_intel() const { return vendor == "GenuineIntel"; }
  bool is_amd() const { return vendor == "AuthenticAMD" || vendor == "HygonGenuine"; }
  // "AMD EPYC (AuthenticAMD family 25 model 17)".
  std::string Describe() const;
};

// This machine's CPU. Off x86-64 everything is empty/false.
CpuInfo ReadCpuInfo();

}  // namespace freezetune::base

#endif  // FREEZETUNE_SERVER_BASE_CPU_INFO_H_
