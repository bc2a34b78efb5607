// Parsing and validation of Hugging Face BERT config.json, and the parameter
// list it implies.
#include "server/model/bert_config.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace freezetune::model {
namespace {

constexpr const char* kPrefix = "config.json: ";

// Activations bert.cc implements (names as in transformers' ACT2FN).
constexpr const char* kKnownActivations[] = {
    "gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast",
    "relu", "silu",        "swish",    "tanh",
};

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status FieldError(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(
      absl::StrCat(kPrefix, AbslView(field), ": ", AbslView(reason)));
}

// Reads an optional integer field; JSON floats with integral values (e.g.
// 768.0) are rejected, as transformers would keep them as floats and fail.
absl::Status ReadInt(const nlohmann::json& j, const char* field, int64_t min_value,
                     int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return FieldError(field, "out of range");
  }
  int64_t v = it->get<int64_t>();
  if (v < min_value) {
    return FieldError(field, absl::StrCat("must be >= ", min_value, " (got ", v, ")"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadProbability(const nlohmann::json& j, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(field, "must be a number");
  double v = it->get<double>();
  if (!(v >= 0.0 && v < 1.0)) {
    return FieldError(field, absl::StrCat("must be in [0, 1) (got ", v, ")"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadPositive(const nlohmann::json& j, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(field, "must be a number");
  double v = it->get<double>();
  if (!(v > 0.0) || v > 1e6) return FieldError(field, absl::StrCat("must be > 0 (got ", v, ")"));
  *out = v;
  return absl::OkStatus();
}

// Sizes above these are not BERT configs but attempts to make us allocate
// absurd amounts of memory; keep product computations far from overflow.
constexpr int64_t kMaxDim = int64_t{1} << 24;

}  // namespace

absl::StatusOr<BertConfig> ParseBertConfig(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(kPrefix, "not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(kPrefix, "must be a JSON object"));
  }
  BertConfig c;
  if (auto it = j.find("model_type"); it != j.end()) {
    if (!it->is_string()) return FieldError("model_type", "must be a string");
    // Original Google BERT configs carry no model_type; anything else that
    // names itself must be BERT, as this model implements only BERT.
    if (it->get<std::string>() != "bert") {
      return FieldError("model_type", absl::StrCat("must be \"bert\" (got \"",
                                                   it->get<std::string>(), "\")"));
    }
  }
  FT_RETURN_IF_ERROR(ReadInt(j, "vocab_size", 1, &c.vocab_size));
  FT_RETURN_IF_ERROR(ReadInt(j, "hidden_size", 1, &c.hidden_size));
  FT_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", 1, &c.num_hidden_layers));
  FT_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", 1, &c.num_attention_heads));
  FT_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", 1, &c.intermediate_size));
  FT_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", 1, &c.max_position_embeddings));
  FT_RETURN_IF_ERROR(ReadInt(j, "type_vocab_size", 1, &c.type_vocab_size));
  FT_RETURN_IF_ERROR(ReadInt(j, "pad_token_id", 0, &c.pad_token_id));
  FT_RETURN_IF_ERROR(ReadProbability(j, "hidden_dropout_prob", &c.hidden_dropout_prob));
  FT_RETURN_IF_ERROR(
      ReadProbability(j, "attention_probs_dropout_prob", &c.attention_probs_dropout_prob));
  FT_RETURN_IF_ERROR(ReadPositive(j, "layer_norm_eps", &c.layer_norm_eps));
  FT_RETURN_IF_ERROR(ReadPositive(j, "initializer_range", &c.initializer_range));
  if (auto it = j.find("classifier_dropout"); it != j.end() && !it->is_null()) {
    double v = 0;
    FT_RETURN_IF_ERROR(ReadProbability(j, "classifier_dropout", &v));
    c.classifier_dropout = v;
  }

  for (auto [field, value] : {std::pair{"vocab_size", c.vocab_size},
                              std::pair{"hidden_size", c.hidden_size},
                              std::pair{"num_hidden_layers", c.num_hidden_layers},
                              std::pair{"num_attention_heads", c.num_attention_heads},
                              std::pair{"intermediate_size", c.intermediate_size},
                              std::pair{"max_position_embeddings", c.max_position_embeddings},
                              std::pair{"type_vocab_size", c.type_vocab_size}}) {
    if (value > kMaxDim) {
      return FieldError(field, absl::StrCat("too large (", value, " > ", kMaxDim, ")"));
    }
  }
  if (c.num_hidden_layers > 1024) {
    return FieldError("num_hidden_layers", absl::StrCat("too large (", c.num_hidden_layers,
                                                        " > 1024)"));
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return FieldError("num_attention_heads",
                      absl::StrCat("must divide hidden_size (", c.hidden_size, " % ",
                                   c.num_attention_heads, " != 0)"));
  }
  if (c.pad_token_id >= c.vocab_size) {
    return FieldError("pad_token_id", absl::StrCat("must be < vocab_size (", c.pad_token_id,
                                                   " >= ", c.vocab_size, ")"));
  }
  if (auto it = j.find("hidden_act"); it != j.end()) {
    if (!it->is_string()) return FieldError("hidden_act", "must be a string");
    c.hidden_act = it->get<std::string>();
    bool known = false;
    for (const char* a : kKnownActivations) known = known || c.hidden_act == a;
    if (!known) {
      return FieldError("hidden_act",
                        absl::StrCat("unsupported activation \"", c.hidden_act, "\" (supported: ",
                                     absl::StrJoin(kKnownActivations, ", "), ")"));
    }
  }
  if (auto it = j.find("position_embedding_type"); it != j.end() && !it->is_null()) {
    // relative_key variants add parameters and change attention; not implemented.
    if (!it->is_string() || it->get<std::string>() != "absolute") {
      return FieldError("position_embedding_type", "only \"absolute\" is supported");
    }
  }
  c.raw = std::move(j);
  return c;
}

absl::StatusOr<BertConfig> LoadBertConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ParseBertConfig(ss.str());
}

std::vector<ParameterShape> BertParameterShapes(const BertConfig& c, int64_t num_labels,
                                                BertHead head) {
  const int64_t h = c.hidden_size;
  std::vector<ParameterShape> out;
  auto add = [&out](std::string name, std::vector<int64_t> shape) {
    out.push_back(ParameterShape{std::move(name), std::move(shape)});
  };
  auto linear = [&add](const std::string& prefix, int64_t in, int64_t outf) {
    add(prefix + ".weight", {outf, in});
    add(prefix + ".bias", {outf});
  };
  auto layer_norm = [&add, h](const std::string& prefix) {
    add(prefix + ".weight", {h});
    add(prefix + ".bias", {h});
  };
  add("bert.embeddings.word_embeddings.weight", {c.vocab_size, h});
  add("bert.embeddings.position_embeddings.weight", {c.max_position_embeddings, h});
  add("bert.embeddings.token_type_embeddings.weight", {c.type_vocab_size, h});
  layer_norm("bert.embeddings.LayerNorm");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("bert.encoder.layer.", l, ".");
    linear(p + "attention.self.query", h, h);
    linear(p + "attention.self.key", h, h);
    linear(p + "attention.self.value", h, h);
    linear(p + "attention.output.dense", h, h);
    layer_norm(p + "attention.output.LayerNorm");
    linear(p + "intermediate.dense", h, c.intermediate_size);
    linear(p + "output.dense", c.intermediate_size, h);
    layer_norm(p + "output.LayerNorm");
  }
  if (head == BertHead::kMaskedLm) {
    add("cls.predictions.bias", {c.vocab_size});
    linear("cls.predictions.transform.dense", h, h);
    layer_norm("cls.predictions.transform.LayerNorm");
    return out;
  }
  linear("bert.pooler.dense", h, h);
  linear("classifier", h, num_labels);
  return out;
}

int ParameterLayer(std::string_view std_name) {
  absl::string_view name = AbslView(std_name);
  if (absl::StartsWith(name, "bert.")) name.remove_prefix(5);
  if (absl::StartsWith(name, "embeddings.")) return 0;
  constexpr absl::string_view kLayer = "encoder.layer.";
  if (!absl::StartsWith(name, kLayer)) return -1;
  name.remove_prefix(kLayer.size());
  size_t dot = name.find('.');
  int index = 0;
  if (dot == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dot), &index) ||
      index < 0) {
    return -1;
  }
  return index + 1;
}

}  // namespace freezetune::model
