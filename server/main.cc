// freezetune-server: flags -> Options -> start -> wait for SIGINT/SIGTERM ->
// drain. Runs with no flags at all: loopback gRPC on 127.0.0.1:50051,
// metrics on 127.0.0.1:9464, SQLite store and outputs under
// ./var/freezetune.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <cstring>
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
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "freezetune/version.h"
#include "grpc/support/log.h"
#include "server/base/process_tuning.h"
#include "server/data/s3_client.h"
#include "server/jobs/job_manager.h"
#include "server/base/log.h"
#include "server/notify/secrets.h"
#include "server/service/auth.h"
#include "server/service/server.h"
#include "server/store/postgres_backend.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address host:port; port 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address host:port (IPv4); port 0 picks a free port; empty "
          "disables the endpoint.");
ABSL_FLAG(std::string, metrics_token_file, "",
          "File holding a bearer token; if set, /metrics answers only requests with "
          "\"Authorization: Bearer <token>\" (its series carry every tenant's job ids). "
          "Empty: /metrics is open to whoever can reach --metrics_listen.");
ABSL_FLAG(std::string, data_dir, "./var/freezetune",
          "Server state: SQLite job store, outputs/<job id>, checkpoints/<job id>. Created.");
ABSL_FLAG(std::string, job_store, "sqlite",
          "Where jobs, sweeps and their events live: \"sqlite\" (embedded, "
          "<data_dir>/freezetune.db) or a libpq URI postgresql://user@host:port/db?sslmode=... "
          "(a database replicas can share; its schema is created or migrated at start). Give "
          "the password through PGPASSWORD or PGPASSFILE rather than in the URI, where ps "
          "shows it; the URI is logged without its password.");
ABSL_FLAG(absl::Duration, lease_duration, absl::Seconds(30),
          "With a postgresql:// --job_store, replicas share one queue: a replica holds a lease "
          "on each job it runs, and a job whose lease is not renewed for this long (its "
          "replica died or lost the database) is re-queued for another replica.");
ABSL_FLAG(absl::Duration, lease_renew_interval, absl::Seconds(10),
          "How often a replica renews its leases (well under --lease_duration).");
ABSL_FLAG(absl::Duration, store_probe_interval, absl::Seconds(5),
          "How often readiness checks that the job store answers: health is NOT_SERVING while "
          "it does not (a replica cut off from its PostgreSQL leaves the Service). 0: never.");
ABSL_FLAG(std::string, data_roots, "",
          "Comma-separated directories that local model/dataset/output URIs must lie under. "
          "Default: --data_dir and the current directory.");
ABSL_FLAG(int, cpu_slots, 2,
          "CPU device slots: jobs that train on the CPU at the same time (they split --threads "
          "between them, so a sweep's trials run two at a time). Every visible CUDA "
          "GPU gets one more slot; a job's device (\"cpu\", \"cuda\", \"cuda:N\") picks "
          "which slots may run it.");
ABSL_FLAG(int, threads, 0,
          "Intra-op threads for CPU training, split evenly among the CPU jobs running at the "
          "moment (a job alone gets all of them). 0: hardware concurrency.");
ABSL_FLAG(int, max_queue, 1000,
          "Queued jobs at most; SubmitJob beyond is RESOURCE_EXHAUSTED. With a postgresql:// "
          "--job_store, counted over every replica's queued jobs.");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound gRPC port is written here (atomically) once serving.");
ABSL_FLAG(absl::Duration, drain_grace_period, absl::Seconds(10),
          "On SIGINT/SIGTERM, how long the drain takes at most, e.g. 25s: running jobs stop "
          "and are re-queued (a job still inside a training step shortly before the end is "
          "recorded QUEUED and resumes from its last checkpoint at the next start; the process "
          "does not wait for the step), and in-flight RPCs (and open WatchJob streams) are "
          "cancelled at the end. The process exits at most 1 s after it.");
ABSL_FLAG(std::string, auth_token_file, "",
          "Bearer tokens, one \"<tenant> <token>\" per line ('#' comments). Empty: no "
          "authentication. Each tenant sees only its own jobs.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; with --tls_key enables TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; if set, clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(bool, allow_http, true, "Allow http(s):// dataset and model URIs.");
ABSL_FLAG(bool, s3_path_style, false,
          "s3:// URIs use path-style addressing (<endpoint>/<bucket>/<key>), as MinIO and Ceph "
          "usually need; default virtual-hosted (<bucket>.<endpoint host>). Endpoint and "
          "credentials come from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, "
          "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.");
ABSL_FLAG(std::string, checkpoint_uri, "",
          "s3://bucket/prefix where jobs' resumable checkpoints go (<prefix>/<job id>/step-N/), "
          "so that any replica can resume a job. Default: local, under --data_dir.");
ABSL_FLAG(bool, allow_plain_http, true,
          "With --allow_http, also allow unencrypted http:// URIs (and redirects to them); "
          "false: https:// only. Keep it in step with the egress the network allows (the "
          "Kubernetes NetworkPolicy opens 443 only and sets this to false).");
ABSL_FLAG(bool, allow_tenant_output_paths, false,
          "With --auth_token_file: let tenants name output directories anywhere under the data "
          "roots. Default: a tenant's outputs must lie under <data_dir>/outputs/<tenant>/ "
          "(its default outputs go there too). A tenant never reads another tenant's outputs "
          "as a model or dataset either way.");
ABSL_FLAG(int, max_queued_per_tenant, 0,
          "Queued jobs per tenant at most; SubmitJob beyond is RESOURCE_EXHAUSTED naming the "
          "tenant. 0: no per-tenant limit (--max_queue still applies).");
ABSL_FLAG(int, max_running_per_tenant, 0,
          "Running jobs per tenant at most; further jobs of that tenant wait in the queue while "
          "other tenants' jobs may start. 0: no limit.");
ABSL_FLAG(int, max_message_bytes, 16 << 20,
          "Largest gRPC request or response message in bytes; a bigger request fails with "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_concurrent_streams, 1000,
          "Concurrent gRPC calls (HTTP/2 streams, e.g. open WatchJob streams) per client "
          "connection; further calls wait on the client. 0: gRPC's default (unlimited).");
ABSL_FLAG(absl::Duration, keepalive_min_ping_interval, absl::Seconds(60),
          "Keepalive enforcement: clients that ping more often than this without data get "
          "GOAWAY \"too_many_pings\" (their calls fail UNAVAILABLE).");
ABSL_FLAG(bool, keepalive_permit_without_calls, false,
          "Allow client keepalive pings on connections with no open call.");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Minutes(5),
          "Server-side keepalive ping interval that detects dead clients; 0 uses gRPC's default "
          "(2h).");
ABSL_FLAG(absl::Duration, unary_deadline, absl::Seconds(60),
          "Server-side deadline of SubmitJob and PlanFreeze (which validate synchronously); "
          "past it they are DEADLINE_EXCEEDED and nothing is queued. 0: none.");
ABSL_FLAG(int64_t, max_dataset_bytes, int64_t{1} << 30,
          "Bytes read from one dataset or model URI at most (local or http(s)).");
ABSL_FLAG(int64_t, max_examples, 10'000'000,
          "Examples per dataset (train, validation) at most.");
ABSL_FLAG(int, max_seq_length, 512, "Largest hyperparameters.max_seq_length a job may ask for.");
ABSL_FLAG(int, max_epochs, 100, "Largest hyperparameters.epochs a job may ask for.");
ABSL_FLAG(int64_t, max_model_parameters, int64_t{2} << 30,
          "Largest model (parameters, head included) a job may fine-tune.");
ABSL_FLAG(absl::Duration, data_parallel_timeout, absl::Minutes(5),
          "Data-parallel jobs: how long the ranks wait for each other, at the rendezvous and "
          "in every collective, before the job fails (a hung rank). Cover rank 0's longest "
          "evaluation, which the other ranks wait out.");
ABSL_FLAG(int64_t, prefix_cache_bytes, int64_t{512} << 20,
          "Memory budget (bytes, for the whole process) for the outputs of deterministic frozen "
          "prefixes, kept so that later epochs and other jobs on the same model and data (a "
          "sweep's trials) skip them; beyond it they are recomputed. 0 disables.");
ABSL_FLAG(bool, blas_core_selection, true,
          "At start, when OpenBLAS fell back to a kernel for an older instruction set than the "
          "CPU supports (e.g. Prescott on an AVX-512 Xeon it does not know), re-execute with "
          "OPENBLAS_CORETYPE set to the best core for the CPU's features, after a numerical "
          "self-check. An OPENBLAS_CORETYPE in the environment is always kept.");
ABSL_FLAG(std::string, notify_secret_file, "",
          "Secrets that sign completion callbacks (FineTuneJob.notify, SweepSpec.notify), one "
          "\"<tenant> <secret>\" per line ('#' comments; tenant \"*\": every other tenant, and "
          "every job without --auth_token_file); secrets of 16 bytes at least. Empty: jobs "
          "with notify are refused (FAILED_PRECONDITION).");
ABSL_FLAG(bool, notify_allow_private_hosts, false,
          "TESTS ONLY: let completion callbacks go to loopback, private and link-local "
          "addresses (refused otherwise, like dataset URIs).");
ABSL_FLAG(absl::Duration, notify_initial_backoff, absl::Seconds(30),
          "Wait after a completion callback's first failed attempt; doubles after each "
          "further failure.");
ABSL_FLAG(absl::Duration, notify_max_backoff, absl::Hours(1),
          "Longest wait between two attempts of a completion callback.");
ABSL_FLAG(absl::Duration, notify_max_age, absl::Hours(24),
          "A completion callback not delivered this long after its resource ended is abandoned "
          "(freezetune_notify_abandoned_total).");
ABSL_FLAG(bool, prefix_cache_shared, false,
          "Jobs on this server share models and data: every job keeps its frozen-prefix outputs "
          "in the cache (--prefix_cache_bytes) for later jobs. Off: a job stores them only when "
          "it reads them again itself (more than one epoch or evaluation) and drops them when "
          "it ends; a sweep's trials and jobs with share_frozen_prefix always share.");
ABSL_FLAG(std::string, log_format, "text",
          "Log line format on stderr: \"text\" or \"json\" (one JSON object per line with "
          "time, level, msg and job_id when the line concerns a job).");

namespace {

constexpr char kVersion[] = FREEZETUNE_VERSION;  // the CMake project version

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: only write(2) to the self-pipe.
void OnSignal(int signo) {
  unsigned char byte = static_cast<unsigned char>(signo);
  int saved = errno;
  (void)!write(g_signal_pipe[1], &byte, 1);
  errno = saved;
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

using freezetune::base::Log;
using freezetune::base::LogLevel;

// gRPC's own log lines go through our logger (so --log_format=json holds for
// the lines the process writes; LibTorch's warnings go the same way below).
void GrpcLog(gpr_log_func_args* args) {
  LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                   : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                             : LogLevel::kDebug;
  Log(level, args->message != nullptr ? args->message : "", {},
      {{"source", absl::StrCat("grpc:", args->file != nullptr ? args->file : "", ":", args->line)}});
}

// LibTorch's warnings (TORCH_WARN) through our logger. The handler is
// process-global in LibTorch 1.13 and may run on any thread; Log() is
// thread-safe and this object lives for the whole process.
class TorchWarningsToLog final : public c10::WarningHandler {
 public:
  void process(const c10::SourceLocation& where, const std::string& msg, const bool) override {
    Log(LogLevel::kWarning, msg, {},
        {{"source", absl::StrCat("torch:", where.file != nullptr ? where.file : "", ":", where.line)}});
  }
};

// Flag names whose values are secrets. None of today's flags holds one (the
// token file's path is shown, never its tokens), but a future flag named
// like this is redacted in the startup log.
bool IsSecretFlag(absl::string_view name) {
  return absl::StrContains(name, "password") || absl::StrContains(name, "secret") ||
         absl::EndsWith(name, "_token");
}

// Every flag defined in this file, as name -> current value.
freezetune::base::LogFields EffectiveFlags() {
  freezetune::base::LogFields fields;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "server/main.cc")) continue;
    std::string value = IsSecretFlag(name) ? std::string("<redacted>") : flag->CurrentValue();
    // A URI may carry a password.
    if (name == "job_store" && value != "sqlite") value = freezetune::store::RedactPostgresUri(value);
    fields.emplace_back(std::string(name), std::move(value));
  }
  std::sort(fields.begin(), fields.end());
  return fields;
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_helpshort_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  usage_config.contains_help_flags = usage_config.contains_helpshort_flags;
  usage_config.version_string = [] { return std::string("freezetune-server ") + kVersion + "\n"; };
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "fine-tunes BERT-family models for gRPC clients.\n"
      "Runs with no flags (loopback, SQLite store under ./var/freezetune). Flags:");
  absl::ParseCommandLine(argc, argv);
  // Before any thread starts: OMP_WAIT_POLICY=PASSIVE unless set (libgomp's
  // spinning made steps 7-10x slower on shared cores), the OpenBLAS core the
  // CPU deserves, malloc thresholds. The first two are read when the
  // libraries load, so this re-executes the server once when they change
  // (base/process_tuning.h).
  freezetune::base::ProcessTuningOptions tuning_options;
  tuning_options.blas_core_selection = absl::GetFlag(FLAGS_blas_core_selection);
  const freezetune::base::ProcessTuning tuning = freezetune::base::TuneProcess(argv, tuning_options);
  const std::string log_format = absl::GetFlag(FLAGS_log_format);
  if (log_format == "json") {
    freezetune::base::SetLogFormat(freezetune::base::LogFormat::kJson);
    gpr_set_log_function(GrpcLog);
    static TorchWarningsToLog* torch_warnings = new TorchWarningsToLog();
    c10::Warning::set_warning_handler(torch_warnings);
  } else if (log_format != "text") {
    std::cerr << "freezetune-server: log_format: must be \"text\" or \"json\" (got \""
              << log_format << "\")\n";
    return 1;
  }
  const bool json = log_format == "json";
  // Startup failures: one line on stderr, then exit 1.
  auto fail = [json](const std::string& message) {
    if (json) {
      Log(LogLevel::kError, message);
    } else {
      std::cerr << "freezetune-server: " << message << "\n";
    }
    return 1;
  };
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return fail(absl::StrCat("pipe: ", std::strerror(errno)));
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::error_code ec;
  std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return fail(absl::StrCat("data_dir: cannot create ", data_dir, ": ", ec.message()));
  data_dir = std::filesystem::canonical(data_dir).string();

  std::vector<std::string> roots;
  for (absl::string_view root :
       absl::StrSplit(absl::GetFlag(FLAGS_data_roots), ',', absl::SkipWhitespace())) {
    auto canonical = std::filesystem::canonical(std::string(root), ec);
    if (ec) return fail(absl::StrCat("data_roots: ", root, ": ", ec.message()));
    roots.push_back(canonical.string());
  }
  if (roots.empty()) {
    roots.push_back(data_dir);
    roots.push_back(std::filesystem::current_path().string());
  }

  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);

  // Positive-valued limits: a zero or negative one would refuse everything.
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, int64_t>>{
           {"max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes)},
           {"max_dataset_bytes", absl::GetFlag(FLAGS_max_dataset_bytes)},
           {"max_examples", absl::GetFlag(FLAGS_max_examples)},
           {"max_seq_length", absl::GetFlag(FLAGS_max_seq_length)},
           {"max_epochs", absl::GetFlag(FLAGS_max_epochs)},
           {"max_model_parameters", absl::GetFlag(FLAGS_max_model_parameters)}}) {
    if (value <= 0) return fail(absl::StrCat(name, ": must be positive (got ", value, ")"));
  }
  if (absl::GetFlag(FLAGS_prefix_cache_bytes) < 0) {
    return fail(absl::StrCat("prefix_cache_bytes: must be >= 0 (got ",
                             absl::GetFlag(FLAGS_prefix_cache_bytes), ")"));
  }

  // Every visible GPU gets a slot (none in a CPU-only LibTorch).
  std::vector<std::string> gpus;
  const int gpu_count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  for (int i = 0; i < gpu_count; ++i) gpus.push_back(absl::StrCat("cuda:", i));

  freezetune::service::ServerOptions options;
  options.listen_address = absl::GetFlag(FLAGS_listen);
  options.metrics.listen_address = absl::GetFlag(FLAGS_metrics_listen);
  options.metrics.build_info = {kVersion, TORCH_VERSION, tuning.blas.Name(),
                                gpus.empty() ? "cpu" : "cuda"};
  options.metrics.blas_info = tuning.MetricLabels();
  if (const std::string path = absl::GetFlag(FLAGS_metrics_token_file); !path.empty()) {
    std::ifstream in(path);
    std::string token;
    if (!(in >> token) || token.empty()) {
      return fail(absl::StrCat("metrics_token_file: cannot read a token from ", path));
    }
    options.metrics.bearer_token = token;
  }
  options.jobs.data_dir = data_dir;
  if (const std::string job_store = absl::GetFlag(FLAGS_job_store); job_store != "sqlite") {
    // Never echo the value: it may hold a password.
    if (!freezetune::store::IsPostgresUri(job_store)) {
      return fail("job_store: expected \"sqlite\" or a postgresql://user@host:port/db URI");
    }
    absl::Status valid = freezetune::store::ValidatePostgresUri(job_store, "job_store");
    if (!valid.ok()) return fail(std::string(valid.message()));
    options.jobs.postgres_uri = job_store;
  }
  options.jobs.lease_duration = absl::GetFlag(FLAGS_lease_duration);
  options.jobs.lease_renew_interval = absl::GetFlag(FLAGS_lease_renew_interval);
  if (options.jobs.lease_renew_interval <= absl::ZeroDuration() ||
      options.jobs.lease_renew_interval >= options.jobs.lease_duration) {
    return fail("lease_renew_interval: must be positive and shorter than --lease_duration");
  }
  options.jobs.scheduler.cpu_slots = std::max(1, absl::GetFlag(FLAGS_cpu_slots));
  options.jobs.cpu_threads = threads;
  options.jobs.scheduler.gpu_devices = gpus;
  options.jobs.scheduler.max_queue = std::max(0, absl::GetFlag(FLAGS_max_queue));
  options.jobs.scheduler.max_queued_per_tenant = std::max(0, absl::GetFlag(FLAGS_max_queued_per_tenant));
  options.jobs.scheduler.max_running_per_tenant =
      std::max(0, absl::GetFlag(FLAGS_max_running_per_tenant));
  options.jobs.uris.data_roots = roots;
  options.jobs.uris.allow_http = absl::GetFlag(FLAGS_allow_http);
  options.jobs.uris.allow_plain_http = absl::GetFlag(FLAGS_allow_plain_http);
  options.jobs.allow_tenant_output_paths = absl::GetFlag(FLAGS_allow_tenant_output_paths);
  options.jobs.uris.max_bytes = absl::GetFlag(FLAGS_max_dataset_bytes);
  options.jobs.uris.s3 = freezetune::data::S3OptionsFromEnv(absl::GetFlag(FLAGS_s3_path_style));
  options.jobs.uris.s3_cache_dir = (std::filesystem::path(data_dir) / "cache" / "s3").string();
  options.jobs.checkpoint_uri = absl::GetFlag(FLAGS_checkpoint_uri);
  if (!options.jobs.checkpoint_uri.empty()) {
    auto parsed = freezetune::data::ParseS3Uri(options.jobs.checkpoint_uri, "--checkpoint_uri");
    if (!parsed.ok()) return fail(std::string(parsed.status().message()));
  }
  options.jobs.limits.max_examples = absl::GetFlag(FLAGS_max_examples);
  options.jobs.limits.max_seq_length = absl::GetFlag(FLAGS_max_seq_length);
  options.jobs.limits.max_epochs = absl::GetFlag(FLAGS_max_epochs);
  options.jobs.limits.max_model_parameters = absl::GetFlag(FLAGS_max_model_parameters);
  options.hooks = freezetune::jobs::DefaultTrainHooks(absl::GetFlag(FLAGS_prefix_cache_bytes),
                                                      absl::GetFlag(FLAGS_prefix_cache_shared),
                                                      absl::GetFlag(FLAGS_data_parallel_timeout));
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_concurrent_streams = std::max(0, absl::GetFlag(FLAGS_max_concurrent_streams));
  options.keepalive_min_ping_interval = absl::GetFlag(FLAGS_keepalive_min_ping_interval);
  options.keepalive_permit_without_calls = absl::GetFlag(FLAGS_keepalive_permit_without_calls);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.store_probe_interval = absl::GetFlag(FLAGS_store_probe_interval);
  options.service.unary_deadline = absl::GetFlag(FLAGS_unary_deadline);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  const std::string secret_file = absl::GetFlag(FLAGS_notify_secret_file);
  if (!secret_file.empty()) {
    auto secrets = freezetune::notify::Secrets::Load(secret_file);
    if (!secrets.ok()) return fail(absl::StrCat("notify_secret_file: ", secrets.status().message()));
    options.notify.secrets = *std::move(secrets);
  }
  options.notify.uris = options.jobs.uris;
  options.notify.uris.allow_private_http = absl::GetFlag(FLAGS_notify_allow_private_hosts);
  // One slow receiver holds the (serial) worker and the drain this long.
  options.notify.uris.http_timeout_seconds = 10;
  options.notify.initial_backoff = absl::GetFlag(FLAGS_notify_initial_backoff);
  options.notify.max_backoff = absl::GetFlag(FLAGS_notify_max_backoff);
  options.notify.max_age = absl::GetFlag(FLAGS_notify_max_age);
  if (options.notify.initial_backoff <= absl::ZeroDuration() ||
      options.notify.max_backoff < options.notify.initial_backoff ||
      options.notify.max_age <= absl::ZeroDuration()) {
    return fail("notify_initial_backoff, notify_max_backoff, notify_max_age: must be positive, "
                "with notify_max_backoff >= notify_initial_backoff");
  }
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    auto auth = freezetune::service::Authenticator::FromFile(token_file);
    if (!auth.ok()) return fail(std::string(auth.status().message()));
    options.service.auth = *std::move(auth);
  }
  const std::string tls_mode = options.tls_cert_file.empty()          ? "off"
                               : options.tls_client_ca_file.empty() ? "on"
                                                                     : "mutual";

  // The effective configuration: every flag of this file (no flag holds a
  // secret: --auth_token_file is a path, and the tokens are never logged),
  // plus what was detected.
  freezetune::base::LogFields config = EffectiveFlags();
  config.insert(config.begin(),
                {{"version", kVersion},
                 {"libtorch", TORCH_VERSION},
                 {"intra_op_threads", absl::StrCat(at::get_num_threads())},
                 {"device_slots", absl::StrCat(options.jobs.scheduler.cpu_slots, " cpu",
                                               gpus.empty() ? "" : ", " + absl::StrJoin(gpus, ", "))},
                 {"resolved_data_dir", data_dir},
                 {"resolved_data_roots", absl::StrJoin(roots, ",")},
                 {"auth", options.service.auth != nullptr
                              ? absl::StrCat(options.service.auth->size(), " bearer tokens")
                              : std::string("off")},
                 {"tls", tls_mode}});
  // CPU, BLAS core (and whether the selection changed it), OpenMP policy,
  // allocator: right after the version, in the order LogFields gives.
  const auto tuning_fields = tuning.LogFields();
  config.insert(config.begin() + 2, tuning_fields.begin(), tuning_fields.end());
  if (tuning.blas_core.warning || !tuning.reexec_error.empty()) {
    const std::string warning = absl::StrCat(
        "BLAS core: ", tuning.blas_core.reason,
        tuning.reexec_error.empty() ? "" : absl::StrCat(" (", tuning.reexec_error, ")"));
    if (json) {
      Log(LogLevel::kWarning, warning);
    } else {
      std::cerr << "freezetune-server: warning: " << warning << "\n";
    }
  }
  if (json) {
    Log(LogLevel::kInfo, "effective configuration", {}, config);
  } else {
    std::cout << "freezetune-server " << kVersion << " (LibTorch " << TORCH_VERSION << ")\n";
    for (const auto& [key, value] : config) std::cout << "  " << key << ": " << value << "\n";
    std::cout << std::flush;
  }

  auto server = freezetune::service::Server::Start(std::move(options));
  if (!server.ok()) return fail(std::string(server.status().message()));
  int port = (*server)->port();
  std::string host = absl::GetFlag(FLAGS_listen);
  host = host.substr(0, host.rfind(':'));
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, port)) {
    (*server)->Shutdown(absl::Now());
    return fail(absl::StrCat("port_file: cannot write ", port_file));
  }
  const std::string metrics_url =
      (*server)->metrics_port() > 0
          ? absl::StrCat("http://", host, ":", (*server)->metrics_port(), "/metrics")
          : "";
  if (json) {
    Log(LogLevel::kInfo, "listening", {},
        {{"address", absl::StrCat(host, ":", port)}, {"metrics", metrics_url}});
  } else {
    if (!metrics_url.empty()) std::cout << "freezetune-server metrics on " << metrics_url << "\n";
    std::cout << "freezetune-server listening on " << host << ":" << port << std::endl;
  }

  unsigned char signo = 0;
  while (read(g_signal_pipe[0], &signo, 1) < 0 && errno == EINTR) {
  }
  if (json) {
    Log(LogLevel::kInfo, "draining (running jobs are stopped and re-queued)", {},
        {{"signal", absl::StrCat(static_cast<int>(signo))}});
  } else {
    std::cout << "freezetune-server: signal " << static_cast<int>(signo)
              << ", draining (running jobs are stopped and re-queued)" << std::endl;
  }
  // A second signal during the drain exits at once (jobs keep their last
  // checkpoint and are recovered at the next start).
  std::thread second_signal([] {
    unsigned char again = 0;
    while (read(g_signal_pipe[0], &again, 1) < 0 && errno == EINTR) {
    }
    if (again != 0) std::_Exit(128 + again);
  });
  second_signal.detach();
  const absl::Time deadline = absl::Now() + absl::GetFlag(FLAGS_drain_grace_period);
  // Backstop (issue 14.2): the drain bounds jobs and RPCs by the deadline,
  // but not a completion callback's POST or a sweep's output copy in
  // progress; whatever still runs a second past it, the process exits.
  // Nothing is lost: every store write is committed when it returns, and a
  // job left RUNNING is re-queued at the next start.
  std::thread backstop([deadline, json] {
    absl::SleepFor(deadline + absl::Seconds(1) - absl::Now());
    const std::string message = "the drain outlasted --drain_grace_period; exiting now";
    if (json) {
      Log(LogLevel::kWarning, message);
    } else {
      std::cout << "freezetune-server: " << message << std::endl;
    }
    std::fflush(nullptr);
    std::_Exit(0);
  });
  backstop.detach();
  (*server)->Shutdown(deadline);
  if (const size_t abandoned = (*server)->abandoned_runs(); abandoned > 0) {
    // Their jobs are QUEUED in the store; destroying the server would wait
    // for their steps, so the process ends here without destructors.
    const std::string message = absl::StrCat(
        "stopped without waiting for ", abandoned,
        " training step(s) (their jobs are QUEUED and resume from their last checkpoint)");
    if (json) {
      Log(LogLevel::kInfo, message);
    } else {
      std::cout << "freezetune-server: " << message << std::endl;
    }
    std::fflush(nullptr);
    std::_Exit(0);
  }
  server->reset();
  if (json) {
    Log(LogLevel::kInfo, "stopped");
  } else {
    std::cout << "freezetune-server: stopped" << std::endl;
  }
  return 0;
}
