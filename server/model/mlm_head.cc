// BertOnlyMLMHead (see mlm_head.h).
#include "server/model/mlm_head.h"

#include <ATen/ATen.h>

#include "server/model/activation.h"

namespace freezetune::model {

BertMlmTransformImpl::BertMlmTransformImpl(const BertConfig& c) : act(c.hidden_act) {
  dense = register_module(
      "dense", std::make_shared<LoraLinearImpl>(torch::nn::LinearOptions(c.hidden_size, c.hidden_size)));
  layer_norm = register_module(
      "LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size})
                                            .eps(c.layer_norm_eps)
                                            .elementwise_affine(true)));
}

torch::Tensor BertMlmTransformImpl::forward(const torch::Tensor& hidden) {
  return layer_norm(Activate(act, dense->forward(hidden)));
}

BertLmPredictionImpl::BertLmPredictionImpl(const BertConfig& c, torch::nn::Embedding embeddings)
    : word_embeddings(std::move(embeddings)) {
  // Registration order gives HF's state-dict order within the module: its
  // own bias first, then the transform.
  bias = register_parameter("bias", at::zeros({c.vocab_size}));
  transform = register_module("transform", std::make_shared<BertMlmTransformImpl>(c));
}

torch::Tensor BertLmPredictionImpl::forward(const torch::Tensor& hidden) {
  return at::linear(transform->forward(hidden), word_embeddings->weight, bias);
}

BertOnlyMlmHeadImpl::BertOnlyMlmHeadImpl(const BertConfig& c, torch::nn::Embedding word_embeddings) {
  predictions =
      register_module("predictions", std::make_shared<BertLmPredictionImpl>(c, std::move(word_embeddings)));
}

}  // namespace freezetune::model
