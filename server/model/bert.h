// BERT for sequence classification in torch::nn, numerically equal to
// Hugging Face's BertForSequenceClassification, with Hugging Face parameter
// names (named_parameters() yields "bert.embeddings.word_embeddings.weight",
// ..., "classifier.bias"). Built with BertHead::kMaskedLm it is instead
// Hugging Face's BertForMaskedLM: no pooler, and the MLM head (mlm_head.h,
// "cls.predictions.*") tied to the word embeddings.
//
// The forward pass is also exposed in pieces (Embed, RunLayers, Head), so the
// trainer can run a frozen prefix under NoGradGuard and cache its output.
//
// Errors: forward/Embed/RunLayers/Head throw c10::Error on malformed input
// (input_ids not [B, T], T > max_position_embeddings, a layer range outside
// [0, L]); callers catch at their boundary.
//
// Thread safety: as any torch::nn::Module; one thread at a time.
#ifndef FREEZETUNE_SERVER_MODEL_BERT_H_
#define FREEZETUNE_SERVER_MODEL_BERT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "server/model/bert_config.h"
#include "server/model/lora.h"

namespace freezetune::model {

class BertForSequenceClassificationImpl : public torch::nn::Module {
 public:
  // Builds the modules and runs InitWeights() (so draws from torch's global
  // generator). `config` must come from ParseBertConfig (validated).
  // num_labels is ignored (0) for kMaskedLm.
  BertForSequenceClassificationImpl(const BertConfig& config, int64_t num_labels,
                                    BertHead head = BertHead::kSequenceClassification);

  // input_ids, token_type_ids: int64 [B, T]; attention_mask: [B, T] with 1 for
  // real tokens and 0 for padding. Returns logits [B, num_labels].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                        const torch::Tensor& attention_mask);

  // Embeddings output [B, T, H] (after LayerNorm and dropout).
  torch::Tensor Embed(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);
  // Runs encoder layers [begin, end) (0-based) over hidden [B, T, H].
  torch::Tensor RunLayers(torch::Tensor hidden, const torch::Tensor& attention_mask,
                          int64_t begin, int64_t end);
  // Pooler (tanh on [CLS]), dropout and classifier: [B, T, H] -> [B, num_labels].
  // Classification models only.
  torch::Tensor Head(const torch::Tensor& hidden);
  // The MLM head on hidden states [..., H] -> vocabulary logits [..., V].
  // Masked-LM models only; callers pass just the positions they predict.
  torch::Tensor MaskedLmLogits(const torch::Tensor& hidden);

  // Hugging Face initialisation: normal(0, initializer_range) for Linear and
  // Embedding weights, zero biases, LayerNorm weight 1 and bias 0, the
  // padding row of word_embeddings zeroed. Uses torch's global generator;
  // seed it first for reproducibility.
  void InitWeights();
  // Same initialisation for the classifier only (a checkpoint without a head).
  void InitClassifier();
  // Every dropout of the model draws from `generator` (on the model's
  // device); nullopt, the default: torch's global generator. A run's own
  // generator keeps runs that share a device reproducible.
  void set_dropout_generator(c10::optional<at::Generator> generator);

  // LoRA (lora.h) on the named Linear layers, names as named_modules()
  // lists them (e.g. "bert.encoder.layer.0.attention.self.query"); adapter
  // dropout draws from the model's dropout generator, lora_A's init from
  // torch's global one. Throws c10::Error, changing nothing, when a name is
  // not a Linear layer of this model; also on a layer already adapted.
  void AttachLora(const std::vector<std::string>& modules, int64_t rank, double alpha,
                  double dropout);
  // The layers carrying an adapter, in named_modules() order.
  std::vector<std::pair<std::string, std::shared_ptr<LoraLinearImpl>>> LoraLayers();
  // Folds every adapter into its layer's weight and removes it (PEFT's
  // merge_and_unload): the model becomes a plain BERT again.
  void MergeLora();

  const BertConfig& config() const { return config_; }
  int64_t num_labels() const { return num_labels_; }
  BertHead head() const { return head_; }
  int64_t num_layers() const { return config_.num_hidden_layers; }

  // Submodules by role, for per-module train()/eval() (frozen_eval_mode).
  torch::nn::Module& embeddings_module();
  torch::nn::Module& layer_module(int64_t index);
  torch::nn::Module& pooler_module();      // classification only
  torch::nn::Module& classifier_module();  // classification only
  // The head's modules with the parameter-name prefix each owns: the pooler
  // ("bert.pooler.") and classifier ("classifier."), or the MLM head ("cls.").
  std::vector<std::pair<std::string, torch::nn::Module*>> head_modules();

 private:
  struct Parts;
  BertConfig config_;
  int64_t num_labels_;
  BertHead head_;
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(BertForSequenceClassification);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_BERT_H_
