// The GPU benchmark's freezetune side (issue 13), also runnable on the CPU:
// training throughput of freezetune's Trainer on a randomly initialised BERT
// (default BERT-base: 12 layers, hidden 768) over synthetic full-length
// sequences, for each precision and freeze mode, with peak device memory and
// (on CUDA) model FLOP utilisation against the measured bf16 matmul rate.
//
//   gpu_bench [--device cuda|cpu] [--layers 12] [--hidden 768] [--heads 12]
//             [--intermediate 3072] [--seq 128] [--batch 32] [--steps 20]
//             [--epochs 3] [--precisions bf16] [--modes full,bottom6,head_only]
//             [--json FILE]
//
// Each run trains `epochs` epochs of `steps` steps (no evaluation) and
// reports the last epoch's samples/s (so warm-up and the head-only prefix
// cache's first fill are excluded). FLOPs per training sample: 6 x trainable
// encoder parameters x seq + 2 x frozen encoder parameters x seq, plus
// attention (4 x seq^2 x hidden per layer forward, 3x that with backward);
// head-only with its cache warm does almost none, so its MFU is not given.
// tests/bench/gpu_hf_bench.py measures transformers the same way;
// gpu_bench_report.py puts the two side by side.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/model/bert.h"
#include "server/train/device_memory.h"
#include "server/train/freeze_plan.h"
#include "server/train/precision.h"
#include "server/train/trainer.h"

namespace ft = freezetune;

namespace {

struct Args {
  std::string device = "cuda";
  int layers = 12, hidden = 768, heads = 12, intermediate = 3072, seq = 128, batch = 32;
  int steps = 20, epochs = 3;
  std::vector<std::string> precisions = {"bf16"};
  std::vector<std::string> modes = {"full", "bottom6", "head_only"};
  std::string json;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "gpu_bench: %s\n", why.c_str());
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage("missing value for " + flag);
    const std::string v = argv[++i];
    auto num = [&](int* out) {
      if (!absl::SimpleAtoi(v, out) || *out <= 0) Usage("bad value for " + flag + ": " + v);
    };
    if (flag == "--device") a.device = v;
    else if (flag == "--layers") num(&a.layers);
    else if (flag == "--hidden") num(&a.hidden);
    else if (flag == "--heads") num(&a.heads);
    else if (flag == "--intermediate") num(&a.intermediate);
    else if (flag == "--seq") num(&a.seq);
    else if (flag == "--batch") num(&a.batch);
    else if (flag == "--steps") num(&a.steps);
    else if (flag == "--epochs") num(&a.epochs);
    else if (flag == "--precisions") a.precisions = absl::StrSplit(v, ',');
    else if (flag == "--modes") a.modes = absl::StrSplit(v, ',');
    else if (flag == "--json") a.json = v;
    else Usage("unknown flag " + flag);
  }
  if (a.epochs < 2) Usage("--epochs must be >= 2 (the last epoch is measured)");
  return a;
}

ft::v1::Precision PrecisionOf(const std::string& name) {
  if (name == "fp32") return ft::v1::PRECISION_FP32;
  if (name == "bf16") return ft::v1::PRECISION_BF16;
  if (name == "fp16") return ft::v1::PRECISION_FP16;
  Usage("unknown precision " + name);
}

ft::v1::FreezeSpec SpecOf(const std::string& mode, int layers) {
  ft::v1::FreezeSpec spec;
  if (mode == "full") return spec;
  if (mode == "head_only") {
    spec.mutable_head_only();
    return spec;
  }
  int n = 0;
  if (mode.rfind("bottom", 0) != 0 || !absl::SimpleAtoi(mode.substr(6), &n) || n > layers) {
    Usage("unknown mode " + mode + " (full, bottomN, head_only)");
  }
  spec.mutable_bottom()->set_num_layers(n);
  spec.set_frozen_eval_mode(true);
  return spec;
}

// Random full-length sequences ([CLS] ... [SEP]) with random binary labels.
ft::data::EncodedDataset Synthetic(int64_t n, int seq, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ft::data::EncodedDataset d;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> ids(static_cast<size_t>(seq));
    ids.front() = 101;
    ids.back() = 102;
    for (int t = 1; t + 1 < seq; ++t) ids[static_cast<size_t>(t)] = 1000 + static_cast<int32_t>(rng() % 28000);
    d.ids.push_back(std::move(ids));
    d.type_ids.emplace_back(static_cast<size_t>(seq), 0);
    d.label_ids.push_back(static_cast<int64_t>(rng() % 2));
  }
  return d;
}

// bf16 (or the given dtype) matmul rate in FLOP/s on `device`: 8192^3 on
// CUDA, 1024^3 on the CPU.
double MatmulRate(const torch::Device& device, torch::Dtype dtype) {
  const int64_t n = device.is_cuda() ? 8192 : 1024;
  auto opts = torch::TensorOptions().device(device).dtype(dtype);
  torch::Tensor a = torch::randn({n, n}, opts), b = torch::randn({n, n}, opts);
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  for (int i = 0; i < 3; ++i) at::matmul(a, b);
  sync();
  const int reps = device.is_cuda() ? 20 : 3;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) at::matmul(a, b);
  sync();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * static_cast<double>(n * n * n) * reps / secs;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  if (args.device != "cpu" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "gpu_bench: no CUDA device; use --device cpu\n");
    return 1;
  }
  const torch::Device device(args.device);
  auto config = ft::model::ParseBertConfig(nlohmann::json{
      {"model_type", "bert"}, {"vocab_size", 30522}, {"hidden_size", args.hidden},
      {"num_hidden_layers", args.layers}, {"num_attention_heads", args.heads},
      {"intermediate_size", args.intermediate}, {"max_position_embeddings", 512},
      {"hidden_dropout_prob", 0.0}, {"attention_probs_dropout_prob", 0.0}}.dump());
  if (!config.ok()) Usage(std::string(config.status().message()));
  const int64_t n = static_cast<int64_t>(args.steps) * args.batch;
  const ft::data::EncodedDataset train = Synthetic(n, args.seq, 7);
  ft::data::LabelSpace labels;
  labels.names = {"0", "1"};

  nlohmann::json out;
  out["device"] = args.device;
  if (device.is_cuda()) out["device_name"] = "cuda";
  out["config"] = {{"layers", args.layers}, {"hidden", args.hidden}, {"seq", args.seq},
                   {"batch", args.batch}, {"steps_per_epoch", args.steps}, {"epochs", args.epochs}};
  out["torch_version"] = TORCH_VERSION;
  const double peak_bf16 = MatmulRate(device, torch::kBFloat16);
  out["matmul_bf16_flops"] = peak_bf16;
  std::printf("bf16 matmul: %.1f TFLOP/s\n", peak_bf16 / 1e12);

  // Encoder parameters per layer (weights + biases + LayerNorms).
  const double h = args.hidden, inter = args.intermediate, t = args.seq;
  const double per_layer = 4 * (h * h + h) + 2 * (h * inter) + inter + h + 4 * h;
  const double attention_fwd = 4.0 * t * t * h;  // QK^T and PV, per layer per sample
  nlohmann::json runs = nlohmann::json::array();
  for (const std::string& precision : args.precisions) {
    for (const std::string& mode : args.modes) {
      torch::manual_seed(42);
      ft::model::BertForSequenceClassification model(*config, 2);
      model->InitWeights();
      std::vector<ft::model::ParameterShape> shapes;
      for (const auto& item : model->named_parameters()) {
        shapes.push_back({item.key(), item.value().sizes().vec()});
      }
      const ft::v1::FreezeSpec spec = SpecOf(mode, args.layers);
      auto plan = ft::train::CompileFreezePlan(spec, shapes, args.layers, "freeze");
      if (!plan.ok()) Usage(std::string(plan.status().message()));
      ft::train::TrainerOptions options;
      options.hp.epochs = args.epochs;
      options.hp.batch_size = args.batch;
      options.hp.learning_rate = 1e-5;
      options.hp.max_seq_length = args.seq;
      options.hp.log_every_steps = args.steps;  // one event per epoch
      options.hp.length_bucketing = false;
      options.hp.precision = PrecisionOf(precision);
      options.freeze_spec = spec;
      options.device = device;
      options.prefix_cache_max_bytes = int64_t{16} << 30;
      std::vector<double> epoch_rates;
      options.emit = [&](ft::v1::JobEvent e) {
        if (e.has_train()) epoch_rates.push_back(e.train().samples_per_second());
      };
      const int frozen_layers = plan->frozen_prefix_layers;
      auto trainer = ft::train::Trainer::Create(model, *plan, labels, train, {}, 0, options);
      if (!trainer.ok()) Usage(std::string(trainer.status().message()));
      ft::train::ResetPeakDeviceMemory(device);
      absl::Status s = (*trainer)->Train();
      if (!s.ok()) {
        std::fprintf(stderr, "gpu_bench: %s %s: %s\n", precision.c_str(), mode.c_str(),
                     std::string(s.message()).c_str());
        return 1;
      }
      const double rate = epoch_rates.empty() ? 0.0 : epoch_rates.back();
      nlohmann::json run{{"precision", precision},
                         {"mode", mode},
                         {"samples_per_second", rate},
                         {"epoch_samples_per_second", epoch_rates},
                         {"trainable_parameters", plan->trainable_parameters()},
                         {"peak_device_memory_bytes",
                          ft::train::QueryDeviceMemory(device).peak_bytes}};
      if (mode != "head_only") {
        // Embeddings + frozen_layers run forward only; the rest forward and
        // backward (the head's FLOPs are negligible).
        const double frozen = frozen_layers < 0 ? 0 : frozen_layers;
        const double trained = args.layers - frozen;
        const double flops_per_sample = t * per_layer * (2 * frozen + 6 * trained) +
                                        attention_fwd * (frozen + 3 * trained);
        run["model_flops_per_sample"] = flops_per_sample;
        run["mfu_vs_bf16_matmul"] = rate * flops_per_sample / peak_bf16;
      }
      std::printf("%-5s %-10s %10.1f samples/s  peak %.2f GiB\n", precision.c_str(), mode.c_str(),
                  rate, static_cast<double>(run["peak_device_memory_bytes"].get<int64_t>()) / (1 << 30));
      runs.push_back(std::move(run));
    }
  }
  out["runs"] = std::move(runs);
  if (!args.json.empty()) {
    std::ofstream f(args.json);
    f << out.dump(1) << "\n";
    if (!f) Usage("cannot write " + args.json);
  }
  return 0;
}
