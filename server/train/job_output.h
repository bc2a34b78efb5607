// A finished job's output directory in the job's output_format: the full
// Hugging Face model (LoRA merged in), a PEFT adapter directory, or a delta
// (the changed tensors pinned to the base's SHA-256). See OutputFormat in
// freezetune.proto.
//
// Thread safety: runs on the job's training thread; touches only its model
// and output directory.
#ifndef FREEZETUNE_SERVER_TRAIN_JOB_OUTPUT_H_
#define FREEZETUNE_SERVER_TRAIN_JOB_OUTPUT_H_

#include <string>

#include "absl/status/status.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/train/trainer.h"

namespace freezetune::train {

// Submit-time checks of job.output_format against the job (an adapter
// output needs freeze.lora). INVALID_ARGUMENT naming "job.output_format".
absl::Status ValidateOutputFormat(const v1::FineTuneJob& job);

// A delta output is in its base's dtype (`source_dtype`, as the model
// directory reports it), so that base + delta is the full output bit for
// bit: INVALID_ARGUMENT naming "job.output_dtype" when the job asks for
// another one.
absl::Status ValidateDeltaOutputDtype(const v1::FineTuneJob& job, const std::string& source_dtype);

// Writes the trained model (on the CPU) to `output_dir`. `base_model_dir`
// names the base model in adapter_config.json (base_model_name_or_path). For
// OUTPUT_FORMAT_FULL this merges the model's LoRA adapters into its weights
// (so it runs after every check on the trained adapters).
absl::Status WriteJobOutput(const v1::FineTuneJob& job, Trainer& trainer, const PreparedJob& prepared,
                            const std::string& base_model_dir, const std::string& output_dir);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_JOB_OUTPUT_H_
