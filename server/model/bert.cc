// BertForSequenceClassification in torch::nn, mirroring Hugging Face's eager
// implementation (modeling_bert.py) operation for operation, with submodules
// registered under Hugging Face's attribute names so named_parameters()
// yields Hugging Face parameter names.
#include "server/model/bert.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/utils.h>

#include "server/model/activation.h"
#include "server/model/dropout.h"
#include "server/model/lora.h"
#include "server/model/mlm_head.h"

namespace freezetune::model {
namespace {

torch::nn::LayerNorm MakeLayerNorm(const BertConfig& c) {
  return torch::nn::LayerNorm(
      torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps).elementwise_affine(true));
}

// LayerNorm in float32 whatever its input's dtype: under mixed precision
// (autocast) the residual stream arrives in bfloat16/float16 while the
// LayerNorm parameters stay float32, which LibTorch 1.13's CPU kernel
// rejects; float32 statistics are also what torch.autocast picks for
// layer_norm on CUDA. A float32 input is passed through unconverted.
torch::Tensor Float32LayerNorm(torch::nn::LayerNorm& layer_norm, const torch::Tensor& x) {
  return layer_norm(x.scalar_type() == torch::kFloat ? x : x.to(torch::kFloat));
}

// Every Linear layer can carry a LoRA adapter (lora.h); without one it is a
// plain torch::nn::Linear.
std::shared_ptr<LoraLinearImpl> MakeLinear(int64_t in, int64_t out) {
  return std::make_shared<LoraLinearImpl>(torch::nn::LinearOptions(in, out).bias(true));
}

// (1 - mask) * finfo(dtype).min, broadcast to [B, 1, 1, T] as HF's
// get_extended_attention_mask does.
torch::Tensor ExtendedMask(const torch::Tensor& mask, at::ScalarType dtype) {
  double lowest = std::numeric_limits<float>::lowest();
  switch (dtype) {
    case at::kDouble:
      lowest = std::numeric_limits<double>::lowest();
      break;
    case at::kHalf:
      lowest = -65504.0;
      break;
    case at::kBFloat16:
      lowest = -3.3895313892515355e38;
      break;
    default:
      break;
  }
  torch::Tensor m = mask.unsqueeze(1).unsqueeze(2).to(dtype);
  return (1.0 - m) * lowest;
}

struct BertEmbeddingsImpl : torch::nn::Module {
  BertEmbeddingsImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng) : max_positions(c.max_position_embeddings) {
    word_embeddings = register_module(
        "word_embeddings",
        torch::nn::Embedding(
            torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size).padding_idx(c.pad_token_id)));
    position_embeddings = register_module(
        "position_embeddings",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(c.max_position_embeddings, c.hidden_size)));
    token_type_embeddings = register_module(
        "token_type_embeddings",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(c.type_vocab_size, c.hidden_size)));
    layer_norm = register_module("LayerNorm", MakeLayerNorm(c));
    dropout = register_module("dropout", MakeDropout(c.hidden_dropout_prob, rng));
  }

  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids) {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.sizes());
    const int64_t t = input_ids.size(1);
    TORCH_CHECK(t <= max_positions, "sequence length ", t, " exceeds max_position_embeddings ",
                max_positions);
    torch::Tensor positions =
        at::arange(t, at::TensorOptions().dtype(at::kLong).device(input_ids.device())).unsqueeze(0);
    torch::Tensor types =
        token_type_ids.defined() ? token_type_ids : at::zeros_like(input_ids, at::kLong);
    torch::Tensor e = word_embeddings(input_ids) + token_type_embeddings(types);
    e = e + position_embeddings(positions);
    return dropout->forward(Float32LayerNorm(layer_norm, e));
  }

  int64_t max_positions;
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  std::shared_ptr<SeededDropoutImpl> dropout;
};

struct BertSelfAttentionImpl : torch::nn::Module {
  BertSelfAttentionImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng)
      : heads(c.num_attention_heads), head_dim(c.hidden_size / c.num_attention_heads) {
    query = register_module("query", MakeLinear(c.hidden_size, c.hidden_size));
    key = register_module("key", MakeLinear(c.hidden_size, c.hidden_size));
    value = register_module("value", MakeLinear(c.hidden_size, c.hidden_size));
    dropout = register_module("dropout", MakeDropout(c.attention_probs_dropout_prob, rng));
  }

  // [B, T, H] -> [B, heads, T, head_dim]
  torch::Tensor Split(const torch::Tensor& x) const {
    return x.view({x.size(0), x.size(1), heads, head_dim}).permute({0, 2, 1, 3});
  }

  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& ext_mask) {
    torch::Tensor q = Split(query->forward(hidden));
    torch::Tensor k = Split(key->forward(hidden));
    torch::Tensor v = Split(value->forward(hidden));
    torch::Tensor scores = at::matmul(q, k.transpose(-1, -2));
    scores = scores / std::sqrt(static_cast<double>(head_dim));
    if (ext_mask.defined()) scores = scores + ext_mask;
    torch::Tensor probs = dropout->forward(at::softmax(scores, -1));
    torch::Tensor context = at::matmul(probs, v).permute({0, 2, 1, 3}).contiguous();
    return context.view({hidden.size(0), hidden.size(1), heads * head_dim});
  }

  int64_t heads, head_dim;
  std::shared_ptr<LoraLinearImpl> query, key, value;
  std::shared_ptr<SeededDropoutImpl> dropout;
};

// BertSelfOutput and BertOutput: dense, dropout, LayerNorm(x + residual).
struct BertResidualOutputImpl : torch::nn::Module {
  BertResidualOutputImpl(const BertConfig& c, int64_t in, const std::shared_ptr<DropoutRng>& rng) {
    dense = register_module("dense", MakeLinear(in, c.hidden_size));
    layer_norm = register_module("LayerNorm", MakeLayerNorm(c));
    dropout = register_module("dropout", MakeDropout(c.hidden_dropout_prob, rng));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual) {
    return Float32LayerNorm(layer_norm, dropout->forward(dense->forward(x)) + residual);
  }
  std::shared_ptr<LoraLinearImpl> dense;
  torch::nn::LayerNorm layer_norm{nullptr};
  std::shared_ptr<SeededDropoutImpl> dropout;
};

struct BertAttentionImpl : torch::nn::Module {
  BertAttentionImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng) {
    self = register_module("self", std::make_shared<BertSelfAttentionImpl>(c, rng));
    output = register_module("output", std::make_shared<BertResidualOutputImpl>(c, c.hidden_size, rng));
  }
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& ext_mask) {
    return output->forward(self->forward(hidden, ext_mask), hidden);
  }
  std::shared_ptr<BertSelfAttentionImpl> self;
  std::shared_ptr<BertResidualOutputImpl> output;
};

struct BertIntermediateImpl : torch::nn::Module {
  explicit BertIntermediateImpl(const BertConfig& c) : act(c.hidden_act) {
    dense = register_module("dense", MakeLinear(c.hidden_size, c.intermediate_size));
  }
  torch::Tensor forward(const torch::Tensor& x) { return Activate(act, dense->forward(x)); }
  std::string act;
  std::shared_ptr<LoraLinearImpl> dense;
};

struct BertLayerImpl : torch::nn::Module {
  BertLayerImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng) {
    attention = register_module("attention", std::make_shared<BertAttentionImpl>(c, rng));
    intermediate = register_module("intermediate", std::make_shared<BertIntermediateImpl>(c));
    output = register_module("output",
                             std::make_shared<BertResidualOutputImpl>(c, c.intermediate_size, rng));
  }
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& ext_mask) {
    torch::Tensor a = attention->forward(hidden, ext_mask);
    return output->forward(intermediate->forward(a), a);
  }
  std::shared_ptr<BertAttentionImpl> attention;
  std::shared_ptr<BertIntermediateImpl> intermediate;
  std::shared_ptr<BertResidualOutputImpl> output;
};

struct BertEncoderImpl : torch::nn::Module {
  BertEncoderImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng) {
    layer = register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      layers.push_back(std::make_shared<BertLayerImpl>(c, rng));
      layer->push_back(layers.back());
    }
  }
  torch::nn::ModuleList layer{nullptr};
  std::vector<std::shared_ptr<BertLayerImpl>> layers;  // same modules, typed
};

struct BertPoolerImpl : torch::nn::Module {
  explicit BertPoolerImpl(const BertConfig& c) {
    dense = register_module("dense", MakeLinear(c.hidden_size, c.hidden_size));
  }
  torch::Tensor forward(const torch::Tensor& hidden) {
    return at::tanh(dense->forward(hidden.select(1, 0)));
  }
  std::shared_ptr<LoraLinearImpl> dense;
};

struct BertModelImpl : torch::nn::Module {
  // BertForMaskedLM builds its BertModel without the pooler.
  BertModelImpl(const BertConfig& c, const std::shared_ptr<DropoutRng>& rng, bool pooling_layer) {
    embeddings = register_module("embeddings", std::make_shared<BertEmbeddingsImpl>(c, rng));
    encoder = register_module("encoder", std::make_shared<BertEncoderImpl>(c, rng));
    if (pooling_layer) pooler = register_module("pooler", std::make_shared<BertPoolerImpl>(c));
  }
  std::shared_ptr<BertEmbeddingsImpl> embeddings;
  std::shared_ptr<BertEncoderImpl> encoder;
  std::shared_ptr<BertPoolerImpl> pooler;
};

}  // namespace

struct BertForSequenceClassificationImpl::Parts {
  std::shared_ptr<DropoutRng> rng = std::make_shared<DropoutRng>();
  std::shared_ptr<BertModelImpl> bert;
  std::shared_ptr<SeededDropoutImpl> dropout;
  std::shared_ptr<LoraLinearImpl> classifier;
  std::shared_ptr<BertOnlyMlmHeadImpl> cls;  // kMaskedLm only
};

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(const BertConfig& config,
                                                                     int64_t num_labels,
                                                                     BertHead head)
    : config_(config),
      num_labels_(head == BertHead::kMaskedLm ? 0 : num_labels),
      head_(head),
      parts_(std::make_shared<Parts>()) {
  const bool mlm = head == BertHead::kMaskedLm;
  TORCH_CHECK(mlm || num_labels > 0, "num_labels must be positive, got ", num_labels);
  parts_->bert =
      register_module("bert", std::make_shared<BertModelImpl>(config_, parts_->rng, !mlm));
  if (mlm) {
    parts_->cls = register_module(
        "cls", std::make_shared<BertOnlyMlmHeadImpl>(
                   config_, parts_->bert->embeddings->word_embeddings));
  } else {
    parts_->dropout = register_module(
        "dropout",
        MakeDropout(config_.classifier_dropout.value_or(config_.hidden_dropout_prob), parts_->rng));
    parts_->classifier =
        register_module("classifier", MakeLinear(config_.hidden_size, num_labels));
  }
  InitWeights();
}

torch::Tensor BertForSequenceClassificationImpl::forward(const torch::Tensor& input_ids,
                                                         const torch::Tensor& token_type_ids,
                                                         const torch::Tensor& attention_mask) {
  return Head(RunLayers(Embed(input_ids, token_type_ids), attention_mask, 0, num_layers()));
}

torch::Tensor BertForSequenceClassificationImpl::Embed(const torch::Tensor& input_ids,
                                                       const torch::Tensor& token_type_ids) {
  return parts_->bert->embeddings->forward(input_ids, token_type_ids);
}

torch::Tensor BertForSequenceClassificationImpl::RunLayers(torch::Tensor hidden,
                                                           const torch::Tensor& attention_mask,
                                                           int64_t begin, int64_t end) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= num_layers(), "layer range [", begin, ", ",
              end, ") outside [0, ", num_layers(), "]");
  if (begin == end) return hidden;
  torch::Tensor ext;
  if (attention_mask.defined()) ext = ExtendedMask(attention_mask, hidden.scalar_type());
  auto& layers = parts_->bert->encoder->layers;
  for (int64_t i = begin; i < end; ++i) hidden = layers[i]->forward(hidden, ext);
  return hidden;
}

void BertForSequenceClassificationImpl::set_dropout_generator(
    c10::optional<at::Generator> generator) {
  parts_->rng->generator = std::move(generator);
}

torch::Tensor BertForSequenceClassificationImpl::Head(const torch::Tensor& hidden) {
  TORCH_CHECK(head_ == BertHead::kSequenceClassification, "Head(): a masked-LM model has no classifier");
  return parts_->classifier->forward(parts_->dropout->forward(parts_->bert->pooler->forward(hidden)));
}

torch::Tensor BertForSequenceClassificationImpl::MaskedLmLogits(const torch::Tensor& hidden) {
  TORCH_CHECK(head_ == BertHead::kMaskedLm, "MaskedLmLogits(): not a masked-LM model");
  return parts_->cls->forward(hidden);
}

void BertForSequenceClassificationImpl::InitWeights() {
  torch::NoGradGuard no_grad;
  const double std = config_.initializer_range;
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, std);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* emb = module->as<torch::nn::Embedding>()) {
      emb->weight.normal_(0.0, std);
      if (emb->options.padding_idx().has_value()) emb->weight[*emb->options.padding_idx()].zero_();
    } else if (auto* ln = module->as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  }
  if (parts_->cls) parts_->cls->predictions->bias.zero_();
}

void BertForSequenceClassificationImpl::InitClassifier() {
  TORCH_CHECK(parts_->classifier, "InitClassifier(): a masked-LM model has no classifier");
  torch::NoGradGuard no_grad;
  parts_->classifier->weight.normal_(0.0, config_.initializer_range);
  parts_->classifier->bias.zero_();
}

void BertForSequenceClassificationImpl::AttachLora(const std::vector<std::string>& modules,
                                                   int64_t rank, double alpha, double dropout) {
  std::map<std::string, std::shared_ptr<LoraLinearImpl>> linears;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto linear = std::dynamic_pointer_cast<LoraLinearImpl>(item.value())) {
      linears.emplace(item.key(), std::move(linear));
    }
  }
  // Check every name before changing anything.
  for (const std::string& name : modules) {
    TORCH_CHECK(linears.count(name) > 0, "LoRA target ", name, " is not a Linear layer of the model");
  }
  for (const std::string& name : modules) {
    linears.at(name)->AttachLora(rank, alpha, dropout, parts_->rng);
  }
}

std::vector<std::pair<std::string, std::shared_ptr<LoraLinearImpl>>>
BertForSequenceClassificationImpl::LoraLayers() {
  std::vector<std::pair<std::string, std::shared_ptr<LoraLinearImpl>>> out;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    auto linear = std::dynamic_pointer_cast<LoraLinearImpl>(item.value());
    if (linear && linear->has_lora()) out.emplace_back(item.key(), std::move(linear));
  }
  return out;
}

void BertForSequenceClassificationImpl::MergeLora() {
  for (auto& [name, layer] : LoraLayers()) layer->MergeAndUnload();
}

torch::nn::Module& BertForSequenceClassificationImpl::embeddings_module() {
  return *parts_->bert->embeddings;
}

torch::nn::Module& BertForSequenceClassificationImpl::layer_module(int64_t index) {
  TORCH_CHECK(0 <= index && index < num_layers(), "layer index ", index, " out of range");
  return *parts_->bert->encoder->layers[index];
}

torch::nn::Module& BertForSequenceClassificationImpl::pooler_module() {
  TORCH_CHECK(parts_->bert->pooler, "a masked-LM model has no pooler");
  return *parts_->bert->pooler;
}

torch::nn::Module& BertForSequenceClassificationImpl::classifier_module() {
  TORCH_CHECK(parts_->classifier, "a masked-LM model has no classifier");
  return *parts_->classifier;
}

std::vector<std::pair<std::string, torch::nn::Module*>>
BertForSequenceClassificationImpl::head_modules() {
  if (head_ == BertHead::kMaskedLm) return {{"cls.", parts_->cls.get()}};
  return {{"bert.pooler.", parts_->bert->pooler.get()}, {"classifier.", parts_->classifier.get()}};
}

}  // namespace freezetune::model
