// The fine-tuning loop; see trainer.h for the guarantees.
#include "server/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <c10/util/string_utils.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/data/batching.h"
#include "server/train/checkpoint.h"
#include "server/train/device_memory.h"
#include "server/train/lr_schedule.h"
#include "server/train/masked_lm.h"
#include "server/train/metrics.h"

namespace freezetune::train {
namespace {

// 64-bit digest of a tensor's bytes. Comparing digests taken before and after
// training proves a frozen weight unchanged (up to a 2^-64 collision), without
// keeping a copy of the frozen encoder (420 MB for BERT-base head-only).
uint64_t ContentDigest(const torch::Tensor& tensor) {
  torch::Tensor bytes = tensor.detach().to(torch::kCPU).contiguous();
  return absl::Hash<absl::string_view>{}(
      absl::string_view(static_cast<const char*>(bytes.data_ptr()), bytes.nbytes()));
}

using Clock = std::chrono::steady_clock;

bool NoWeightDecay(const std::string& name) {
  return absl::EndsWith(name, ".bias") || absl::StrContains(name, "LayerNorm.");
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Runs `fn`, turning LibTorch and standard exceptions into a Status.
template <typename Fn>
absl::Status Guarded(const char* what, Fn&& fn) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    // Out of memory is RESOURCE_EXHAUSTED, so that Train() can say which
    // batch shape did not fit.
    if (IsOutOfMemory(e)) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", e.what_without_backtrace()));
    }
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    if (IsOutOfMemory(e)) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", e.what()));
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Optimizer state is keyed by tensor identity, as torch::optim does.
std::string StateKey(const torch::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

std::string RngState(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  at::Tensor state = gen.get_state().contiguous();
  return std::string(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()),
                     static_cast<size_t>(state.numel()));
}

void SetRngState(at::Generator gen, const std::string& bytes) {
  at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    model::BertForSequenceClassification model, FreezePlan plan, data::LabelSpace labels,
    data::EncodedDataset train, data::EncodedDataset validation, int64_t pad_id,
    TrainerOptions options) {
  if (!model) return absl::InvalidArgumentError("trainer: no model");
  if (train.size() == 0) return absl::InvalidArgumentError("job.train: no examples");
  std::unique_ptr<Trainer> t(new Trainer());
  t->model_ = std::move(model);
  t->base_plan_ = plan;
  t->plan_ = std::move(plan);
  t->labels_ = std::move(labels);
  t->train_ = std::move(train);
  t->validation_ = std::move(validation);
  t->pad_id_ = pad_id;
  t->options_ = std::move(options);
  if (!t->options_.prefix_store) {
    t->options_.prefix_store = std::make_shared<PrefixStore>(t->options_.prefix_cache_max_bytes);
  }
  {
    // Fill the prefix cache only where a row can be read again (trainer.h).
    const ResolvedHyperparameters& hp = t->options_.hp;
    const bool shared = t->options_.prefix_cache_shared;
    const int64_t total_steps = TotalSteps(t->train_.size(), hp);
    t->train_cache_.fill = shared || hp.epochs > 1;
    t->eval_cache_.fill = shared || hp.epochs > 1 ||
                          (hp.eval_every_steps > 0 && hp.eval_every_steps < total_steps);
  }
  t->stage_applied_.assign(t->options_.freeze_spec.schedule_size(), false);
  t->compute_dtype_ = ComputeDtype(t->options_.hp.precision);
  t->scaler_ = LossScaler(t->options_.hp.precision == v1::PRECISION_FP16);
  FT_RETURN_IF_ERROR(Guarded("trainer setup", [&]() -> absl::Status {
    if (t->options_.device.is_cuda()) {
      ApplyTf32(t->options_.hp.allow_tf32);
      ResetPeakDeviceMemory(t->options_.device);
    }
    t->model_->to(t->options_.device);
    if (t->options_.device.is_cpu()) {
      // Dropout masks from this run's own generator: jobs training side by
      // side on the CPU would otherwise interleave their draws from the
      // global one and neither would be reproducible.
      // Data-parallel ranks each draw their own masks (seed + rank).
      const uint64_t rank = t->options_.sync ? static_cast<uint64_t>(t->options_.sync->rank()) : 0;
      t->rng_ = at::detail::createCPUGenerator(static_cast<uint64_t>(t->options_.hp.seed) + rank);
      t->model_->set_dropout_generator(t->rng_);
    } else {
      t->rng_ = at::detail::getDefaultCPUGenerator();
    }
    for (const auto& item : t->model_->named_parameters(/*recurse=*/true)) {
      t->params_[item.key()] = item.value();
      t->param_order_.push_back(item.key());
    }
    FT_RETURN_IF_ERROR(t->ApplyPlan());
    t->BuildOptimizer();
    // Every rank starts from rank 0's trainable weights, as DDP does.
    if (t->options_.sync) t->options_.sync->Broadcast(t->TrainableParameters());
    return absl::OkStatus();
  }));
  return t;
}

Trainer::~Trainer() {
  if (options_.prefix_cache_shared || !options_.prefix_store) return;
  train_cache_.entry.reset();
  eval_cache_.entry.reset();
  for (const std::string& key : created_prefix_keys_) options_.prefix_store->DropUnlessHeld(key);
}

absl::Status Trainer::ApplyPlan() {
  if (plan_.parameters.size() != params_.size()) {
    return absl::InternalError(absl::StrCat("freeze plan has ", plan_.parameters.size(),
                                            " parameters, model has ", params_.size()));
  }
  torch::NoGradGuard no_grad;
  for (const ParameterDecision& d : plan_.parameters) {
    auto it = params_.find(d.name);
    if (it == params_.end()) {
      return absl::InternalError(absl::StrCat("freeze plan names unknown parameter ", d.name));
    }
    torch::Tensor& p = it->second;
    p.set_requires_grad(d.trainable);
    if (d.trainable) {
      ever_trainable_.insert(d.name);
      frozen_digest_.erase(d.name);
    } else {
      // A parameter that trained earlier would leave a stale gradient behind;
      // drop it so frozen parameters hold none.
      p.mutable_grad() = torch::Tensor();
      if (frozen_digest_.count(d.name) == 0) frozen_digest_[d.name] = ContentDigest(p);
    }
  }
  return absl::OkStatus();
}

void Trainer::BuildOptimizer() {
  const ResolvedHyperparameters& hp = options_.hp;
  // (no_decay, lr_scale) -> parameters, in model order within a group.
  std::map<std::pair<bool, float>, std::vector<torch::Tensor>> groups;
  for (const ParameterDecision& d : plan_.parameters) {
    if (!d.trainable) continue;
    groups[{NoWeightDecay(d.name), d.lr_scale}].push_back(params_.at(d.name));
  }
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  std::vector<double> base_lr;
  for (auto& [key, tensors] : groups) {
    const double lr = hp.learning_rate * key.second;
    auto opts = std::make_unique<torch::optim::AdamWOptions>(lr);
    opts->weight_decay(key.first ? 0.0 : hp.weight_decay);
    param_groups.emplace_back(std::move(tensors), std::move(opts));
    base_lr.push_back(lr);
  }
  auto fresh = std::make_unique<torch::optim::AdamW>(
      std::move(param_groups), torch::optim::AdamWOptions(hp.learning_rate));
  if (optimizer_) {
    // Rebuilt after an unfreezing stage: keep the moments (and step counts)
    // of parameters that were already training. State is keyed by the
    // tensor's identity, which the rebuild preserves.
    for (auto& [key, state] : optimizer_->state()) fresh->state()[key] = std::move(state);
  }
  optimizer_ = std::move(fresh);
  group_base_lr_ = std::move(base_lr);
  adamw_options_.sparse_rows.clear();
  if (hp.sparse_embedding_updates) {
    for (const ParameterDecision& d : plan_.parameters) {
      if (d.trainable && absl::EndsWith(d.name, "embeddings.word_embeddings.weight")) {
        adamw_options_.sparse_rows.push_back(params_.at(d.name));
      }
    }
  }
}

std::vector<torch::Tensor> Trainer::TrainableParameters() const {
  std::vector<torch::Tensor> out;
  for (const ParameterDecision& d : plan_.parameters) {
    if (d.trainable) out.push_back(params_.at(d.name));
  }
  return out;
}

void Trainer::SetTrainMode() {
  model_->train();
  if (!plan_.frozen_eval_mode) return;
  const int64_t num_layers = model_->num_layers();
  // all_frozen[layer + 1] for layer in [-1, num_layers]; the head (-1) is
  // split by name into pooler and classifier below.
  std::vector<bool> all_frozen(static_cast<size_t>(num_layers) + 1, true);
  for (const ParameterDecision& d : plan_.parameters) {
    if (!d.trainable) continue;
    if (d.layer >= 0 && d.layer <= num_layers) all_frozen[d.layer] = false;
  }
  if (all_frozen[0]) model_->embeddings_module().eval();
  for (int64_t l = 0; l < num_layers; ++l) {
    if (all_frozen[l + 1]) model_->layer_module(l).eval();
  }
  // The head's modules (pooler and classifier, or the MLM head) by prefix.
  for (const auto& [prefix, module] : model_->head_modules()) {
    bool frozen = true;
    for (const ParameterDecision& d : plan_.parameters) {
      if (d.trainable && absl::StartsWith(d.name, prefix)) frozen = false;
    }
    if (frozen) module->eval();
  }
}

std::vector<std::string> Trainer::PrefixStoreKeys(const data::EncodedDataset& dataset,
                                                  int k) const {
  using Tokens = std::vector<std::vector<int32_t>>;
  const model::BertConfig& c = model_->config();
  PrefixKey base;
  base.Add(static_cast<uint64_t>(dataset.size()))
      .Add(absl::Hash<Tokens>{}(dataset.ids))
      .Add(absl::Hash<Tokens>{}(dataset.type_ids))
      .Add(options_.device.str())
      .Add(PrecisionName(options_.hp.precision))  // stored in the compute dtype
      .Add(static_cast<uint64_t>(c.hidden_size))
      .Add(static_cast<uint64_t>(c.num_attention_heads))
      .Add(c.hidden_act)
      .Add(absl::StrCat(c.layer_norm_eps));
  std::vector<std::string> keys;
  for (int depth = 0; depth <= k; ++depth) {
    PrefixKey key = base;
    key.Add(static_cast<uint64_t>(depth));
    // Embeddings are plan layer 0, encoder layer l is l + 1: depth d covers
    // plan layers [0, d], all frozen, digested when they were frozen.
    for (const ParameterDecision& d : plan_.parameters) {
      if (d.layer < 0 || d.layer > depth) continue;
      key.Add(d.name).Add(frozen_digest_.at(d.name));
    }
    keys.push_back(key.str());
  }
  return keys;
}

torch::Tensor Trainer::PrefixHidden(const data::Batch& batch, const data::EncodedDataset& dataset,
                                    PrefixCache& cache, int k, const torch::Tensor& ids,
                                    const torch::Tensor& types, const torch::Tensor& mask,
                                    bool cacheable) {
  torch::NoGradGuard no_grad;
  // The prefix's output is kept (and handed on) in the compute dtype: half
  // the memory under bf16/fp16, and cached and uncached runs see the same.
  if (!cacheable) {
    return model_->RunLayers(model_->Embed(ids, types), mask, 0, k).to(compute_dtype_);
  }
  if (cache.k != k) {
    // First use, or an unfreezing stage changed the prefix depth.
    cache.k = k;
    cache.keys = PrefixStoreKeys(dataset, k);
    cache.entry.reset();
    if (cache.fill) {
      bool created = false;
      cache.entry = options_.prefix_store->Open(cache.keys[k], dataset.size(), &created);
      if (created) created_prefix_keys_.push_back(cache.keys[k]);
    }
  }
  // Look-up only: another job may have shared these rows (or do so later).
  if (!cache.fill && !cache.entry) cache.entry = options_.prefix_store->Find(cache.keys[k]);
  const int64_t rows = static_cast<int64_t>(batch.indices.size());
  // Padding positions stay zero: later layers mask them as keys, and
  // nothing reads their own outputs. Allocated only when something is
  // stored to copy into it.
  torch::Tensor hidden;
  auto zeros = [&]() -> torch::Tensor& {
    if (!hidden.defined()) {
      hidden = torch::zeros({rows, ids.size(1), model_->config().hidden_size},
                            torch::TensorOptions().device(options_.device).dtype(compute_dtype_));
    }
    return hidden;
  };
  if (cache.entry && cache.entry->Gather(batch.indices, zeros())) {
    summary_.prefix_cache_hits += rows;
    return hidden;
  }
  summary_.prefix_cache_misses += rows;
  // Start from the deepest shallower depth stored for every row (another
  // trial of a sweep, or an earlier stage); depth 0 (the embeddings alone)
  // is cheaper to recompute than to look up.
  int from = 0;
  for (int depth = k - 1; depth >= 1 && from == 0; --depth) {
    std::shared_ptr<PrefixEntry> shallower = options_.prefix_store->Find(cache.keys[depth]);
    if (shallower && shallower->Gather(batch.indices, zeros())) from = depth;
  }
  if (from == 0) {
    hidden = model_->Embed(ids, types);
  } else {
    summary_.prefix_rows_from_shallower += rows;
  }
  hidden = model_->RunLayers(hidden, mask, from, k).to(compute_dtype_);
  if (!cache.fill) return hidden;
  std::vector<int64_t> lengths(batch.indices.size());
  for (size_t r = 0; r < lengths.size(); ++r) {
    lengths[r] = static_cast<int64_t>(dataset.ids[batch.indices[r]].size());
  }
  cache.entry->Put(batch.indices, lengths, hidden);
  return hidden;
}

torch::Tensor Trainer::Forward(const data::Batch& batch, const data::EncodedDataset& dataset,
                               PrefixCache& cache, bool training) {
  const torch::Tensor ids = batch.input_ids.to(options_.device);
  const torch::Tensor types = batch.token_type_ids.to(options_.device);
  const torch::Tensor mask = batch.attention_mask.to(options_.device);
  // Mixed precision: the whole forward pass under autocast; the logits (and
  // so the loss) in float32.
  AutocastScope autocast(options_.device, compute_dtype_);
  const int k = plan_.frozen_prefix_layers;
  // A masked-LM run returns the hidden states (float32): MaskedLmLoss runs
  // the head on the predicted positions only.
  const bool mlm = options_.masker != nullptr;
  if (k < 0) {
    torch::Tensor hidden = model_->RunLayers(model_->Embed(ids, types), mask, 0, model_->num_layers());
    return mlm ? hidden.to(torch::kFloat) : model_->Head(hidden).to(torch::kFloat);
  }
  // The prefix is deterministic when it runs in eval mode: always during
  // evaluation, and in training when frozen_eval_mode put it there.
  // Masked inputs change every epoch (and are not part of the store key).
  const bool cacheable = !mlm && options_.prefix_store->max_bytes() > 0 &&
                         (!training || plan_.frozen_eval_mode);
  torch::Tensor hidden = PrefixHidden(batch, dataset, cache, k, ids, types, mask, cacheable);
  hidden = model_->RunLayers(hidden, mask, k, model_->num_layers());
  return mlm ? hidden.to(torch::kFloat) : model_->Head(hidden).to(torch::kFloat);
}

torch::Tensor Trainer::Loss(const torch::Tensor& logits, const torch::Tensor& labels) const {
  if (labels_.regression) {
    return at::mse_loss(logits.squeeze(-1), labels.to(logits.scalar_type()));
  }
  return at::cross_entropy_loss(logits, labels);
}

bool Trainer::AnyRank(bool local) {
  if (!options_.sync) return local;
  return options_.sync->SumScalars({local ? 1.0 : 0.0}).front() > 0.0;
}

ResolvedHyperparameters Trainer::PlanHyperparameters() const {
  ResolvedHyperparameters hp = options_.hp;
  if (options_.sync) hp.batch_size *= options_.sync->world_size();
  return hp;
}

bool Trainer::ShouldStop() const {
  if (options_.intra_op_threads && options_.device.is_cpu()) {
    // Per thread: the OpenMP thread count is this thread's setting (and
    // OpenBLAS follows it), so concurrent jobs each keep their own share.
    const int threads = options_.intra_op_threads();
    if (threads > 0 && threads != at::get_num_threads()) at::set_num_threads(threads);
  }
  return options_.should_stop && options_.should_stop();
}

void Trainer::Emit(v1::JobEvent event) const {
  if (options_.emit) options_.emit(std::move(event));
}

absl::StatusOr<v1::EvalMetrics> Trainer::Evaluate() {
  absl::StatusOr<v1::EvalMetrics> out;
  absl::Status s = Guarded("evaluation", [&]() -> absl::Status {
    out = EvaluateImpl();
    return out.status();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::EvalMetrics> Trainer::EvaluateImpl() {
  const bool was_training = model_->is_training();
  model_->eval();
  torch::NoGradGuard no_grad;
  double loss_sum = 0.0;
  std::vector<int64_t> predictions, label_ids;
  std::vector<float> outputs, targets;
  int64_t masked_tokens = 0, masked_correct = 0;
  const auto batches = data::PlanBatches(validation_, options_.hp.batch_size, 0, 0,
                                         /*shuffle=*/false, /*length_bucketed=*/true);
  for (const auto& indices : batches) {
    if (ShouldStop()) {
      if (was_training) SetTrainMode();
      return absl::CancelledError(absl::StrCat("cancelled at step ", summary_.steps));
    }
    data::Batch b = data::CollateBatch(validation_, indices, pad_id_);
    if (options_.masker) {
      // The same masks at every evaluation: the loss compares across steps.
      torch::Tensor mlm_labels = options_.masker->Apply(b, EvalMaskSeed(options_.hp.seed));
      torch::Tensor hidden = Forward(b, validation_, eval_cache_, /*training=*/false);
      MaskedLmOutput out = MaskedLmLoss(model_, hidden, mlm_labels.to(options_.device), true);
      loss_sum += out.loss.item<double>() * static_cast<double>(out.tokens);
      masked_tokens += out.tokens;
      masked_correct += out.correct;
      continue;
    }
    torch::Tensor logits = Forward(b, validation_, eval_cache_, /*training=*/false);
    torch::Tensor labels = b.labels.to(options_.device);
    loss_sum += Loss(logits, labels).item<double>() * static_cast<double>(indices.size());
    if (labels_.regression) {
      torch::Tensor p = logits.squeeze(-1).to(torch::kCPU, torch::kFloat).contiguous();
      torch::Tensor t = b.labels.to(torch::kFloat).contiguous();
      outputs.insert(outputs.end(), p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
      targets.insert(targets.end(), t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    } else {
      torch::Tensor p = logits.argmax(-1).to(torch::kCPU, torch::kLong).contiguous();
      torch::Tensor t = b.labels.to(torch::kLong).contiguous();
      predictions.insert(predictions.end(), p.data_ptr<int64_t>(),
                         p.data_ptr<int64_t>() + p.numel());
      label_ids.insert(label_ids.end(), t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
  }
  v1::EvalMetrics m;
  const int64_t n = validation_.size();
  if (options_.masker) {
    // Masked LM: loss and accuracy over the predicted tokens.
    const double tokens = static_cast<double>(std::max<int64_t>(masked_tokens, 1));
    m.set_examples(n);
    m.set_masked_tokens(masked_tokens);
    m.set_accuracy(static_cast<float>(static_cast<double>(masked_correct) / tokens));
    m.set_loss(static_cast<float>(loss_sum / tokens));
    if (was_training) SetTrainMode();
    return m;
  }
  m = labels_.regression ? RegressionMetrics(outputs, targets)
                         : ClassificationMetrics(predictions, label_ids, labels_.names);
  m.set_loss(n > 0 ? static_cast<float>(loss_sum / static_cast<double>(n)) : 0.0f);
  if (was_training) SetTrainMode();
  return m;
}

absl::Status Trainer::AfterEval(v1::EvalMetrics m, bool* stop) {
  summary_.history.push_back(m);
  summary_.final_eval = m;
  v1::JobEvent event;
  *event.mutable_eval() = m;
  Emit(std::move(event));
  const std::string& metric = options_.hp.selection_metric;
  if (!summary_.has_best || IsImprovement(metric, m, summary_.best_eval)) {
    summary_.has_best = true;
    summary_.best_eval = m;
    evals_without_improvement_ = 0;
    torch::NoGradGuard no_grad;
    for (const std::string& name : ever_trainable_) {
      best_state_[name] = params_.at(name).detach().clone();
    }
  } else {
    ++evals_without_improvement_;
    if (options_.hp.early_stopping_patience > 0 &&
        evals_without_improvement_ >= options_.hp.early_stopping_patience) {
      summary_.early_stopped = true;
      *stop = true;
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::ApplyStagesAt(int64_t epoch_1based, int64_t next_step_1based) {
  const v1::FreezeSpec& spec = options_.freeze_spec;
  bool changed = false;
  for (int s = 0; s < spec.schedule_size(); ++s) {
    if (stage_applied_[s]) continue;
    const v1::UnfreezeStage& stage = spec.schedule(s);
    const bool due = (stage.at_epoch() > 0 && stage.at_epoch() <= epoch_1based) ||
                     (stage.at_step() > 0 && stage.at_step() <= next_step_1based);
    if (!due) continue;
    FT_ASSIGN_OR_RETURN(plan_, ApplyUnfreezeStage(plan_, spec, s, "job.freeze"));
    stage_applied_[s] = true;
    changed = true;
    v1::JobEvent event;
    event.mutable_notice()->set_message(
        absl::StrCat("unfreeze stage ", s, " applied before step ", next_step_1based, ": ",
                     plan_.trainable_parameters(), " trainable parameters"));
    Emit(std::move(event));
  }
  if (changed) {
    FT_RETURN_IF_ERROR(ApplyPlan());
    BuildOptimizer();
    SetTrainMode();
  }
  return absl::OkStatus();
}

absl::Status Trainer::Train() {
  const auto start = Clock::now();
  absl::Status s = Guarded("training", [&] { return TrainLoop(); });
  summary_.train_seconds = Seconds(start);
  summary_.skipped_steps = scaler_.skipped_steps();
  summary_.peak_device_memory_bytes = QueryDeviceMemory(options_.device).peak_bytes;
  if (absl::IsResourceExhausted(s)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "step ", summary_.steps + 1, ": out of ", options_.device.is_cuda() ? "device" : "host",
        " memory with batch_size ", options_.hp.batch_size, " and max_seq_length ",
        options_.hp.max_seq_length, " (this batch padded to ", batch_length_,
        " tokens); lower batch_size or max_seq_length (gradient_accumulation_steps keeps the ",
        "effective batch), or use precision bf16. ", s.message()));
  }
  if (!s.ok()) return s;
  return Guarded("finishing", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    if (summary_.has_best) {
      for (auto& [name, value] : best_state_) params_.at(name).copy_(value);
    }
    for (const auto& [name, digest] : frozen_digest_) {
      const torch::Tensor& p = params_.at(name);
      if (ContentDigest(p) != digest) {
        return absl::InternalError(
            absl::StrCat("frozen parameter ", name, " changed during training"));
      }
      if (p.grad().defined()) {
        return absl::InternalError(absl::StrCat("frozen parameter ", name, " has a gradient"));
      }
    }
    summary_.frozen_weights_verified = true;
    return absl::OkStatus();
  });
}

std::vector<std::vector<int64_t>> TrainingBatches(const data::EncodedDataset& train,
                                                  const ResolvedHyperparameters& hp, int epoch) {
  return data::PlanBatches(train, hp.batch_size, static_cast<uint64_t>(hp.seed), epoch,
                           /*shuffle=*/true, /*length_bucketed=*/hp.length_bucketing);
}

absl::Status Trainer::TrainLoop() {
  const ResolvedHyperparameters& hp = options_.hp;
  // Data-parallel: steps and batches follow the global batch (every rank's).
  const ResolvedHyperparameters plan_hp = PlanHyperparameters();
  summary_.total_steps = TotalSteps(train_.size(), plan_hp);
  const int64_t warmup = WarmupSteps(summary_.total_steps, plan_hp);
  const int accum = hp.gradient_accumulation_steps;

  int64_t last_eval_step = -1;
  int start_epoch = 0;
  int64_t start_micro = 0;
  FT_RETURN_IF_ERROR(MaybeResume(&start_epoch, &start_micro, &last_eval_step));
  const bool checkpoints = !options_.checkpoint_dir.empty();
  SetTrainMode();
  DropGradients(*optimizer_);
  int64_t step = summary_.steps;
  // Since the previous TrainMetrics event:
  double log_loss_sum = 0.0;
  int64_t log_steps = 0, log_samples = 0;
  auto log_start = Clock::now();
  auto step_start = log_start;  // when the current step's first micro-batch began
  bool stop = false;
  std::string group_rng;  // CPU RNG state when the current step's first micro-batch began
  // Evaluation that, when should_stop interrupts it, checkpoints the
  // position after the finished step first (evaluation draws no random
  // numbers, so the RNG state is the current one).
  auto evaluate = [&](int epoch, int64_t next_micro) -> absl::StatusOr<v1::EvalMetrics> {
    absl::StatusOr<v1::EvalMetrics> m = EvaluateImpl();
    if (m.status().code() == absl::StatusCode::kCancelled && checkpoints && step > 0) {
      FT_RETURN_IF_ERROR(SaveCheckpoint(epoch, next_micro, last_eval_step, RngState(rng_)));
    }
    return m;
  };

  for (int epoch = start_epoch; epoch < hp.epochs && !stop; ++epoch) {
    FT_RETURN_IF_ERROR(ApplyStagesAt(epoch + 1, step + 1));
    const auto batches = TrainingBatches(train_, plan_hp, epoch);
    const int64_t n_micro = static_cast<int64_t>(batches.size());
    double step_loss = 0.0;
    int64_t step_samples = 0;
    for (int64_t i = epoch == start_epoch ? start_micro : 0; i < n_micro && !stop; ++i) {
      const int64_t group_start = (i / accum) * accum;
      const int64_t group_size = std::min<int64_t>(accum, n_micro - group_start);
      // Data-parallel ranks agree at step boundaries only, so that all of
      // them stop before the same step.
      const bool stop_now = options_.sync ? i == group_start && AnyRank(ShouldStop()) : ShouldStop();
      if (stop_now) {
        // Save where the current step began (its partial gradients are
        // dropped), so a drained job resumes without losing finished steps.
        if (checkpoints && step > 0) {
          FT_RETURN_IF_ERROR(SaveCheckpoint(epoch, group_start, last_eval_step,
                                            i == group_start ? RngState(rng_) : group_rng));
        }
        return absl::CancelledError(absl::StrCat("cancelled at step ", step));
      }
      if (i == group_start) {
        FT_RETURN_IF_ERROR(ApplyStagesAt(epoch + 1, step + 1));
        if (checkpoints) group_rng = RngState(rng_);
        step_start = Clock::now();
      }

      // This rank's examples of the micro-batch, and their share of it: the
      // loss is scaled by the share so that the ranks' summed gradients are
      // the whole batch's mean gradient.
      const std::vector<int64_t> mine =
          options_.sync ? ShardOf(batches[i], options_.sync->rank(), hp.batch_size) : batches[i];
      const double share =
          static_cast<double>(mine.size()) / static_cast<double>(batches[i].size());
      if (!mine.empty()) {
        data::Batch b = data::CollateBatch(train_, mine, pad_id_);
        batch_length_ = b.input_ids.size(1);
        torch::Tensor mlm_labels;
        if (options_.masker) mlm_labels = options_.masker->Apply(b, TrainMaskSeed(hp.seed, epoch));
        torch::Tensor logits = Forward(b, train_, train_cache_, /*training=*/true);
        torch::Tensor loss =
            options_.masker
                ? MaskedLmLoss(model_, logits, mlm_labels.to(options_.device), false).loss
                : Loss(logits, b.labels.to(options_.device));
        const double loss_value = loss.item<double>();
        const bool finite_loss = std::isfinite(loss_value);
        // Under fp16 an overflow is the loss scaler's to handle: the step's
        // gradients will not be finite and it is skipped.
        if (!finite_loss && !scaler_.enabled()) {
          return absl::InvalidArgumentError(absl::StrCat("step ", step + 1, ": non-finite loss"));
        }
        scaler_.Scale(loss * (share / static_cast<double>(group_size))).backward();
        if (finite_loss) step_loss += loss_value * share / static_cast<double>(group_size);
      }
      step_samples += static_cast<int64_t>(batches[i].size());
      if (i != group_start + group_size - 1) continue;

      // One optimizer step. With fp16's loss scaler the gradients are
      // unscaled first, and a step whose gradients overflowed is skipped
      // (it still counts as a step, as with GradScaler).
      const std::vector<torch::Tensor> trainable = TrainableParameters();
      if (options_.sync) {
        options_.sync->AllReduceGradients(trainable);
        summary_.allreduce_bytes_per_step = options_.sync->last_allreduce_bytes();
        step_loss = options_.sync->SumScalars({step_loss}).front();
      }
      bool apply = true;
      if (scaler_.enabled()) {
        apply = scaler_.UnscaleAndCheck(trainable);
        scaler_.Update(apply);
      }
      const double factor = LrFactor(hp.lr_schedule, step, summary_.total_steps, warmup);
      if (apply) {
        const double max_norm =
            hp.max_grad_norm > 0 ? hp.max_grad_norm : std::numeric_limits<double>::infinity();
        const double norm = torch::nn::utils::clip_grad_norm_(trainable, max_norm);
        if (!std::isfinite(norm)) {
          return absl::InvalidArgumentError(
              absl::StrCat("step ", step + 1, ": non-finite gradient norm"));
        }
        auto& groups = optimizer_->param_groups();
        for (size_t g = 0; g < groups.size(); ++g) {
          static_cast<torch::optim::AdamWOptions&>(groups[g].options())
              .lr(group_base_lr_[g] * factor);
        }
        if (options_.fused_adamw) {
          FusedAdamWStep(*optimizer_, adamw_options_);
        } else {
          optimizer_->step();
        }
      }
      DropGradients(*optimizer_);
      ++step;
      summary_.steps = step;
      if (options_.on_step) options_.on_step(Seconds(step_start), step_samples);
      log_loss_sum += step_loss;
      ++log_steps;
      log_samples += step_samples;
      step_loss = 0.0;
      step_samples = 0;

      const float epoch_progress =
          static_cast<float>(epoch) + static_cast<float>(i + 1) / static_cast<float>(n_micro);
      if (step % hp.log_every_steps == 0 || step == summary_.total_steps) {
        const double secs = Seconds(log_start);
        v1::JobEvent event;
        v1::TrainMetrics* tm = event.mutable_train();
        tm->set_step(step);
        tm->set_total_steps(summary_.total_steps);
        tm->set_epoch(epoch_progress);
        tm->set_loss(static_cast<float>(log_loss_sum / static_cast<double>(log_steps)));
        tm->set_learning_rate(static_cast<float>(hp.learning_rate * factor));
        tm->set_samples_per_second(
            secs > 0 ? static_cast<float>(static_cast<double>(log_samples) / secs) : 0.0f);
        const DeviceMemory memory = QueryDeviceMemory(options_.device);
        tm->set_device_memory_allocated_bytes(memory.allocated_bytes);
        tm->set_device_memory_reserved_bytes(memory.reserved_bytes);
        tm->set_device_memory_peak_bytes(memory.peak_bytes);
        tm->set_skipped_steps(scaler_.skipped_steps());
        Emit(std::move(event));
        log_loss_sum = 0.0;
        log_steps = 0;
        log_samples = 0;
        log_start = Clock::now();
      }
      if (hp.eval_every_steps > 0 && step % hp.eval_every_steps == 0 && validation_.size() > 0) {
        if (IsLeader()) {
          FT_ASSIGN_OR_RETURN(v1::EvalMetrics m, evaluate(epoch, i + 1));
          m.set_step(step);
          m.set_epoch(epoch_progress);
          FT_RETURN_IF_ERROR(AfterEval(std::move(m), &stop));
        }
        stop = AnyRank(stop);  // rank 0's early stopping decides for all
        last_eval_step = step;
      }
      if (checkpoints && !stop && hp.checkpoint_every_steps > 0 &&
          step % hp.checkpoint_every_steps == 0) {
        FT_RETURN_IF_ERROR(SaveCheckpoint(epoch, i + 1, last_eval_step, RngState(rng_)));
      }
    }
    if (!stop && validation_.size() > 0 && last_eval_step != step) {
      if (IsLeader()) {
        FT_ASSIGN_OR_RETURN(v1::EvalMetrics m, evaluate(epoch, n_micro));
        m.set_step(step);
        m.set_epoch(static_cast<float>(epoch + 1));
        FT_RETURN_IF_ERROR(AfterEval(std::move(m), &stop));
      }
      stop = AnyRank(stop);
      last_eval_step = step;
    }
    if (checkpoints && !stop && epoch + 1 < hp.epochs) {
      FT_RETURN_IF_ERROR(SaveCheckpoint(epoch + 1, 0, last_eval_step, RngState(rng_)));
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::SaveCheckpoint(int epoch, int64_t next_micro, int64_t last_eval_step,
                                     const std::string& rng_state) {
  // Data-parallel ranks hold the same weights; rank 0 writes for all (and
  // every rank resumes from it).
  if (!IsLeader()) return absl::OkStatus();
  CheckpointState state;
  state.step = summary_.steps;
  state.epoch = epoch;
  state.next_micro = next_micro;
  state.stages_applied = stage_applied_;
  state.evals_without_improvement = evals_without_improvement_;
  state.last_eval_step = last_eval_step;
  state.has_best = summary_.has_best;
  state.best_eval = summary_.best_eval;
  state.final_eval = summary_.final_eval;
  state.history = summary_.history;
  state.rng_state = rng_state;
  state.parameter_names = param_order_;
  for (const std::string& name : param_order_) {
    if (ever_trainable_.count(name)) state.weights.emplace_back(name, params_.at(name).detach());
  }
  for (const auto& [name, value] : best_state_) state.best_weights.emplace_back(name, value);
  for (const std::string& name : param_order_) {
    auto it = optimizer_->state().find(StateKey(params_.at(name)));
    if (it == optimizer_->state().end()) continue;
    const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    state.optimizer[name] = AdamMoments{st.step(), st.exp_avg(), st.exp_avg_sq()};
  }
  FT_ASSIGN_OR_RETURN(const std::string dir, WriteCheckpoint(options_.checkpoint_dir, state));
  v1::JobEvent event;
  event.mutable_checkpoint()->set_step(summary_.steps);
  event.mutable_checkpoint()->set_uri(absl::StrCat("file://", dir));
  Emit(std::move(event));
  return absl::OkStatus();
}

absl::Status Trainer::MaybeResume(int* epoch, int64_t* next_micro, int64_t* last_eval_step) {
  if (options_.checkpoint_dir.empty()) return absl::OkStatus();
  FT_ASSIGN_OR_RETURN(std::optional<CheckpointState> found,
                      ReadLatestCheckpoint(options_.checkpoint_dir));
  if (!found) return absl::OkStatus();
  CheckpointState& state = *found;
  if (state.parameter_names != param_order_ ||
      state.stages_applied.size() != stage_applied_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint in ", options_.checkpoint_dir,
                     " was written for a different model or freeze spec"));
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : state.weights) {
    auto it = params_.find(name);
    if (it == params_.end() || !it->second.sizes().equals(value.sizes())) {
      return absl::DataLossError(absl::StrCat("checkpoint weight ", name, " does not fit"));
    }
    it->second.copy_(value);
    ever_trainable_.insert(name);
  }
  // Replay the stages already applied, then rebuild the optimizer over the
  // resulting trainable set and put the saved moments back.
  plan_ = base_plan_;
  for (size_t s = 0; s < state.stages_applied.size(); ++s) {
    stage_applied_[s] = state.stages_applied[s];
    if (!stage_applied_[s]) continue;
    FT_ASSIGN_OR_RETURN(plan_, ApplyUnfreezeStage(plan_, options_.freeze_spec, static_cast<int>(s),
                                                  "job.freeze"));
  }
  FT_RETURN_IF_ERROR(ApplyPlan());
  optimizer_.reset();
  BuildOptimizer();
  for (auto& [name, m] : state.optimizer) {
    auto it = params_.find(name);
    if (it == params_.end() || !it->second.sizes().equals(m.exp_avg.sizes()) ||
        !it->second.sizes().equals(m.exp_avg_sq.sizes())) {
      return absl::DataLossError(absl::StrCat("checkpoint optimizer state ", name, " does not fit"));
    }
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(m.step);
    st->exp_avg(m.exp_avg.to(options_.device));
    st->exp_avg_sq(m.exp_avg_sq.to(options_.device));
    optimizer_->state()[StateKey(it->second)] = std::move(st);
  }
  best_state_.clear();
  for (auto& [name, value] : state.best_weights) best_state_[name] = value.to(options_.device);
  summary_.steps = state.step;
  summary_.has_best = state.has_best;
  summary_.best_eval = state.best_eval;
  summary_.final_eval = state.final_eval;
  summary_.history = state.history;
  summary_.resumed_from_step = state.step;
  evals_without_improvement_ = state.evals_without_improvement;
  if (!state.rng_state.empty()) SetRngState(rng_, state.rng_state);
  *epoch = state.epoch;
  *next_micro = state.next_micro;
  *last_eval_step = state.last_eval_step;
  v1::JobEvent event;
  event.mutable_notice()->set_message(
      absl::StrCat("resumed from checkpoint at step ", state.step, " (epoch ", state.epoch + 1,
                   ")"));
  Emit(std::move(event));
  return absl::OkStatus();
}

nlohmann::json Trainer::MetricsJson() const {
  nlohmann::json history = nlohmann::json::array();
  for (const auto& m : summary_.history) history.push_back(EvalMetricsToJson(m));
  nlohmann::json j{{"steps", summary_.steps},
                   {"total_steps", summary_.total_steps},
                   {"selection_metric", options_.hp.selection_metric},
                   {"early_stopped", summary_.early_stopped},
                   {"frozen_weights_verified", summary_.frozen_weights_verified},
                   {"train_seconds", summary_.train_seconds},
                   {"history", std::move(history)}};
  j["best_eval"] = summary_.has_best ? EvalMetricsToJson(summary_.best_eval) : nlohmann::json();
  j["final_eval"] = summary_.has_best ? EvalMetricsToJson(summary_.final_eval) : nlohmann::json();
  return j;
}

}  // namespace freezetune::train
