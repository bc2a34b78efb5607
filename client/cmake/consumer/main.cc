// Uses the installed client: builds a job and asks an unreachable server for
// it, which must fail with UNAVAILABLE. Exit 0 when everything behaved.
#include <iostream>

#include "freezetune/client.h"

int main() {
  freezetune::v1::FineTuneJob job;
  job.set_model_uri("file:///models/tiny");
  job.mutable_freeze()->mutable_head_only();

  freezetune::ClientOptions opts;
  opts.target = "127.0.0.1:1";  // nothing listens on port 1
  opts.max_retries = 0;
  auto client = freezetune::Client::Connect(opts);
  if (!client.ok()) {
    std::cerr << "connect: " << client.status() << "\n";
    return 1;
  }
  absl::StatusOr<freezetune::v1::Job> got = (*client)->Get("job-1");
  if (got.status().code() != absl::StatusCode::kUnavailable) {
    std::cerr << "expected UNAVAILABLE, got " << got.status() << "\n";
    return 1;
  }
  std::cout << "ok: " << job.freeze().has_head_only() << "\n";
  return 0;
}
