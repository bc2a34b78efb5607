// Helpers shared by the service tests: a grpc.health.v1 Check through the
// generic stub (Debian ships no compiled health.proto), waiting for a job to
// reach a state through the raw generated stub, and listing every job or
// sweep.
#ifndef FREEZETUNE_TESTS_INTEGRATION_SERVER_TEST_UTIL_H_
#define FREEZETUNE_TESTS_INTEGRATION_SERVER_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "freezetune/v1/freezetune.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace freezetune::testing {

// Returns the HealthCheckResponse.status (1 SERVING, 2 NOT_SERVING), or -1
// when the call fails.
inline int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  // HealthCheckRequest{service = 1}: tag 0x0a, length, bytes.
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back('\x0a');
    request_bytes.push_back(static_cast<char>(service.size()));
    request_bytes += service;
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok || !status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status = 1}: an absent field is UNKNOWN (0).
  if (bytes.size() >= 2 && bytes[0] == '\x08') return static_cast<unsigned char>(bytes[1]);
  return 0;
}

// Raw bytes of the server reflection answer to list_services ("" on
// failure); service names appear in it verbatim.
inline std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto wait = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!wait(1)) return "";
  // ServerReflectionRequest{list_services = 7: ""}.
  std::string request_bytes("\x3a\x00", 2);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  if (!wait(2)) return "";
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  if (!wait(3)) return "";
  call->WritesDone(reinterpret_cast<void*>(4));
  wait(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait(5);
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return "";
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

// SubmitJob with a 60 s deadline.
inline grpc::Status Submit(v1::FineTuneService::Stub* stub, const v1::FineTuneJob& spec,
                           v1::Job* job) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::SubmitJobRequest request;
  *request.mutable_job() = spec;
  return stub->SubmitJob(&context, request, job);
}

// Polls GetJob until the job is in `state`; returns the job (or the last one
// seen when the deadline passes).
inline v1::Job WaitForState(v1::FineTuneService::Stub* stub, const std::string& id,
                            v1::JobState state, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  v1::Job job;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(id);
    if (stub->GetJob(&context, request, &job).ok() && job.state() == state) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return job;
}

// Every job, through ListJobs pages of 500 (30 s deadline each). On a
// failed call, *status (if given) gets it and the jobs read so far are
// returned.
inline std::vector<v1::Job> ListAllJobs(v1::FineTuneService::Stub* stub,
                                        grpc::Status* status = nullptr) {
  std::vector<v1::Job> jobs;
  v1::ListJobsRequest request;
  request.set_page_size(500);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ListJobsResponse page;
    grpc::Status s = stub->ListJobs(&context, request, &page);
    if (!s.ok()) {
      if (status != nullptr) *status = s;
      break;
    }
    jobs.insert(jobs.end(), page.jobs().begin(), page.jobs().end());
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  return jobs;
}

// As ListAllJobs, for sweeps.
inline std::vector<v1::Sweep> ListAllSweeps(v1::FineTuneService::Stub* stub,
                                            grpc::Status* status = nullptr) {
  std::vector<v1::Sweep> sweeps;
  v1::ListSweepsRequest request;
  request.set_page_size(500);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ListSweepsResponse page;
    grpc::Status s = stub->ListSweeps(&context, request, &page);
    if (!s.ok()) {
      if (status != nullptr) *status = s;
      break;
    }
    sweeps.insert(sweeps.end(), page.sweeps().begin(), page.sweeps().end());
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  return sweeps;
}

// Reads a whole WatchJob stream.
inline grpc::Status WatchAll(v1::FineTuneService::Stub* stub, const std::string& id, int64_t after,
                             std::vector<v1::JobEvent>* events,
                             std::chrono::seconds timeout = std::chrono::seconds(120)) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::WatchJobRequest request;
  request.set_job_id(id);
  request.set_after_sequence(after);
  auto reader = stub->WatchJob(&context, request);
  v1::JobEvent event;
  while (reader->Read(&event)) events->push_back(event);
  return reader->Finish();
}

// The body and headers of an HTTP/1.0 GET of 127.0.0.1:port/path (for the
// metrics endpoint); empty when nothing listens there.
inline std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

}  // namespace freezetune::testing

#endif  // FREEZETUNE_TESTS_INTEGRATION_SERVER_TEST_UTIL_H_
