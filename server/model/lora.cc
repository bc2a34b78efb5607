// LoRA Linear layer (see lora.h).
#include "server/model/lora.h"

#include <cmath>

#include <c10/util/Exception.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

namespace freezetune::model {

LoraLinearImpl::LoraLinearImpl(const torch::nn::LinearOptions& options)
    : torch::nn::LinearImpl(options) {}

void LoraLinearImpl::AttachLora(int64_t rank, double alpha, double dropout,
                                std::shared_ptr<DropoutRng> rng) {
  TORCH_CHECK(!has_lora(), "LoRA adapter already attached");
  TORCH_CHECK(rank >= 1, "LoRA rank must be >= 1, got ", rank);
  TORCH_CHECK(alpha > 0.0, "LoRA alpha must be > 0, got ", alpha);
  TORCH_CHECK(dropout >= 0.0 && dropout < 1.0, "LoRA dropout must be in [0, 1), got ", dropout);
  const int64_t in = options.in_features();
  const int64_t out = options.out_features();
  lora_A_ = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, rank).bias(false)));
  lora_B_ = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(rank, out).bias(false)));
  lora_A_->to(weight.device(), weight.scalar_type());
  lora_B_->to(weight.device(), weight.scalar_type());
  {
    torch::NoGradGuard no_grad;
    // PEFT: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in));
    // lora_B zero, so the adapted layer starts equal to the base layer.
    torch::nn::init::kaiming_uniform_(lora_A_->weight, std::sqrt(5.0));
    lora_B_->weight.zero_();
  }
  if (dropout > 0.0) {
    TORCH_CHECK(rng != nullptr, "LoRA dropout needs the model's DropoutRng");
    lora_dropout_ = register_module("lora_dropout", MakeDropout(dropout, rng));
  }
  scaling_ = alpha / static_cast<double>(rank);
}

int64_t LoraLinearImpl::rank() const {
  return has_lora() ? lora_A_->options.out_features() : 0;
}

torch::Tensor LoraLinearImpl::DeltaWeight() const {
  TORCH_CHECK(has_lora(), "no LoRA adapter attached");
  return at::matmul(lora_B_->weight.to(at::kDouble), lora_A_->weight.to(at::kDouble)) * scaling_;
}

void LoraLinearImpl::MergeAndUnload() {
  TORCH_CHECK(has_lora(), "no LoRA adapter attached");
  {
    torch::NoGradGuard no_grad;
    torch::Tensor merged = weight.to(at::kDouble) + DeltaWeight();
    weight.copy_(merged);
  }
  unregister_module("lora_A");
  unregister_module("lora_B");
  if (lora_dropout_) unregister_module("lora_dropout");
  lora_A_ = nullptr;
  lora_B_ = nullptr;
  lora_dropout_.reset();
  scaling_ = 0.0;
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor result = torch::nn::LinearImpl::forward(x);
  if (!has_lora()) return result;
  const torch::Tensor in = lora_dropout_ ? lora_dropout_->forward(x) : x;
  return result + lora_B_(lora_A_(in)) * scaling_;
}

}  // namespace freezetune::model
