// freezetune client library: the one public header.
//
// A Client talks to a freezetune server's FineTuneService over gRPC. It adds
// what every caller would otherwise rewrite: bearer-token metadata, deadlines,
// retries with exponential backoff for idempotent calls, page-token following
// for ListJobs and ListSweeps, and a WatchJob stream that reconnects by itself and resumes
// from the last sequence it delivered, so callers see every event exactly once.
//
// Errors are absl::Status values carrying the server's gRPC code and message
// unchanged (gRPC and Abseil share the numeric codes).
//
// This header deliberately exposes only the generated protobuf messages (the
// API) and Abseil; no gRPC headers leak into callers (pimpl).
//
// Thread safety: a Client is thread-compatible for construction and
// destruction and thread-safe for all calls (the underlying gRPC channel is
// shared). A WatchStream or JobIterator is used by one thread at a time, except
// WatchStream::Cancel(), which any thread may call. Both borrow the Client that
// made them: the Client must outlive them.
#ifndef FREEZETUNE_CLIENT_H_
#define FREEZETUNE_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune {

struct ClientOptions {
  // host:port (or any gRPC target such as "unix:/path").
  std::string target = "127.0.0.1:50051";
  // Sent as "authorization: Bearer <token>" on every call when non-empty.
  std::string token;
  // TLS: the PEM files are read once by Connect(). Without ca_cert_file the
  // system roots are used. client_cert_file and client_key_file go together
  // (mutual TLS).
  bool tls = false;
  std::string ca_cert_file;
  std::string client_cert_file;
  std::string client_key_file;
  // Deadline of each unary attempt. WatchJob has no deadline.
  absl::Duration default_deadline = absl::Seconds(30);
  // Extra attempts after an UNAVAILABLE for idempotent unary calls.
  int max_retries = 4;
  // Backoff before retry k (0-based) is initial_backoff * 2^k, capped at
  // max_backoff, with +-20% jitter.
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // Once a watch has delivered an event, it keeps reconnecting (with the same
  // backoff) while the server is unreachable, for at most this long since the
  // last event: long enough to ride out a server restart. Before the first
  // event it gives up after max_retries, like a unary call, so an unreachable
  // server is reported quickly.
  absl::Duration watch_reconnect_window = absl::Seconds(60);
};

class Client;

// A blocking, self-resuming iterator over one job's events.
//
//   std::unique_ptr<WatchStream> stream = client->OpenWatch(job_id, 0);
//   v1::JobEvent ev;
//   while (stream->Next(&ev)) { ... }
//   if (!stream->status().ok()) { ... }
//
// Next() returns false after the job's terminal event was delivered (a
// StateChange to SUCCEEDED, FAILED or CANCELLED), when the server ended the
// stream with OK for a finished job, on a non-retryable error, or after
// Cancel(). status() is then OK for the first two, the error otherwise
// (CANCELLED after Cancel()). Events come in strictly increasing sequence with
// no gaps; a gap the server cannot fill is reported as DATA_LOSS.
class WatchStream {
 public:
  ~WatchStream();
  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;

  bool Next(v1::JobEvent* event);
  absl::Status status() const;
  // Sequence of the last event delivered (after_sequence before the first).
  int64_t last_sequence() const;
  // How many times the stream was re-opened after a drop.
  int reconnects() const;
  // Thread-safe: ends the stream; a blocked Next() returns false soon.
  void Cancel();

 private:
  friend class Client;
  struct Impl;
  explicit WatchStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Iterates over ListJobs results, fetching the next page when one runs out.
// Next() returns false at the end or on an error; status() tells which.
class JobIterator {
 public:
  bool Next(v1::Job* job);
  const absl::Status& status() const { return status_; }
  // Pages fetched so far.
  int pages() const { return pages_; }

 private:
  friend class Client;
  JobIterator(const Client* client, v1::ListJobsRequest request, int limit);
  const Client* client_;
  v1::ListJobsRequest request_;
  int limit_;  // 0: no limit
  int returned_ = 0;
  int pages_ = 0;
  bool done_ = false;
  std::vector<v1::Job> page_;
  size_t next_ = 0;
  absl::Status status_;
};

class Client {
 public:
  // Creates the channel (lazily connected: an unreachable server shows up as
  // UNAVAILABLE on the first call). Fails with INVALID_ARGUMENT / NOT_FOUND
  // for bad options or unreadable TLS files.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const;

  // Retried on UNAVAILABLE only when job.client_request_id is set (the server
  // makes such submits idempotent); otherwise a lost reply must not queue the
  // job twice.
  absl::StatusOr<v1::Job> Submit(const v1::FineTuneJob& job) const;
  absl::StatusOr<v1::Job> Get(absl::string_view job_id) const;
  // One page, as the server returns it.
  absl::StatusOr<v1::ListJobsResponse> ListPage(
      const v1::ListJobsRequest& request) const;
  // Every job in `states` (all when empty), newest first, following page
  // tokens. page_size 0 uses the server's default; limit 0 means no limit.
  JobIterator List(std::vector<v1::JobState> states = {}, int page_size = 0,
                   int limit = 0) const;
  absl::StatusOr<std::vector<v1::Job>> ListAll(
      std::vector<v1::JobState> states = {}, int page_size = 0,
      int limit = 0) const;
  absl::StatusOr<v1::Job> Cancel(absl::string_view job_id) const;
  absl::StatusOr<v1::PlanFreezeResponse> PlanFreeze(
      const v1::PlanFreezeRequest& request) const;

  // Calls `on_event` for each event after `after_sequence`, exactly once each
  // and in order, reconnecting as WatchStream does. Returns OK when the job's
  // terminal event was delivered or the server ended the stream for a finished
  // job, OK as well when on_event returned false (the caller stopped), else
  // the error. on_event runs on the calling thread.
  using EventCallback = std::function<bool(const v1::JobEvent&)>;
  absl::Status Watch(absl::string_view job_id, int64_t after_sequence,
                     const EventCallback& on_event) const;
  // The same as a blocking iterator (see WatchStream).
  std::unique_ptr<WatchStream> OpenWatch(absl::string_view job_id,
                                         int64_t after_sequence = 0) const;

  // Freeze sweeps. SubmitSweep is not retried (a lost reply must not start
  // the sweep twice); Get/Cancel are retried on UNAVAILABLE like Get/Cancel.
  absl::StatusOr<v1::Sweep> SubmitSweep(const v1::SweepSpec& sweep) const;
  absl::StatusOr<v1::Sweep> GetSweep(absl::string_view sweep_id) const;
  absl::StatusOr<v1::Sweep> CancelSweep(absl::string_view sweep_id) const;
  // One page of sweeps, as the server returns it (retried like ListPage).
  absl::StatusOr<v1::ListSweepsResponse> ListSweepsPage(
      const v1::ListSweepsRequest& request) const;
  // Every sweep in `states` (all when empty), newest first, following page
  // tokens as ListAll does. page_size 0 uses the server's default; limit 0
  // means no limit.
  absl::StatusOr<std::vector<v1::Sweep>> ListSweeps(
      std::vector<v1::SweepState> states = {}, int page_size = 0,
      int limit = 0) const;
  // Calls `on_event` for each sweep event after `after_sequence`, exactly
  // once each and in order, reopening the stream after UNAVAILABLE (up to
  // max_retries times in a row) from the last delivered sequence. Returns
  // OK after the sweep's final event (SweepEvent.result) or when on_event
  // returned false, else the error. on_event runs on the calling thread.
  using SweepEventCallback = std::function<bool(const v1::SweepEvent&)>;
  absl::Status WatchSweep(absl::string_view sweep_id, int64_t after_sequence,
                          const SweepEventCallback& on_event) const;

 private:
  friend class WatchStream;
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);

}  // namespace freezetune

#endif  // FREEZETUNE_CLIENT_H_
