// The one place an absl::Status becomes a grpc::Status. Abseil's canonical
// codes and gRPC's share numbers and meanings, so the code is kept and the
// message passed through unchanged (it is written for API clients: field
// path first, never file contents).
#ifndef FREEZETUNE_SERVER_SERVICE_STATUS_MAPPING_H_
#define FREEZETUNE_SERVER_SERVICE_STATUS_MAPPING_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace freezetune::service {

grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "INVALID_ARGUMENT", ...: the label value used in metrics.
std::string GrpcCodeName(grpc::StatusCode code);

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_STATUS_MAPPING_H_
