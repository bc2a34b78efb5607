// Data-parallel sharding (see data_parallel.h).
#include "server/train/data_parallel.h"

#include <algorithm>

namespace freezetune::train {

std::vector<int64_t> ShardOf(const std::vector<int64_t>& global_batch, int rank,
                             int64_t per_rank) {
  const int64_t n = static_cast<int64_t>(global_batch.size());
  const int64_t begin = std::min<int64_t>(n, rank * per_rank);
  const int64_t end = std::min<int64_t>(n, begin + per_rank);
  return std::vector<int64_t>(global_batch.begin() + begin, global_batch.begin() + end);
}

}  // namespace freezetune::train
