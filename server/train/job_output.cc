// Job outputs by format (see job_output.h).
#include "server/train/job_output.h"

#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/model/delta_checkpoint.h"
#include "server/model/hf_checkpoint.h"
#include "server/model/peft_adapter.h"
#include "server/train/precision.h"

namespace freezetune::train {

absl::Status ValidateOutputFormat(const v1::FineTuneJob& job) {
  switch (job.output_format()) {
    case v1::OUTPUT_FORMAT_UNSPECIFIED:
    case v1::OUTPUT_FORMAT_FULL:
    case v1::OUTPUT_FORMAT_DELTA:
      return absl::OkStatus();
    case v1::OUTPUT_FORMAT_PEFT_ADAPTER:
      if (!job.freeze().has_lora()) {
        return absl::InvalidArgumentError(
            "job.output_format: OUTPUT_FORMAT_PEFT_ADAPTER writes LoRA adapters; set freeze.lora");
      }
      if (job.task().type() == v1::TASK_TYPE_MASKED_LM) {
        return absl::InvalidArgumentError(
            "job.output_format: PEFT adapters are written for sequence classification; a "
            "masked-LM job writes OUTPUT_FORMAT_FULL");
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job.output_format: unknown value ", static_cast<int>(job.output_format())));
  }
}

absl::Status ValidateDeltaOutputDtype(const v1::FineTuneJob& job, const std::string& source_dtype) {
  if (job.output_format() != v1::OUTPUT_FORMAT_DELTA) return absl::OkStatus();
  const std::string base = OutputDtype(v1::WEIGHT_DTYPE_UNSPECIFIED, source_dtype);
  const std::string asked = OutputDtype(job.output_dtype(), source_dtype);
  if (asked == base) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "job.output_dtype: a delta output keeps its base's dtype (", base, "), not ", asked,
      "; leave it unset or write OUTPUT_FORMAT_FULL"));
}

absl::Status WriteJobOutput(const v1::FineTuneJob& job, Trainer& trainer, const PreparedJob& prepared,
                            const std::string& base_model_dir, const std::string& output_dir) {
  FT_RETURN_IF_ERROR(ValidateOutputFormat(job));
  model::BertForSequenceClassification& m = trainer.model();
  m->to(torch::kCPU);
  const nlohmann::json plan = trainer.plan().ToJson();
  const nlohmann::json metrics = trainer.MetricsJson();
  if (job.output_format() == v1::OUTPUT_FORMAT_PEFT_ADAPTER) {
    const LoraPlan& lora = *trainer.plan().lora;
    model::PeftAdapterOptions options;
    options.base_model_name_or_path = base_model_dir;
    options.alpha = lora.alpha;
    options.dropout = lora.dropout;
    options.target_modules = lora.target_pattern;
    options.modules_to_save = lora.modules_to_save;
    // Every base parameter that trained at some point (modules_to_save,
    // and whatever rules or unfreezing stages trained); adapters are
    // always written.
    std::set<std::string> adapters;
    for (const ParameterDecision& d : trainer.plan().parameters) {
      if (d.adapter) adapters.insert(d.name);
    }
    for (const std::string& name : trainer.ever_trainable()) {
      if (adapters.count(name) == 0) options.saved_parameters.insert(name);
    }
    // And what the base checkpoint lacks and this job initialised, trained or
    // not (the pooler under a masked-LM base): the base alone cannot give it.
    std::set<std::string> names;
    for (const auto& p : m->named_parameters()) names.insert(p.key());
    for (const std::string& name : prepared.loaded.newly_initialized) {
      if (names.count(name) && adapters.count(name) == 0) options.saved_parameters.insert(name);
    }
    options.label_names = prepared.labels.names;
    options.freeze_plan = plan;
    options.metrics = metrics;
    return model::SavePeftAdapter(output_dir, m, *prepared.loaded.tokenizer, options);
  }
  // Full model: fold the adapters in (W + alpha/rank * B A).
  m->MergeLora();
  model::SaveOptions save;
  // The input checkpoint's dtype unless the job asks otherwise (precision.h).
  save.dtype = OutputDtype(job.output_dtype(), prepared.loaded.source_dtype);
  save.label_names = prepared.labels.names;
  save.freeze_plan = plan;
  save.metrics = metrics;
  if (job.output_format() != v1::OUTPUT_FORMAT_DELTA) {
    return model::SaveModelDir(output_dir, m, *prepared.loaded.tokenizer, save);
  }
  // Delta: what may differ from the base. Everything else was frozen
  // throughout and verified bit-identical after training.
  std::set<std::string> changed;
  for (const ParameterDecision& d : trainer.plan().parameters) {
    if (!d.adapter && trainer.ever_trainable().count(d.name)) changed.insert(d.name);
  }
  if (trainer.plan().lora) {
    for (const std::string& t : trainer.plan().lora->targets) changed.insert(t + ".weight");
  }
  for (const std::string& n : prepared.loaded.newly_initialized) changed.insert(n);
  std::string delta_base = prepared.model_dir;
  std::string delta_base_name = base_model_dir;
  if (!prepared.delta_base_dir.empty()) {
    // Started from a delta: keep its tensors, pin its base.
    FT_ASSIGN_OR_RETURN(const model::DeltaManifest input,
                        model::ReadDeltaManifest(prepared.model_dir));
    changed.insert(input.tensors.begin(), input.tensors.end());
    delta_base = prepared.delta_base_dir;
    delta_base_name = job.base_model_uri();
  }
  // A name of the input's head that this model does not have (an MLM head
  // under a classifier) is not carried over.
  std::set<std::string> names;
  for (const auto& p : m->named_parameters()) names.insert(p.key());
  for (auto it = changed.begin(); it != changed.end();) {
    it = names.count(*it) ? std::next(it) : changed.erase(it);
  }
  return model::SaveDeltaDir(output_dir, m, *prepared.loaded.tokenizer, save, changed, delta_base,
                             delta_base_name);
}

}  // namespace freezetune::train
