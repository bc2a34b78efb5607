// The module tree implied by a list of Hugging Face parameter names: every
// dotted prefix of a parameter name is a module ("bert.encoder.layer.0" is a
// container, "bert.encoder.layer.0.attention.self.query" a Linear layer), as
// torch's named_modules() would list them. Torch-free, so LoRA targets are
// validated at submit time and by PlanFreeze without loading weights.
//
// Kinds come from the BERT naming convention (server/model/bert.cc): a
// module whose own parameters are a 2-D "weight" (and optionally a 1-D
// "bias") and whose name ends in query, key, value, dense, classifier or
// decoder is a Linear layer; "*_embeddings" are Embeddings; "LayerNorm" is a
// LayerNorm; any other module is a container.
//
// Thread safety: pure functions.
#ifndef FREEZETUNE_SERVER_MODEL_MODULE_TREE_H_
#define FREEZETUNE_SERVER_MODEL_MODULE_TREE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "server/model/bert_config.h"

namespace freezetune::model {

enum class ModuleKind { kContainer, kLinear, kEmbedding, kLayerNorm };

// "Linear", "Embedding", "LayerNorm" or "container", for messages.
const char* ModuleKindName(ModuleKind kind);

struct ModuleInfo {
  std::string name;  // e.g. "bert.encoder.layer.0.attention.self.query"
  ModuleKind kind = ModuleKind::kContainer;
  // Linear only: weight is [out_features, in_features].
  int64_t in_features = 0;
  int64_t out_features = 0;
};

// Every module that holds a parameter directly or through its children, in
// the order of first appearance (the order named_modules() visits them,
// parents before children), without the root.
std::vector<ModuleInfo> ListModules(const std::vector<ParameterShape>& params);

// The module a parameter belongs to: its name without the last component
// ("classifier.weight" -> "classifier"); "" for a root-level parameter.
std::string_view OwningModule(std::string_view parameter_name);

// True when `parameter_name` lies inside `module` (the module itself or one
// of its descendants).
bool InModule(std::string_view parameter_name, std::string_view module);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_MODULE_TREE_H_
