// oneDNN's convolutions as XLA FFI custom calls for the CPU backend (loaded by
// kd_jax/backends/cpu/onednn.py).
//
// Why: oneDNN's convolutions (the library PyTorch uses on CPUs) are faster than XLA's CPU kernels, its
// weight gradients much faster (docs/benchmarks.md). Three handlers, float32 or bfloat16 (all
// operands of a call alike), NHWC activations and HWIO kernels in XLA's default (row-major) layouts:
//
//   kd_jax_onednn_conv_fwd           (x [N,H,W,Ci], w [kh,kw,Ci,Co])    -> y  [N,Ho,Wo,Co]
//   kd_jax_onednn_conv_bwd_data      (dy [N,Ho,Wo,Co], w [kh,kw,Ci,Co]) -> dx [N,H,W,Ci]
//   kd_jax_onednn_conv_bwd_weights   (x [N,H,W,Ci], dy [N,Ho,Wo,Co])    -> dw [kh,kw,Ci,Co]
//
// with attributes `strides` (2 int64) and `padding` (4 int64: top, bottom, left, right), the
// cross-correlation y[n,h,w,o] = sum_{i,j,c} x_pad[n, s_h*h+i, s_w*w+j, c] * w[i,j,c,o] that
// lax.conv_general_dilated computes. The spatial sizes H, W of dx come from the result's shape.
//
// Each distinct (kind, shapes, strides, padding) builds its primitive once (building one generates its
// kernel's code) and keeps it. oneDNN picks the kernel's weight layout ("any"); the kernel is reordered from
// HWIO into it for every call (the forward pass and the input gradient) or from it into HWIO (the weight
// gradient), which is cheap next to the convolution. Scratch memory is the caller's (thread-local buffers),
// so that primitives may run concurrently from XLA's threads. bfloat16: oneDNN accumulates in float32 and
// rounds each result once; the weight gradient is computed in float32 and rounded to bfloat16 by the reorder
// into HWIO, as kd_jax's other CPU forms do.

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

using Out = ffi::Result<ffi::AnyBuffer>;

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// kind, n, h, w, ci, kh, kw, co, ho, wo, stride h, stride w, pad top, bottom, left, right, bfloat16 (0/1)
using Key = std::array<int64_t, 17>;

struct KeyHash {
  size_t operator()(const Key& key) const {
    size_t seed = 0;
    for (int64_t v : key) seed ^= std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
    return seed;
  }
};

struct Plan {
  dnnl::primitive conv;
  memory::desc x_md, y_md;           // activations as the caller stores them (nhwc)
  memory::desc user_w_md, conv_w_md;  // the kernel as the caller stores it (hwio) and as the primitive wants it
  bool reorder = false;
  dnnl::primitive weight_reorder;     // hwio -> conv_w_md, or conv_w_md -> hwio for the weight gradient
  memory::desc scratch_md;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex plans_mutex;
std::unordered_map<Key, std::shared_ptr<Plan>, KeyHash> plans;

std::shared_ptr<Plan> MakePlan(const Key& k) {
  const int64_t kind = k[0], n = k[1], h = k[2], w = k[3], ci = k[4], kh = k[5], kw = k[6], co = k[7];
  const int64_t ho = k[8], wo = k[9];
  const memory::dims x_dims = {n, ci, h, w}, y_dims = {n, co, ho, wo}, w_dims = {co, ci, kh, kw};
  const memory::dims strides = {k[10], k[11]}, pad_l = {k[12], k[14]}, pad_r = {k[13], k[15]};
  const auto dt = k[16] ? memory::data_type::bf16 : memory::data_type::f32;

  auto plan = std::make_shared<Plan>();
  plan->x_md = memory::desc(x_dims, dt, tag::nhwc);
  plan->y_md = memory::desc(y_dims, dt, tag::nhwc);
  plan->user_w_md = memory::desc(w_dims, dt, tag::hwio);
  const memory::desc any_w(w_dims, dt, tag::any);
  // The weight gradient is summed in float32 whatever the operands' type.
  const memory::desc any_dw(w_dims, memory::data_type::f32, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  const auto direct = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  // oneDNN 3.x: primitive descriptors are built directly from the engine and the memory descriptors.
  if (kind == kForward) {
    dnnl::convolution_forward::primitive_desc pd(Engine(), dnnl::prop_kind::forward_inference, direct, plan->x_md,
                                                 any_w, plan->y_md, strides, pad_l, pad_r, attr);
    plan->conv_w_md = pd.weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
    plan->conv = dnnl::convolution_forward(pd);
  } else {
    // The backward primitives need the forward primitive's description as a hint.
    dnnl::convolution_forward::primitive_desc fwd_pd(Engine(), dnnl::prop_kind::forward_training, direct,
                                                     plan->x_md, any_w, plan->y_md, strides, pad_l, pad_r);
    if (kind == kBackwardData) {
      dnnl::convolution_backward_data::primitive_desc pd(Engine(), direct, plan->x_md, any_w, plan->y_md, strides,
                                                         pad_l, pad_r, fwd_pd, attr);
      plan->conv_w_md = pd.weights_desc();
      plan->scratch_md = pd.scratchpad_desc();
      plan->conv = dnnl::convolution_backward_data(pd);
    } else {
      dnnl::convolution_backward_weights::primitive_desc pd(Engine(), direct, plan->x_md, any_dw, plan->y_md,
                                                            strides, pad_l, pad_r, fwd_pd, attr);
      plan->conv_w_md = pd.diff_weights_desc();
      plan->scratch_md = pd.scratchpad_desc();
      plan->conv = dnnl::convolution_backward_weights(pd);
    }
  }
#else
  // oneDNN 2.x (e.g. Debian's libdnnl-dev 2.6): an operation descriptor first, then its primitive descriptor.
  if (kind == kForward) {
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, direct, plan->x_md, any_w,
                                         plan->y_md, strides, pad_l, pad_r);
    dnnl::convolution_forward::primitive_desc pd(desc, attr, Engine());
    plan->conv_w_md = pd.weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
    plan->conv = dnnl::convolution_forward(pd);
  } else {
    // The backward primitives need the forward primitive's description as a hint.
    dnnl::convolution_forward::desc fwd_desc(dnnl::prop_kind::forward_training, direct, plan->x_md, any_w,
                                             plan->y_md, strides, pad_l, pad_r);
    dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, Engine());
    if (kind == kBackwardData) {
      dnnl::convolution_backward_data::desc desc(direct, plan->x_md, any_w, plan->y_md, strides, pad_l, pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, attr, Engine(), fwd_pd);
      plan->conv_w_md = pd.weights_desc();
      plan->scratch_md = pd.scratchpad_desc();
      plan->conv = dnnl::convolution_backward_data(pd);
    } else {
      dnnl::convolution_backward_weights::desc desc(direct, plan->x_md, any_dw, plan->y_md, strides, pad_l,
                                                    pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, attr, Engine(), fwd_pd);
      plan->conv_w_md = pd.diff_weights_desc();
      plan->scratch_md = pd.scratchpad_desc();
      plan->conv = dnnl::convolution_backward_weights(pd);
    }
  }
#endif
  plan->reorder = plan->conv_w_md != plan->user_w_md;
  if (plan->reorder) {
    // A layout reorder of a kernel needs no scratch memory.
    const bool to_user = kind == kBackwardWeights;
    plan->weight_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
        Engine(), to_user ? plan->conv_w_md : plan->user_w_md, Engine(), to_user ? plan->user_w_md : plan->conv_w_md));
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(const Key& key) {
  {
    std::lock_guard<std::mutex> lock(plans_mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
  }
  // Built outside the lock: two threads may build the same plan once each; the first one stored is kept.
  std::shared_ptr<Plan> plan = MakePlan(key);
  std::lock_guard<std::mutex> lock(plans_mutex);
  return plans.emplace(key, plan).first->second;
}

// 64-byte aligned thread-local scratch; grows, never shrinks.
void* ThreadBuffer(int slot, size_t bytes) {
  thread_local std::vector<char> buffers[2];
  std::vector<char>& buffer = buffers[slot];
  if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
  auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t{63});
}

ffi::Error CheckAttrs(ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  if (strides.size() != 2 || padding.size() != 4)
    return ffi::Error::InvalidArgument("kd_jax oneDNN convolution: strides needs 2 values and padding 4");
  for (int64_t s : strides)
    if (s < 1) return ffi::Error::InvalidArgument("kd_jax oneDNN convolution: strides must be >= 1");
  for (int64_t p : padding)
    if (p < 0) return ffi::Error::InvalidArgument("kd_jax oneDNN convolution: padding must be >= 0");
  return ffi::Error::Success();
}

// Runs the plan for `key`. x/y are the activation and output-side buffers (nhwc) and w the kernel (hwio);
// which of them is written depends on the kind.
ffi::Error Run(const Key& key, void* x, void* w, void* y) {
  try {
    std::shared_ptr<Plan> plan = GetPlan(key);
    dnnl::engine& engine = Engine();
    dnnl::stream stream(engine);
    memory x_mem(plan->x_md, engine, x), y_mem(plan->y_md, engine, y), user_w(plan->user_w_md, engine, w);
    memory conv_w = user_w;
    if (plan->reorder) conv_w = memory(plan->conv_w_md, engine, ThreadBuffer(0, plan->conv_w_md.get_size()));
    memory scratch(plan->scratch_md, engine, ThreadBuffer(1, plan->scratch_md.get_size()));
    const int64_t kind = key[0];
    if (plan->reorder && kind != kBackwardWeights) {
      plan->weight_reorder.execute(stream, {{DNNL_ARG_FROM, user_w}, {DNNL_ARG_TO, conv_w}});
    }
    if (kind == kForward) {
      plan->conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, conv_w}, {DNNL_ARG_DST, y_mem},
                                  {DNNL_ARG_SCRATCHPAD, scratch}});
    } else if (kind == kBackwardData) {
      plan->conv.execute(stream, {{DNNL_ARG_DIFF_SRC, x_mem}, {DNNL_ARG_WEIGHTS, conv_w},
                                  {DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
    } else {
      plan->conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_WEIGHTS, conv_w},
                                  {DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (plan->reorder) {
        plan->weight_reorder.execute(stream, {{DNNL_ARG_FROM, conv_w}, {DNNL_ARG_TO, user_w}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("kd_jax oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error CheckTypes(ffi::AnyBuffer a, ffi::AnyBuffer b, Out& out) {
  const ffi::DataType t = a.element_type();
  if ((t != ffi::DataType::F32 && t != ffi::DataType::BF16) || b.element_type() != t || out->element_type() != t)
    return ffi::Error::InvalidArgument("kd_jax oneDNN convolution: operands and result must all be float32 or "
                                       "all bfloat16");
  if (a.dimensions().size() != 4 || b.dimensions().size() != 4 || out->dimensions().size() != 4)
    return ffi::Error::InvalidArgument("kd_jax oneDNN convolution: operands and result must have rank 4");
  return ffi::Error::Success();
}

Key MakeKey(int64_t kind, ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
            ffi::Span<const int64_t> y_dims, ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
            ffi::DataType type) {
  return Key{kind,       x_dims[0],  x_dims[1],  x_dims[2],  x_dims[3],  w_dims[0],
             w_dims[1],  w_dims[3],  y_dims[1],  y_dims[2],  strides[0], strides[1],
             padding[0], padding[1], padding[2], padding[3], type == ffi::DataType::BF16 ? 1 : 0};
}

ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, Out y, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> padding) {
  if (ffi::Error error = CheckAttrs(strides, padding); error.failure()) return error;
  if (ffi::Error error = CheckTypes(x, w, y); error.failure()) return error;
  Key key = MakeKey(kForward, x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, x.element_type());
  return Run(key, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

ffi::Error BackwardDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w, Out dx, ffi::Span<const int64_t> strides,
                            ffi::Span<const int64_t> padding) {
  if (ffi::Error error = CheckAttrs(strides, padding); error.failure()) return error;
  if (ffi::Error error = CheckTypes(dy, w, dx); error.failure()) return error;
  Key key = MakeKey(kBackwardData, dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding,
                    dy.element_type());
  return Run(key, dx->untyped_data(), w.untyped_data(), dy.untyped_data());
}

ffi::Error BackwardWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, Out dw, ffi::Span<const int64_t> strides,
                               ffi::Span<const int64_t> padding) {
  if (ffi::Error error = CheckAttrs(strides, padding); error.failure()) return error;
  if (ffi::Error error = CheckTypes(x, dy, dw); error.failure()) return error;
  Key key = MakeKey(kBackwardWeights, x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding,
                    x.element_type());
  return Run(key, x.untyped_data(), dw->untyped_data(), dy.untyped_data());
}

}  // namespace

// All three handlers take two rank-4 operands, return one, and read the same two attributes.
static auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("padding");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(kd_jax_onednn_conv_fwd, ForwardImpl, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(kd_jax_onednn_conv_bwd_data, BackwardDataImpl, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(kd_jax_onednn_conv_bwd_weights, BackwardWeightsImpl, Binding());

extern "C" int kd_jax_onednn_version(int* major, int* minor, int* patch) {
  const dnnl_version_t* v = dnnl_version();
  *major = v->major;
  *minor = v->minor;
  *patch = v->patch;
  return 0;
}

// 1 if this oneDNN builds bfloat16 primitives of all three kinds on this CPU, else 0. oneDNN 3.x has no
// bfloat16 convolution on CPUs without AVX-512 or AVX2-VNNI-2 (e.g. AMD Zen 2/3), where 2.x fell back to a
// reference kernel; kd_jax then leaves bfloat16 convolutions to XLA (onednn.supports).
extern "C" int kd_jax_onednn_bf16_supported() {
  for (int64_t kind : {kForward, kBackwardData, kBackwardWeights}) {
    try {
      MakePlan(Key{kind, 2, 4, 4, 16, 3, 3, 16, 4, 4, 1, 1, 1, 1, 1, 1, 1});
    } catch (const dnnl::error&) {
      return 0;
    }
  }
  return 1;
}
