#include "server/store/store.h"

#include <algorithm>
#include <functional>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/base/page_token.h"
#include "server/common/status_macros.h"
#include "server/store/postgres_backend.h"
#include "server/store/sqlite_backend.h"

namespace freezetune::store {
namespace {

// Page token kinds (page_token.h): "v1" for jobs since before sweeps had
// listings, so old job tokens stay valid; a token of one list is rejected
// by the other.
constexpr char kJobPageTokenKind[] = "v1";
constexpr char kSweepPageTokenKind[] = "sweeps-v1";

std::string Key(Kind kind, const std::string& id) {
  return absl::StrCat(kind == Kind::kJob ? "job/" : "sweep/", id);
}

const char* Noun(Kind kind) { return kind == Kind::kJob ? "job" : "sweep"; }

int64_t StateMask(const std::vector<int>& states) {
  int64_t mask = 0;
  for (int s : states) {
    if (s >= 0 && s < 62) mask |= int64_t{1} << s;
  }
  return mask;
}

// The record of `row`, parsed, with the authoritative last_sequence.
template <typename Record>
absl::StatusOr<Record> Parse(Kind kind, const Row& row) {
  Record record;
  if (!record.ParseFromString(row.record)) {
    return absl::DataLossError(
        absl::StrCat("job store: ", Noun(kind), " ", row.id, " record is corrupt"));
  }
  record.set_last_sequence(row.last_sequence);
  return record;
}

template <typename Event>
absl::StatusOr<std::vector<Event>> ParseEvents(
    Kind kind, const std::string& id, const std::vector<std::pair<int64_t, std::string>>& raw) {
  std::vector<Event> events;
  events.reserve(raw.size());
  for (const auto& [sequence, bytes] : raw) {
    Event event;
    if (!event.ParseFromString(bytes)) {
      return absl::DataLossError(absl::StrCat("job store: event ", sequence, " of ", Noun(kind),
                                              " ", id, " is corrupt"));
    }
    events.push_back(std::move(event));
  }
  return events;
}

Row JobRow(const v1::Job& job) {
  Row row;
  row.id = job.id();
  row.tenant = job.tenant();
  row.client_request_id = job.spec().client_request_id();
  row.state = job.state();
  row.create_micros = ToMicros(job.create_time());
  row.spec = job.spec().SerializeAsString();
  row.record = job.SerializeAsString();
  row.priority = job.spec().priority();
  row.device = job.spec().device();
  row.slots = std::max(1, job.spec().resources().data_parallel());
  return row;
}

Row SweepRow(const v1::Sweep& sweep) {
  Row row;
  row.id = sweep.id();
  row.tenant = sweep.tenant();
  row.client_request_id = sweep.spec().client_request_id();
  row.state = sweep.state();
  row.create_micros = ToMicros(sweep.create_time());
  row.spec = sweep.spec().SerializeAsString();
  row.record = sweep.SerializeAsString();
  return row;
}

// One newest-first page of `kind`, each row parsed as Record into `add()`.
template <typename Record, typename ParseFn, typename Add>
absl::StatusOr<std::string> ListPage(Backend& backend, Kind kind, const char* token_kind,
                                     const ListQuery& query, ParseFn parse, Add add) {
  int page_size = query.page_size <= 0 ? Store::kDefaultPageSize : query.page_size;
  if (page_size > Store::kMaxPageSize) page_size = Store::kMaxPageSize;
  RowQuery rows_query;
  rows_query.state_mask = StateMask(query.states);
  rows_query.tenant = query.tenant;
  // One extra row tells whether another page exists.
  rows_query.limit = page_size + 1;
  if (!query.page_token.empty()) {
    int64_t cursor_time = 0;
    std::string cursor_id;
    FT_RETURN_IF_ERROR(
        base::DecodePageToken(token_kind, query.page_token, &cursor_time, &cursor_id));
    rows_query.after = std::make_pair(cursor_time, std::move(cursor_id));
  }
  FT_ASSIGN_OR_RETURN(std::vector<Row> rows, backend.List(kind, rows_query));
  std::string next_page_token;
  if (static_cast<int>(rows.size()) > page_size) {
    rows.resize(page_size);
    next_page_token =
        base::EncodePageToken(token_kind, rows.back().create_micros, rows.back().id);
  }
  const int64_t mask = rows_query.state_mask;
  for (const Row& row : rows) {
    Record record = parse(row);
    // A quarantined row is FAILED now: left out of a listing of other states.
    if (mask != 0 && (mask & (int64_t{1} << record.state())) == 0) continue;
    add(std::move(record));
  }
  return next_page_token;
}

template <typename Record, typename ParseFn>
std::vector<Record> ParseRows(const std::vector<Row>& rows, int64_t mask, ParseFn parse) {
  std::vector<Record> records;
  records.reserve(rows.size());
  for (const Row& row : rows) {
    Record record = parse(row);
    if ((mask & (int64_t{1} << record.state())) == 0) continue;  // quarantined
    records.push_back(std::move(record));
  }
  return records;
}

// What is left of a record that does not parse: its columns (and its spec,
// when that parses), FAILED with `reason`.
v1::Job PlaceholderJob(const Row& row, const std::string& reason) {
  v1::Job job;
  job.set_id(row.id);
  job.set_tenant(row.tenant);
  if (!job.mutable_spec()->ParseFromString(row.spec)) job.clear_spec();
  job.set_state(v1::JOB_STATE_FAILED);
  *job.mutable_create_time() = FromMicros(row.create_micros);
  *job.mutable_end_time() = NowTimestamp();
  job.set_error_message(reason);
  job.set_last_sequence(row.last_sequence);
  return job;
}

v1::Sweep PlaceholderSweep(const Row& row, const std::string& reason) {
  v1::Sweep sweep;
  sweep.set_id(row.id);
  sweep.set_tenant(row.tenant);
  if (!sweep.mutable_spec()->ParseFromString(row.spec)) sweep.clear_spec();
  sweep.set_state(v1::SWEEP_STATE_FAILED);
  *sweep.mutable_create_time() = FromMicros(row.create_micros);
  *sweep.mutable_end_time() = NowTimestamp();
  sweep.set_winner_index(-1);
  sweep.set_error_message(reason);
  sweep.set_last_sequence(row.last_sequence);
  return sweep;
}

}  // namespace

absl::StatusOr<ListQuery> MakeListQuery(int page_size, const std::string& page_token,
                                        const google::protobuf::RepeatedField<int>& states,
                                        bool (*valid)(int), const char* noun,
                                        std::optional<std::string> tenant) {
  if (page_size < 0) return absl::InvalidArgumentError("page_size: must not be negative");
  ListQuery query;
  for (int s : states) {
    if (s == 0 || !valid(s)) {
      return absl::InvalidArgumentError(absl::StrCat("states: invalid ", noun, " state ", s));
    }
    query.states.push_back(s);
  }
  query.tenant = std::move(tenant);
  query.page_size = page_size;
  query.page_token = page_token;
  return query;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (!options.postgres_uri.empty()) {
    PostgresOptions postgres;
    postgres.uri = options.postgres_uri;
    postgres.origin = options.replica_id;
    FT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, OpenPostgresBackend(postgres));
    return std::make_unique<Store>(std::move(backend), options.tail_size, options.replica_id);
  }
  SqliteOptions sqlite;
  sqlite.path = options.path;
  sqlite.legacy_sweeps_path = options.legacy_sweeps_path;
  sqlite.busy_timeout_ms = options.busy_timeout_ms;
  sqlite.max_page_count = options.max_page_count;
  FT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, OpenSqliteBackend(sqlite));
  return std::make_unique<Store>(std::move(backend), options.tail_size);
}

Store::Store(std::unique_ptr<Backend> backend, size_t tail_size, std::string replica_id)
    : backend_(std::move(backend)), replica_id_(std::move(replica_id)), tail_(tail_size) {}

Store::~Store() { backend_->StopListening(); }

absl::Mutex& Store::StripeFor(const std::string& key) {
  return append_stripes_[std::hash<std::string>()(key) % append_stripes_.size()];
}

static_assert(kQueuedJobState == v1::JOB_STATE_QUEUED, "backend.h: kQueuedJobState");

// --- Jobs -------------------------------------------------------------------

absl::StatusOr<Store::CreateJobResult> Store::CreateJob(const v1::Job& job,
                                                        const v1::JobEvent& first_event,
                                                        const OutputClaim* output,
                                                        const QueueLimits& limits) {
  if (job.id().empty()) return absl::InvalidArgumentError("job store: job id is empty");
  v1::JobEvent event = first_event;
  event.set_job_id(job.id());
  event.set_sequence(1);
  if (!event.has_time()) *event.mutable_time() = NowTimestamp();
  std::string bytes = event.SerializeAsString();
  const std::string key = Key(Kind::kJob, job.id());
  std::vector<OutputClaim> claims;
  if (output != nullptr) claims.push_back(*output);
  FT_ASSIGN_OR_RETURN(Backend::CreateOutcome outcome,
                      TrackWrite(backend_->Create({NewRow{Kind::kJob, JobRow(job), bytes}}, claims,
                                                  limits)));
  if (outcome.output_conflict.has_value() || outcome.queue_full.has_value()) {
    return CreateJobResult{job, false, std::move(outcome.output_conflict), outcome.queue_full};
  }
  if (!outcome.created) {
    FT_ASSIGN_OR_RETURN(v1::Job existing, GetJob(outcome.existing_id));
    return CreateJobResult{std::move(existing), false, std::nullopt, std::nullopt};
  }
  // A new resource: nobody appends to it before this returns.
  tail_.Publish(key, 1, std::move(bytes), /*final=*/false);
  hub_.Notify(key);
  v1::Job stored = job;
  stored.set_last_sequence(1);
  return CreateJobResult{std::move(stored), true, std::nullopt, std::nullopt};
}

absl::StatusOr<std::vector<OutputClaim>> Store::LiveClaimsNestedWith(const std::string& path) {
  return backend_->LiveClaimsNestedWith(path);
}

absl::StatusOr<std::optional<v1::Job>> Store::FindJobByClientRequestId(
    const std::string& tenant, const std::string& request_id) {
  if (request_id.empty()) return std::optional<v1::Job>();
  FT_ASSIGN_OR_RETURN(std::string id, backend_->FindByRequestId(Kind::kJob, tenant, request_id));
  if (id.empty()) return std::optional<v1::Job>();
  FT_ASSIGN_OR_RETURN(v1::Job job, GetJob(id));
  return std::optional<v1::Job>(std::move(job));
}

absl::StatusOr<v1::Job> Store::GetJob(const std::string& job_id) {
  FT_ASSIGN_OR_RETURN(std::optional<Row> row, backend_->Get(Kind::kJob, job_id));
  if (!row.has_value()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return ParseOrQuarantine<v1::Job>(Kind::kJob, *row);
}

absl::StatusOr<v1::ListJobsResponse> Store::ListJobs(const ListQuery& query) {
  v1::ListJobsResponse response;
  FT_ASSIGN_OR_RETURN(
      std::string next,
      ListPage<v1::Job>(
          *backend_, Kind::kJob, kJobPageTokenKind, query,
          [this](const Row& row) { return ParseOrQuarantine<v1::Job>(Kind::kJob, row); },
          [&](v1::Job job) { *response.add_jobs() = std::move(job); }));
  response.set_next_page_token(next);
  return response;
}

absl::StatusOr<std::vector<v1::Job>> Store::JobsInStates(const std::vector<v1::JobState>& states) {
  const int64_t mask = StateMask({states.begin(), states.end()});
  FT_ASSIGN_OR_RETURN(std::vector<Row> rows, backend_->InStates(Kind::kJob, mask));
  return ParseRows<v1::Job>(
      rows, mask, [this](const Row& row) { return ParseOrQuarantine<v1::Job>(Kind::kJob, row); });
}

absl::StatusOr<std::map<v1::JobState, int64_t>> Store::CountJobsByState() {
  FT_ASSIGN_OR_RETURN(JobCounts counts, CountJobs());
  return std::move(counts.by_state);
}

absl::StatusOr<Store::JobCounts> Store::CountJobs() {
  FT_ASSIGN_OR_RETURN(auto raw, backend_->CountByState(Kind::kJob));
  JobCounts counts;
  for (const auto& [state, count] : raw) {
    if (!v1::JobState_IsValid(state)) continue;
    counts.by_state[static_cast<v1::JobState>(state)] = count.rows;
    if (state == v1::JOB_STATE_QUEUED && count.rows > 0) {
      counts.oldest_queued = absl::FromUnixMicros(count.oldest_create_micros);
    }
  }
  return counts;
}

absl::Status Store::UpdateJob(const v1::Job& job) {
  return TrackWrite(backend_->Update(Kind::kJob, JobRow(job)));
}

absl::StatusOr<v1::JobEvent> Store::AppendJobEvent(const std::string& job_id, v1::JobEvent event,
                                                   const v1::Job* updated_job,
                                                   const Fence* fence) {
  event.set_job_id(job_id);
  if (!event.has_time()) *event.mutable_time() = NowTimestamp();
  std::optional<Row> row;
  if (updated_job != nullptr) row = JobRow(*updated_job);
  const bool final = event.has_state_change() && IsTerminal(event.state_change().state());
  FT_RETURN_IF_ERROR(Append(
      Kind::kJob, job_id,
      [&](int64_t sequence) {
        event.set_sequence(sequence);
        return event.SerializeAsString();
      },
      row.has_value() ? &*row : nullptr, final, fence));
  return event;
}

absl::StatusOr<std::vector<v1::JobEvent>> Store::ReadJobEvents(const std::string& job_id,
                                                               int64_t after_sequence, int limit) {
  FT_ASSIGN_OR_RETURN(auto raw, ReadEvents(Kind::kJob, job_id, after_sequence, limit));
  return ParseEvents<v1::JobEvent>(Kind::kJob, job_id, raw);
}

// --- Sweeps -----------------------------------------------------------------

absl::StatusOr<Store::CreateSweepResult> Store::CreateSweep(const v1::Sweep& sweep,
                                                            const v1::SweepEvent& first_event,
                                                            const std::vector<v1::Job>& trials,
                                                            const v1::JobEvent& trial_first_event,
                                                            const std::vector<OutputClaim>& outputs,
                                                            const QueueLimits& limits) {
  if (sweep.id().empty()) return absl::InvalidArgumentError("job store: sweep id is empty");
  const google::protobuf::Timestamp now = NowTimestamp();
  std::vector<NewRow> rows;
  rows.reserve(trials.size() + 1);
  v1::SweepEvent event = first_event;
  event.set_sweep_id(sweep.id());
  event.set_sequence(1);
  if (!event.has_time()) *event.mutable_time() = now;
  rows.push_back(NewRow{Kind::kSweep, SweepRow(sweep), event.SerializeAsString()});
  for (const v1::Job& trial : trials) {
    v1::JobEvent job_event = trial_first_event;
    job_event.set_job_id(trial.id());
    job_event.set_sequence(1);
    if (!job_event.has_time()) *job_event.mutable_time() = now;
    rows.push_back(NewRow{Kind::kJob, JobRow(trial), job_event.SerializeAsString()});
  }
  FT_ASSIGN_OR_RETURN(Backend::CreateOutcome outcome,
                      TrackWrite(backend_->Create(rows, outputs, limits)));
  if (outcome.output_conflict.has_value() || outcome.queue_full.has_value()) {
    return CreateSweepResult{sweep, false, std::move(outcome.output_conflict),
                             outcome.queue_full};
  }
  if (!outcome.created) {
    FT_ASSIGN_OR_RETURN(v1::Sweep existing, GetSweep(outcome.existing_id));
    return CreateSweepResult{std::move(existing), false, std::nullopt, std::nullopt};
  }
  // New resources: nobody else appends to them before this returns.
  for (NewRow& row : rows) {
    const std::string key = Key(row.kind, row.row.id);
    tail_.Publish(key, 1, std::move(row.first_event), /*final=*/false);
    hub_.Notify(key);
  }
  v1::Sweep stored = sweep;
  stored.set_last_sequence(1);
  return CreateSweepResult{std::move(stored), true, std::nullopt, std::nullopt};
}

absl::StatusOr<std::optional<v1::Sweep>> Store::FindSweepByClientRequestId(
    const std::string& tenant, const std::string& request_id) {
  if (request_id.empty()) return std::optional<v1::Sweep>();
  FT_ASSIGN_OR_RETURN(std::string id,
                      backend_->FindByRequestId(Kind::kSweep, tenant, request_id));
  if (id.empty()) return std::optional<v1::Sweep>();
  FT_ASSIGN_OR_RETURN(v1::Sweep sweep, GetSweep(id));
  return std::optional<v1::Sweep>(std::move(sweep));
}

absl::StatusOr<v1::Sweep> Store::GetSweep(const std::string& sweep_id) {
  FT_ASSIGN_OR_RETURN(std::optional<Row> row, backend_->Get(Kind::kSweep, sweep_id));
  if (!row.has_value()) {
    return absl::NotFoundError(absl::StrCat("sweep ", sweep_id, " not found"));
  }
  return ParseOrQuarantine<v1::Sweep>(Kind::kSweep, *row);
}

absl::StatusOr<v1::ListSweepsResponse> Store::ListSweeps(const ListQuery& query) {
  v1::ListSweepsResponse response;
  FT_ASSIGN_OR_RETURN(
      std::string next,
      ListPage<v1::Sweep>(
          *backend_, Kind::kSweep, kSweepPageTokenKind, query,
          [this](const Row& row) { return ParseOrQuarantine<v1::Sweep>(Kind::kSweep, row); },
          [&](v1::Sweep sweep) { *response.add_sweeps() = std::move(sweep); }));
  response.set_next_page_token(next);
  return response;
}

absl::StatusOr<std::vector<v1::Sweep>> Store::SweepsInStates(
    const std::vector<v1::SweepState>& states) {
  const int64_t mask = StateMask({states.begin(), states.end()});
  FT_ASSIGN_OR_RETURN(std::vector<Row> rows, backend_->InStates(Kind::kSweep, mask));
  return ParseRows<v1::Sweep>(rows, mask, [this](const Row& row) {
    return ParseOrQuarantine<v1::Sweep>(Kind::kSweep, row);
  });
}

absl::StatusOr<std::map<v1::SweepState, int64_t>> Store::CountSweepsByState() {
  FT_ASSIGN_OR_RETURN(auto raw, backend_->CountByState(Kind::kSweep));
  std::map<v1::SweepState, int64_t> counts;
  for (const auto& [state, count] : raw) {
    if (v1::SweepState_IsValid(state)) counts[static_cast<v1::SweepState>(state)] = count.rows;
  }
  return counts;
}

absl::StatusOr<v1::SweepEvent> Store::AppendSweepEvent(const std::string& sweep_id,
                                                       v1::SweepEvent event,
                                                       const v1::Sweep* updated_sweep,
                                                       const Fence* fence) {
  event.set_sweep_id(sweep_id);
  if (!event.has_time()) *event.mutable_time() = NowTimestamp();
  std::optional<Row> row;
  if (updated_sweep != nullptr) row = SweepRow(*updated_sweep);
  FT_RETURN_IF_ERROR(Append(
      Kind::kSweep, sweep_id,
      [&](int64_t sequence) {
        event.set_sequence(sequence);
        return event.SerializeAsString();
      },
      row.has_value() ? &*row : nullptr, /*final=*/event.has_result(), fence));
  return event;
}

absl::StatusOr<std::vector<v1::SweepEvent>> Store::ReadSweepEvents(const std::string& sweep_id,
                                                                   int64_t after_sequence,
                                                                   int limit) {
  FT_ASSIGN_OR_RETURN(auto raw, ReadEvents(Kind::kSweep, sweep_id, after_sequence, limit));
  return ParseEvents<v1::SweepEvent>(Kind::kSweep, sweep_id, raw);
}

// --- Events of either kind ----------------------------------------------------

absl::Status Store::Append(Kind kind, const std::string& id,
                           absl::FunctionRef<std::string(int64_t)> serialize, const Row* updated,
                           bool final, const Fence* fence) {
  const std::string key = Key(kind, id);
  absl::Status written;
  {
    absl::MutexLock stripe(&StripeFor(key));
    std::string bytes;
    absl::StatusOr<int64_t> sequence = backend_->Append(
        kind, id,
        [&](int64_t seq) {
          bytes = serialize(seq);
          return bytes;
        },
        updated, fence);
    written = sequence.status();
    if (sequence.ok()) tail_.Publish(key, *sequence, std::move(bytes), final);
  }
  // After the stripe is released: listeners and callbacks may read the store.
  FT_RETURN_IF_ERROR(TrackWrite(std::move(written)));
  hub_.Notify(key);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> Store::ReadEvents(
    Kind kind, const std::string& id, int64_t after_sequence, int limit) {
  std::vector<std::pair<int64_t, std::string>> raw;
  if (tail_.Read(Key(kind, id), after_sequence, limit, &raw)) return raw;
  return backend_->ReadEvents(kind, id, after_sequence, limit);
}

// --- Corrupt rows -------------------------------------------------------------

template <typename Record>
Record Store::ParseOrQuarantine(Kind kind, const Row& row) {
  absl::StatusOr<Record> parsed = Parse<Record>(kind, row);
  if (parsed.ok()) return *std::move(parsed);
  // "job store: job <id> record is corrupt; quarantined and marked FAILED"
  const std::string reason =
      absl::StrCat(parsed.status().message(), "; quarantined and marked FAILED");
  Record placeholder;
  const std::string key = Key(kind, row.id);
  {
    absl::MutexLock lock(&quarantine_mu_);
    // Another reader quarantines it now: serve the placeholder, write once.
    if (!quarantining_.insert(key).second) {
      if constexpr (std::is_same_v<Record, v1::Job>) {
        return PlaceholderJob(row, reason);
      } else {
        return PlaceholderSweep(row, reason);
      }
    }
  }
  // No lock held from here: the append notifies watchers inline, and their
  // reads may meet another corrupt row.
  // Another reader may have quarantined it since this one read the row.
  absl::StatusOr<std::optional<Row>> now = backend_->Get(kind, row.id);
  if (now.ok() && now->has_value()) {
    absl::StatusOr<Record> again = Parse<Record>(kind, **now);
    if (again.ok()) {
      absl::MutexLock lock(&quarantine_mu_);
      quarantining_.erase(key);
      return *std::move(again);
    }
  }
  absl::Status written;
  if constexpr (std::is_same_v<Record, v1::Job>) {
    placeholder = PlaceholderJob(row, reason);
    v1::JobEvent event;
    event.mutable_state_change()->set_state(v1::JOB_STATE_FAILED);
    event.mutable_state_change()->set_message(reason);
    absl::StatusOr<v1::JobEvent> stored = AppendJobEvent(row.id, std::move(event), &placeholder);
    written = stored.status();
    if (stored.ok()) placeholder.set_last_sequence(stored->sequence());
  } else {
    placeholder = PlaceholderSweep(row, reason);
    v1::SweepEvent event;
    *event.mutable_result() = placeholder;
    absl::StatusOr<v1::SweepEvent> stored =
        AppendSweepEvent(row.id, std::move(event), &placeholder);
    written = stored.status();
    if (stored.ok()) placeholder.set_last_sequence(stored->sequence());
  }
  // Served as FAILED either way; if the write failed it is tried again at
  // the next read.
  std::vector<QuarantineListener> listeners;
  {
    absl::MutexLock lock(&quarantine_mu_);
    quarantining_.erase(key);
    listeners = quarantine_listeners_;
  }
  for (const auto& listener : listeners) listener(kind, row.id, reason, written);
  return placeholder;
}

void Store::AddQuarantineListener(QuarantineListener listener) {
  absl::MutexLock lock(&quarantine_mu_);
  quarantine_listeners_.push_back(std::move(listener));
}

// --- Write health -------------------------------------------------------------

absl::Status Store::TrackWrite(absl::Status status) {
  // Refusals of the request itself (NOT_FOUND, ALREADY_EXISTS, ...) say
  // nothing about the engine.
  const bool refused = status.code() == absl::StatusCode::kInternal ||
                       status.code() == absl::StatusCode::kUnavailable;
  if (!refused && (!status.ok() || writable_.load())) return status;
  absl::MutexLock lock(&health_mu_);
  if (refused) {
    write_error_ = status;
    writable_.store(false);
  } else {
    if (writable_.load()) return status;  // another writer reported it
    write_error_ = absl::OkStatus();
    writable_.store(true);
  }
  for (const auto& listener : write_listeners_) listener(status);
  return status;
}

template <typename T>
absl::StatusOr<T> Store::TrackWrite(absl::StatusOr<T> result) {
  (void)TrackWrite(result.status());
  return result;
}

absl::Status Store::write_error() const {
  absl::MutexLock lock(&health_mu_);
  return write_error_;
}

void Store::AddWriteListener(std::function<void(const absl::Status&)> listener) {
  absl::MutexLock lock(&health_mu_);
  write_listeners_.push_back(std::move(listener));
}

absl::Status Store::ProbeWrite() {
  absl::Status status = backend_->ProbeWrite();
  if (absl::IsUnimplemented(status)) return status;
  return TrackWrite(std::move(status));
}

// --- Watching ---------------------------------------------------------------

Store::SubscriptionId Store::Subscribe(Kind kind, const std::string& id,
                                       std::function<void()> on_new_events) {
  return hub_.Subscribe(Key(kind, id), std::move(on_new_events));
}

void Store::Unsubscribe(SubscriptionId id) { hub_.Unsubscribe(id); }

// --- The shared queue -----------------------------------------------------------

absl::StatusOr<std::optional<ResourceLease>> Store::ClaimJob(const ClaimRequest& request) {
  return TrackWrite(backend_->ClaimJob(request));
}

absl::StatusOr<bool> Store::RenewLease(Kind kind, const std::string& id, int64_t epoch,
                                       int64_t expires_micros, bool* cancel_requested) {
  return TrackWrite(backend_->RenewLease(kind, id, epoch, expires_micros, cancel_requested));
}

absl::StatusOr<std::vector<ResourceLease>> Store::TakeExpiredLeases(const std::string& owner,
                                                               int64_t now_micros,
                                                               int64_t expires_micros) {
  return TrackWrite(backend_->TakeFreeLeases(Kind::kJob, owner, v1::JOB_STATE_RUNNING, now_micros,
                                             expires_micros));
}

absl::StatusOr<bool> Store::ReleaseLease(Kind kind, const std::string& id, int64_t epoch) {
  return TrackWrite(backend_->ReleaseLease(kind, id, epoch));
}

absl::StatusOr<std::vector<ResourceLease>> Store::TakeOverPreviousProcess(
    const std::string& owner, int64_t expires_micros) {
  return TrackWrite(backend_->TakeOverPreviousProcess(owner, expires_micros));
}

absl::StatusOr<std::vector<ResourceLease>> Store::ClaimSweeps(const std::string& owner,
                                                              int64_t now_micros,
                                                              int64_t expires_micros) {
  return TrackWrite(
      backend_->TakeFreeLeases(Kind::kSweep, owner, v1::SWEEP_STATE_RUNNING, now_micros,
                               expires_micros));
}

absl::Status Store::RequestCancel(Kind kind, const std::string& id) {
  const int64_t unfinished =
      kind == Kind::kJob ? (int64_t{1} << v1::JOB_STATE_QUEUED) | (int64_t{1} << v1::JOB_STATE_RUNNING)
                         : int64_t{1} << v1::SWEEP_STATE_RUNNING;
  return TrackWrite(backend_->RequestCancel(kind, id, unfinished));
}

absl::StatusOr<std::vector<std::string>> Store::PendingCancels(const std::string& owner) {
  return backend_->PendingCancels(owner);
}

absl::Status Store::Listen(std::function<void(const Signal&)> on_signal) {
  return backend_->Listen([this, on_signal = std::move(on_signal)](const Signal& signal) {
    if (signal.type == Signal::Type::kEvent) {
      // This store's own writes were published and announced when written.
      if (signal.origin == replica_id_) return;
      const std::string key = Key(signal.kind, signal.id);
      tail_.Forget(key);  // it lacks this event; readers go to the backend
      hub_.Notify(key);
    } else if (signal.type == Signal::Type::kResync) {
      tail_.ForgetAll();
      hub_.NotifyAll();
    }
    on_signal(signal);
  });
}

void Store::NotifyAll() { hub_.NotifyAll(); }

size_t Store::subscriber_count(Kind kind) const {
  return hub_.subscriber_count_with_prefix(Key(kind, ""));
}

size_t Store::subscriber_count(Kind kind, const std::string& id) const {
  return hub_.subscriber_count(Key(kind, id));
}

}  // namespace freezetune::store
