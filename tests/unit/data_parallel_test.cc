// Data-parallel training on the CPU with c10d's Gloo backend (issue 13),
// through train::RunFineTune and real freezetune-worker processes:
//  - 2 ranks of batch 16 reach the same weights as 1 rank of batch 32 after
//    20 steps (dropout off), while 1 rank of batch 16 does not;
//  - only the trainable parameters' gradients are all-reduced: the bytes per
//    step equal PlanFreeze's allreduce_bytes_per_step (trainable x 4);
//  - a rank killed mid-job fails the job at once, naming the rank; a rank
//    that hangs (SIGSTOP) fails it within the c10d timeout; cancelling stops
//    every rank at the same step;
//  - ranks started as Kubernetes pods would start them (deploy/README.md:
//    rank 0 hosts the TCPStore, reports go to a TCP address) train too.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/uri.h"
#include "server/model/bert.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/safetensors.h"
#include "server/model/tokenizer.h"
#include "server/train/data_parallel.h"
#include "server/train/fine_tune.h"
#include "server/train/worker_protocol.h"

extern char** environ;

namespace freezetune::train {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

TEST(ShardOfTest, ContiguousSlicesClippedToTheBatch) {
  const std::vector<int64_t> batch = {7, 3, 9, 1, 4};
  EXPECT_EQ(ShardOf(batch, 0, 2), (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(ShardOf(batch, 1, 2), (std::vector<int64_t>{9, 1}));
  EXPECT_EQ(ShardOf(batch, 2, 2), (std::vector<int64_t>{4}));
  EXPECT_TRUE(ShardOf(batch, 3, 2).empty());
}

// A 2-layer, hidden-64 BERT without dropout, and 640 SST-2 sentences.
class DataParallelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/freezetune_dp_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    const std::string data = std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data";
    auto config = model::ParseBertConfig(R"({
      "model_type": "bert", "vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64,
      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})");
    ASSERT_TRUE(config.ok()) << config.status();
    auto tokenizer =
        model::WordPieceTokenizer::FromVocabFile(data + "/bert-base-uncased-vocab.txt", true);
    ASSERT_TRUE(tokenizer.ok());
    torch::manual_seed(9);
    model::BertForSequenceClassification m(*config, 2);
    m->InitWeights();
    model::SaveOptions save;
    save.label_names = {"0", "1"};
    ASSERT_TRUE(model::SaveModelDir(root_ + "/model", m, *tokenizer, save).ok());
    std::ifstream in(data + "/sst2/train_first10000.tsv");
    std::ofstream out(root_ + "/train.tsv");
    std::string line;
    for (int i = 0; i <= 640 && std::getline(in, line); ++i) out << line << "\n";
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  // 640 examples, batch 32 in total: 20 steps per epoch.
  static v1::FineTuneJob Job(int ranks, int batch_size, int epochs = 1) {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + root_ + "/model");
    job.mutable_train()->set_uri(root_ + "/train.tsv");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    v1::Hyperparameters* hp = job.mutable_hyperparameters();
    hp->set_epochs(epochs);
    hp->set_batch_size(batch_size);
    hp->set_learning_rate(1e-3f);
    hp->set_max_seq_length(32);
    hp->set_validation_split(0.0f);
    hp->set_log_every_steps(1);
    if (ranks > 1) job.mutable_resources()->set_data_parallel(ranks);
    return job;
  }

  static RunContext Context(const std::string& name, std::function<void(v1::JobEvent)> emit = {}) {
    RunContext c;
    c.job_id = "job-" + name;
    c.device = "cpu";
    c.output_dir = root_ + "/" + name;
    c.checkpoint_dir = root_ + "/" + name + "-checkpoints";
    std::filesystem::create_directories(c.checkpoint_dir);
    c.worker_binary = FREEZETUNE_WORKER_BIN;
    c.intra_op_threads = [] { return 2; };
    c.emit = std::move(emit);
    return c;
  }

  static std::map<std::string, torch::Tensor> Weights(const std::string& dir) {
    std::map<std::string, torch::Tensor> out;
    auto header = model::VisitSafetensors(
        dir + "/model.safetensors", {},
        [&](const std::string& name, const std::string&, const torch::Tensor& v) {
          out[name] = v.to(torch::kFloat).clone();
          return absl::OkStatus();
        });
    EXPECT_TRUE(header.ok()) << header.status();
    return out;
  }

  static double MaxDiff(const std::map<std::string, torch::Tensor>& a,
                        const std::map<std::string, torch::Tensor>& b) {
    double worst = 0;
    for (const auto& [name, t] : a) {
      worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
    }
    return worst;
  }

  static std::string root_;
};
std::string DataParallelTest::root_;

TEST_F(DataParallelTest, TwoRanksOfSixteenEqualOneRankOfThirtyTwo) {
  absl::StatusOr<v1::JobResult> one = RunFineTune(Job(1, 32), Context("one32"));
  ASSERT_TRUE(one.ok()) << one.status();
  std::vector<v1::JobEvent> events;
  absl::Mutex mu;
  absl::StatusOr<v1::JobResult> two = RunFineTune(Job(2, 16), Context("two16", [&](v1::JobEvent e) {
    absl::MutexLock lock(&mu);
    events.push_back(std::move(e));
  }));
  ASSERT_TRUE(two.ok()) << two.status();
  absl::StatusOr<v1::JobResult> half = RunFineTune(Job(1, 16), Context("one16"));
  ASSERT_TRUE(half.ok()) << half.status();

  EXPECT_EQ(one->steps(), 20);
  EXPECT_EQ(two->steps(), 20);
  EXPECT_EQ(two->data_parallel(), 2);
  EXPECT_TRUE(two->frozen_weights_verified());

  // Only trainable parameters travel: the bytes per step are PlanFreeze's.
  v1::PlanFreezeRequest plan_request;
  plan_request.set_model_uri("file://" + root_ + "/model");
  *plan_request.mutable_freeze() = Job(2, 16).freeze();
  absl::StatusOr<v1::PlanFreezeResponse> plan = PlanFreeze(plan_request, data::UriOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->allreduce_bytes_per_step(), plan->trainable_parameters() * 4);
  EXPECT_EQ(two->allreduce_bytes_per_step(), plan->allreduce_bytes_per_step());
  EXPECT_LT(two->allreduce_bytes_per_step(), plan->total_parameters() * 4 / 2);

  // The same weights up to float summation order. Tolerance: the ranks'
  // gradient sum differs from the 32-example mean only by reassociation
  // (~1e-7 relative per step); AdamW turns a gradient into an update of at
  // most ~lr (1e-3) per element, normalised by its running RMS, so 20 steps
  // can move an element by at most 20 x lr x (relative change of m/sqrt(v)).
  // 1e-5 is 50x below one step's update size and was 6x above the largest
  // difference seen here; training with a different batch (16 instead of 32)
  // moves weights by ~1e-2, which the test must tell apart.
  const auto w1 = Weights(root_ + "/one32");
  const auto w2 = Weights(root_ + "/two16");
  const auto wh = Weights(root_ + "/one16");
  const double dp_diff = MaxDiff(w1, w2);
  const double batch_diff = MaxDiff(w1, wh);
  std::printf("max |w(2x16) - w(1x32)| = %.3g, max |w(1x16) - w(1x32)| = %.3g\n", dp_diff,
              batch_diff);
  EXPECT_LT(dp_diff, 1e-5);
  EXPECT_GT(batch_diff, 1e-3);

  // Rank 0 reported the events: a notice naming the ranks, every step's loss.
  absl::MutexLock lock(&mu);
  int train_events = 0;
  bool notice = false;
  for (const v1::JobEvent& e : events) {
    if (e.has_train()) ++train_events;
    if (e.has_notice() && e.notice().message().find("data-parallel: 2 ranks") == 0) notice = true;
  }
  EXPECT_TRUE(notice);
  EXPECT_EQ(train_events, 20);
}

// Runs a long 2-rank job in a thread; `act` gets rank 1's pid once rank 0
// reported its first step.
struct Running {
  std::thread thread;
  absl::StatusOr<v1::JobResult> result;
  Clock::time_point acted_at;
  std::atomic<bool> done{false};
};

pid_t Rank1Pid(const std::string& notice) {
  // "data-parallel: 2 ranks (pids 123, 456) on ..."
  const size_t open = notice.find("(pids ");
  const size_t close = notice.find(')', open);
  std::vector<std::string> pids =
      absl::StrSplit(notice.substr(open + 6, close - open - 6), ", ");
  int pid = -1;
  return pids.size() == 2 && absl::SimpleAtoi(pids[1], &pid) ? pid : -1;
}

TEST_F(DataParallelTest, AKilledRankFailsTheJobAtOnce) {
  std::atomic<pid_t> rank1{-1};
  std::atomic<bool> stepped{false};
  RunContext context = Context("killed", [&](v1::JobEvent e) {
    if (e.has_notice() && rank1.load() < 0) rank1 = Rank1Pid(e.notice().message());
    if (e.has_train()) stepped = true;
  });
  absl::StatusOr<v1::JobResult> result;
  Clock::time_point killed_at;
  std::thread t([&] { result = RunFineTune(Job(2, 16, /*epochs=*/50), context); });
  while (!stepped.load()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GT(rank1.load(), 0);
  killed_at = Clock::now();
  ASSERT_EQ(::kill(rank1.load(), SIGKILL), 0);
  t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("data-parallel rank 1 (pid " + std::to_string(rank1.load()) +
                        ") was killed by signal 9"));
  EXPECT_LT(seconds, 30.0);  // the c10d timeout is 300 s: this did not wait for it
  EXPECT_NE(::kill(rank1.load(), 0), 0);  // reaped
}

TEST_F(DataParallelTest, AHungRankFailsTheJobWithinTheC10dTimeout) {
  std::atomic<pid_t> rank1{-1};
  std::atomic<bool> stepped{false};
  RunContext context = Context("hung", [&](v1::JobEvent e) {
    if (e.has_notice() && rank1.load() < 0) rank1 = Rank1Pid(e.notice().message());
    if (e.has_train()) stepped = true;
  });
  context.data_parallel_timeout_ms = 5000;
  absl::StatusOr<v1::JobResult> result;
  std::thread t([&] { result = RunFineTune(Job(2, 16, /*epochs=*/50), context); });
  while (!stepped.load()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GT(rank1.load(), 0);
  const auto stopped_at = Clock::now();
  ASSERT_EQ(::kill(rank1.load(), SIGSTOP), 0);
  t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - stopped_at).count();
  ASSERT_FALSE(result.ok());
  std::printf("hung rank: failed after %.1f s: %s\n", seconds, result.status().ToString().c_str());
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("data-parallel rank 1 (pid " + std::to_string(rank1.load()) +
                        ") stopped answering and was killed"));
  EXPECT_GE(seconds, 4.0);   // rank 0 waited for its collective ...
  EXPECT_LT(seconds, 30.0);  // ... about the 5 s timeout, not forever
  EXPECT_NE(::kill(rank1.load(), 0), 0);  // the stopped rank was killed and reaped
}

TEST_F(DataParallelTest, CancelStopsEveryRankAtTheSameStep) {
  std::atomic<int64_t> last_step{0};
  std::atomic<bool> stop{false};
  RunContext context = Context("cancelled", [&](v1::JobEvent e) {
    if (e.has_train()) last_step = e.train().step();
  });
  context.should_stop = [&] { return last_step.load() >= 3 || stop.load(); };
  absl::StatusOr<v1::JobResult> result = RunFineTune(Job(2, 16, /*epochs=*/50), context);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::IsCancelled(result.status())) << result.status();
  // Rank 0 checkpointed where both ranks stopped.
  bool checkpoint = false;
  for (const auto& entry : std::filesystem::directory_iterator(context.checkpoint_dir)) {
    checkpoint = checkpoint || entry.is_directory();
  }
  EXPECT_TRUE(checkpoint);
}

// A listening TCP socket on loopback; returns its fd and sets *port.
int Listen(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 8) != 0) {
    return -1;
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

TEST(WorkerTaskTest, TheKubernetesExampleTaskParses) {
  // deploy/k8s/data-parallel/task.json is what its Indexed Job mounts.
  std::ifstream in(std::string(FREEZETUNE_SOURCE_DIR) + "/deploy/k8s/data-parallel/task.json");
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<WorkerTask> task = ParseWorkerTask(text.str());
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->job.resources().data_parallel(), 4);
  EXPECT_EQ(task->devices.size(), 4u);
  EXPECT_EQ(task->job.hyperparameters().precision(), v1::PRECISION_BF16);
  const std::string round_trip = SerializeWorkerTask(*task);
  absl::StatusOr<WorkerTask> again = ParseWorkerTask(round_trip);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->job.SerializeAsString(), task->job.SerializeAsString());
  EXPECT_EQ(again->output_dir, task->output_dir);
}

TEST_F(DataParallelTest, RanksStartedAsPodsWouldBeTrainToo) {
  // What the Indexed Job of deploy/k8s/data-parallel does, on loopback: the
  // task from a file, rank 0 hosting the store on a fixed port, Gloo on the
  // "pod" address, reports to a TCP receiver (the server's role).
  int store_port = 0, report_port = 0;
  const int probe = Listen(&store_port);  // a free port for the store
  ::close(probe);
  const int receiver = Listen(&report_port);
  ASSERT_GE(receiver, 0);
  WorkerTask task;
  task.job = Job(2, 16);
  task.job_id = "job-pods";
  task.output_dir = root_ + "/pods";
  task.devices = {"cpu", "cpu"};
  task.timeout_ms = 60000;
  task.threads = 1;
  const std::string task_path = root_ + "/pods-task.json";
  {
    std::ofstream out(task_path);
    out << SerializeWorkerTask(task);
  }
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<std::string> args = {FREEZETUNE_WORKER_BIN, "--task", task_path,
                                     "--rank", std::to_string(rank), "--world_size", "2",
                                     "--store_host", "127.0.0.1",
                                     "--store_port", std::to_string(store_port),
                                     "--gloo_hostname", "127.0.0.1",
                                     "--store_rank=0",
                                     "--report", "127.0.0.1:" + std::to_string(report_port)};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
    pids.push_back(pid);
  }
  // Each rank connects once; read until both sent their final status.
  std::vector<int> conns;
  std::vector<WorkerFrameReader> readers(2);
  std::map<int, absl::Status> statuses;
  int train_events = 0;
  bool got_result = false;
  const auto deadline = Clock::now() + std::chrono::seconds(240);
  while (statuses.size() < 2 && Clock::now() < deadline) {
    std::vector<pollfd> fds = {{receiver, POLLIN, 0}};
    for (int c : conns) fds.push_back({c, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 200);
    if (fds[0].revents & POLLIN) conns.push_back(::accept(receiver, nullptr, nullptr));
    for (size_t k = 1; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP))) continue;
      char buf[65536];
      const ssize_t n = ::read(fds[k].fd, buf, sizeof(buf));
      if (n <= 0) continue;
      WorkerFrameReader& reader = readers[k - 1];
      reader.Append(buf, static_cast<size_t>(n));
      while (auto frame = reader.Next()) {
        if (frame->type == 'S') statuses[static_cast<int>(k - 1)] = DecodeStatus(frame->payload);
        if (frame->type == 'R') got_result = true;
        if (frame->type == 'E') {
          v1::JobEvent e;
          if (e.ParseFromString(frame->payload) && e.has_train()) ++train_events;
        }
      }
    }
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  for (int c : conns) ::close(c);
  ::close(receiver);
  ASSERT_EQ(statuses.size(), 2u);
  for (const auto& [conn, status] : statuses) EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(got_result);
  EXPECT_EQ(train_events, 20);
  // Its weights are those of the launcher-started 2-rank run.
  if (std::filesystem::exists(root_ + "/two16/model.safetensors")) {
    EXPECT_LT(MaxDiff(Weights(root_ + "/two16"), Weights(root_ + "/pods")), 1e-6);
  }
}

}  // namespace
}  // namespace freezetune::train
