// Small helpers on the records the store keeps (the API's proto messages):
// timestamps as microseconds, and which job states are final.
//
// Thread safety: pure functions.
#ifndef FREEZETUNE_SERVER_STORE_RECORDS_H_
#define FREEZETUNE_SERVER_STORE_RECORDS_H_

#include <cstdint>

#include "freezetune/v1/freezetune.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace freezetune::store {

// Microseconds since the Unix epoch of a proto timestamp, and back.
int64_t ToMicros(const google::protobuf::Timestamp& t);
google::protobuf::Timestamp FromMicros(int64_t micros);
google::protobuf::Timestamp NowTimestamp();

// SUCCEEDED, FAILED or CANCELLED.
bool IsTerminal(v1::JobState state);
// SUCCEEDED, FAILED or CANCELLED.
bool IsTerminal(v1::SweepState state);

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_RECORDS_H_
