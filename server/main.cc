// freezetune-server: flags -> Options -> start -> wait for SIGINT/SIGTERM ->
// drain. Runs with no flags at all: loopback gRPC on 127.0.0.1:50051,
// metrics on 127.0.0.1:9464, SQLite store and outputs under
// ./var/freezetune.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/jobs/job_manager.h"
#include "server/service/auth.h"
#include "server/service/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address host:port; port 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address host:port (IPv4); port 0 picks a free port; empty "
          "disables the endpoint.");
ABSL_FLAG(std::string, data_dir, "./var/freezetune",
          "Server state: SQLite job store, outputs/<job id>, checkpoints/<job id>. Created.");
ABSL_FLAG(std::string, data_roots, "",
          "Comma-separated directories that local model/dataset/output URIs must lie under. "
          "Default: --data_dir and the current directory.");
ABSL_FLAG(int, cpu_slots, 1, "Jobs that train at the same time.");
ABSL_FLAG(int, threads, 0,
          "Intra-op threads per process (at::set_num_threads). 0: hardware concurrency.");
ABSL_FLAG(int, max_queue, 1000, "Queued jobs at most; SubmitJob beyond is RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound gRPC port is written here (atomically) once serving.");
ABSL_FLAG(absl::Duration, drain_grace_period, absl::Seconds(10),
          "On SIGINT/SIGTERM, how long in-flight RPCs (and open WatchJob streams) get before "
          "they are cancelled, e.g. 25s.");
ABSL_FLAG(std::string, auth_token_file, "",
          "Bearer tokens, one \"<tenant> <token>\" per line ('#' comments). Empty: no "
          "authentication. Each tenant sees only its own jobs.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; with --tls_key enables TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; if set, clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(bool, allow_http, true, "Allow http(s):// dataset and model URIs.");

namespace {

constexpr char kVersion[] = "0.1.0";

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: only write(2) to the self-pipe.
void OnSignal(int signo) {
  unsigned char byte = static_cast<unsigned char>(signo);
  int saved = errno;
  (void)!write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

struct BlasInfo {
  std::string name;  // "openblas", "reference", "mkl", "blis", "unknown"
  std::string path;
};

// Which BLAS the process really loaded: the mapped libblas.so.3 (Debian's
// alternatives pick its implementation) or another BLAS library.
BlasInfo DetectBlas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::string blas_path;
  std::string other_path;
  while (std::getline(maps, line)) {
    size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    std::string file = std::filesystem::path(path).filename().string();
    if (file.rfind("libblas.so", 0) == 0) {
      blas_path = path;
    } else if (other_path.empty() &&
               (file.rfind("libopenblas", 0) == 0 || file.rfind("libmkl_rt", 0) == 0 ||
                file.rfind("libblis", 0) == 0)) {
      other_path = path;
    }
  }
  if (blas_path.empty()) {
    // Not mapped by name (e.g. through a symlinked alternative): resolve it.
    std::error_code ec;
    auto resolved = std::filesystem::canonical("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
    if (!ec) blas_path = resolved.string();
  }
  std::string path = blas_path.empty() ? other_path : blas_path;
  BlasInfo info{"unknown", path};
  if (path.find("openblas") != std::string::npos) {
    info.name = "openblas";
  } else if (path.find("mkl") != std::string::npos) {
    info.name = "mkl";
  } else if (path.find("blis") != std::string::npos) {
    info.name = "blis";
  } else if (path.find("/blas/") != std::string::npos) {
    info.name = "reference";
  }
  return info;
}

bool WritePortFile(const std::string& path, int port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("freezetune-server: pipe");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::error_code ec;
  std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    std::cerr << "freezetune-server: data_dir: cannot create " << data_dir << ": " << ec.message()
              << "\n";
    return 1;
  }
  data_dir = std::filesystem::canonical(data_dir).string();

  std::vector<std::string> roots;
  for (absl::string_view root :
       absl::StrSplit(absl::GetFlag(FLAGS_data_roots), ',', absl::SkipWhitespace())) {
    auto canonical = std::filesystem::canonical(std::string(root), ec);
    if (ec) {
      std::cerr << "freezetune-server: data_roots: " << root << ": " << ec.message() << "\n";
      return 1;
    }
    roots.push_back(canonical.string());
  }
  if (roots.empty()) {
    roots.push_back(data_dir);
    roots.push_back(std::filesystem::current_path().string());
  }

  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  BlasInfo blas = DetectBlas();

  freezetune::service::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.metrics.listen_address = absl::GetFlag(FLAGS_metrics_listen);
  options.metrics.build_info = {kVersion, TORCH_VERSION, blas.name, "cpu"};
  options.jobs.data_dir = data_dir;
  options.jobs.scheduler.cpu_slots = std::max(1, absl::GetFlag(FLAGS_cpu_slots));
  options.jobs.scheduler.max_queue = std::max(0, absl::GetFlag(FLAGS_max_queue));
  options.jobs.uris.data_roots = roots;
  options.jobs.uris.allow_http = absl::GetFlag(FLAGS_allow_http);
  options.hooks = freezetune::jobs::DefaultTrainHooks();
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    auto auth = freezetune::service::Authenticator::FromFile(token_file);
    if (!auth.ok()) {
      std::cerr << "freezetune-server: " << auth.status().message() << "\n";
      return 1;
    }
    options.service.auth = *std::move(auth);
  }
  const std::string tls_mode = options.tls_cert_file.empty()          ? "off"
                               : options.tls_client_ca_file.empty() ? "on"
                                                                     : "mutual";

  std::cout << "freezetune-server " << kVersion << " (LibTorch " << TORCH_VERSION << ")\n"
            << "  blas: " << blas.name << (blas.path.empty() ? "" : " (" + blas.path + ")") << "\n"
            << "  intra-op threads: " << at::get_num_threads() << "\n"
            << "  listen: " << options.listen_address << "\n"
            << "  metrics_listen: "
            << (options.metrics.listen_address.empty() ? "(disabled)"
                                                       : options.metrics.listen_address)
            << "\n"
            << "  data_dir: " << data_dir << "\n"
            << "  data_roots: " << absl::StrJoin(roots, ",") << "\n"
            << "  cpu_slots: " << options.jobs.scheduler.cpu_slots << "\n"
            << "  auth: "
            << (options.service.auth != nullptr
                    ? absl::StrCat(options.service.auth->size(), " bearer tokens")
                    : std::string("off"))
            << "\n"
            << "  tls: " << tls_mode << "\n"
            << "  max_queue: " << options.jobs.scheduler.max_queue << "\n"
            << std::flush;

  auto server = freezetune::service::Server::Start(std::move(options));
  if (!server.ok()) {
    std::cerr << "freezetune-server: " << server.status().message() << "\n";
    return 1;
  }
  int port = (*server)->port();
  std::string host = absl::GetFlag(FLAGS_listen);
  host = host.substr(0, host.rfind(':'));
  if ((*server)->metrics_port() > 0) {
    std::cout << "freezetune-server metrics on http://" << host << ":" << (*server)->metrics_port()
              << "/metrics\n";
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, port)) {
    std::cerr << "freezetune-server: port_file: cannot write " << port_file << "\n";
    (*server)->Shutdown(absl::Now());
    return 1;
  }
  std::cout << "freezetune-server listening on " << host << ":" << port << std::endl;

  unsigned char signo = 0;
  while (read(g_signal_pipe[0], &signo, 1) < 0 && errno == EINTR) {
  }
  std::cout << "freezetune-server: signal " << static_cast<int>(signo)
            << ", draining (running jobs are stopped and re-queued)" << std::endl;
  (*server)->Shutdown(absl::Now() + absl::GetFlag(FLAGS_drain_grace_period));
  server->reset();
  std::cout << "freezetune-server: stopped" << std::endl;
  return 0;
}
