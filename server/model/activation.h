// The activations config.json's hidden_act may name (those ParseBertConfig
// admits), as transformers' ACT2FN computes them.
//
// Thread safety: a pure function.
#ifndef FREEZETUNE_SERVER_MODEL_ACTIVATION_H_
#define FREEZETUNE_SERVER_MODEL_ACTIVATION_H_

#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace freezetune::model {

// Throws c10::Error for a name ParseBertConfig would have rejected.
inline at::Tensor Activate(const std::string& act, const at::Tensor& x) {
  if (act == "gelu" || act == "gelu_python") return at::gelu(x);  // exact erf GELU
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    return at::gelu(x, "tanh");
  }
  if (act == "relu") return at::relu(x);
  if (act == "silu" || act == "swish") return at::silu(x);
  if (act == "tanh") return at::tanh(x);
  TORCH_CHECK(false, "unsupported hidden_act \"", act, "\"");
  return x;
}

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_ACTIVATION_H_
