// The masked-language-model head of Hugging Face's BertForMaskedLM
// (BertOnlyMLMHead), with its parameter names:
//   cls.predictions.transform.dense.{weight,bias}       [H, H], [H]
//   cls.predictions.transform.LayerNorm.{weight,bias}   [H]
//   cls.predictions.bias                                [V]
// and the decoder tied to the word embeddings: logits = LayerNorm(act(dense
// h)) E^T + bias, with E = bert.embeddings.word_embeddings.weight (the same
// tensor, not a copy, so freezing the embeddings freezes the decoder and a
// checkpoint stores no cls.predictions.decoder.* tensors, as transformers
// saves tied weights).
//
// Thread safety: as any torch::nn::Module.
#ifndef FREEZETUNE_SERVER_MODEL_MLM_HEAD_H_
#define FREEZETUNE_SERVER_MODEL_MLM_HEAD_H_

#include <memory>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "server/model/bert_config.h"
#include "server/model/lora.h"

namespace freezetune::model {

struct BertMlmTransformImpl : torch::nn::Module {
  explicit BertMlmTransformImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& hidden);
  std::string act;
  std::shared_ptr<LoraLinearImpl> dense;
  torch::nn::LayerNorm layer_norm{nullptr};
};

struct BertLmPredictionImpl : torch::nn::Module {
  BertLmPredictionImpl(const BertConfig& c, torch::nn::Embedding word_embeddings);
  // hidden [..., H] -> logits [..., V].
  torch::Tensor forward(const torch::Tensor& hidden);
  std::shared_ptr<BertMlmTransformImpl> transform;
  torch::Tensor bias;
  torch::nn::Embedding word_embeddings;  // the tied decoder; not registered here
};

struct BertOnlyMlmHeadImpl : torch::nn::Module {
  BertOnlyMlmHeadImpl(const BertConfig& c, torch::nn::Embedding word_embeddings);
  torch::Tensor forward(const torch::Tensor& hidden) { return predictions->forward(hidden); }
  std::shared_ptr<BertLmPredictionImpl> predictions;
};

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_MLM_HEAD_H_
