// Dropout that draws its masks from a generator shared by one model (its
// DropoutRng), so that runs training side by side on one device each stay
// reproducible (see BertForSequenceClassificationImpl::set_dropout_generator).
//
// Thread safety: as any torch::nn::Module; one thread at a time per model.
#ifndef FREEZETUNE_SERVER_MODEL_DROPOUT_H_
#define FREEZETUNE_SERVER_MODEL_DROPOUT_H_

#include <memory>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

#include "server/model/dropout_mask.h"

namespace freezetune::model {

// Where every dropout of one model draws its masks: a generator of the
// model's own, or torch's global one when unset.
struct DropoutRng {
  c10::optional<at::Generator> generator;
};

// Inverted dropout (a Bernoulli mask scaled by 1 / (1 - p)), drawing from
// the model's DropoutRng. Identity in eval mode or with p == 0. CPU float
// tensors take DropoutMask (dropout_mask.h: one generator draw per call, a
// counter-based hash per element: masks differ from PyTorch's dropout for
// the same seed); other tensors take at::dropout's arithmetic (bernoulli_,
// then div_).
struct SeededDropoutImpl : torch::nn::Module {
  SeededDropoutImpl(double p, std::shared_ptr<DropoutRng> rng) : p(p), rng(std::move(rng)) {}
  torch::Tensor forward(const torch::Tensor& x) {
    if (!is_training() || p == 0.0) return x;
    if (DropoutMaskSupports(x)) return x * DropoutMask(x, p, rng->generator);
    torch::Tensor mask = at::empty_like(x).bernoulli_(1.0 - p, rng->generator);
    return x * mask.div_(1.0 - p);
  }
  double p;
  std::shared_ptr<DropoutRng> rng;
};

inline std::shared_ptr<SeededDropoutImpl> MakeDropout(double p, const std::shared_ptr<DropoutRng>& rng) {
  return std::make_shared<SeededDropoutImpl>(p, rng);
}

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_DROPOUT_H_
