// See cpu_info.h.
#include "server/base/cpu_info.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FREEZETUNE_X86 1
#endif

namespace freezetune::base {

std::string CpuFeatures::ToString() const {
  std::vector<const char*> names;
  const std::pair<bool, const char*> all[] = {
      {avx, "avx"},           {f16c, "f16c"},           {fma, "fma"},
      {avx2, "avx2"},         {avx512f, "avx512f"},     {avx512cd, "avx512cd"},
      {avx512bw, "avx512bw"}, {avx512dq, "avx512dq"},   {avx512vl, "avx512vl"},
      {avx512_vnni, "avx512_vnni"}, {avx512_bf16, "avx512_bf16"},
      {avx512_fp16, "avx512_fp16"}, {amx_tile, "amx_tile"}};
  for (const auto& [on, name] : all) {
    if (on) names.push_back(name);
  }
  return names.empty() ? std::string("none above sse4.2") : absl::StrJoin(names, ",");
}

std::string CpuInfo::Describe() const {
  if (vendor.empty()) return brand.empty() ? std::string("unknown CPU") : brand;
  return absl::StrCat(brand.empty() ? vendor : brand, " (", vendor, " family ", family, " model ",
                      model, ")");
}

#ifdef FREEZETUNE_X86
namespace {

struct Regs {
  uint32_t a = 0, b = 0, c = 0, d = 0;
};

Regs Cpuid(uint32_t leaf, uint32_t subleaf = 0) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t Xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool Bit(uint32_t reg, int bit) { return (reg >> bit) & 1u; }

}  // namespace

CpuInfo ReadCpuInfo() {
  CpuInfo info;
  const uint32_t max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf == 0) return info;
  Regs v = Cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.b, 4);
  std::memcpy(vendor + 4, &v.d, 4);
  std::memcpy(vendor + 8, &v.c, 4);
  info.vendor = vendor;

  const Regs l1 = Cpuid(1);
  const uint32_t base_family = (l1.a >> 8) & 0xf;
  const uint32_t base_model = (l1.a >> 4) & 0xf;
  info.stepping = static_cast<int>(l1.a & 0xf);
  info.family = static_cast<int>(base_family == 0xf ? base_family + ((l1.a >> 20) & 0xff)
                                                    : base_family);
  info.model = static_cast<int>((base_family == 0x6 || base_family == 0xf)
                                    ? base_model + (((l1.a >> 16) & 0xf) << 4)
                                    : base_model);

  // clang declares __get_cpuid_max as returning int, gcc as unsigned.
  if (static_cast<unsigned int>(__get_cpuid_max(0x80000000, nullptr)) >= 0x80000004u) {
    char brand[49] = {};
    for (uint32_t i = 0; i < 3; ++i) {
      Regs r = Cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    info.brand = std::string(absl::StripAsciiWhitespace(brand));
  }

  CpuFeatures& f = info.features;
  f.sse3 = Bit(l1.c, 0);
  f.ssse3 = Bit(l1.c, 9);
  f.sse4_2 = Bit(l1.c, 20);
  // XCR0: bit 1 SSE, 2 AVX (ymm upper halves); 5-7 opmask, zmm0-15 upper
  // halves and zmm16-31. A CPU feature whose registers the OS does not save
  // cannot be used (and OpenBLAS then picks an older core itself).
  const bool osxsave = Bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? Xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  f.avx = os_ymm && Bit(l1.c, 28);
  f.f16c = f.avx && Bit(l1.c, 29);
  f.fma = f.avx && Bit(l1.c, 12);
  if (max_leaf >= 7) {
    const Regs l7 = Cpuid(7, 0);
    f.avx2 = f.avx && Bit(l7.b, 5);
    f.avx512f = os_zmm && Bit(l7.b, 16);
    f.avx512dq = f.avx512f && Bit(l7.b, 17);
    f.avx512cd = f.avx512f && Bit(l7.b, 28);
    f.avx512bw = f.avx512f && Bit(l7.b, 30);
    f.avx512vl = f.avx512f && Bit(l7.b, 31);
    f.avx512_vnni = f.avx512f && Bit(l7.c, 11);
    f.avx512_fp16 = f.avx512f && Bit(l7.d, 23);
    f.amx_tile = os_amx && Bit(l7.d, 24);
    if (l7.a >= 1) {
      const Regs l71 = Cpuid(7, 1);
      f.avx512_bf16 = f.avx512f && Bit(l71.a, 5);
    }
  }
  return info;
}
#else
CpuInfo ReadCpuInfo() { return CpuInfo{}; }
#endif

}  // namespace freezetune::base
