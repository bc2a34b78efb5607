// The client library against a real gRPC server on 127.0.0.1:0 whose fake
// service the tests script (tests/unit/client_fake_server.h).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "freezetune/client.h"
#include "tests/unit/client_fake_server.h"

namespace freezetune {
namespace {

using ::freezetune::testing::FakeFineTuneService;
using ::freezetune::testing::FakeServer;
using ::freezetune::testing::SimpleLog;
using ::freezetune::testing::WatchScript;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<FakeServer>(&service_);
    ASSERT_TRUE(server_->ok());
  }

  std::unique_ptr<Client> Connect(ClientOptions opts = {}) {
    opts.target = server_->target();
    opts.initial_backoff = absl::Milliseconds(10);
    opts.default_deadline = absl::Seconds(10);
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(opts);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  static v1::FineTuneJob Job(const std::string& name) {
    v1::FineTuneJob job;
    job.set_model_uri("file:///models/tiny");
    job.mutable_train()->set_uri("file:///data/train.tsv");
    job.set_display_name(name);
    return job;
  }

  static std::vector<int64_t> Sequences(const std::vector<v1::JobEvent>& evs) {
    std::vector<int64_t> out;
    for (const v1::JobEvent& e : evs) out.push_back(e.sequence());
    return out;
  }

  static std::vector<int64_t> Range(int64_t from, int64_t to) {
    std::vector<int64_t> out;
    for (int64_t i = from; i <= to; ++i) out.push_back(i);
    return out;
  }

  FakeFineTuneService service_;
  std::unique_ptr<FakeServer> server_;
};

TEST_F(ClientTest, SubmitGetListCancelRoundTrip) {
  auto client = Connect();
  absl::StatusOr<v1::Job> job = client->Submit(Job("first"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(job->id().empty());

  absl::StatusOr<v1::Job> got = client->Get(job->id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->spec().display_name(), "first");
  EXPECT_EQ(got->spec().model_uri(), "file:///models/tiny");

  for (int i = 2; i <= 5; ++i) {
    ASSERT_TRUE(client->Submit(Job(absl::StrCat("job", i))).ok());
  }
  JobIterator it = client->List({}, /*page_size=*/2);
  std::vector<std::string> names;
  v1::Job j;
  while (it.Next(&j)) names.push_back(j.spec().display_name());
  ASSERT_TRUE(it.status().ok()) << it.status();
  EXPECT_EQ(names, (std::vector<std::string>{"job5", "job4", "job3", "job2",
                                             "first"}));
  EXPECT_EQ(it.pages(), 3);

  // limit stops early without fetching more pages than needed.
  JobIterator limited = client->List({}, 2, /*limit=*/3);
  int n = 0;
  while (limited.Next(&j)) ++n;
  EXPECT_EQ(n, 3);
  EXPECT_EQ(limited.pages(), 2);

  absl::StatusOr<v1::Job> cancelled = client->Cancel(job->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);

  absl::StatusOr<std::vector<v1::Job>> only_cancelled =
      client->ListAll({v1::JOB_STATE_CANCELLED}, 2);
  ASSERT_TRUE(only_cancelled.ok()) << only_cancelled.status();
  ASSERT_EQ(only_cancelled->size(), 1u);
  EXPECT_EQ((*only_cancelled)[0].id(), job->id());

  absl::StatusOr<v1::Job> again = client->Cancel(job->id());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.status().message(),
            absl::StrCat("job ", job->id(), " already finished"));
}

TEST_F(ClientTest, ServerErrorCodeAndMessagePreserved) {
  auto client = Connect();
  absl::StatusOr<v1::Job> missing = client->Get("job-nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job job-nope not found");

  service_.FailNext("SubmitJob", 1, grpc::StatusCode::INVALID_ARGUMENT,
                    "job.train.uri: file not found");
  absl::StatusOr<v1::Job> bad = client->Submit(Job("x"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "job.train.uri: file not found");

  service_.FailNext("PlanFreeze", 1, grpc::StatusCode::PERMISSION_DENIED,
                    "tenant a may not read model b");
  absl::StatusOr<v1::PlanFreezeResponse> plan =
      client->PlanFreeze(v1::PlanFreezeRequest());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(plan.status().message(), "tenant a may not read model b");
}

TEST_F(ClientTest, BearerTokenMetadataArrives) {
  ClientOptions opts;
  opts.token = "s3cret-token";
  auto client = Connect(opts);
  ASSERT_TRUE(client->Submit(Job("a")).ok());
  (void)client->Get("job-1");
  auto anon = Connect();
  (void)anon->Get("job-1");
  EXPECT_EQ(service_.AuthHeaders(),
            (std::vector<std::string>{"Bearer s3cret-token",
                                      "Bearer s3cret-token", ""}));
}

TEST_F(ClientTest, GetRetriesUnavailable) {
  auto client = Connect();
  ASSERT_TRUE(client->Submit(Job("a")).ok());
  service_.FailNext("GetJob", 2, grpc::StatusCode::UNAVAILABLE, "restarting");
  absl::StatusOr<v1::Job> got = client->Get("job-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(service_.Calls("GetJob"), 3);
}

TEST_F(ClientTest, RetriesAreBoundedAndOnlyForUnavailable) {
  ClientOptions opts;
  opts.max_retries = 1;
  auto client = Connect(opts);
  service_.FailNext("GetJob", 5, grpc::StatusCode::UNAVAILABLE, "down");
  absl::StatusOr<v1::Job> got = client->Get("job-1");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.Calls("GetJob"), 2);

  service_.FailNext("ListJobs", 1, grpc::StatusCode::INTERNAL, "boom");
  absl::StatusOr<std::vector<v1::Job>> all = client->ListAll();
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(service_.Calls("ListJobs"), 1);
}

TEST_F(ClientTest, SubmitWithoutRequestIdIsNotRetried) {
  auto client = Connect();
  service_.FailNext("SubmitJob", 1, grpc::StatusCode::UNAVAILABLE, "lost");
  absl::StatusOr<v1::Job> job = client->Submit(Job("a"));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.Calls("SubmitJob"), 1);
}

TEST_F(ClientTest, SubmitWithRequestIdIsRetriedAndIdempotent) {
  auto client = Connect();
  v1::FineTuneJob spec = Job("keyed");
  spec.set_client_request_id("ci-run-42");
  service_.FailNext("SubmitJob", 1, grpc::StatusCode::UNAVAILABLE, "lost");
  absl::StatusOr<v1::Job> first = client->Submit(spec);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(service_.Calls("SubmitJob"), 2);
  absl::StatusOr<v1::Job> second = client->Submit(spec);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->id(), first->id());
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  // Grab a free port, then close it.
  int port;
  {
    FakeFineTuneService other;
    FakeServer s(&other);
    port = s.port();
  }
  ClientOptions opts;
  opts.target = absl::StrCat("127.0.0.1:", port);
  opts.max_retries = 1;
  opts.initial_backoff = absl::Milliseconds(5);
  auto client = Client::Connect(opts);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->Get("job-1").status().code(),
            absl::StatusCode::kUnavailable);
  std::vector<v1::JobEvent> seen;
  absl::Status st = (*client)->Watch("job-1", 0, [&](const v1::JobEvent& e) {
    seen.push_back(e);
    return true;
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(seen.empty());
}

TEST_F(ClientTest, ConnectRejectsBadTlsOptions) {
  ClientOptions opts;
  opts.tls = true;
  opts.ca_cert_file = "/nonexistent/ca.pem";
  EXPECT_EQ(Client::Connect(opts).status().code(),
            absl::StatusCode::kNotFound);
  opts.ca_cert_file.clear();
  opts.client_cert_file = "/x/cert.pem";  // key missing
  EXPECT_EQ(Client::Connect(opts).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions plain;
  plain.ca_cert_file = "/x/ca.pem";  // cert without --tls
  EXPECT_EQ(Client::Connect(plain).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, WatchReconnectsAndResumesWithoutGapsOrDuplicates) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  service_.ScriptWatch({{3, grpc::StatusCode::UNAVAILABLE}});
  auto client = Connect();
  std::vector<v1::JobEvent> seen;
  absl::Status st = client->Watch("job-w", 0, [&](const v1::JobEvent& e) {
    seen.push_back(e);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(Sequences(seen), Range(1, 8));
  EXPECT_EQ(service_.WatchAfterSequences(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(seen.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ClientTest, BlockingIteratorYieldsTheSame) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_FAILED,
                                        "step 12: non-finite loss"));
  service_.ScriptWatch({{3, grpc::StatusCode::UNAVAILABLE},
                        {2, grpc::StatusCode::UNAVAILABLE}});
  auto client = Connect();
  std::unique_ptr<WatchStream> stream = client->OpenWatch("job-w", 0);
  std::vector<v1::JobEvent> seen;
  v1::JobEvent e;
  while (stream->Next(&e)) seen.push_back(e);
  ASSERT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_EQ(Sequences(seen), Range(1, 8));
  EXPECT_EQ(stream->reconnects(), 2);
  EXPECT_EQ(stream->last_sequence(), 8);
  EXPECT_EQ(service_.WatchAfterSequences(), (std::vector<int64_t>{0, 3, 5}));
  EXPECT_EQ(seen.back().state_change().message(), "step 12: non-finite loss");
  EXPECT_FALSE(stream->Next(&e));  // stays finished
}

TEST_F(ClientTest, WatchStartsAfterSequence) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  auto client = Connect();
  std::unique_ptr<WatchStream> stream = client->OpenWatch("job-w", 5);
  std::vector<v1::JobEvent> seen;
  v1::JobEvent e;
  while (stream->Next(&e)) seen.push_back(e);
  ASSERT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_EQ(Sequences(seen), Range(6, 8));
}

TEST_F(ClientTest, WatchDropsEventsAServerReplays) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  service_.set_replay_all(true);
  service_.ScriptWatch({{4, grpc::StatusCode::UNAVAILABLE}});
  auto client = Connect();
  std::vector<v1::JobEvent> seen;
  ASSERT_TRUE(client
                  ->Watch("job-w", 0,
                          [&](const v1::JobEvent& e) {
                            seen.push_back(e);
                            return true;
                          })
                  .ok());
  EXPECT_EQ(Sequences(seen), Range(1, 8));
}

TEST_F(ClientTest, WatchReportsAGapAsDataLoss) {
  std::vector<v1::JobEvent> log =
      SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED);
  log.erase(log.begin() + 3);  // sequence 4 is missing
  service_.SetEvents("job-w", log);
  auto client = Connect();
  std::vector<v1::JobEvent> seen;
  absl::Status st = client->Watch("job-w", 0, [&](const v1::JobEvent& e) {
    seen.push_back(e);
    return true;
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_EQ(Sequences(seen), Range(1, 3));
}

TEST_F(ClientTest, WatchResumesWhenServerEndsStreamEarlyWithOk) {
  // The stream ends OK after 3 events although the job has 8: the client
  // asks GetJob, sees events it has not had, and resumes.
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  service_.ScriptWatch({{3, grpc::StatusCode::OK}});
  auto client = Connect();
  std::vector<v1::JobEvent> seen;
  ASSERT_TRUE(client
                  ->Watch("job-w", 0,
                          [&](const v1::JobEvent& e) {
                            seen.push_back(e);
                            return true;
                          })
                  .ok());
  EXPECT_EQ(Sequences(seen), Range(1, 8));
  EXPECT_EQ(service_.WatchAfterSequences(), (std::vector<int64_t>{0, 3}));
}

TEST_F(ClientTest, WatchErrorsAreNotRetried) {
  auto client = Connect();
  std::vector<v1::JobEvent> seen;
  absl::Status st = client->Watch("job-missing", 0, [&](const v1::JobEvent& e) {
    seen.push_back(e);
    return true;
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "job job-missing not found");
  EXPECT_EQ(service_.Calls("WatchJob"), 1);
}

TEST_F(ClientTest, WatchCallbackCanStop) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  auto client = Connect();
  int n = 0;
  absl::Status st =
      client->Watch("job-w", 0, [&](const v1::JobEvent&) { return ++n < 2; });
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(n, 2);
}

TEST_F(ClientTest, CancelWakesABlockedWatch) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  service_.ScriptWatch({{2, grpc::StatusCode::OK, /*hang=*/true}});
  auto client = Connect();
  std::unique_ptr<WatchStream> stream = client->OpenWatch("job-w", 0);
  v1::JobEvent e;
  ASSERT_TRUE(stream->Next(&e));
  ASSERT_TRUE(stream->Next(&e));
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(100));
    stream->Cancel();
  });
  EXPECT_FALSE(stream->Next(&e));  // blocked until Cancel()
  canceller.join();
  EXPECT_EQ(stream->status().code(), absl::StatusCode::kCancelled);
}

TEST_F(ClientTest, WatchSurvivesAServerRestart) {
  service_.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  service_.ScriptWatch({{3, grpc::StatusCode::OK, /*hang=*/true}});
  const int port = server_->port();
  auto client = Connect();
  std::unique_ptr<WatchStream> stream = client->OpenWatch("job-w", 0);
  std::vector<v1::JobEvent> seen;
  v1::JobEvent e;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(stream->Next(&e)) << stream->status();
    seen.push_back(e);
  }
  // The server goes away with the stream open, and a new process (a fresh
  // service with the same stored log) comes up on the same port a moment
  // later.
  server_->Shutdown();
  FakeFineTuneService restarted;
  restarted.SetEvents("job-w", SimpleLog("job-w", 5, v1::JOB_STATE_SUCCEEDED));
  std::unique_ptr<FakeServer> server2;
  std::thread restarter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    server2 = std::make_unique<FakeServer>(&restarted, port);
  });
  while (stream->Next(&e)) seen.push_back(e);
  restarter.join();
  ASSERT_TRUE(server2->ok());
  ASSERT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_EQ(Sequences(seen), Range(1, 8));
  EXPECT_GE(stream->reconnects(), 1);
  ASSERT_FALSE(restarted.WatchAfterSequences().empty());
  EXPECT_EQ(restarted.WatchAfterSequences().back(), 3);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// TLS with a CA file: a throwaway self-signed certificate made with the
// openssl CLI (skipped where there is none), a TLS grpc::Server, and a client
// that trusts exactly that certificate.
TEST(ClientTlsTest, ConnectsWithCustomCaAndRejectsPlaintext) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "no openssl CLI";
  }
  char dir_template[] = "/tmp/freezetune_tls_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string cmd = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
      " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout ",
      dir, "/key.pem -out ", dir, "/cert.pem >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0);

  FakeFineTuneService service;
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back(
      {Slurp(dir + "/key.pem"), Slurp(dir + "/cert.pem")});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  ClientOptions opts;
  opts.target = absl::StrCat("localhost:", port);
  opts.tls = true;
  opts.ca_cert_file = dir + "/cert.pem";
  opts.max_retries = 0;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(opts);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Get("job-1").status().code(),
            absl::StatusCode::kNotFound);  // the call reached the service

  ClientOptions plain = opts;
  plain.tls = false;
  plain.ca_cert_file.clear();
  absl::StatusOr<std::unique_ptr<Client>> insecure = Client::Connect(plain);
  ASSERT_TRUE(insecure.ok());
  EXPECT_EQ((*insecure)->Get("job-1").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service.Calls("GetJob"), 1);
  server->Shutdown();
  std::system(absl::StrCat("rm -rf ", dir).c_str());
}

}  // namespace
}  // namespace freezetune
