// adamw_kernel::UpdateAvx2: fused_adamw_kernel.inc compiled for avx2 (flags in
// server/train/CMakeLists.txt).
#define FT_ADAMW_UPDATE UpdateAvx2
#include "server/train/fused_adamw_kernel.inc"
