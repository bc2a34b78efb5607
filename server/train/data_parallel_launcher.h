// Runs a data-parallel job (FineTuneJob.resources.data_parallel = N > 1) as
// N freezetune-worker processes, from the scheduler thread that owns the
// job, which stays their supervisor:
//  - hosts the rendezvous, a c10d TCPStore on 127.0.0.1 (an ephemeral port),
//    for the job's lifetime;
//  - writes the task (the job and the run context) to a file and starts the
//    ranks (posix_spawn; each in its own process group, dying with the
//    server through PR_SET_PDEATHSIG), rank r on devices[r];
//  - forwards rank 0's events to context.emit and returns rank 0's result;
//  - relays should_stop to every rank (they agree on the step to stop at);
//  - a rank that exits without reporting a final status (killed, crashed)
//    fails the job at once: the other ranks are killed, and the error names
//    the rank, its pid and how it ended. A rank that hangs makes the others'
//    next collective fail within the c10d timeout, which fails the job the
//    same way; no path waits forever.
// Each CPU rank uses context.intra_op_threads() threads (the server gives a
// data-parallel job one share per slot it holds), read once at the start.
//
// Thread safety: one call per job; calls for different jobs are independent.
#ifndef FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_LAUNCHER_H_
#define FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_LAUNCHER_H_

#include <string>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/train/fine_tune.h"

namespace freezetune::train {

absl::StatusOr<v1::JobResult> RunDataParallel(const v1::FineTuneJob& job,
                                              const RunContext& context);

// The freezetune-worker beside the running executable.
std::string DefaultWorkerBinary();

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_LAUNCHER_H_
