// Small Status helpers. Debian's Abseil (20220623) ships no RETURN_IF_ERROR,
// so freezetune carries these two macros; they are the only ones.
#ifndef FREEZETUNE_SERVER_COMMON_STATUS_MACROS_H_
#define FREEZETUNE_SERVER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status from the enclosing function if `expr` is not OK.
#define FT_RETURN_IF_ERROR(expr)                 \
  do {                                           \
    ::absl::Status ft_status_ = (expr);          \
    if (!ft_status_.ok()) return ft_status_;     \
  } while (0)

#define FT_STATUS_CONCAT_INNER_(a, b) a##b
#define FT_STATUS_CONCAT_(a, b) FT_STATUS_CONCAT_INNER_(a, b)

// `FT_ASSIGN_OR_RETURN(auto x, StatusOrExpr());` binds the value or returns
// the error from the enclosing function.
#define FT_ASSIGN_OR_RETURN(lhs, expr) \
  FT_ASSIGN_OR_RETURN_IMPL_(FT_STATUS_CONCAT_(ft_statusor_, __LINE__), lhs, expr)
#define FT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return statusor.status();        \
  lhs = std::move(statusor).value()

#endif  // FREEZETUNE_SERVER_COMMON_STATUS_MACROS_H_
