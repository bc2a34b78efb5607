// adamw_kernel::UpdateDefault: fused_adamw_kernel.inc compiled for default (flags in
// server/train/CMakeLists.txt).
#define FT_ADAMW_UPDATE UpdateDefault
#include "server/train/fused_adamw_kernel.inc"
