// Writing a model's LoRA adapters as a Hugging Face PEFT adapter directory:
//   adapter_config.json     LoraConfig fields (peft_type "LORA", r,
//                           lora_alpha, lora_dropout, target_modules,
//                           modules_to_save, bias, task_type, ...)
//   adapter_model.safetensors  PEFT's saved key names:
//       base_model.model.<module>.lora_A.weight / .lora_B.weight
//       base_model.model.<param>  for modules_to_save and any other saved
//                                 parameter, with "base_layer." before the
//                                 last component inside an adapted layer
//   vocab.txt, tokenizer_config.json, task.json (id2label, label2id),
//   freeze_plan.json, metrics.json.
// The key names follow peft/utils/save_and_load.py (get_peft_model_state_dict
// strips the adapter name; ModulesToSaveWrapper's copy is saved under the
// wrapped module's own name), so PeftModel.from_pretrained(base, dir) on the
// base model loads it.
//
// Thread safety: no shared state; one model per call.
#ifndef FREEZETUNE_SERVER_MODEL_PEFT_ADAPTER_H_
#define FREEZETUNE_SERVER_MODEL_PEFT_ADAPTER_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/model/bert.h"
#include "server/model/tokenizer.h"

namespace freezetune::model {

struct PeftAdapterOptions {
  std::string base_model_name_or_path;  // written as is into adapter_config.json
  std::string task_type = "SEQ_CLS";
  double alpha = 0.0;
  double dropout = 0.0;
  std::string target_modules;                // RE2 = Python re full match
  std::vector<std::string> modules_to_save;  // module names
  // Base-model parameters to save besides the adapters (the trained ones:
  // modules_to_save, biases or others a rule trained). Names as the model's
  // named_parameters() yields them.
  std::set<std::string> saved_parameters;
  std::vector<std::string> label_names;  // task.json; empty: LABEL_0..K-1
  nlohmann::json freeze_plan;            // freeze_plan.json when not null
  nlohmann::json metrics;                // metrics.json when not null
};

// The PEFT key of a model parameter: "base_model.model." + name, with
// "base_layer." inserted before the last component when the owning module
// is in `adapted` ("...query.bias" -> "...query.base_layer.bias"); adapter
// parameters keep their names ("...query.lora_A.weight").
std::string PeftKey(const std::string& name, const std::set<std::string>& adapted);

// Writes the directory (created if needed; each file atomically). The model
// must carry adapters (AttachLora) all of one rank. INVALID_ARGUMENT when
// it has none or a saved parameter is unknown.
absl::Status SavePeftAdapter(const std::string& dir, BertForSequenceClassification& model,
                             const WordPieceTokenizer& tokenizer, const PeftAdapterOptions& options);

// Loads a PEFT LoRA adapter directory (adapter_config.json +
// adapter_model.safetensors, as SavePeftAdapter or PEFT itself writes it)
// onto `model`, the base it was trained on: attaches adapters to the Linear
// layers target_modules selects (a string: RE2 full match, as PEFT's
// re.fullmatch; a list: a module whose name equals an entry or ends in
// "." + entry, as PEFT matches lists) with r, lora_alpha and lora_dropout,
// then copies every tensor in the file into the model parameter its PEFT key
// names (modules_to_save and biases included). INVALID_ARGUMENT naming the
// file for: a peft_type other than LORA; use_dora, use_rslora,
// fan_in_fan_out, rank_pattern or alpha_pattern (not supported); a target
// that is not a Linear layer or none at all; a key that names no parameter;
// a shape mismatch; an adapter weight missing from the file.
absl::Status LoadPeftAdapter(const std::string& dir, BertForSequenceClassification& model);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_PEFT_ADAPTER_H_
