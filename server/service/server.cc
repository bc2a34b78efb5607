#include "server/service/server.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/base/log.h"
#include "server/common/status_macros.h"

namespace freezetune::service {
namespace {

constexpr char kServiceName[] = "freezetune.v1.FineTuneService";

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* field) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(field, ": cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The key must be the private key of the chain's first certificate: gRPC
// would only say that it cannot listen.
absl::Status CheckKeyMatchesCertificate(const ServerOptions& o, const std::string& cert_pem,
                                        const std::string& key_pem) {
  using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
  Bio cert_bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())), &BIO_free);
  Bio key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), &BIO_free);
  if (cert_bio == nullptr || key_bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("tls_cert: ", o.tls_cert_file, " holds no PEM certificate"));
  }
  // An empty passphrase callback: an encrypted key fails instead of
  // prompting on the terminal.
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr,
                              [](char*, int, int, void*) { return 0; }, nullptr),
      &EVP_PKEY_free);
  if (key == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("tls_key: ", o.tls_key_file,
                     " holds no PEM private key (encrypted keys are not supported)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("tls_key: ", o.tls_key_file, " does not match the certificate in ",
                     o.tls_cert_file, " (the private key of its first certificate is needed)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert_file.empty() && o.tls_key_file.empty()) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("tls_client_ca: needs tls_cert and tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert_file.empty()) return absl::InvalidArgumentError("tls_cert: required with tls_key");
  if (o.tls_key_file.empty()) return absl::InvalidArgumentError("tls_key: required with tls_cert");
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  FT_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(o.tls_cert_file, "tls_cert"));
  FT_ASSIGN_OR_RETURN(pair.private_key, ReadPem(o.tls_key_file, "tls_key"));
  FT_RETURN_IF_ERROR(CheckKeyMatchesCertificate(o, pair.cert_chain, pair.private_key));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.tls_client_ca_file.empty()) {
    FT_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(o.tls_client_ca_file, "tls_client_ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Queues the callbacks that ended jobs and sweeps still owe (the notifier
// skips those it already has and those past their max age): a crash between
// a terminal event and its queue row loses nothing.
absl::Status ReconcileNotifications(jobs::JobManager& jobs, sweeps::SweepManager& sweeps,
                                    notify::Notifier& notifier) {
  v1::ListJobsRequest job_page;
  job_page.set_page_size(500);  // the largest page
  for (v1::JobState s : {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    job_page.add_states(s);
  }
  do {
    FT_ASSIGN_OR_RETURN(v1::ListJobsResponse page, jobs.List(job_page));
    for (const v1::Job& job : page.jobs()) FT_RETURN_IF_ERROR(notifier.JobEnded(job));
    job_page.set_page_token(page.next_page_token());
  } while (!job_page.page_token().empty());
  v1::ListSweepsRequest sweep_page;
  sweep_page.set_page_size(500);  // the largest page
  for (v1::SweepState s :
       {v1::SWEEP_STATE_SUCCEEDED, v1::SWEEP_STATE_FAILED, v1::SWEEP_STATE_CANCELLED}) {
    sweep_page.add_states(s);
  }
  do {
    FT_ASSIGN_OR_RETURN(v1::ListSweepsResponse page, sweeps.List(sweep_page));
    for (const v1::Sweep& sweep : page.sweeps()) FT_RETURN_IF_ERROR(notifier.SweepEnded(sweep));
    sweep_page.set_page_token(page.next_page_token());
  } while (!sweep_page.page_token().empty());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  if (options.listen_address.empty()) return absl::InvalidArgumentError("listen: required");
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes: must be positive");
  }
  if (options.max_concurrent_streams < 0) {
    return absl::InvalidArgumentError("max_concurrent_streams: must not be negative");
  }
  FT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(options));
  std::unique_ptr<Server> server(new Server());
  FT_ASSIGN_OR_RETURN(server->metrics_, metrics::Metrics::Create(options.metrics));

  // Completion callbacks: the queue and notifier exist before the managers
  // (whose end hooks queue into it); the worker starts after them.
  std::error_code ec;
  std::filesystem::create_directories(options.jobs.data_dir, ec);
  FT_ASSIGN_OR_RETURN(server->notify_queue_,
                      notify::SqliteQueue::Open((std::filesystem::path(options.jobs.data_dir) /
                                                 "notifications.db")
                                                    .string()));
  server->notify_metrics_ = std::make_unique<metrics::NotifyMetrics>(*server->metrics_->registry());
  metrics::NotifyMetrics* notify_metrics = server->notify_metrics_.get();
  options.notify.hooks.attempt = [notify_metrics](bool ok) { notify_metrics->Attempt(ok); };
  options.notify.hooks.abandoned = [notify_metrics] { notify_metrics->Abandoned(); };
  options.notify.hooks.pending = [notify_metrics](int64_t n) { notify_metrics->SetPending(n); };
  options.notify.hooks.log = [](const notify::Notification& n, absl::string_view what) {
    const bool job = n.event == "job.ended";
    base::Log(base::LogLevel::kWarning, what, job ? n.id : std::string(),
              {{job ? "event" : "sweep_id", job ? n.event : n.id},
               {"attempts", absl::StrCat(n.attempts)},
               {"error", n.last_error}});
  };
  server->notifier_ =
      std::make_unique<notify::Notifier>(server->notify_queue_.get(), options.notify);
  notify::Notifier* notifier = server->notifier_.get();
  options.jobs.notify.validate = [notifier](const v1::Notify& n, const std::string& tenant,
                                            const std::string& field) {
    return notify::ValidateNotify(n, tenant, notifier->options(), field);
  };
  options.jobs.notify.job_ended = [notifier](const v1::Job& job) {
    if (absl::Status s = notifier->JobEnded(job); !s.ok()) {
      base::Log(base::LogLevel::kError, "cannot queue the completion callback", job.id(),
                {{"error", s.ToString()}});
    }
  };
  options.sweeps.sweep_ended = [notifier](const v1::Sweep& sweep) {
    if (absl::Status s = notifier->SweepEnded(sweep); !s.ok()) {
      base::Log(base::LogLevel::kError, "cannot queue the completion callback", {},
                {{"sweep_id", sweep.id()}, {"error", s.ToString()}});
    }
  };

  FT_ASSIGN_OR_RETURN(server->manager_,
                      jobs::JobManager::Create(options.jobs, std::move(options.hooks),
                                               server->metrics_.get()));
  FT_ASSIGN_OR_RETURN(server->sweeps_,
                      sweeps::SweepManager::Create(server->manager_.get(), options.sweeps,
                                                 server->metrics_.get()));
  if (absl::Status s = ReconcileNotifications(*server->manager_, *server->sweeps_, *notifier);
      !s.ok()) {
    server->sweeps_->Shutdown();
    server->manager_->Shutdown();
    return s;
  }
  notifier->Start();
  server->service_ = std::make_unique<FineTuneServiceImpl>(
      server->manager_.get(), server->metrics_.get(), options.service, server->sweeps_.get());

  // Process-wide switches; both must be set before a builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  if (options.max_concurrent_streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  }
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_min_ping_interval)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                             options.keepalive_permit_without_calls ? 1 : 0);
  if (options.keepalive_time > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    // Nothing is serving; stop the workers started above.
    server->sweeps_->Shutdown();
    server->manager_->Shutdown();
    server->notifier_->Stop();
    return absl::UnavailableError(
        absl::StrCat("listen: cannot listen on ", options.listen_address));
  }
  // Health follows the job store: NOT_SERVING while it cannot be reached
  // (the probe) or refuses writes (a full disk, issue 14.3: the store's
  // listener runs on the writing thread after each refusal and at the first
  // write that succeeds again).
  Server* self = server.get();
  server->manager_->store()->AddWriteListener(
      [self](const absl::Status& result) { self->OnStoreWritable(result.ok()); });
  {
    // Read under serving_mu_: a listener call that comes later carries a
    // newer state and is applied after this.
    absl::MutexLock lock(&server->serving_mu_);
    server->store_writable_ = server->manager_->store()->writable();
    server->SetServing(server->store_writable_);
  }
  if (options.store_probe_interval > absl::ZeroDuration()) {
    server->store_probe_ = std::make_unique<store::StoreProbe>(
        server->manager_->store(), options.store_probe_interval,
        [self](bool reachable) { self->OnStoreReachable(reachable); });
  }
  return server;
}

// Without a Shutdown, running jobs stop at their next micro-batch (waited
// for) and in-flight RPCs are cancelled at once.
Server::~Server() { Drain(absl::InfiniteFuture(), absl::Now()); }

void Server::SetServing(bool serving) {
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

void Server::OnStoreReachable(bool reachable) {
  absl::MutexLock lock(&serving_mu_);
  store_reachable_ = reachable;
  if (!draining_) SetServing(store_reachable_ && store_writable_);
}

void Server::OnStoreWritable(bool writable) {
  absl::MutexLock lock(&serving_mu_);
  store_writable_ = writable;
  if (!draining_) SetServing(store_reachable_ && store_writable_);
}

void Server::Shutdown(absl::Time deadline) {
  // Jobs get the grace period less a reserve for what follows their
  // deadline (handing back the ones still in a step, the gRPC shutdown).
  const absl::Duration left = std::max(absl::ZeroDuration(), deadline - absl::Now());
  Drain(deadline - std::min(absl::Seconds(1), left / 5), deadline);
}

void Server::Drain(absl::Time jobs_deadline, absl::Time rpc_deadline) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  {
    absl::MutexLock serving(&serving_mu_);
    draining_ = true;
    SetServing(false);
  }
  store_probe_.reset();
  if (sweeps_ != nullptr) sweeps_->Shutdown();
  if (manager_ != nullptr) manager_->Shutdown(jobs_deadline);
  // After the managers: jobs stopped by the drain are QUEUED, not ended.
  if (notifier_ != nullptr) notifier_->Stop();
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(rpc_deadline));
    server_->Wait();
  }
  // Reactors are done; now the service (and its pool) can go.
  service_.reset();
}

}  // namespace freezetune::service
