// The launcher <-> worker protocol (see worker_protocol.h).
#include "server/train/worker_protocol.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace freezetune::train {
namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

}  // namespace

absl::Status WriteWorkerFrame(int fd, char type, const std::string& payload) {
  std::string frame(1, type);
  PutU32(&frame, static_cast<uint32_t>(payload.size()));
  frame += payload;
  size_t done = 0;
  while (done < frame.size()) {
    const ssize_t n = ::write(fd, frame.data() + done, frame.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("worker pipe: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string EncodeStatus(const absl::Status& status) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(status.code()));
  out.append(status.message().data(), status.message().size());
  return out;
}

absl::Status DecodeStatus(const std::string& payload) {
  if (payload.size() < 4) return absl::InternalError("worker sent a malformed status");
  return absl::Status(static_cast<absl::StatusCode>(GetU32(payload, 0)), payload.substr(4));
}

std::optional<WorkerFrame> WorkerFrameReader::Next() {
  if (buffer_.size() < 5) return std::nullopt;
  const uint32_t n = GetU32(buffer_, 1);
  if (buffer_.size() < 5 + static_cast<size_t>(n)) return std::nullopt;
  WorkerFrame frame{buffer_[0], buffer_.substr(5, n)};
  buffer_.erase(0, 5 + static_cast<size_t>(n));
  return frame;
}

std::string SerializeWorkerTask(const WorkerTask& t) {
  std::string job_json;
  (void)google::protobuf::util::MessageToJsonString(t.job, &job_json);
  nlohmann::json j{{"job", nlohmann::json::parse(job_json)},
                   {"job_id", t.job_id},
                   {"output_dir", t.output_dir},
                   {"checkpoint_dir", t.checkpoint_dir},
                   {"devices", t.devices},
                   {"data_roots", t.uris.data_roots},
                   {"max_bytes", t.uris.max_bytes},
                   {"allow_http", t.uris.allow_http},
                   {"allow_private_http", t.uris.allow_private_http},
                   {"http_timeout_seconds", t.uris.http_timeout_seconds},
                   {"max_epochs", t.limits.max_epochs},
                   {"max_seq_length", t.limits.max_seq_length},
                   {"max_batch_size", t.limits.max_batch_size},
                   {"max_examples", t.limits.max_examples},
                   {"max_model_parameters", t.limits.max_model_parameters},
                   {"prefix_cache_bytes", t.prefix_cache_bytes},
                   {"threads", t.threads},
                   {"timeout_ms", t.timeout_ms},
                   {"store_host", t.store_host},
                   {"store_port", t.store_port}};
  return j.dump();
}

absl::StatusOr<WorkerTask> ParseWorkerTask(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    WorkerTask t;
    auto s = google::protobuf::util::JsonStringToMessage(j.at("job").dump(), &t.job);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("worker task: job: ", s.ToString()));
    t.job_id = j.at("job_id").get<std::string>();
    t.output_dir = j.at("output_dir").get<std::string>();
    t.checkpoint_dir = j.at("checkpoint_dir").get<std::string>();
    t.devices = j.at("devices").get<std::vector<std::string>>();
    t.uris.data_roots = j.at("data_roots").get<std::vector<std::string>>();
    t.uris.max_bytes = j.at("max_bytes").get<int64_t>();
    t.uris.allow_http = j.at("allow_http").get<bool>();
    t.uris.allow_private_http = j.at("allow_private_http").get<bool>();
    t.uris.http_timeout_seconds = j.at("http_timeout_seconds").get<int>();
    t.limits.max_epochs = j.at("max_epochs").get<int>();
    t.limits.max_seq_length = j.at("max_seq_length").get<int>();
    t.limits.max_batch_size = j.at("max_batch_size").get<int>();
    t.limits.max_examples = j.at("max_examples").get<int64_t>();
    t.limits.max_model_parameters = j.at("max_model_parameters").get<int64_t>();
    t.prefix_cache_bytes = j.at("prefix_cache_bytes").get<int64_t>();
    t.threads = j.at("threads").get<int>();
    t.timeout_ms = j.at("timeout_ms").get<int64_t>();
    t.store_host = j.at("store_host").get<std::string>();
    t.store_port = j.at("store_port").get<int>();
    return t;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("worker task: ", e.what()));
  }
}

}  // namespace freezetune::train
