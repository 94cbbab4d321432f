// GradBucketer: gradient buckets reduced while backward runs, launched in one fixed order, with
// every .grad a view into its bucket (PyTorch's reducer.cpp with gradient_as_bucket_view).
//
// Ordering. Parameters go into buckets in reverse registration order, so the first buckets fill
// first during a typical backward. Every rank must issue the same collectives in the same order
// (collectives are matched by order, not by name), but hooks fire in whatever order autograd
// runs the graph, which can differ between ranks (a rank-dependent branch, an unused
// parameter). So a bucket that becomes ready is not launched at once: buckets launch strictly
// in index order, bucket k only after 0..k-1 have launched. A rank whose bucket 0 waits for a
// parameter that never fires launches nothing during backward and catches up in finish(); the
// sequence of collectives is 0, 1, 2, ... on every rank either way.
//
// Gradient values. .grad of each trainable parameter is a view (the parameter's shape) into its
// bucket's flat buffer, so AccumulateGrad adds each micro-batch's gradient in place into the
// bucket: nothing is copied in before the reduction or out after it. Readiness is a
// post-accumulate-grad hook, which fires after the accumulation, so when it fires on the last
// micro-batch the bucket entry holds this rank's whole step gradient. The reduction averages in
// place (ReduceOp::kAvg: the division by W is part of the collective), leaving the rank average
// in .grad. A parameter whose hook never fired (unused in this rank's graph) contributes its
// current .grad: what earlier micro-batches accumulated, zero after zero_grad().
// Autograd may still replace .grad by a tensor of its own (an optimiser's zero_grad() set it to
// undefined, so the next backward steals its gradient; create_graph backward builds a new one).
// As reducer.cpp does, the hook (and finish(), for unused parameters) checks that .grad still
// aliases its bucket view and otherwise copies it in and points .grad back at the view (logged
// once); zero_grad() restores the views too.
//
// Threading. Hooks run on the thread that executes backward for the parameter's device (the
// calling thread for CPU, a device thread for CUDA); finish() runs on the caller after backward
// returned. One mutex serialises hooks, launches, zero_grad() and finish(), so the communicator
// never sees two calls at once (an NCCL communicator is not thread-safe). The reductions
// themselves run asynchronously in the Communicator (MPI: its communication thread, FIFO; NCCL:
// its own stream, after an event on the stream that accumulated the gradients), so launching a
// bucket from a hook only enqueues. Hooks hold a shared HookState rather than the bucketer, and
// the destructor both removes them and clears the state, so a hook that outlives the bucketer
// (or fires outside prepare_for_backward()..finish()) does nothing.
#include "core/comm/grad_bucketer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <mutex>
#include <utility>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {
namespace {

struct ParamSlot {
  int64_t bucket = -1;  // -1: does not require grad, not reduced
  int64_t offset = 0;   // element offset in the bucket's flat buffer
  int64_t numel = 0;
  at::Tensor view;      // the bucket entry, the parameter's shape: what .grad should be
  bool ready = false;   // hook fired in this round
  const torch::autograd::PostAccumulateGradHook* hook = nullptr;  // ours, owned by autograd
};

struct Bucket {
  std::vector<int64_t> params;  // parameter indices, in buffer order
  at::Tensor buffer;            // flat, the parameters' dtype and device
  int64_t bytes = 0;
  int64_t pending = 0;  // parameters whose hook has not fired in this round
  std::unique_ptr<PendingCollective> handle;
};

// .grad is `view` itself (same storage, offset, shape and strides), not a copy or a stand-in.
bool aliases(const at::Tensor& grad, const at::Tensor& view) {
  return grad.defined() && grad.is_alias_of(view) && grad.data_ptr() == view.data_ptr() &&
         grad.sizes() == view.sizes() && grad.strides() == view.strides();
}

}  // namespace

struct GradBucketer::Impl {
  // What a hook captures: outlives the bucketer, so a late hook finds `impl == nullptr`.
  struct HookState {
    std::mutex mutex;
    Impl* impl = nullptr;
  };

  // Autograd calls this after accumulating into the parameter's .grad, on every backward.
  class ReadyHook : public torch::autograd::PostAccumulateGradHook {
   public:
    ReadyHook(std::shared_ptr<HookState> state, int64_t index) : state_(std::move(state)), index_(index) {}
    void operator()(const torch::autograd::Variable& /*param*/) override {
      std::lock_guard<std::mutex> lock(state_->mutex);
      if (state_->impl != nullptr) state_->impl->on_grad_ready(index_);
    }

   private:
    std::shared_ptr<HookState> state_;
    int64_t index_;
  };

  Communicator& comm;
  std::vector<at::Tensor> params;
  std::vector<ParamSlot> slots;
  std::vector<Bucket> buckets;
  std::shared_ptr<HookState> hook_state = std::make_shared<HookState>();
  bool active = false;          // between prepare_for_backward() and finish()
  int64_t next_to_launch = 0;   // buckets [0, next_to_launch) are launched
  bool logged_copy = false;     // the "gradient was replaced" note is logged once

  Impl(Communicator& c, std::vector<at::Tensor> p) : comm(c), params(std::move(p)) {}

  // Makes sure the bucket entry holds parameter `index`'s .grad and .grad is the entry again.
  // Caller holds the lock.
  void adopt_grad(int64_t index) {
    ParamSlot& slot = slots[index];
    at::Tensor& grad = params[index].mutable_grad();
    if (aliases(grad, slot.view)) return;
    if (!logged_copy) {
      log_rank("[comm] GradBucketer: the gradient of parameter {} no longer aliased its bucket "
               "(reset by an optimiser's zero_grad()? use GradBucketer::zero_grad()); copied in "
               "and pointed back at the bucket (logged once)",
               index);
      logged_copy = true;
    }
    if (grad.defined()) {
      slot.view.copy_(grad);
    } else {
      slot.view.zero_();
    }
    grad = slot.view;
  }

  // Launches every consecutive ready bucket from next_to_launch on. Caller holds the lock.
  void launch_ready() {
    while (next_to_launch < static_cast<int64_t>(buckets.size()) &&
           buckets[next_to_launch].pending == 0) {
      Bucket& bucket = buckets[next_to_launch];
      bucket.handle = comm.all_reduce_async(bucket.buffer, ReduceOp::kAvg);
      ++next_to_launch;
    }
  }

  void on_grad_ready(int64_t index) {
    if (!active) return;  // an earlier micro-batch: its gradient simply stays in the bucket
    ParamSlot& slot = slots[index];
    if (slot.ready)
      throw Error(fmt::format("[comm] GradBucketer: gradient of parameter {} produced twice in "
                              "one backward; call prepare_for_backward() before each reduced "
                              "backward and finish() after it",
                              index));
    adopt_grad(index);
    slot.ready = true;
    Bucket& bucket = buckets[slot.bucket];
    if (--bucket.pending == 0) launch_ready();
  }
};

GradBucketer::GradBucketer(Communicator& comm, std::vector<at::Tensor> params,
                           const GradBucketerConfig& config)
    : impl_(std::make_unique<Impl>(comm, std::move(params))) {
  if (config.bucket_bytes <= 0)
    throw Error(fmt::format("[comm] GradBucketer: bucket_bytes must be positive, got {}",
                            config.bucket_bytes));
  Impl& s = *impl_;
  const int64_t n = static_cast<int64_t>(s.params.size());
  s.slots.resize(static_cast<size_t>(n));

  // Reverse registration order, closing a bucket when the next parameter would overflow it or
  // has another dtype or device (a flat buffer holds one of each). A parameter larger than a
  // bucket lands alone in a fresh one.
  for (int64_t i = n - 1; i >= 0; --i) {
    const at::Tensor& p = s.params[i];
    if (!p.defined()) throw Error(fmt::format("[comm] GradBucketer: parameter {} is undefined", i));
    if (!p.requires_grad()) continue;  // frozen: nothing to reduce
    if (torch::autograd::impl::post_acc_grad_hooks(p) != nullptr)
      throw Error(fmt::format("[comm] GradBucketer: parameter {} already has a post-accumulate-"
                              "grad hook (a second GradBucketer over the same parameters?)",
                              i));
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    bool fresh = s.buckets.empty();
    if (!fresh) {
      const Bucket& last = s.buckets.back();
      const at::Tensor& first = s.params[last.params.front()];
      fresh = last.bytes + bytes > config.bucket_bytes || first.scalar_type() != p.scalar_type() ||
              first.device() != p.device();
    }
    if (fresh) s.buckets.emplace_back();
    Bucket& bucket = s.buckets.back();
    ParamSlot& slot = s.slots[i];
    slot.bucket = static_cast<int64_t>(s.buckets.size()) - 1;
    slot.offset = bucket.bytes / static_cast<int64_t>(p.element_size());
    slot.numel = p.numel();
    bucket.params.push_back(i);
    bucket.bytes += bytes;
  }

  // Buffers start at zero; a gradient the parameter already has is carried over into its view.
  at::NoGradGuard no_grad;
  for (Bucket& bucket : s.buckets) {
    const at::Tensor& first = s.params[bucket.params.front()];
    const int64_t numel = bucket.bytes / static_cast<int64_t>(first.element_size());
    bucket.buffer = at::zeros({numel}, first.options().requires_grad(false));  // [numel]
    for (int64_t index : bucket.params) {
      ParamSlot& slot = s.slots[index];
      at::Tensor& param = s.params[index];
      slot.view = bucket.buffer.narrow(/*dim=*/0, slot.offset, slot.numel).view(param.sizes());
      at::Tensor& grad = param.mutable_grad();
      if (grad.defined()) slot.view.copy_(grad);
      grad = slot.view;
    }
  }

  s.hook_state->impl = impl_.get();
  for (int64_t i = 0; i < n; ++i) {
    if (s.slots[i].bucket < 0) continue;
    auto hook = std::make_unique<Impl::ReadyHook>(s.hook_state, i);
    s.slots[i].hook = hook.get();
    torch::autograd::impl::set_post_acc_grad_hooks(s.params[i], std::move(hook));
  }
}

GradBucketer::~GradBucketer() {
  {
    std::lock_guard<std::mutex> lock(impl_->hook_state->mutex);
    impl_->hook_state->impl = nullptr;
  }
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    const ParamSlot& slot = impl_->slots[i];
    if (slot.bucket < 0) continue;
    try {
      // Only our own hook: whoever replaced it owns the slot now.
      const at::Tensor& param = impl_->params[i];
      if (torch::autograd::impl::post_acc_grad_hooks(param).get() == slot.hook)
        torch::autograd::impl::set_post_acc_grad_hooks(param, nullptr);
    } catch (...) {
      // The hook is a no-op already (impl == nullptr); a destructor must not throw.
    }
  }
  // A reduction still in flight (finish() never came) writes into its bucket's buffer: wait
  // for each one here, while every buffer is alive (a handle's destructor waits). The .grad
  // views keep the buffers' storage alive after this.
  for (Bucket& bucket : impl_->buckets) bucket.handle.reset();
}

void GradBucketer::zero_grad() {
  std::lock_guard<std::mutex> lock(impl_->hook_state->mutex);
  Impl& s = *impl_;
  if (s.active)
    throw Error("[comm] GradBucketer::zero_grad: called between prepare_for_backward() and "
                "finish(), while reductions may be writing into the buckets");
  for (Bucket& bucket : s.buckets) bucket.buffer.zero_();
  for (size_t i = 0; i < s.slots.size(); ++i) {
    ParamSlot& slot = s.slots[i];
    if (slot.bucket < 0) continue;
    at::Tensor& grad = s.params[i].mutable_grad();
    if (!aliases(grad, slot.view)) grad = slot.view;
  }
}

void GradBucketer::prepare_for_backward() {
  std::lock_guard<std::mutex> lock(impl_->hook_state->mutex);
  Impl& s = *impl_;
  if (s.active && s.next_to_launch > 0)
    throw Error("[comm] GradBucketer::prepare_for_backward: the previous reduced backward "
                "launched buckets but finish() was not called");
  for (ParamSlot& slot : s.slots) slot.ready = false;
  for (Bucket& bucket : s.buckets) {
    bucket.pending = static_cast<int64_t>(bucket.params.size());
    bucket.handle.reset();
  }
  s.next_to_launch = 0;
  s.active = true;
}

void GradBucketer::finish() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.hook_state->mutex);
    if (!s.active)
      throw Error("[comm] GradBucketer::finish: prepare_for_backward() was not called before "
                  "this backward");
    // Backward has returned: no hook of this round will come. Parameters that did not fire
    // (unused in this rank's graph) count with their current .grad, which completes every
    // bucket; the rest launch in index order behind those launched during backward.
    s.active = false;
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < s.slots.size(); ++i) {
      ParamSlot& slot = s.slots[i];
      if (slot.bucket < 0 || slot.ready) continue;
      s.adopt_grad(static_cast<int64_t>(i));
      slot.ready = true;
      --s.buckets[slot.bucket].pending;
    }
    s.launch_ready();
  }
  // Wait in launch order. The averages are already in .grad: it is a view into the bucket.
  for (Bucket& bucket : s.buckets) {
    bucket.handle->wait();
    bucket.handle.reset();
  }
}

int64_t GradBucketer::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

std::vector<std::vector<int64_t>> GradBucketer::bucket_assignment() const {
  std::vector<std::vector<int64_t>> result;
  result.reserve(impl_->buckets.size());
  for (const Bucket& bucket : impl_->buckets) result.push_back(bucket.params);
  return result;
}

at::Tensor GradBucketer::bucket_buffer(int64_t index) const {
  if (index < 0 || index >= num_buckets())
    throw Error(fmt::format("[comm] GradBucketer::bucket_buffer: bucket {} outside 0..{}", index,
                            num_buckets() - 1));
  return impl_->buckets[static_cast<size_t>(index)].buffer;
}

}  // namespace diffusion
