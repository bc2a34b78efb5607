// Helpers of the tests that run several freezetune-server replicas on one
// PostgreSQL (replicas_e2e_test.cc, replicas_chaos_test.cc).
#ifndef FREEZETUNE_TESTS_INTEGRATION_REPLICAS_TEST_UTIL_H_
#define FREEZETUNE_TESTS_INTEGRATION_REPLICAS_TEST_UTIL_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "freezetune/v1/freezetune.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/server_process.h"

namespace freezetune::testing {

// GetJob, expected to succeed.
inline v1::Job GetJobOrFail(v1::FineTuneService::Stub* stub, const std::string& id) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::Job job;
  grpc::Status s = stub->GetJob(&context, request, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job;
}

// The RUNNING events' messages ("running in slot 0 (cpu) on replica
// <host>/<pid> (lease epoch N)"), in order.
inline std::vector<std::string> RunningMessages(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> messages;
  for (const v1::JobEvent& e : events) {
    if (e.has_state_change() && e.state_change().state() == v1::JOB_STATE_RUNNING) {
      messages.push_back(e.state_change().message());
    }
  }
  return messages;
}

// The replica named in a RUNNING message ("... on replica <id> (lease
// epoch N)"); empty when absent. A replica's id is
// "<host>:<canonical data dir>".
inline std::string RunnerId(const std::string& running_message) {
  const size_t at = running_message.find(" on replica ");
  const size_t end = running_message.find(" (lease epoch ");
  if (at == std::string::npos || end == std::string::npos) return "";
  return running_message.substr(at + 12, end - at - 12);
}

// Whether the RUNNING message names `server`, started (as these tests do)
// with --data_dir=<the directory of its logs>/data.
inline bool RanOn(const std::string& running_message, const ServerProcess& server) {
  std::error_code ec;
  const std::string data_dir =
      std::filesystem::canonical(std::filesystem::path(server.log()).parent_path() / "data", ec)
          .string();
  const std::string id = RunnerId(running_message);
  const std::string suffix = ":" + data_dir;
  return !ec && id.size() > suffix.size() &&
         id.compare(id.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline int64_t LeaseEpoch(const std::string& running_message) {
  const size_t at = running_message.find("(lease epoch ");
  return at == std::string::npos ? -1 : std::stoll(running_message.substr(at + 13));
}

// Sequences 1, 2, 3, ... with no gap or duplicate.
inline void ExpectGapless(const std::vector<v1::JobEvent>& events, const std::string& what = "") {
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1)) << what << " event " << i;
  }
}

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_REPLICAS_TEST_UTIL_H_
