// The fine-tuning loop behind RunFineTune, exposed as a class so tests (and
// benchmarks) can inspect the model and optimizer after training.
//
// What it guarantees:
//  - Frozen parameters have requires_grad == false, never get a gradient and
//    are never in the optimizer; after training each one's bytes are compared
//    (by a 64-bit digest) with those before the first step.
//  - With a frozen prefix (embeddings + K bottom layers all frozen) that
//    prefix runs under NoGradGuard, so autograd records nothing there.
//  - With frozen_eval_mode, modules whose parameters are all frozen run in
//    eval mode (no dropout) during training.
//  - AdamW parameter groups: one per (weight decay on/off, lr_scale), over
//    the trainable parameters only; biases and LayerNorm weights get no
//    weight decay; each group's lr is base_lr * lr_scale * schedule factor.
//  - The best evaluation's weights (by the selection metric, ties keep the
//    earlier one) are restored at the end.
//
// Thread safety: a Trainer is used from one thread (the scheduler's); the
// should_stop callback may read state set by other threads.
#ifndef FREEZETUNE_SERVER_TRAIN_TRAINER_H_
#define FREEZETUNE_SERVER_TRAIN_TRAINER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "nlohmann/json.hpp"
#include "server/data/batching.h"
#include "server/data/dataset.h"
#include "server/model/bert.h"
#include "server/model/hf_checkpoint.h"
#include "server/train/fine_tune.h"
#include "server/train/freeze_plan.h"
#include "server/train/fused_adamw.h"
#include "server/train/hyperparameters.h"
#include "server/train/masked_lm.h"
#include "server/train/data_parallel.h"
#include "server/train/precision.h"
#include "server/train/prefix_store.h"

namespace freezetune::train {

struct TrainerOptions {
  ResolvedHyperparameters hp;
  // The full spec, for its schedule (gradual unfreezing); the base plan is
  // passed to Create already compiled.
  v1::FreezeSpec freeze_spec;
  torch::Device device = torch::kCPU;
  // Both optional. emit receives TrainMetrics/EvalMetrics/Notice events;
  // should_stop is polled before every micro-batch.
  std::function<void(v1::JobEvent)> emit;
  std::function<bool()> should_stop;
  // Optional, CPU only: the intra-op threads this run should use now, polled
  // before every batch; a change is applied with at::set_num_threads on the
  // training thread (the server splits its cores among running CPU jobs).
  std::function<int()> intra_op_threads;
  // Optional: called on the training thread after every optimizer step this
  // run takes (not for the steps a resume skips), with the step's wall time
  // (its first micro-batch to the optimizer update) and its examples.
  std::function<void(double seconds, int64_t samples)> on_step;
  // Where resumable checkpoints go (see checkpoint.h); empty disables them.
  // Train() resumes from the newest one found here. Checkpoints are written
  // every hp.checkpoint_every_steps steps, at each epoch end, and when
  // should_stop fires.
  std::string checkpoint_dir;
  // Frozen-prefix output cache. When the embeddings and the first K layers
  // are frozen and deterministic (training: frozen_eval_mode on; evaluation:
  // always, as it runs in eval mode), their output per example is computed
  // once and reused in later epochs and evaluations, and by other trainers
  // sharing `prefix_store` (a sweep's trials): a trainer freezing K layers
  // starts from the deepest shallower prefix already stored. Without a
  // shared store the trainer uses its own of prefix_cache_max_bytes (0
  // disables caching). Results equal uncached ones up to float rounding
  // (batch shapes differ), not bit for bit.
  //
  // The cache pays for itself only when its rows are read again, so a
  // trainer fills it only when that can happen: training rows when it runs
  // more than one epoch, evaluation rows when it evaluates more than once,
  // and both when prefix_cache_shared says other jobs may read them (a
  // sweep's trials, the server's --prefix_cache_shared, the job's
  // share_frozen_prefix). Otherwise it only looks rows up (another job may
  // have shared them), and a 1-epoch job with one evaluation stores
  // nothing. Unless shared, the entries a trainer created are dropped when
  // it is destroyed.
  std::shared_ptr<PrefixStore> prefix_store;
  int64_t prefix_cache_max_bytes = int64_t{512} << 20;
  bool prefix_cache_shared = false;
  // Optimizer steps through FusedAdamWStep (fused_adamw.h; equal to
  // torch::optim::AdamW within 2 ulps); false: torch::optim::AdamW::step()
  // (benchmarks compare the two).
  bool fused_adamw = true;
  // Set for a masked-LM job (the model has BertHead::kMaskedLm): batches are
  // masked with it (masked_lm.h) and the loss and evaluations are the
  // masked-token cross-entropy and accuracy; no prefix caching.
  std::shared_ptr<const MlmMasker> masker;
  // Data-parallel: this process is one rank (see data_parallel.h); null
  // trains alone. hp.batch_size is per rank. Only rank 0 evaluates, writes
  // checkpoints and emits events.
  std::shared_ptr<GradientSync> sync;
};

// What a finished (or stopped) run reports.
struct TrainerSummary {
  int64_t steps = 0;
  int64_t total_steps = 0;
  bool has_best = false;
  v1::EvalMetrics best_eval;
  v1::EvalMetrics final_eval;
  std::vector<v1::EvalMetrics> history;  // every evaluation, in order
  bool early_stopped = false;
  int64_t resumed_from_step = -1;  // -1 when the run started fresh
  // Frozen-prefix cache use, in examples (training and evaluation).
  int64_t prefix_cache_hits = 0;
  int64_t prefix_cache_misses = 0;
  // Of the misses, rows computed from a stored shallower prefix (another
  // trainer's, e.g. a sweep trial that froze fewer layers) rather than from
  // the embeddings.
  int64_t prefix_rows_from_shallower = 0;
  bool frozen_weights_verified = false;
  double train_seconds = 0.0;
  // fp16: optimizer steps skipped for overflowing gradients (precision.h).
  int64_t skipped_steps = 0;
  // Most device memory held by tensors during the run (CUDA; 0 on CPU).
  int64_t peak_device_memory_bytes = 0;
  // Data-parallel: gradient bytes this rank all-reduced per optimizer step.
  int64_t allreduce_bytes_per_step = 0;
};

class Trainer {
 public:
  // Moves the model to the device, applies `plan` (requires_grad per
  // parameter; names must equal the model's), digests the frozen
  // parameters and builds the optimizer. `validation` may be empty (then no
  // evaluations run and the final weights are the output).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(model::BertForSequenceClassification model,
                                                         FreezePlan plan, data::LabelSpace labels,
                                                         data::EncodedDataset train,
                                                         data::EncodedDataset validation,
                                                         int64_t pad_id, TrainerOptions options);

  // Runs every epoch (or until early stopping), restores the best weights
  // and verifies the frozen ones. CANCELLED ("cancelled at step N") when
  // should_stop fires; INVALID_ARGUMENT "step N: non-finite loss" /
  // "step N: non-finite gradient norm" on divergence; INTERNAL when a frozen
  // parameter changed. Never throws.
  absl::Status Train();

  // Evaluates the current weights on the validation set (no events).
  absl::StatusOr<v1::EvalMetrics> Evaluate();

  const TrainerSummary& summary() const { return summary_; }
  const FreezePlan& plan() const { return plan_; }
  model::BertForSequenceClassification& model() { return model_; }
  torch::optim::AdamW& optimizer() { return *optimizer_; }
  // Parameters currently trainable, in model order.
  std::vector<torch::Tensor> TrainableParameters() const;
  // Names of the parameters trainable at any point so far (stages included):
  // everything that may differ from the loaded model.
  const std::set<std::string>& ever_trainable() const { return ever_trainable_; }
  // metrics.json content: summary, selection metric and history.
  nlohmann::json MetricsJson() const;

 private:
  Trainer() = default;

 public:
  // Drops the prefix-store entries this trainer created, unless shared.
  ~Trainer();

 private:
  absl::Status ApplyPlan();
  void BuildOptimizer();
  void SetTrainMode();
  // A dataset's view of the prefix store at the current prefix depth.
  struct PrefixCache {
    int k = -1;
    std::vector<std::string> keys;       // store key per depth in [0, k]
    std::shared_ptr<PrefixEntry> entry;  // depth k; null when not cacheable
    bool fill = true;  // store computed rows (else look them up only)
  };
  // Logits for a collated batch of `dataset`; `training` selects the
  // training path (frozen prefix under NoGradGuard) or evaluation.
  torch::Tensor Forward(const data::Batch& batch, const data::EncodedDataset& dataset,
                        PrefixCache& cache, bool training);
  // Hidden states after embeddings + layers [0, k): from the store where
  // every example of the batch is there, else computed from the deepest
  // stored shallower depth (or from the embeddings) and stored.
  torch::Tensor PrefixHidden(const data::Batch& batch, const data::EncodedDataset& dataset,
                             PrefixCache& cache, int k, const torch::Tensor& ids,
                             const torch::Tensor& types, const torch::Tensor& mask,
                             bool cacheable);
  // Store keys of `dataset`'s outputs after embeddings + d layers, for d in
  // [0, k]: its tokens, the frozen weights involved, the model shape and the
  // device. Computed once per prefix depth, not per batch.
  std::vector<std::string> PrefixStoreKeys(const data::EncodedDataset& dataset, int k) const;
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& labels) const;
  absl::StatusOr<v1::EvalMetrics> EvaluateImpl();
  absl::Status TrainLoop();
  absl::Status ApplyStagesAt(int64_t epoch_1based, int64_t next_step_1based);
  absl::Status AfterEval(v1::EvalMetrics m, bool* stop);
  void Emit(v1::JobEvent event) const;
  // Applies options_.intra_op_threads; then polls should_stop.
  bool ShouldStop() const;
  // Data-parallel: true on every rank when `local` is true on any (a
  // collective; every rank must call it at the same point). Alone: `local`.
  bool AnyRank(bool local);
  // Rank 0, or training alone: evaluates, checkpoints, reports.
  bool IsLeader() const { return !options_.sync || options_.sync->rank() == 0; }
  // The hyperparameters batches are planned with: batch_size times the
  // number of ranks (each rank then takes its shard).
  ResolvedHyperparameters PlanHyperparameters() const;
  // Checkpoint at a step boundary: training continues at micro-batch
  // `next_micro` of 0-based `epoch`, with the CPU RNG in `rng_state`.
  absl::Status SaveCheckpoint(int epoch, int64_t next_micro, int64_t last_eval_step,
                              const std::string& rng_state);
  // Restores the newest checkpoint if there is one; sets the loop position.
  absl::Status MaybeResume(int* epoch, int64_t* next_micro, int64_t* last_eval_step);

  model::BertForSequenceClassification model_{nullptr};
  FreezePlan plan_;
  FreezePlan base_plan_;  // before any unfreezing stage
  data::LabelSpace labels_;
  data::EncodedDataset train_;
  data::EncodedDataset validation_;
  int64_t pad_id_ = 0;
  TrainerOptions options_;
  TrainerSummary summary_;

  std::map<std::string, torch::Tensor> params_;  // by HF name
  std::vector<std::string> param_order_;
  // Parameters frozen since the start (or since the stage that froze them),
  // with the digest of their bytes at that time.
  std::map<std::string, uint64_t> frozen_digest_;
  // Trainable at some point: what the best-state copy has to cover.
  std::set<std::string> ever_trainable_;
  std::map<std::string, torch::Tensor> best_state_;
  PrefixCache train_cache_;
  PrefixCache eval_cache_;
  std::vector<std::string> created_prefix_keys_;  // entries Open() created for us
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  FusedAdamWOptions adamw_options_;  // sparse rows, set with the optimizer
  // Dropout's generator (a CPU run's own; see Create), saved in checkpoints.
  at::Generator rng_;
  std::vector<double> group_base_lr_;  // base_lr * lr_scale per param group
  std::vector<bool> stage_applied_;
  int evals_without_improvement_ = 0;
  // Mixed precision: the autocast dtype of Forward (float32: none), and the
  // loss scaler (enabled for fp16 only).
  torch::Dtype compute_dtype_ = torch::kFloat;
  LossScaler scaler_{false};
  // Padded length of the training batch in flight, for out-of-memory errors.
  int64_t batch_length_ = 0;
};

// The training batches of 0-based `epoch`, as Train() runs them: seeded
// shuffled batches of hp.batch_size (see data::PlanBatches), grouped by
// length when hp.length_bucketing, else a plain shuffled cut. Deterministic
// in (dataset lengths, batch_size, seed, epoch, length_bucketing), which is
// what lets a resumed run continue the same plan.
std::vector<std::vector<int64_t>> TrainingBatches(const data::EncodedDataset& train,
                                                  const ResolvedHyperparameters& hp, int epoch);

// A job loaded and encoded, ready for a Trainer (the part of RunFineTune
// before the loop). Seeds torch with the job's seed before anything random
// (classifier init, dropout).
struct PreparedJob {
  std::string model_dir;  // job.model_uri resolved to a local directory
  // When model_dir is a delta output: its base (job.base_model_uri resolved).
  std::string delta_base_dir;
  model::LoadedModel loaded;
  data::LabelSpace labels;
  data::EncodedDataset train;
  data::EncodedDataset validation;
  FreezePlan plan;
  ResolvedHyperparameters hp;
};
absl::StatusOr<PreparedJob> PrepareJob(const v1::FineTuneJob& job, const RunContext& context);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_TRAINER_H_
