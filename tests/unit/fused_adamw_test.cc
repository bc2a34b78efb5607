// FusedAdamWStep (server/train/fused_adamw.h) against torch::optim::AdamW on
// the same inputs: parameters, both moments and step counts, over many
// steps with a changing learning rate, decay and no-decay groups, sizes with
// vector tails, a non-contiguous parameter (reference path), 1 and 2
// threads; each instruction-set kernel on its own; and the optional sparse
// row updates.
#include "server/train/fused_adamw.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/nn/utils/clip_grad.h>
#include <torch/nn/functional/loss.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "server/base/cpu_info.h"
#include "server/model/bert.h"
#include "server/model/bert_config.h"
#include "server/train/fused_adamw_kernel.h"

namespace freezetune::train {
namespace {

// The documented tolerance: 2 float ulps of the larger magnitude (FMA
// contraction of a scalar tail can move the last bit once per step and op).
void ExpectClose(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const torch::Tensor diff = (got - want).abs();
  const torch::Tensor scale = torch::maximum(got.abs(), want.abs());
  const torch::Tensor bound = scale * (2 * std::ldexp(1.0, -23)) + 1e-30;
  const int64_t bad = (diff > bound).sum().item<int64_t>();
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.numel()
                    << " elements beyond 2 ulps; max abs diff " << diff.max().item<float>();
}

int64_t BitIdentical(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor ac = a.contiguous(), bc = b.contiguous();
  const float* x = ac.data_ptr<float>();
  const float* y = bc.data_ptr<float>();
  int64_t same = 0;
  for (int64_t i = 0; i < ac.numel(); ++i) same += std::memcmp(&x[i], &y[i], 4) == 0;
  return same;
}

struct Model {
  std::vector<torch::Tensor> decay;     // weights
  std::vector<torch::Tensor> no_decay;  // biases, LayerNorm
};

// Sizes with and without vector tails; one transposed (non-contiguous) view.
Model MakeModel(uint64_t seed) {
  torch::manual_seed(seed);
  Model m;
  m.decay.push_back(torch::randn({3000, 128}));  // an embedding
  m.decay.push_back(torch::randn({37, 129}));
  m.decay.push_back(torch::randn({64, 48}).t());  // non-contiguous
  m.no_decay.push_back(torch::randn({128}));
  m.no_decay.push_back(torch::randn({7}));
  for (auto* list : {&m.decay, &m.no_decay}) {
    for (auto& t : *list) t.set_requires_grad(true);
  }
  return m;
}

Model Clone(const Model& src) {
  Model m;
  for (const auto& t : src.decay) {
    torch::Tensor c = t.t().is_contiguous() && !t.is_contiguous() ? t.detach().t().clone().t()
                                                                    : t.detach().clone();
    m.decay.push_back(c.set_requires_grad(true));
  }
  for (const auto& t : src.no_decay) m.no_decay.push_back(t.detach().clone().set_requires_grad(true));
  return m;
}

std::unique_ptr<torch::optim::AdamW> Optimizer(Model& m, double lr) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto decay = std::make_unique<torch::optim::AdamWOptions>(lr);
  decay->weight_decay(0.01);
  groups.emplace_back(m.decay, std::move(decay));
  auto no_decay = std::make_unique<torch::optim::AdamWOptions>(lr);
  no_decay->weight_decay(0.0);
  groups.emplace_back(m.no_decay, std::move(no_decay));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), torch::optim::AdamWOptions(lr));
}

// Same gradients for both models at each step.
void SetGradients(Model& a, Model& b, int step) {
  torch::manual_seed(1000 + step);
  for (size_t i = 0; i < a.decay.size(); ++i) {
    torch::Tensor g = torch::randn(a.decay[i].sizes()) * (step % 3 == 0 ? 1e-3 : 1.0);
    a.decay[i].mutable_grad() = g.clone();
    b.decay[i].mutable_grad() = g.clone();
  }
  for (size_t i = 0; i < a.no_decay.size(); ++i) {
    torch::Tensor g = torch::randn(a.no_decay[i].sizes());
    a.no_decay[i].mutable_grad() = g.clone();
    b.no_decay[i].mutable_grad() = g.clone();
  }
}

void SetLr(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

void CompareStates(torch::optim::AdamW& fused, Model& fm, torch::optim::AdamW& ref, Model& rm,
                   int64_t* same, int64_t* total) {
  auto check = [&](const torch::Tensor& fp, const torch::Tensor& rp, const std::string& name) {
    ExpectClose(fp, rp, name + " param");
    *same += BitIdentical(fp, rp);
    *total += fp.numel();
    const auto& fs = static_cast<torch::optim::AdamWParamState&>(
        *fused.state().at(c10::guts::to_string(fp.unsafeGetTensorImpl())));
    const auto& rs = static_cast<torch::optim::AdamWParamState&>(
        *ref.state().at(c10::guts::to_string(rp.unsafeGetTensorImpl())));
    EXPECT_EQ(fs.step(), rs.step()) << name;
    ExpectClose(fs.exp_avg(), rs.exp_avg(), name + " exp_avg");
    ExpectClose(fs.exp_avg_sq(), rs.exp_avg_sq(), name + " exp_avg_sq");
  };
  for (size_t i = 0; i < fm.decay.size(); ++i) check(fm.decay[i], rm.decay[i], "decay " + std::to_string(i));
  for (size_t i = 0; i < fm.no_decay.size(); ++i) {
    check(fm.no_decay[i], rm.no_decay[i], "no_decay " + std::to_string(i));
  }
}

class FusedAdamWTest : public ::testing::TestWithParam<int> {};

TEST_P(FusedAdamWTest, EqualsTorchAdamWOverManySteps) {
  at::set_num_threads(GetParam());
  Model ref_model = MakeModel(7);
  Model fused_model = Clone(ref_model);
  ASSERT_FALSE(fused_model.decay[2].is_contiguous());
  auto ref = Optimizer(ref_model, 1e-3);
  auto fused = Optimizer(fused_model, 1e-3);
  for (int step = 1; step <= 25; ++step) {
    const double lr = 1e-3 * (step <= 5 ? step / 5.0 : (26.0 - step) / 21.0);  // warmup, decay
    SetLr(*ref, lr);
    SetLr(*fused, lr);
    SetGradients(ref_model, fused_model, step);
    ref->step();
    FusedAdamWStep(*fused);
  }
  int64_t same = 0, total = 0;
  CompareStates(*fused, fused_model, *ref, ref_model, &same, &total);
  // Not promised, but what the arithmetic order buys: nearly every element
  // is bit for bit torch's.
  EXPECT_GE(static_cast<double>(same) / total, 0.99) << same << " of " << total;
  std::printf("kernel %s, %d threads: %lld of %lld parameters bit-identical after 25 steps\n",
              FusedAdamWKernelName(), GetParam(), static_cast<long long>(same),
              static_cast<long long>(total));
  // And torch's optimizer continues from the fused one's state (as after a
  // checkpoint restore): one more reference step on both.
  SetGradients(ref_model, fused_model, 26);
  ref->step();
  fused->step();
  same = total = 0;
  CompareStates(*fused, fused_model, *ref, ref_model, &same, &total);
}

INSTANTIATE_TEST_SUITE_P(Threads, FusedAdamWTest, ::testing::Values(1, 2));

TEST(FusedAdamWKernelTest, EveryInstructionSetAgreesWithTheReference) {
  const base::CpuFeatures f = base::ReadCpuInfo().features;
  struct Isa {
    const char* name;
    adamw_kernel::Fn fn;
    bool usable;
  };
  const Isa isas[] = {
      {"default", &adamw_kernel::UpdateDefault, true},
#if FREEZETUNE_ADAMW_VECTORIZED
      {"avx2", &adamw_kernel::UpdateAvx2, f.avx2_fma()},
      {"avx512", &adamw_kernel::UpdateAvx512, f.avx512_skylake() && f.fma},
#endif
  };
  (void)f;
  const int64_t n = 1000 + 13;  // a tail for every vector width
  torch::manual_seed(3);
  const torch::Tensor p0 = torch::randn({n}), g = torch::randn({n});
  const torch::Tensor m0 = torch::randn({n}) * 0.1, v0 = torch::rand({n}) * 0.01;
  // Reference: the tensor ops torch::optim::AdamW runs, step 3, lr 2e-3.
  const double lr = 2e-3, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double bc1 = 1 - std::pow(b1, 3), bc2 = 1 - std::pow(b2, 3);
  torch::Tensor rp = p0.clone(), rm = m0.clone(), rv = v0.clone();
  rp.mul_(1 - lr * wd);
  rm.mul_(b1).add_(g, 1 - b1);
  rv.mul_(b2).addcmul_(g, g, 1 - b2);
  rp.addcdiv_(rm, (rv.sqrt() / std::sqrt(bc2)).add_(eps), -lr / bc1);
  adamw_kernel::Scalars s;
  s.decay = true;
  s.decay_factor = static_cast<float>(1 - lr * wd);
  s.beta1 = static_cast<float>(b1);
  s.one_minus_beta1 = static_cast<float>(1 - b1);
  s.beta2 = static_cast<float>(b2);
  s.one_minus_beta2 = static_cast<float>(1 - b2);
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.eps = static_cast<float>(eps);
  s.neg_step_size = static_cast<float>(-(lr / bc1));
  int tested = 0;
  for (const Isa& isa : isas) {
    if (!isa.usable) continue;
    ++tested;
    torch::Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
    isa.fn(s, p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), n);
    if (std::string(isa.name) == "default") {
      // at::vec's portable fmadd rounds twice (as ATen's own DEFAULT kernels
      // do, on CPUs without FMA) while this ATen runs FMA: the moments can
      // differ in the last bit of the larger operand, i.e. more than 2 ulps
      // of a result that cancelled. Bound by the tensor's scale instead.
      for (const auto& [got, want, what] :
           {std::tuple{p, rp, "param"}, std::tuple{m, rm, "exp_avg"}, std::tuple{v, rv, "exp_avg_sq"}}) {
        const float scale = want.abs().max().item<float>();
        EXPECT_LE((got - want).abs().max().item<float>(), 4 * std::ldexp(1.0f, -23) * scale)
            << "default " << what;
      }
      continue;
    }
    ExpectClose(p, rp, std::string(isa.name) + " param");
    ExpectClose(m, rm, std::string(isa.name) + " exp_avg");
    ExpectClose(v, rv, std::string(isa.name) + " exp_avg_sq");
  }
  EXPECT_GE(tested, 1);
}

TEST(FusedAdamWSparseRowsTest, OnlyRowsWithGradientMove) {
  torch::manual_seed(11);
  torch::Tensor emb = torch::randn({50, 8}).set_requires_grad(true);
  torch::Tensor dense_emb = emb.detach().clone().set_requires_grad(true);
  std::vector<torch::optim::OptimizerParamGroup> g1, g2;
  auto o1 = std::make_unique<torch::optim::AdamWOptions>(1e-2);
  o1->weight_decay(0.01);
  auto o2 = std::make_unique<torch::optim::AdamWOptions>(1e-2);
  o2->weight_decay(0.01);
  g1.emplace_back(std::vector<torch::Tensor>{emb}, std::move(o1));
  g2.emplace_back(std::vector<torch::Tensor>{dense_emb}, std::move(o2));
  torch::optim::AdamW sparse_opt(std::move(g1), torch::optim::AdamWOptions(1e-2));
  torch::optim::AdamW dense_opt(std::move(g2), torch::optim::AdamWOptions(1e-2));
  FusedAdamWOptions sparse;
  sparse.sparse_rows = {emb};

  // Step 1 touches rows 3 and 10, step 2 rows 10 and 20.
  const std::vector<std::vector<int64_t>> touched = {{3, 10}, {10, 20}};
  torch::Tensor before = emb.detach().clone();
  for (const auto& rows : touched) {
    torch::Tensor g = torch::zeros({50, 8});
    for (int64_t r : rows) g[r] = torch::randn({8});
    emb.mutable_grad() = g.clone();
    dense_emb.mutable_grad() = g.clone();
    FusedAdamWStep(sparse_opt, sparse);
    FusedAdamWStep(dense_opt);
  }
  const auto& st = static_cast<torch::optim::AdamWParamState&>(
      *sparse_opt.state().at(c10::guts::to_string(emb.unsafeGetTensorImpl())));
  EXPECT_EQ(st.step(), 2);
  for (int64_t r = 0; r < 50; ++r) {
    const bool moved = r == 3 || r == 10 || r == 20;
    if (!moved) {
      // Untouched: weights bit for bit as before (no decay), moments zero;
      // the dense update decayed them.
      EXPECT_TRUE(torch::equal(emb[r].detach(), before[r])) << r;
      EXPECT_EQ(st.exp_avg()[r].abs().sum().item<float>(), 0.0f) << r;
      EXPECT_FALSE(torch::equal(dense_emb[r].detach(), before[r])) << r;
    } else {
      EXPECT_FALSE(torch::equal(emb[r].detach(), before[r])) << r;
    }
  }
  // Row 10 had a gradient at both steps: the same update as dense AdamW.
  ExpectClose(emb[10].detach(), dense_emb[10].detach(), "row 10");
  // Rows 3 and 20 differ from dense: 3 skipped step 2's decay and momentum,
  // 20 skipped step 1's decay.
  EXPECT_FALSE(torch::allclose(emb[3].detach(), dense_emb[3].detach(), 0, 0));
}

TEST(FusedAdamWTest, KernelNameIsKnown) {
  const std::string name = FusedAdamWKernelName();
  EXPECT_TRUE(name == "avx512" || name == "avx2" || name == "default") << name;
}

// The trainer drops gradients between steps (DropGradients) instead of
// zero-filling them (optimizer.zero_grad()): a small BERT trained with
// dropout, accumulation over two micro-batches, clipping and the fused
// AdamW ends bit for bit where zero-filled gradients take it.
TEST(DropGradientsTest, TrainsBitForBitLikeZeroFilledGradients) {
  auto config = model::ParseBertConfig(nlohmann::json({{"vocab_size", 60},
                                                       {"hidden_size", 32},
                                                       {"num_hidden_layers", 2},
                                                       {"num_attention_heads", 4},
                                                       {"intermediate_size", 64},
                                                       {"max_position_embeddings", 16}})
                                           .dump());
  ASSERT_TRUE(config.ok()) << config.status();
  std::vector<std::vector<torch::Tensor>> finals;
  for (bool drop : {false, true}) {
    torch::manual_seed(5);  // same weights, inputs and dropout masks for both
    model::BertForSequenceClassification m(*config, 3);
    m->train();
    const torch::Tensor ids = torch::randint(1, 60, {2, 4, 12}, torch::kLong);
    const torch::Tensor labels = torch::randint(0, 3, {2, 4}, torch::kLong);
    const torch::Tensor mask = torch::ones({4, 12}, torch::kLong);
    torch::optim::AdamW optimizer(m->parameters(),
                                  torch::optim::AdamWOptions(1e-2).weight_decay(0.01));
    for (int step = 0; step < 4; ++step) {
      for (int64_t micro = 0; micro < 2; ++micro) {
        torch::Tensor logits = m->forward(ids[micro], torch::Tensor(), mask);
        (torch::nn::functional::cross_entropy(logits, labels[micro]) / 2.0).backward();
      }
      torch::nn::utils::clip_grad_norm_(m->parameters(), 1.0);
      FusedAdamWStep(optimizer);
      if (drop) {
        DropGradients(optimizer);
      } else {
        optimizer.zero_grad();
      }
    }
    std::vector<torch::Tensor> params;
    for (const torch::Tensor& p : m->parameters()) {
      EXPECT_EQ(p.grad().defined(), !drop);
      params.push_back(p.detach().clone());
    }
    finals.push_back(params);
  }
  ASSERT_EQ(finals[0].size(), finals[1].size());
  int64_t moved = 0;
  for (size_t i = 0; i < finals[0].size(); ++i) {
    EXPECT_TRUE(torch::equal(finals[0][i], finals[1][i])) << "parameter " << i;
    moved += finals[0][i].numel();
  }
  EXPECT_GT(moved, 0);
}

}  // namespace
}  // namespace freezetune::train
