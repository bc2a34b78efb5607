// A minimal HTTP/1.0 server for GET /metrics in the Prometheus text format.
//
// Why not prometheus::Exposer: CivetWeb (under it) creates its threads with
// a fixed ~100 KiB stack, and glibc refuses such threads (EINVAL) in a
// process whose static TLS is as large as LibTorch's, so the Exposer cannot
// start inside freezetune-server. This server uses default-sized threads.
//
// One serving thread handles one connection at a time (a scrape every few
// seconds); each connection has a 2 s read/write timeout so a stuck client
// cannot wedge it.
//
// With a bearer token, GET /metrics needs "Authorization: Bearer <token>"
// (compared in constant time); anything else is 401 with a
// WWW-Authenticate header, and nothing is collected.
//
// Thread safety: construct with Start(); port() anywhere; the destructor
// stops and joins the serving thread.
#ifndef FREEZETUNE_SERVER_METRICS_HTTP_EXPOSER_H_
#define FREEZETUNE_SERVER_METRICS_HTTP_EXPOSER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace freezetune::metrics {

class HttpExposer {
 public:
  // Listens on `address` ("host:port", IPv4 host or "localhost"; port 0
  // picks a free one). INVALID_ARGUMENT for a malformed address,
  // UNAVAILABLE when it cannot be bound.
  // Each scrape runs `before_collect` (if set) on the serving thread, then
  // serializes what every collectable returns, in order. `bearer_token`
  // empty: no authentication.
  static absl::StatusOr<std::unique_ptr<HttpExposer>> Start(
      const std::string& address,
      std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
      std::function<void()> before_collect = nullptr, std::string bearer_token = "");
  ~HttpExposer();
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  int port() const { return port_; }

 private:
  HttpExposer() = default;
  void Serve();
  void HandleConnection(int fd);

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::function<void()> before_collect_;
  std::string bearer_token_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};  // written by the destructor to stop Serve()
  int port_ = 0;
  std::thread thread_;
};

}  // namespace freezetune::metrics

#endif  // FREEZETUNE_SERVER_METRICS_HTTP_EXPOSER_H_
