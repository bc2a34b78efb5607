// Module tree from parameter names (see module_tree.h).
#include "server/model/module_tree.h"

#include <map>
#include <utility>

namespace freezetune::model {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string_view LastComponent(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

bool IsLinearName(std::string_view leaf) {
  return leaf == "query" || leaf == "key" || leaf == "value" || leaf == "dense" ||
         leaf == "classifier" || leaf == "decoder";
}

}  // namespace

const char* ModuleKindName(ModuleKind kind) {
  switch (kind) {
    case ModuleKind::kLinear:
      return "Linear";
    case ModuleKind::kEmbedding:
      return "Embedding";
    case ModuleKind::kLayerNorm:
      return "LayerNorm";
    case ModuleKind::kContainer:
      break;
  }
  return "container";
}

std::string_view OwningModule(std::string_view parameter_name) {
  const size_t dot = parameter_name.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : parameter_name.substr(0, dot);
}

bool InModule(std::string_view parameter_name, std::string_view module) {
  return parameter_name.size() > module.size() &&
         parameter_name.compare(0, module.size(), module) == 0 &&
         parameter_name[module.size()] == '.';
}

std::vector<ModuleInfo> ListModules(const std::vector<ParameterShape>& params) {
  std::vector<ModuleInfo> out;
  std::map<std::string, size_t, std::less<>> index;  // name -> position in out
  // Own parameters of each module: (leaf name, shape).
  std::map<std::string, std::vector<std::pair<std::string, std::vector<int64_t>>>, std::less<>> own;
  for (const ParameterShape& p : params) {
    std::string_view name = p.name;
    // Every proper prefix ending before a '.', outermost first.
    for (size_t dot = name.find('.'); dot != std::string_view::npos; dot = name.find('.', dot + 1)) {
      std::string_view module = name.substr(0, dot);
      if (index.find(module) == index.end()) {
        index.emplace(std::string(module), out.size());
        out.push_back(ModuleInfo{std::string(module)});
      }
    }
    std::string_view owner = OwningModule(name);
    if (!owner.empty()) own[std::string(owner)].emplace_back(std::string(LastComponent(name)), p.shape);
  }
  for (ModuleInfo& m : out) {
    auto it = own.find(m.name);
    if (it == own.end()) continue;
    const std::string_view leaf = LastComponent(m.name);
    if (leaf == "LayerNorm") {
      m.kind = ModuleKind::kLayerNorm;
    } else if (EndsWith(leaf, "_embeddings")) {
      m.kind = ModuleKind::kEmbedding;
    } else if (IsLinearName(leaf)) {
      const std::vector<int64_t>* weight = nullptr;
      bool other = false;
      for (const auto& [param, shape] : it->second) {
        if (param == "weight" && shape.size() == 2) {
          weight = &shape;
        } else if (param != "bias" || shape.size() != 1) {
          other = true;
        }
      }
      if (weight != nullptr && !other) {
        m.kind = ModuleKind::kLinear;
        m.out_features = (*weight)[0];
        m.in_features = (*weight)[1];
      }
    }
  }
  return out;
}

}  // namespace freezetune::model
