// BERT architecture settings from a Hugging Face config.json, validated, and
// the parameter names/shapes they imply. Torch-free, so validation and
// PlanFreeze never need to load weights.
//
// Thread safety: pure functions; a BertConfig is a value.
#ifndef FREEZETUNE_SERVER_MODEL_BERT_CONFIG_H_
#define FREEZETUNE_SERVER_MODEL_BERT_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace freezetune::model {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu (erf), gelu_new, relu, tanh, ...
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  int64_t pad_token_id = 0;
  // Dropout before the classifier; unset means hidden_dropout_prob (as HF).
  std::optional<double> classifier_dropout;
  // The whole parsed config.json, so output configs keep every field.
  nlohmann::json raw;
};

// Parses and validates config.json text (model_type "bert", positive sizes,
// hidden divisible by heads, known hidden_act). Errors name the field.
absl::StatusOr<BertConfig> ParseBertConfig(std::string_view json_text);
absl::StatusOr<BertConfig> LoadBertConfig(const std::string& path);

// Which head sits on the encoder: BertForSequenceClassification's pooler,
// dropout and classifier, or BertForMaskedLM's cls.predictions (no pooler).
enum class BertHead { kSequenceClassification, kMaskedLm };

struct ParameterShape {
  std::string name;  // Hugging Face name, e.g. "bert.encoder.layer.0.output.dense.weight"
  std::vector<int64_t> shape;
};

// Every parameter of BertForSequenceClassification in registration order,
// with the "bert." prefix, ending in classifier.weight/bias; or, for
// kMaskedLm, of BertForMaskedLM: no pooler, ending in cls.predictions.bias
// and cls.predictions.transform.* (the decoder is the word embeddings).
std::vector<ParameterShape> BertParameterShapes(const BertConfig& config, int64_t num_labels,
                                                BertHead head = BertHead::kSequenceClassification);

// Encoder layer a parameter belongs to: 0 for embeddings, l+1 for
// bert.encoder.layer.l.*, and -1 for the pooler, classifier and MLM head
// (the head).
int ParameterLayer(std::string_view name);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_BERT_CONFIG_H_
