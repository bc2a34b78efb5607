// DropoutMask: the cheap CPU dropout mask (server/model/dropout_mask.h).
#include "server/model/dropout_mask.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/model/dropout.h"

namespace freezetune::model {
namespace {

at::Generator Seeded(uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return g;
}

TEST(DropoutMaskTest, DropsAboutPAndScalesTheRestAsAtDropout) {
  const int64_t n = 1 << 20;
  at::Tensor x = at::ones({n});
  for (double p : {0.1, 0.5, 0.9}) {
    at::Tensor mask = DropoutMask(x, p, Seeded(1));
    const float scale = (at::ones({1}).div_(1.0 - p)).item<float>();  // at::dropout's factor
    const int64_t kept = (mask == scale).sum().item<int64_t>();
    const int64_t dropped = (mask == 0).sum().item<int64_t>();
    EXPECT_EQ(kept + dropped, n) << "every element is 0 or 1/(1-p), p " << p;
    // Binomial: standard deviation sqrt(p (1 - p) / n) <= 5e-4; allow 6 of them.
    EXPECT_NEAR(static_cast<double>(dropped) / n, p, 3e-3) << p;
    // Neighbours (which share one 64-bit draw) are independent: both dropped
    // with probability p^2.
    at::Tensor d = (mask == 0).to(at::kFloat);
    const double both = (d.slice(0, 0, n - 1) * d.slice(0, 1, n)).mean().item<double>();
    EXPECT_NEAR(both, p * p, 3e-3) << p;
  }
}

TEST(DropoutMaskTest, EdgeProbabilities) {
  at::Tensor x = at::ones({1001});
  EXPECT_TRUE(at::equal(DropoutMask(x, 0.0, Seeded(3)), at::ones({1001})));
  EXPECT_TRUE(at::equal(DropoutMask(x, 1.0, Seeded(3)), at::zeros({1001})));
  EXPECT_THROW(DropoutMask(x, 1.5, Seeded(3)), c10::Error);
  EXPECT_THROW(DropoutMask(at::ones({3}, at::kDouble), 0.1, Seeded(3)), c10::Error);
}

TEST(DropoutMaskTest, ReproducibleFromTheGeneratorAndAdvancesIt) {
  at::Tensor x = at::ones({7, 33});
  at::Generator a = Seeded(42), b = Seeded(42);
  at::Tensor a1 = DropoutMask(x, 0.3, a), b1 = DropoutMask(x, 0.3, b);
  EXPECT_TRUE(at::equal(a1, b1));
  at::Tensor a2 = DropoutMask(x, 0.3, a);
  EXPECT_FALSE(at::equal(a1, a2));  // the generator moved on
  EXPECT_FALSE(at::equal(a1, DropoutMask(x, 0.3, Seeded(43))));
  // Successive masks from one generator are independent: an element is
  // dropped in both with probability p^2 (not p, nor 0).
  {
    const int64_t n = 1 << 20;
    const double p = 0.3;
    at::Generator g = Seeded(7);
    at::Tensor d1 = (DropoutMask(at::ones({n}), p, g) == 0).to(at::kFloat);
    at::Tensor d2 = (DropoutMask(at::ones({n}), p, g) == 0).to(at::kFloat);
    EXPECT_NEAR((d1 * d2).mean().item<double>(), p * p, 3e-3);
  }
  // Shape follows x, contiguous even for a non-contiguous x.
  at::Tensor t = DropoutMask(x.t(), 0.3, Seeded(42));
  EXPECT_EQ(t.sizes(), x.t().sizes());
  EXPECT_TRUE(t.is_contiguous());
}

TEST(DropoutMaskTest, SameMaskWhateverTheThreadCount) {
  const int64_t n = (1 << 18) + 3;  // several parallel chunks and an odd tail
  std::vector<float> one(static_cast<size_t>(n)), many(static_cast<size_t>(n));
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  FillDropoutMask(one.data(), n, 12345, 0.1);
  at::set_num_threads(4);
  FillDropoutMask(many.data(), n, 12345, 0.1);
  at::set_num_threads(threads);
  EXPECT_EQ(one, many);
  // An element depends on the key and its index only: a prefix fill agrees.
  std::vector<float> prefix(1001);
  FillDropoutMask(prefix.data(), 1001, 12345, 0.1);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), one.begin()));
}

TEST(DropoutMaskTest, SeededDropoutUsesItAndBackpropagatesTheMask) {
  auto rng = std::make_shared<DropoutRng>();
  rng->generator = Seeded(9);
  SeededDropoutImpl dropout(0.25, rng);
  dropout.train();
  at::Tensor x = at::randn({4, 5, 6}).requires_grad_(true);
  at::Tensor y = dropout.forward(x);
  at::Tensor mask = DropoutMask(x.detach(), 0.25, Seeded(9));
  EXPECT_TRUE(at::equal(y.detach(), x.detach() * mask));
  y.sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), mask));
  dropout.eval();
  EXPECT_TRUE(at::equal(dropout.forward(x), x));
}

}  // namespace
}  // namespace freezetune::model
