// GradientSync over c10d's Gloo backend (see c10d_sync.h).
#include "server/train/c10d_sync.h"

#include <c10/util/Exception.h>
// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO, which
// LibTorch's CMake targets normally define; a LibTorch built without Gloo
// then fails to link here rather than to compile.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace freezetune::train {
namespace {

class C10dSync final : public GradientSync {
 public:
  C10dSync(c10::intrusive_ptr<c10d::ProcessGroupGloo> group, const C10dSyncOptions& options)
      : group_(std::move(group)), options_(options) {}

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }
  int64_t last_allreduce_bytes() const override { return last_bytes_; }

  void AllReduceGradients(const std::vector<torch::Tensor>& params) override {
    torch::NoGradGuard no_grad;
    last_bytes_ = 0;
    // Buckets of consecutive parameters of one dtype and device, flattened,
    // all-reduced asynchronously and copied back once all are done.
    struct Bucket {
      std::vector<size_t> members;
      torch::Tensor flat;
      c10::intrusive_ptr<c10d::Work> work;
    };
    std::vector<Bucket> buckets;
    int64_t bytes = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& p = params[i];
      const int64_t nbytes = p.numel() * static_cast<int64_t>(p.element_size());
      if (buckets.empty() || bytes + nbytes > options_.bucket_bytes ||
          params[buckets.back().members.front()].scalar_type() != p.scalar_type() ||
          params[buckets.back().members.front()].device() != p.device()) {
        buckets.emplace_back();
        bytes = 0;
      }
      buckets.back().members.push_back(i);
      bytes += nbytes;
    }
    for (Bucket& b : buckets) {
      std::vector<torch::Tensor> parts;
      for (size_t i : b.members) {
        const torch::Tensor& p = params[i];
        parts.push_back(p.grad().defined() ? p.grad().reshape(-1) : torch::zeros_like(p).reshape(-1));
      }
      b.flat = torch::cat(parts);
      last_bytes_ += b.flat.numel() * static_cast<int64_t>(b.flat.element_size());
      std::vector<torch::Tensor> tensors{b.flat};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      opts.timeout = options_.timeout;
      b.work = group_->allreduce(tensors, opts);
    }
    for (Bucket& b : buckets) {
      b.work->wait(options_.timeout);
      int64_t offset = 0;
      for (size_t i : b.members) {
        const torch::Tensor& p = params[i];
        torch::Tensor sum = b.flat.narrow(0, offset, p.numel()).view_as(p);
        offset += p.numel();
        if (p.grad().defined()) {
          p.grad().copy_(sum);
        } else {
          const_cast<torch::Tensor&>(p).mutable_grad() = sum.clone();
        }
      }
    }
  }

  void Broadcast(const std::vector<torch::Tensor>& params) override {
    torch::NoGradGuard no_grad;
    for (const torch::Tensor& p : params) {
      std::vector<torch::Tensor> tensors{p.detach()};
      c10d::BroadcastOptions opts;
      opts.rootRank = 0;
      opts.timeout = options_.timeout;
      group_->broadcast(tensors, opts)->wait(options_.timeout);
    }
  }

  std::vector<double> SumScalars(const std::vector<double>& values) override {
    if (values.empty()) return {};
    std::vector<torch::Tensor> tensors{
        torch::tensor(values, torch::TensorOptions().dtype(torch::kDouble))};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = options_.timeout;
    group_->allreduce(tensors, opts)->wait(options_.timeout);
    const torch::Tensor& t = tensors.front();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  const C10dSyncOptions options_;
  int64_t last_bytes_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GradientSync>> ConnectC10dSync(const C10dSyncOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("data-parallel rank ", options.rank, " of ",
                                                   options.world_size));
  }
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(options.store_port);
    store_options.isServer = options.host_store;
    if (options.host_store) {
      store_options.numWorkers = static_cast<size_t>(options.world_size);
      store_options.waitWorkers = false;
    }
    store_options.timeout = options.timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(options.store_host, store_options);
    auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
    gloo->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(options.gloo_hostname));
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, options.rank,
                                                              options.world_size, gloo);
    return std::unique_ptr<GradientSync>(new C10dSync(std::move(group), options));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("data-parallel rank ", options.rank,
                                               ": joining the process group: ", e.what()));
  }
}

}  // namespace freezetune::train
