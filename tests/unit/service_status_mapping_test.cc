// ToGrpcStatus keeps code and message for every canonical code.
#include "server/service/status_mapping.h"

#include "gtest/gtest.h"

namespace freezetune::service {
namespace {

TEST(StatusMappingTest, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::OK), "OK");
}

TEST(StatusMappingTest, EveryCodeKeepsCodeAndMessage) {
  struct Case {
    absl::Status status;
    grpc::StatusCode code;
    const char* name;
  };
  const Case cases[] = {
      {absl::CancelledError("c"), grpc::StatusCode::CANCELLED, "CANCELLED"},
      {absl::UnknownError("u"), grpc::StatusCode::UNKNOWN, "UNKNOWN"},
      {absl::InvalidArgumentError("job.train.uri: file not found: /x"),
       grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {absl::DeadlineExceededError("d"), grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
      {absl::NotFoundError("job job-1 not found"), grpc::StatusCode::NOT_FOUND, "NOT_FOUND"},
      {absl::AlreadyExistsError("a"), grpc::StatusCode::ALREADY_EXISTS, "ALREADY_EXISTS"},
      {absl::PermissionDeniedError("p"), grpc::StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED"},
      {absl::ResourceExhaustedError("queue is full"), grpc::StatusCode::RESOURCE_EXHAUSTED,
       "RESOURCE_EXHAUSTED"},
      {absl::FailedPreconditionError("job x already SUCCEEDED"),
       grpc::StatusCode::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
      {absl::AbortedError("ab"), grpc::StatusCode::ABORTED, "ABORTED"},
      {absl::OutOfRangeError("o"), grpc::StatusCode::OUT_OF_RANGE, "OUT_OF_RANGE"},
      {absl::UnimplementedError("un"), grpc::StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
      {absl::InternalError("i"), grpc::StatusCode::INTERNAL, "INTERNAL"},
      {absl::UnavailableError("server is shutting down"), grpc::StatusCode::UNAVAILABLE,
       "UNAVAILABLE"},
      {absl::DataLossError("dl"), grpc::StatusCode::DATA_LOSS, "DATA_LOSS"},
      {absl::UnauthenticatedError("ua"), grpc::StatusCode::UNAUTHENTICATED, "UNAUTHENTICATED"},
  };
  for (const Case& c : cases) {
    grpc::Status g = ToGrpcStatus(c.status);
    EXPECT_EQ(g.error_code(), c.code) << c.status;
    EXPECT_EQ(g.error_message(), std::string(c.status.message()));
    EXPECT_EQ(GrpcCodeName(g.error_code()), c.name);
  }
}

TEST(StatusMappingTest, OutOfRangeCodeBecomesUnknown) {
  absl::Status odd(static_cast<absl::StatusCode>(99), "odd");
  grpc::Status g = ToGrpcStatus(odd);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(g.error_message(), "odd");
}

}  // namespace
}  // namespace freezetune::service
