// A Linear layer that can carry a LoRA adapter, as Hugging Face PEFT's
// lora.Linear computes it:
//   y = x W^T + b + scaling * lora_B(lora_A(dropout(x))),  scaling = alpha / rank
// with lora_A [rank, in] initialised Kaiming-uniform (a = sqrt(5), PEFT's
// init_lora_weights=True) and lora_B [out, rank] at zero. Without an adapter
// it is exactly torch::nn::Linear (it derives from LinearImpl, so
// module->as<torch::nn::Linear>() still finds it).
//
// Parameters keep PEFT's names relative to the layer: "weight", "bias",
// "lora_A.weight", "lora_B.weight"; a model's named_parameters() therefore
// yields e.g. "bert.encoder.layer.0.attention.self.query.lora_A.weight",
// which is PEFT's saved key without its "base_model.model." prefix.
//
// Errors: AttachLora/Merge throw c10::Error on misuse (rank < 1, attaching
// twice, merging without an adapter). Thread safety: as any torch::nn::Module.
#ifndef FREEZETUNE_SERVER_MODEL_LORA_H_
#define FREEZETUNE_SERVER_MODEL_LORA_H_

#include <cstdint>
#include <memory>

#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "server/model/dropout.h"

namespace freezetune::model {

class LoraLinearImpl : public torch::nn::LinearImpl {
 public:
  explicit LoraLinearImpl(const torch::nn::LinearOptions& options);

  // Registers lora_A and lora_B (on the layer's device and dtype) and a
  // dropout drawing from `rng` (may be null for p == 0). lora_A draws from
  // torch's global generator: seed it first for reproducibility.
  void AttachLora(int64_t rank, double alpha, double dropout, std::shared_ptr<DropoutRng> rng);
  bool has_lora() const { return static_cast<bool>(lora_A_); }
  int64_t rank() const;
  double scaling() const { return scaling_; }
  torch::nn::Linear& lora_A() { return lora_A_; }
  torch::nn::Linear& lora_B() { return lora_B_; }

  // scaling * B A: the update the adapter adds to `weight`, [out, in].
  torch::Tensor DeltaWeight() const;
  // Folds the adapter into `weight` (W += scaling * B A, in float64 then
  // rounded once) and removes lora_A/lora_B: afterwards the layer is a plain
  // Linear with the merged weight, as PEFT's merge_and_unload leaves it.
  void MergeAndUnload();

  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Linear lora_A_{nullptr};
  torch::nn::Linear lora_B_{nullptr};
  std::shared_ptr<SeededDropoutImpl> lora_dropout_;
  double scaling_ = 0.0;
};

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_LORA_H_
