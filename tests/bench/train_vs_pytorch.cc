// C++ side of the train-vs-PyTorch benchmark (tests/bench/run.sh drives it
// and tests/bench/pytorch_baseline.py is the other side). Runs the product's
// Trainer for one freeze recipe on the first steps*batch examples of a
// dataset, with no validation set, and prints one JSON line:
//
//   freezetune_train_vs_pytorch --model DIR --train FILE --recipe R
//       [--steps N] [--batch B] [--max-len L] [--epochs E] [--threads T]
//       [--cache-bytes C] [--lr X] [--seed S] [--warmup W] [--dump DIR]
//       [--count-memory] [--torch-adamw] [--cache-shared] [--sgemm-peak]
//       [--no-blas-core-selection] [--no-malloc-tuning]
//
//   R: full | bottom_half (embeddings + first L/2 layers frozen) | head_only
//   --cache-bytes: frozen-prefix cache budget (default 0: off)
//   --cache-shared: fill the cache as a shared job (a sweep trial) does,
//     even when this run alone cannot hit it (the behaviour before the
//     fill-only-when-hit policy)
//   --torch-adamw: torch::optim::AdamW::step() instead of FusedAdamWStep
//   --sgemm-peak: first measure at::mm GFLOP/s on BERT-base shapes
//   --dump DIR: also write DIR/train.jsonl (token ids, type ids, label of
//     the examples used, as encoded by the product) and DIR/plan.json (the
//     Trainer's batch plan per epoch: lists of row indices), so the PyTorch
//     side trains on exactly the same batches.
//   --dump-only: write the dump and exit (e.g. a dev set for the PyTorch
//     side's evaluation).
//   --count-memory: install a counting CPU allocator before anything is
//     allocated, to report activation memory (see below).
//
// Output fields:
//   step_seconds        every optimizer step's time, in order (the time
//                       between consecutive TrainMetrics events with
//                       log_every_steps 1: collation, forward, backward,
//                       clipping, AdamW step)
//   epoch_seconds       the sum of step_seconds per epoch
//   vm_hwm_kb           peak resident set (VmHWM of /proc/self/status)
//   live_bytes_step_end live tensor bytes after step 1 (weights, gradients,
//                       AdamW moments, cache): the model+optimizer baseline
//   activation_peak_bytes  max over steps >= 2 of (peak live tensor bytes
//                       during the step - live bytes when it began): what
//                       autograd saves plus the step's transient buffers
// Not a CTest.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include "nlohmann/json.hpp"
#include "server/data/batching.h"
#include "server/train/trainer.h"
#include "tests/bench/bench_tuning.h"

namespace ft = freezetune;

namespace {

using Clock = std::chrono::steady_clock;

// Wraps the default CPU allocator and counts live and peak bytes. Tensors
// allocated before it is installed are not counted (it is installed first).
// The DataPtr context is the data pointer itself (some kernels use
// raw_allocate/raw_deallocate, which require that), so sizes are kept in a
// map.
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) {
    base_ = base;
    base_deleter_ = base->raw_deleter();
    TORCH_CHECK(base_deleter_ != nullptr, "the default CPU allocator has no raw deleter");
  }

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    TORCH_CHECK(inner.release_context() == data, "unexpected CPU DataPtr context");
    {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[data] = static_cast<int64_t>(n);
    }
    const int64_t live = g_live.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load();
    while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
    }
    return {data, data, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

 private:
  static void Delete(void* data) {
    if (data == nullptr) return;
    int64_t n = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(data);
      if (it != sizes_.end()) {
        n = it->second;
        sizes_.erase(it);
      }
    }
    g_live.fetch_sub(n);
    base_deleter_(data);
  }
  static inline c10::Allocator* base_ = nullptr;
  static inline c10::DeleterFnPtr base_deleter_ = nullptr;
  static inline std::mutex mu_;
  static inline std::unordered_map<void*, int64_t> sizes_;
};

// Best-of-5 GFLOP/s of at::mm on the BERT-base shapes of a batch of 8 x 128
// tokens (projection, FFN up, FFN down) at the current thread count: the
// peak the selected BLAS kernel reaches on the model's own matrices.
double SgemmPeakGflops() {
  double best = 0.0;
  for (const auto& [m, k, n] : {std::tuple{1024, 768, 768}, std::tuple{1024, 768, 3072},
                               std::tuple{1024, 3072, 768}}) {
    const at::Tensor a = at::randn({m, k}), b = at::randn({k, n});
    at::mm(a, b);
    for (int r = 0; r < 5; ++r) {
      const auto start = Clock::now();
      at::mm(a, b);
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      best = std::max(best, 2.0 * m * k * n / s / 1e9);
    }
  }
  return best;
}

// User and system CPU seconds of this process so far.
std::pair<double, double> CpuSeconds() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return {secs(u.ru_utime), secs(u.ru_stime)};
}

int64_t VmHwmKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

struct Args {
  std::string model, train, recipe = "full", dump;
  int steps = 40, batch = 32, max_len = 64, epochs = 1, threads = 2, warmup_steps = 3;
  int64_t cache_bytes = 0, seed = 42;
  float lr = 1e-4f;
  bool count_memory = false;
  bool dump_only = false;
  bool torch_adamw = false;   // torch::optim::AdamW::step() instead of the fused step
  bool cache_shared = false;  // prefix cache filled as for a shared job (a sweep trial)
  bool sgemm_peak = false;    // measure the BLAS's sgemm GFLOP/s first
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--count-memory" || f == "--dump-only" || f == "--torch-adamw" ||
        f == "--cache-shared" || f == "--sgemm-peak") {
      bool& flag = f == "--count-memory" ? a->count_memory
                   : f == "--dump-only"  ? a->dump_only
                   : f == "--torch-adamw" ? a->torch_adamw
                   : f == "--cache-shared" ? a->cache_shared
                                           : a->sgemm_peak;
      flag = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (f == "--model") a->model = v;
    else if (f == "--train") a->train = v;
    else if (f == "--recipe") a->recipe = v;
    else if (f == "--dump") a->dump = v;
    else if (f == "--steps") a->steps = std::atoi(v.c_str());
    else if (f == "--batch") a->batch = std::atoi(v.c_str());
    else if (f == "--max-len") a->max_len = std::atoi(v.c_str());
    else if (f == "--epochs") a->epochs = std::atoi(v.c_str());
    else if (f == "--threads") a->threads = std::atoi(v.c_str());
    else if (f == "--cache-bytes") a->cache_bytes = std::atoll(v.c_str());
    else if (f == "--seed") a->seed = std::atoll(v.c_str());
    else if (f == "--lr") a->lr = std::strtof(v.c_str(), nullptr);
    else if (f == "--warmup") a->warmup_steps = std::atoi(v.c_str());
    else return false;
  }
  return !a->model.empty() && !a->train.empty() &&
         (a->recipe == "full" || a->recipe == "bottom_half" || a->recipe == "head_only");
}

// Median of steps after the first `skip` (allocator and cache warm-up).
double Median(std::vector<double> v, size_t skip) {
  if (v.size() > skip) v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(skip));
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool Dump(const std::string& dir, const ft::data::EncodedDataset& train, const Args& a) {
  std::filesystem::create_directories(dir);
  std::ofstream rows(dir + "/train.jsonl");
  for (int64_t i = 0; i < train.size(); ++i) {
    nlohmann::json r{{"ids", train.ids[i]},
                     {"type_ids", train.type_ids[i]},
                     {"label", train.label_ids[i]}};
    rows << r.dump() << "\n";
  }
  // The Trainer's plan: PlanBatches(train, batch_size, seed, epoch,
  // shuffle=true, length_bucketed=true) per epoch.
  nlohmann::json plan = nlohmann::json::array();
  for (int e = 0; e < a.epochs; ++e) {
    plan.push_back(ft::data::PlanBatches(train, a.batch, static_cast<uint64_t>(a.seed), e,
                                         /*shuffle=*/true, /*length_bucketed=*/true));
  }
  std::ofstream(dir + "/plan.json") << plan.dump() << "\n";
  return static_cast<bool>(rows);
}

}  // namespace

int main(int argc, char** argv) {
  const ft::base::ProcessTuning tuning = ft::bench::TuneBenchmark(&argc, argv);
  Args a;
  if (!ParseArgs(argc, argv, &a)) {
    std::fprintf(stderr,
                 "usage: freezetune_train_vs_pytorch --model DIR --train FILE --recipe "
                 "full|bottom_half|head_only [--steps N --batch B --max-len L --epochs E "
                 "--threads T --cache-bytes C --lr X --seed S --warmup W --dump DIR "
                 "--dump-only --count-memory --torch-adamw --cache-shared --sgemm-peak]\n");
    return 2;
  }
  static CountingAllocator* counting = nullptr;
  if (a.count_memory) {
    counting = new CountingAllocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(counting, /*priority=*/100);
  }
  at::set_num_threads(a.threads);
  const double sgemm_gflops = a.sgemm_peak ? SgemmPeakGflops() : 0.0;

  ft::v1::FineTuneJob job;
  job.set_model_uri(std::filesystem::absolute(a.model).string());
  job.mutable_train()->set_uri(std::filesystem::absolute(a.train).string());
  auto* h = job.mutable_hyperparameters();
  h->set_epochs(a.epochs);
  h->set_batch_size(a.batch);
  h->set_learning_rate(a.lr);
  h->set_max_seq_length(a.max_len);
  h->set_seed(a.seed);
  h->set_log_every_steps(1);
  h->set_validation_split(0.0f);
  // The layer count is only known after loading; set below.
  auto prepared = ft::train::PrepareJob(job, ft::train::RunContext{});
  if (!prepared.ok()) {
    std::fprintf(stderr, "%s\n", prepared.status().ToString().c_str());
    return 1;
  }
  const int layers = static_cast<int>(prepared->loaded.config.num_hidden_layers);
  if (a.recipe == "bottom_half") job.mutable_freeze()->mutable_bottom()->set_num_layers(layers / 2);
  if (a.recipe == "head_only") job.mutable_freeze()->mutable_head_only();
  if (a.recipe != "full") {
    // Recompile the plan for the recipe (PrepareJob compiled the empty spec).
    std::vector<ft::model::ParameterShape> shapes;
    for (const auto& item : prepared->loaded.model->named_parameters(true)) {
      shapes.push_back({item.key(), item.value().sizes().vec()});
    }
    auto plan = ft::train::CompileFreezePlan(job.freeze(), shapes, layers, "job.freeze");
    if (!plan.ok()) {
      std::fprintf(stderr, "%s\n", plan.status().ToString().c_str());
      return 1;
    }
    prepared->plan = *plan;
  }
  ft::data::EncodedDataset& train = prepared->train;
  const int64_t n = std::min<int64_t>(train.size(), int64_t{a.steps} * a.batch);
  train.ids.resize(static_cast<size_t>(n));
  train.type_ids.resize(static_cast<size_t>(n));
  train.label_ids.resize(static_cast<size_t>(n));
  if (!a.dump.empty() && !Dump(a.dump, train, a)) {
    std::fprintf(stderr, "cannot write %s\n", a.dump.c_str());
    return 1;
  }
  if (a.dump_only) return 0;
  // Token slots of the run's batches (padding included), for FLOP counts.
  int64_t tokens = 0;
  for (int e = 0; e < a.epochs; ++e) {
    for (const auto& batch : ft::train::TrainingBatches(train, prepared->hp, e)) {
      size_t longest = 0;
      for (int64_t i : batch) longest = std::max(longest, train.ids[static_cast<size_t>(i)].size());
      tokens += static_cast<int64_t>(longest * batch.size());
    }
  }

  std::vector<double> step_seconds;
  std::vector<int64_t> step_start_live, step_peak;
  int64_t live_at_start = 0;
  auto last = Clock::now();
  ft::train::TrainerOptions options;
  options.hp = prepared->hp;
  options.freeze_spec = job.freeze();
  options.prefix_cache_max_bytes = a.cache_bytes;
  options.prefix_cache_shared = a.cache_shared;
  options.fused_adamw = !a.torch_adamw;
  options.emit = [&](ft::v1::JobEvent e) {
    if (!e.has_train()) return;
    const auto now = Clock::now();
    step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    step_peak.push_back(g_peak.load());
    step_start_live.push_back(live_at_start);
    live_at_start = g_live.load();
    g_peak.store(live_at_start);
    last = Clock::now();
  };
  auto trainer = ft::train::Trainer::Create(
      prepared->loaded.model, prepared->plan, prepared->labels, std::move(prepared->train),
      ft::data::EncodedDataset{}, prepared->loaded.tokenizer->pad_id(), options);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", trainer.status().ToString().c_str());
    return 1;
  }
  live_at_start = g_live.load();
  g_peak.store(live_at_start);
  const auto [user_before, sys_before] = CpuSeconds();
  const auto train_start = Clock::now();
  last = Clock::now();
  if (auto s = (*trainer)->Train(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }

  const double train_wall = std::chrono::duration<double>(Clock::now() - train_start).count();
  const auto [user_after, sys_after] = CpuSeconds();
  const int64_t steps_per_epoch = (n + a.batch - 1) / a.batch;
  std::vector<double> epoch_seconds(static_cast<size_t>(a.epochs), 0.0);
  for (size_t s = 0; s < step_seconds.size(); ++s) {
    epoch_seconds[std::min<size_t>(s / static_cast<size_t>(steps_per_epoch),
                                   epoch_seconds.size() - 1)] += step_seconds[s];
  }
  int64_t activation_peak = 0;
  for (size_t s = 1; s < step_seconds.size(); ++s) {
    activation_peak = std::max(activation_peak, step_peak[s] - step_start_live[s]);
  }
  double mean = 0.0;
  const size_t skip = std::min<size_t>(static_cast<size_t>(a.warmup_steps), step_seconds.size());
  for (size_t s = skip; s < step_seconds.size(); ++s) mean += step_seconds[s];
  if (step_seconds.size() > skip) mean /= static_cast<double>(step_seconds.size() - skip);
  const auto& summary = (*trainer)->summary();
  nlohmann::json out{
      {"side", "cpp"},
      {"recipe", a.recipe},
      {"threads", at::get_num_threads()},
      {"examples", n},
      {"batch_size", a.batch},
      {"max_len", a.max_len},
      {"epochs", a.epochs},
      {"steps", step_seconds.size()},
      {"warmup_steps_skipped", skip},
      {"cache_bytes", a.cache_bytes},
      {"trainable_parameters", (*trainer)->plan().trainable_parameters()},
      {"mean_step_seconds", mean},
      {"median_step_seconds", Median(step_seconds, skip)},
      {"step_seconds", step_seconds},
      {"epoch_seconds", epoch_seconds},
      {"prefix_cache_hits", summary.prefix_cache_hits},
      {"prefix_cache_misses", summary.prefix_cache_misses},
      {"frozen_weights_verified", summary.frozen_weights_verified},
      {"vm_hwm_kb", VmHwmKb()},
      {"train_wall_seconds", train_wall},
      {"train_user_seconds", user_after - user_before},
      {"train_sys_seconds", sys_after - sys_before},
      {"fused_adamw", !a.torch_adamw},
      {"cache_shared", a.cache_shared},
      {"tokens", tokens},
  };
  if (a.sgemm_peak) out["sgemm_peak_gflops"] = sgemm_gflops;
  out.update(ft::bench::TuningJson(tuning));
  if (a.count_memory) {
    out["live_bytes_step_end"] = step_start_live.size() > 1 ? step_start_live[1] : 0;
    out["activation_peak_bytes"] = activation_peak;
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
