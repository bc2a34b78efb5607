// Bearer-token auth and TLS on the in-process Server: token file parsing,
// UNAUTHENTICATED without/with a wrong token, tenant isolation (other
// tenants' jobs are NOT_FOUND and unlisted; their sweeps are unlisted), and
// TLS / mutual TLS with certificates made by the openssl tool.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "server/service/auth.h"
#include "server/service/server.h"
#include "tests/integration/server_test_util.h"

namespace freezetune::service {
namespace {

namespace fs = std::filesystem;

TEST(AuthenticatorTest, ParsesTenantsAndTokens) {
  auto auth = Authenticator::FromText("# comment\n\nteam-a  tok-a\nteam-b\ttok-b\n", "f");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 2u);
  EXPECT_EQ(*(*auth)->TenantOfHeader("Bearer tok-a"), "team-a");
  EXPECT_EQ(*(*auth)->TenantOfHeader("bearer tok-b"), "team-b");
  EXPECT_TRUE(absl::IsUnauthenticated((*auth)->TenantOfHeader("Bearer nope").status()));
  EXPECT_TRUE(absl::IsUnauthenticated((*auth)->TenantOfHeader("tok-a").status()));
  EXPECT_TRUE(absl::IsUnauthenticated((*auth)->TenantOfHeader("Bearer ").status()));
}

TEST(AuthenticatorTest, RejectsBadFilesWithoutEchoingSecrets) {
  auto bad = Authenticator::FromText("team-a tok-a extra-secret\n", "auth_token_file");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_EQ(bad.status().message(), "auth_token_file: line 1: expected \"<tenant> <token>\"");
  auto dup = Authenticator::FromText("a t1\nb t1\n", "auth_token_file");
  EXPECT_EQ(dup.status().message(), "auth_token_file: line 2: token already listed");
  EXPECT_FALSE(Authenticator::FromText("# nothing\n", "auth_token_file").ok());
  EXPECT_FALSE(Authenticator::FromFile("/nonexistent/tokens").ok());
}

jobs::TrainHooks QuickHooks() {
  jobs::TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&, const train::JobLimits&) {
    return absl::OkStatus();
  };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [](const v1::FineTuneJob&,
                 const train::RunContext&) -> absl::StatusOr<v1::JobResult> {
    return v1::JobResult();
  };
  return hooks;
}

std::string TempDir(const std::string& name) {
  std::string dir = (fs::temp_directory_path() /
                     ("ft_auth_" + name + "_" + std::to_string(::getpid())))
                        .string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::unique_ptr<Server> StartServer(ServerOptions options, const std::string& dir) {
  options.listen_address = "127.0.0.1:0";
  options.metrics.listen_address = "";
  options.jobs.data_dir = dir + "/server";
  options.hooks = QuickHooks();
  auto server = Server::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(server).value() : nullptr;
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("server");
    ServerOptions options;
    auto auth = Authenticator::FromText("alpha tok-alpha\nbeta tok-beta\n", "tokens");
    ASSERT_TRUE(auth.ok());
    options.service.auth = *auth;
    server_ = StartServer(std::move(options), dir_);
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::FineTuneService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  static void Authorize(grpc::ClientContext* context, const std::string& token) {
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status Submit(const std::string& token, v1::Job* job) {
    grpc::ClientContext context;
    Authorize(&context, token);
    v1::SubmitJobRequest request;
    request.mutable_job()->set_model_uri("/m");
    return stub_->SubmitJob(&context, request, job);
  }

  grpc::Status Get(const std::string& token, const std::string& id, v1::Job* job) {
    grpc::ClientContext context;
    Authorize(&context, token);
    v1::GetJobRequest request;
    request.set_job_id(id);
    return stub_->GetJob(&context, request, job);
  }

  std::string dir_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

TEST_F(AuthServerTest, CallsNeedAValidToken) {
  v1::Job job;
  grpc::Status none = Submit("", &job);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(none.error_message(), "authorization: bearer token required");
  EXPECT_EQ(Submit("wrong", &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Get("", "job-x", &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(testing::WatchAll(stub_.get(), "job-x", 0, &events).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Health stays open for probes.
  EXPECT_EQ(testing::HealthStatus(channel_, ""), 1);
}

TEST_F(AuthServerTest, TenantsSeeOnlyTheirOwnJobs) {
  v1::Job a;
  ASSERT_TRUE(Submit("tok-alpha", &a).ok());
  EXPECT_EQ(a.tenant(), "alpha");
  v1::Job b;
  ASSERT_TRUE(Submit("tok-beta", &b).ok());

  v1::Job got;
  EXPECT_TRUE(Get("tok-alpha", a.id(), &got).ok());
  grpc::Status hidden = Get("tok-beta", a.id(), &got);
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(hidden.error_message(), "job " + a.id() + " not found");
  {
    grpc::ClientContext context;
    Authorize(&context, "tok-beta");
    v1::CancelJobRequest request;
    request.set_job_id(a.id());
    v1::Job response;
    EXPECT_EQ(stub_->CancelJob(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    Authorize(&context, "tok-beta");
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    ASSERT_EQ(response.jobs_size(), 1);
    EXPECT_EQ(response.jobs(0).id(), b.id());
  }
  {
    grpc::ClientContext context;
    Authorize(&context, "tok-beta");
    v1::WatchJobRequest request;
    request.set_job_id(a.id());
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(AuthServerTest, TenantsListOnlyTheirOwnSweeps) {
  auto submit = [&](const std::string& token) {
    grpc::ClientContext context;
    Authorize(&context, token);
    v1::SubmitSweepRequest request;
    request.mutable_sweep()->mutable_job()->set_model_uri("/m");
    request.mutable_sweep()->add_freeze_depths(0);
    request.mutable_sweep()->add_freeze_depths(1);
    v1::Sweep sweep;
    grpc::Status status = stub_->SubmitSweep(&context, request, &sweep);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return sweep;
  };
  auto list = [&](const std::string& token, v1::ListSweepsResponse* response) {
    grpc::ClientContext context;
    Authorize(&context, token);
    return stub_->ListSweeps(&context, v1::ListSweepsRequest(), response);
  };
  v1::Sweep a = submit("tok-alpha");
  v1::Sweep b = submit("tok-beta");
  EXPECT_EQ(a.tenant(), "alpha");
  v1::ListSweepsResponse response;
  ASSERT_TRUE(list("tok-beta", &response).ok());
  ASSERT_EQ(response.sweeps_size(), 1);
  EXPECT_EQ(response.sweeps(0).id(), b.id());
  ASSERT_TRUE(list("tok-alpha", &response).ok());
  ASSERT_EQ(response.sweeps_size(), 1);
  EXPECT_EQ(response.sweeps(0).id(), a.id());
  EXPECT_EQ(list("", &response).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Runs a shell command; true on exit status 0.
bool Sh(const std::string& command) {
  return std::system(("(" + command + ") >/dev/null 2>&1").c_str()) == 0;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(TlsServerTest, ServesTlsAndRequiresClientCertsWithAClientCa) {
  std::string dir = TempDir("tls");
  // A CA, a server certificate for 127.0.0.1 and a client certificate.
  const std::string d = dir + "/";
  ASSERT_TRUE(Sh("cd " + dir +
                 " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca"
                 " -keyout ca.key -out ca.crt"
                 " && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost"
                 " -keyout server.key -out server.csr"
                 " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext"
                 " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
                 " -days 1 -extfile san.ext -out server.crt"
                 " && openssl req -newkey rsa:2048 -nodes -subj /CN=client"
                 " -keyout client.key -out client.csr"
                 " && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
                 " -days 1 -out client.crt"))
      << "openssl failed";

  ServerOptions options;
  options.tls_cert_file = d + "server.crt";
  options.tls_key_file = d + "server.key";
  options.tls_client_ca_file = d + "ca.crt";
  auto server = StartServer(std::move(options), dir);
  ASSERT_NE(server, nullptr);
  const std::string target = "127.0.0.1:" + std::to_string(server->port());

  auto call = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    auto stub = v1::FineTuneService::NewStub(grpc::CreateChannel(target, creds));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListJobsResponse response;
    return stub->ListJobs(&context, v1::ListJobsRequest(), &response);
  };
  grpc::SslCredentialsOptions with_cert;
  with_cert.pem_root_certs = Read(d + "ca.crt");
  with_cert.pem_private_key = Read(d + "client.key");
  with_cert.pem_cert_chain = Read(d + "client.crt");
  grpc::Status ok = call(grpc::SslCredentials(with_cert));
  EXPECT_TRUE(ok.ok()) << ok.error_message();

  grpc::SslCredentialsOptions without_cert;
  without_cert.pem_root_certs = Read(d + "ca.crt");
  EXPECT_FALSE(call(grpc::SslCredentials(without_cert)).ok());
  EXPECT_FALSE(call(grpc::InsecureChannelCredentials()).ok());
  server.reset();

  // Inconsistent TLS options are refused up front, naming the flag.
  ServerOptions half;
  half.tls_cert_file = d + "server.crt";
  half.listen_address = "127.0.0.1:0";
  half.jobs.data_dir = d + "server2";
  half.hooks = QuickHooks();
  auto refused = Server::Start(std::move(half));
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_EQ(refused.status().message(), "tls_key: required with tls_cert");

  // A key that is not the certificate's (issue 14 item 6: this used to
  // surface as "cannot listen on 127.0.0.1:0").
  ServerOptions mismatched;
  mismatched.tls_cert_file = d + "server.crt";
  mismatched.tls_key_file = d + "client.key";
  mismatched.listen_address = "127.0.0.1:0";
  mismatched.jobs.data_dir = d + "server3";
  mismatched.hooks = QuickHooks();
  refused = Server::Start(std::move(mismatched));
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "tls_key: " + d + "client.key does not match the certificate in " + d +
                "server.crt (the private key of its first certificate is needed)");
  // Not PEM at all.
  std::ofstream(d + "garbage.pem") << "not a key\n";
  ServerOptions garbage;
  garbage.tls_cert_file = d + "server.crt";
  garbage.tls_key_file = d + "garbage.pem";
  garbage.listen_address = "127.0.0.1:0";
  garbage.jobs.data_dir = d + "server4";
  garbage.hooks = QuickHooks();
  refused = Server::Start(std::move(garbage));
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "tls_key: " + d + "garbage.pem holds no PEM private key (encrypted keys are not "
            "supported)");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace freezetune::service
