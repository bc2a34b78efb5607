// Implementation of freezetune/client.h over the generated gRPC stub.
#include "freezetune/client.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "freezetune/v1/freezetune.grpc.pb.h"

namespace freezetune {
namespace {

// gRPC and Abseil share the numeric status codes, so the server's code and
// message pass through unchanged.
absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", what, " file '", path, "'"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

struct Client::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::FineTuneService::Stub> stub;
  mutable absl::Mutex rng_mu;
  mutable std::minstd_rand rng ABSL_GUARDED_BY(rng_mu){std::random_device{}()};

  // Adds auth metadata and, for unary calls, the deadline.
  void Prepare(grpc::ClientContext* ctx, bool with_deadline) const {
    if (!options.token.empty()) {
      ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
    }
    if (with_deadline && options.default_deadline > absl::ZeroDuration() &&
        options.default_deadline != absl::InfiniteDuration()) {
      ctx->set_deadline(
          absl::ToChronoTime(absl::Now() + options.default_deadline));
    }
  }

  // initial_backoff * 2^attempt, capped, with +-20% jitter so that many
  // clients do not hammer a restarting server in lockstep.
  absl::Duration Backoff(int attempt) const {
    absl::Duration d = options.initial_backoff;
    for (int i = 0; i < attempt && d < options.max_backoff; ++i) d *= 2;
    if (d > options.max_backoff) d = options.max_backoff;
    double jitter;
    {
      absl::MutexLock lock(&rng_mu);
      jitter = std::uniform_real_distribution<double>(0.8, 1.2)(rng);
    }
    return d * jitter;
  }

  // Runs one unary RPC; when `retry`, again after UNAVAILABLE up to
  // max_retries times. Only idempotent calls may pass retry = true.
  template <typename Req, typename Resp, typename Method>
  absl::StatusOr<Resp> Unary(Method method, const Req& request,
                             bool retry) const {
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      Prepare(&ctx, /*with_deadline=*/true);
      Resp response;
      grpc::Status s = (stub.get()->*method)(&ctx, request, &response);
      if (s.ok()) return response;
      if (!retry || s.error_code() != grpc::StatusCode::UNAVAILABLE ||
          attempt >= options.max_retries) {
        return FromGrpc(s);
      }
      absl::SleepFor(Backoff(attempt));
    }
  }

  absl::StatusOr<v1::Job> Get(absl::string_view job_id) const {
    v1::GetJobRequest req;
    req.set_job_id(std::string(job_id));
    return Unary<v1::GetJobRequest, v1::Job>(&v1::FineTuneService::Stub::GetJob,
                                             req, true);
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("client: empty server target");
  }
  if (options.max_retries < 0) {
    return absl::InvalidArgumentError("client: max_retries must be >= 0");
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_cert_file.empty()) {
      absl::StatusOr<std::string> ca = ReadFile(options.ca_cert_file, "CA cert");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (options.client_cert_file.empty() != options.client_key_file.empty()) {
      return absl::InvalidArgumentError(
          "client: a client certificate needs its key and vice versa");
    }
    if (!options.client_cert_file.empty()) {
      absl::StatusOr<std::string> cert =
          ReadFile(options.client_cert_file, "client cert");
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key =
          ReadFile(options.client_key_file, "client key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    if (!options.ca_cert_file.empty() || !options.client_cert_file.empty()) {
      return absl::InvalidArgumentError(
          "client: certificate files given without tls");
    }
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetUserAgentPrefix("freezetune-client/0.1");
  auto impl = std::make_unique<Impl>();
  impl->channel = grpc::CreateCustomChannel(options.target, creds, args);
  impl->stub = v1::FineTuneService::NewStub(impl->channel);
  impl->options = std::move(options);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const ClientOptions& Client::options() const { return impl_->options; }

absl::StatusOr<v1::Job> Client::Submit(const v1::FineTuneJob& job) const {
  v1::SubmitJobRequest req;
  *req.mutable_job() = job;
  // Without a client_request_id a retry after a lost reply would queue the
  // job twice, so only keyed submits are retried.
  return impl_->Unary<v1::SubmitJobRequest, v1::Job>(
      &v1::FineTuneService::Stub::SubmitJob, req,
      !job.client_request_id().empty());
}

absl::StatusOr<v1::Job> Client::Get(absl::string_view job_id) const {
  return impl_->Get(job_id);
}

absl::StatusOr<v1::ListJobsResponse> Client::ListPage(
    const v1::ListJobsRequest& request) const {
  return impl_->Unary<v1::ListJobsRequest, v1::ListJobsResponse>(
      &v1::FineTuneService::Stub::ListJobs, request, true);
}

JobIterator Client::List(std::vector<v1::JobState> states, int page_size,
                         int limit) const {
  v1::ListJobsRequest req;
  for (v1::JobState s : states) req.add_states(s);
  req.set_page_size(page_size);
  return JobIterator(this, std::move(req), limit);
}

absl::StatusOr<std::vector<v1::Job>> Client::ListAll(
    std::vector<v1::JobState> states, int page_size, int limit) const {
  JobIterator it = List(std::move(states), page_size, limit);
  std::vector<v1::Job> jobs;
  v1::Job job;
  while (it.Next(&job)) jobs.push_back(std::move(job));
  if (!it.status().ok()) return it.status();
  return jobs;
}

absl::StatusOr<v1::Job> Client::Cancel(absl::string_view job_id) const {
  v1::CancelJobRequest req;
  req.set_job_id(std::string(job_id));
  // Cancelling twice is harmless: the second answers FAILED_PRECONDITION,
  // which the caller sees only if the first reply was really lost.
  return impl_->Unary<v1::CancelJobRequest, v1::Job>(
      &v1::FineTuneService::Stub::CancelJob, req, true);
}

absl::StatusOr<v1::PlanFreezeResponse> Client::PlanFreeze(
    const v1::PlanFreezeRequest& request) const {
  return impl_->Unary<v1::PlanFreezeRequest, v1::PlanFreezeResponse>(
      &v1::FineTuneService::Stub::PlanFreeze, request, true);
}

// ---------------------------------------------------------------------------
// JobIterator

JobIterator::JobIterator(const Client* client, v1::ListJobsRequest request,
                         int limit)
    : client_(client), request_(std::move(request)), limit_(limit) {}

bool JobIterator::Next(v1::Job* job) {
  while (true) {
    if (limit_ > 0 && returned_ >= limit_) return false;
    if (next_ < page_.size()) {
      *job = std::move(page_[next_++]);
      ++returned_;
      return true;
    }
    if (done_) return false;
    absl::StatusOr<v1::ListJobsResponse> resp = client_->ListPage(request_);
    if (!resp.ok()) {
      status_ = resp.status();
      done_ = true;
      return false;
    }
    ++pages_;
    page_.assign(std::make_move_iterator(resp->mutable_jobs()->begin()),
                 std::make_move_iterator(resp->mutable_jobs()->end()));
    next_ = 0;
    // A server that hands back the token it was given would loop forever.
    if (resp->next_page_token().empty() ||
        resp->next_page_token() == request_.page_token()) {
      done_ = true;
    } else {
      request_.set_page_token(resp->next_page_token());
    }
  }
}

// ---------------------------------------------------------------------------
// WatchStream

struct WatchStream::Impl {
  const Client::Impl* client;
  std::string job_id;
  int64_t last_sequence;

  mutable absl::Mutex mu;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  // The current attempt's context; replaced on reconnect. Cancel() reaches it
  // through mu; the reading thread owns `reader`.
  std::unique_ptr<grpc::ClientContext> ctx ABSL_GUARDED_BY(mu);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader;

  bool done = false;
  absl::Status status;
  int reconnects = 0;
  int failures = 0;  // consecutive failed attempts since the last event
  bool got_event = false;
  absl::Time last_progress = absl::Now();

  void Open() {
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_after_sequence(last_sequence);
    absl::MutexLock lock(&mu);
    ctx = std::make_unique<grpc::ClientContext>();
    client->Prepare(ctx.get(), /*with_deadline=*/false);
    if (cancelled) ctx->TryCancel();
    reader = client->stub->WatchJob(ctx.get(), req);
  }

  // Ends the current attempt (if any) and returns its status.
  grpc::Status Close(bool cancel_first) {
    if (!reader) return grpc::Status::OK;
    if (cancel_first) {
      absl::MutexLock lock(&mu);
      ctx->TryCancel();
    }
    grpc::Status s = reader->Finish();
    reader.reset();
    absl::MutexLock lock(&mu);
    ctx.reset();
    return s;
  }

  bool Finish(absl::Status s) {
    done = true;
    status = std::move(s);
    Close(/*cancel_first=*/true);
    return false;
  }

  bool IsCancelled() const {
    absl::MutexLock lock(&mu);
    return cancelled;
  }

  // The server ended the stream with OK. That means "no more events" only if
  // the job is finished and we have its last event; a server that drained
  // watchers early (or a proxy) would otherwise make us stop too soon.
  bool StreamReallyComplete() const {
    absl::StatusOr<v1::Job> job = client->Get(job_id);
    if (!job.ok()) return true;  // trust the server's OK
    return IsTerminal(job->state()) && job->last_sequence() <= last_sequence;
  }

  bool Next(v1::JobEvent* event) {
    while (!done) {
      if (!reader) Open();
      v1::JobEvent ev;
      if (reader->Read(&ev)) {
        if (ev.sequence() <= last_sequence) continue;  // replayed: skip
        if (ev.sequence() != last_sequence + 1) {
          return Finish(absl::DataLossError(absl::StrCat(
              "watch ", job_id, ": expected event ", last_sequence + 1,
              ", server sent ", ev.sequence())));
        }
        last_sequence = ev.sequence();
        failures = 0;
        got_event = true;
        last_progress = absl::Now();
        *event = std::move(ev);
        if (event->has_state_change() &&
            IsTerminal(event->state_change().state())) {
          // The terminal event is the last one; do not wait for the server
          // to close the stream.
          Finish(absl::OkStatus());
        }
        return true;
      }
      grpc::Status s = Close(/*cancel_first=*/false);
      if (IsCancelled()) return Finish(absl::CancelledError("watch cancelled"));
      bool retryable = false;
      if (s.ok()) {
        if (StreamReallyComplete()) return Finish(absl::OkStatus());
        retryable = true;
      } else {
        // CANCELLED that we did not ask for comes from the server going away
        // (shutdown with a deadline); ABORTED is retryable by definition.
        retryable = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                    s.error_code() == grpc::StatusCode::ABORTED ||
                    s.error_code() == grpc::StatusCode::CANCELLED;
      }
      absl::Status err =
          s.ok() ? absl::UnavailableError("watch stream ended early")
                 : FromGrpc(s);
      if (!retryable) return Finish(err);
      const bool give_up =
          got_event
              ? absl::Now() - last_progress > client->options.watch_reconnect_window
              : failures >= client->options.max_retries;
      if (give_up) return Finish(err);
      absl::Duration wait = client->Backoff(failures++);
      {
        // Sleep, but wake at once on Cancel().
        absl::MutexLock lock(&mu);
        mu.AwaitWithTimeout(absl::Condition(&cancelled), wait);
        if (cancelled) {
          done = true;
          status = absl::CancelledError("watch cancelled");
          return false;
        }
      }
      ++reconnects;
    }
    return false;
  }
};

WatchStream::WatchStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WatchStream::~WatchStream() {
  if (impl_ && impl_->reader) impl_->Close(/*cancel_first=*/true);
}

bool WatchStream::Next(v1::JobEvent* event) { return impl_->Next(event); }
absl::Status WatchStream::status() const { return impl_->status; }
int64_t WatchStream::last_sequence() const { return impl_->last_sequence; }
int WatchStream::reconnects() const { return impl_->reconnects; }

void WatchStream::Cancel() {
  absl::MutexLock lock(&impl_->mu);
  impl_->cancelled = true;
  if (impl_->ctx) impl_->ctx->TryCancel();
}

std::unique_ptr<WatchStream> Client::OpenWatch(absl::string_view job_id,
                                               int64_t after_sequence) const {
  auto impl = std::make_unique<WatchStream::Impl>();
  impl->client = impl_.get();
  impl->job_id = std::string(job_id);
  impl->last_sequence = after_sequence < 0 ? 0 : after_sequence;
  return std::unique_ptr<WatchStream>(new WatchStream(std::move(impl)));
}

absl::Status Client::Watch(absl::string_view job_id, int64_t after_sequence,
                           const EventCallback& on_event) const {
  std::unique_ptr<WatchStream> stream = OpenWatch(job_id, after_sequence);
  v1::JobEvent event;
  while (stream->Next(&event)) {
    if (!on_event(event)) return absl::OkStatus();
  }
  return stream->status();
}

absl::StatusOr<v1::Sweep> Client::SubmitSweep(const v1::SweepSpec& sweep) const {
  v1::SubmitSweepRequest req;
  *req.mutable_sweep() = sweep;
  return impl_->Unary<v1::SubmitSweepRequest, v1::Sweep>(
      &v1::FineTuneService::Stub::SubmitSweep, req, false);
}

absl::StatusOr<v1::Sweep> Client::GetSweep(absl::string_view sweep_id) const {
  v1::GetSweepRequest req;
  req.set_sweep_id(std::string(sweep_id));
  return impl_->Unary<v1::GetSweepRequest, v1::Sweep>(&v1::FineTuneService::Stub::GetSweep,
                                                      req, true);
}

absl::StatusOr<v1::Sweep> Client::CancelSweep(absl::string_view sweep_id) const {
  v1::CancelSweepRequest req;
  req.set_sweep_id(std::string(sweep_id));
  return impl_->Unary<v1::CancelSweepRequest, v1::Sweep>(
      &v1::FineTuneService::Stub::CancelSweep, req, true);
}

absl::StatusOr<v1::ListSweepsResponse> Client::ListSweepsPage(
    const v1::ListSweepsRequest& request) const {
  return impl_->Unary<v1::ListSweepsRequest, v1::ListSweepsResponse>(
      &v1::FineTuneService::Stub::ListSweeps, request, true);
}

absl::StatusOr<std::vector<v1::Sweep>> Client::ListSweeps(
    std::vector<v1::SweepState> states, int page_size, int limit) const {
  v1::ListSweepsRequest req;
  for (v1::SweepState s : states) req.add_states(s);
  req.set_page_size(page_size);
  std::vector<v1::Sweep> sweeps;
  while (true) {
    absl::StatusOr<v1::ListSweepsResponse> page = ListSweepsPage(req);
    if (!page.ok()) return page.status();
    for (v1::Sweep& sweep : *page->mutable_sweeps()) {
      if (limit > 0 && static_cast<int>(sweeps.size()) >= limit) return sweeps;
      sweeps.push_back(std::move(sweep));
    }
    // A server that hands back the token it was given would loop forever.
    if (page->next_page_token().empty() || page->next_page_token() == req.page_token()) {
      return sweeps;
    }
    req.set_page_token(page->next_page_token());
  }
}

absl::Status Client::WatchSweep(absl::string_view sweep_id, int64_t after_sequence,
                                const SweepEventCallback& on_event) const {
  int64_t after = after_sequence;
  for (int failures = 0;;) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, /*with_deadline=*/false);
    v1::WatchSweepRequest req;
    req.set_sweep_id(std::string(sweep_id));
    req.set_after_sequence(after);
    std::unique_ptr<grpc::ClientReader<v1::SweepEvent>> reader =
        impl_->stub->WatchSweep(&ctx, req);
    v1::SweepEvent event;
    bool final_seen = false;
    while (reader->Read(&event)) {
      if (event.sequence() <= after) continue;
      after = event.sequence();
      failures = 0;
      final_seen = event.has_result();
      if (!on_event(event)) {
        ctx.TryCancel();
        reader->Finish().ok();
        return absl::OkStatus();
      }
    }
    grpc::Status s = reader->Finish();
    if (s.ok() || final_seen) return absl::OkStatus();
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE || failures >= impl_->options.max_retries) {
      return FromGrpc(s);
    }
    absl::SleepFor(impl_->Backoff(failures++));
  }
}

}  // namespace freezetune
