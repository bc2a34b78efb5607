// libFuzzer target for config.json parsing: arbitrary bytes must never crash,
// and an accepted config must satisfy what the model constructor relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/model/bert_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace freezetune::model;
  auto config = ParseBertConfig(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();
    return 0;
  }
  const BertConfig& c = *config;
  if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads ||
      c.vocab_size <= 0 || c.num_hidden_layers <= 0 || c.intermediate_size <= 0 ||
      c.max_position_embeddings <= 0 || c.type_vocab_size <= 0 || c.pad_token_id < 0 ||
      c.pad_token_id >= c.vocab_size || !(c.layer_norm_eps > 0) ||
      !(c.hidden_dropout_prob >= 0 && c.hidden_dropout_prob < 1)) {
    std::abort();
  }
  if (c.num_hidden_layers <= 64) {
    auto shapes = BertParameterShapes(c, 2);
    if (shapes.size() != static_cast<size_t>(5 + 16 * c.num_hidden_layers + 4)) std::abort();
    for (const auto& s : shapes) {
      if (ParameterLayer(s.name) > c.num_hidden_layers) std::abort();
    }
  }
  return 0;
}
