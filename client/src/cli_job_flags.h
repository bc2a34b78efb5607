// Builds API requests from CLI flags: a FineTuneJob for `submit`, a
// PlanFreezeRequest for `plan`, and the small value parsers they share.
//
// A `-f FILE` is read first (protobuf JSON mapping); each flag then overrides
// the field it names, so one example file serves many runs. Validation here
// is only syntactic (numbers parse, enums are known); the server validates
// meaning (ranges, URIs, patterns against the model).
//
// Reads files named by -f; otherwise pure.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_JOB_FLAGS_H_
#define FREEZETUNE_CLIENT_SRC_CLI_JOB_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/src/cli_args.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::cli {

// "freeze:REGEX", "train:REGEX" or "train:REGEX@0.5" (lr_scale). The '@'
// suffix counts only when it parses as a number, so patterns may contain '@'.
absl::StatusOr<v1::FreezeRule> ParseRule(absl::string_view text);

// "head-only", "bottom:N", "bias-only" (BitFit) or "none" (clears the
// recipe) applied to `spec`.
absl::Status ApplyFreezeRecipe(absl::string_view text, v1::FreezeSpec* spec);

// "running,queued" (case-insensitive, JOB_STATE_ prefix optional).
absl::StatusOr<std::vector<v1::JobState>> ParseStates(absl::string_view text);

// "running,succeeded" (case-insensitive, SWEEP_STATE_ prefix optional).
absl::StatusOr<std::vector<v1::SweepState>> ParseSweepStates(absl::string_view text);

// "jsonl", "csv", "tsv", "trec" (case-insensitive).
absl::StatusOr<v1::DatasetFormat> ParseFormat(absl::string_view text);

// Reads a JSON file into `msg` (protobuf JSON mapping, unknown fields are an
// error). The error names the file.
absl::Status ReadJsonFile(const std::string& path,
                          google::protobuf::Message* msg);

// `submit`: -f file (if any) overridden by flags.
absl::StatusOr<v1::FineTuneJob> BuildJob(const ParsedArgs& args);
// Applies the job flags in `args` onto `job`.
absl::Status ApplyJobFlags(const ParsedArgs& args, v1::FineTuneJob* job);

// The CLI flag that sets a field, for hints: "max-seq-length" for
// "job.hyperparameters.max_seq_length" (a leading "job."/"sweep.job." is
// ignored, and so is an index: "job.freeze.rules[2].pattern" -> "rule").
// "" when no flag sets it.
std::string FlagForField(absl::string_view field_path);

// `plan`: -f may hold a PlanFreezeRequest, a FineTuneJob (its model_uri,
// freeze and task are used) or a bare FreezeSpec; flags override.
absl::StatusOr<v1::PlanFreezeRequest> BuildPlanRequest(const ParsedArgs& args);

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_JOB_FLAGS_H_
