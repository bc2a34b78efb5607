#include "server/metrics/http_exposer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "prometheus/text_serializer.h"

namespace freezetune::metrics {
namespace {

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// True when the request head has "Authorization: Bearer <token>" (header
// name case-insensitive), compared without an early exit.
bool HasBearerToken(absl::string_view request, absl::string_view token) {
  for (absl::string_view line : absl::StrSplit(request, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos ||
        !absl::EqualsIgnoreCase(line.substr(0, colon), "authorization")) {
      continue;
    }
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (!absl::StartsWithIgnoreCase(value, "bearer ")) return false;
    value = absl::StripAsciiWhitespace(value.substr(7));
    unsigned char diff = value.size() == token.size() ? 0 : 1;
    for (size_t i = 0; i < token.size(); ++i) {
      diff |= static_cast<unsigned char>(token[i] ^ (i < value.size() ? value[i] : 0));
    }
    return diff == 0;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpExposer>> HttpExposer::Start(
    const std::string& address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
    std::function<void()> before_collect, std::string bearer_token) {
  size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_listen: expected host:port, got \"", address, "\""));
  }
  std::string host = address.substr(0, colon);
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_listen: host must be an IPv4 address, got \"", host, "\""));
  }

  std::unique_ptr<HttpExposer> exposer(new HttpExposer());
  exposer->collectables_ = std::move(collectables);
  exposer->before_collect_ = std::move(before_collect);
  exposer->bearer_token_ = std::move(bearer_token);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("metrics_listen: socket() failed");
  exposer->listen_fd_ = fd;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 16) != 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics_listen: cannot listen on ", address, ": ", std::strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::UnavailableError("metrics_listen: getsockname() failed");
  }
  exposer->port_ = ntohs(addr.sin_port);
  if (::pipe2(exposer->wake_pipe_, O_CLOEXEC) != 0) {
    return absl::UnavailableError("metrics_listen: pipe() failed");
  }
  HttpExposer* self = exposer.get();
  exposer->thread_ = std::thread([self] { self->Serve(); });
  return exposer;
}

HttpExposer::~HttpExposer() {
  if (thread_.joinable()) {
    char byte = 0;
    (void)!::write(wake_pipe_[1], &byte, 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, wake_pipe_[0], wake_pipe_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

void HttpExposer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    HandleConnection(client);
    ::close(client);
  }
}

void HttpExposer::HandleConnection(int fd) {
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  // Read the request head (up to 8 KiB); only its first line matters.
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos &&
         request.find("\n\n") == std::string::npos && request.size() < 8192) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  absl::string_view line(request);
  line = line.substr(0, line.find_first_of("\r\n"));
  const bool authorized = bearer_token_.empty() || HasBearerToken(request, bearer_token_);
  bool head = absl::StartsWith(line, "HEAD ");
  bool get = absl::StartsWith(line, "GET ");
  absl::string_view target;
  if (get || head) {
    target = line.substr(line.find(' ') + 1);
    target = target.substr(0, target.find(' '));
    target = target.substr(0, target.find('?'));
  }
  std::string body;
  std::string status_line;
  std::string extra_headers;
  std::string content_type = "text/plain; charset=utf-8";
  if (!authorized) {
    status_line = "HTTP/1.0 401 Unauthorized";
    extra_headers = "\r\nWWW-Authenticate: Bearer realm=\"freezetune metrics\"";
    body = "bearer token required\n";
  } else if (!get && !head) {
    status_line = "HTTP/1.0 405 Method Not Allowed";
    body = "only GET /metrics\n";
  } else if (target != "/metrics") {
    status_line = "HTTP/1.0 404 Not Found";
    body = "see /metrics\n";
  } else {
    status_line = "HTTP/1.0 200 OK";
    content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (before_collect_) before_collect_();
    std::vector<prometheus::MetricFamily> families;
    for (const auto& collectable : collectables_) {
      std::vector<prometheus::MetricFamily> more = collectable->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
    body = prometheus::TextSerializer().Serialize(families);
  }
  std::string response = absl::StrCat(status_line, "\r\nContent-Type: ", content_type,
                                       extra_headers, "\r\nContent-Length: ", body.size(),
                                       "\r\nConnection: close\r\n\r\n");
  if (!head) response += body;
  WriteAll(fd, response);
}

}  // namespace freezetune::metrics
