// adamw_kernel::UpdateAvx512: fused_adamw_kernel.inc compiled for avx512 (flags in
// server/train/CMakeLists.txt).
#define FT_ADAMW_UPDATE UpdateAvx512
#include "server/train/fused_adamw_kernel.inc"
