// GradBucketer: gradient buckets reduced while backward runs, launched in one fixed order.
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
// Gradient values. A hook on a leaf parameter sees the gradient of this backward before
// autograd accumulates it into .grad. With micro-batches the earlier passes have already
// accumulated into .grad, so the bucket entry is (.grad if defined) + hook gradient. Autograd
// still adds the hook gradient into .grad after the hook, so finish() overwrites .grad with the
// rank average instead of adding to it. A parameter whose hook never fired contributes its
// existing .grad, or zeros.
//
// Threading. Hooks run on the thread that executes backward for the parameter's device (the
// calling thread for CPU, a device thread for CUDA); finish() runs on the caller after backward
// returned. One mutex serialises hooks, launches and finish(). The reductions themselves run
// asynchronously in the Communicator (MPI: its communication thread, FIFO; NCCL: its stream), so
// launching a bucket from a hook only enqueues. Hooks hold a shared HookState rather than the
// bucketer, and the destructor both removes them and clears the state, so a hook that outlives
// the bucketer (or fires outside prepare_for_backward()..finish()) does nothing.
#include "core/comm/grad_bucketer.h"

#include <ATen/ATen.h>

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
  bool ready = false;   // hook fired in this round
};

struct Bucket {
  std::vector<int64_t> params;  // parameter indices, in buffer order
  at::Tensor buffer;            // flat, the parameters' dtype and device
  int64_t bytes = 0;
  int64_t pending = 0;  // parameters whose hook has not fired in this round
  std::unique_ptr<PendingCollective> handle;
  bool launched = false;
};

}  // namespace

struct GradBucketer::Impl {
  // What a hook captures: outlives the bucketer, so a late hook finds `impl == nullptr`.
  struct HookState {
    std::mutex mutex;
    Impl* impl = nullptr;
  };

  Communicator& comm;
  std::vector<at::Tensor> params;
  std::vector<ParamSlot> slots;
  std::vector<Bucket> buckets;
  std::vector<unsigned> hook_handles;  // per parameter; unused for those without hooks
  std::shared_ptr<HookState> hook_state = std::make_shared<HookState>();
  bool active = false;          // between prepare_for_backward() and finish()
  int64_t next_to_launch = 0;   // buckets [0, next_to_launch) are launched

  Impl(Communicator& c, std::vector<at::Tensor> p) : comm(c), params(std::move(p)) {}

  at::Tensor entry(int64_t index) {
    const ParamSlot& slot = slots[index];
    return buckets[slot.bucket].buffer.narrow(/*dim=*/0, slot.offset, slot.numel);
  }

  // Writes (.grad or 0) + `grad` into the bucket entry of parameter `index`. Caller holds the lock.
  void fill_entry(int64_t index, const at::Tensor& grad) {
    at::Tensor flat = entry(index);
    const at::Tensor& existing = params[index].grad();
    if (grad.defined()) {
      flat.copy_(grad.reshape({-1}));
      if (existing.defined()) flat.add_(existing.reshape({-1}));
    } else if (existing.defined()) {
      flat.copy_(existing.reshape({-1}));
    } else {
      flat.zero_();
    }
  }

  // Launches every consecutive ready bucket from next_to_launch on. Caller holds the lock.
  void launch_ready() {
    while (next_to_launch < static_cast<int64_t>(buckets.size()) &&
           buckets[next_to_launch].pending == 0) {
      Bucket& bucket = buckets[next_to_launch];
      bucket.handle = comm.all_reduce_sum_async(bucket.buffer);
      bucket.launched = true;
      ++next_to_launch;
    }
  }

  void on_grad(int64_t index, const at::Tensor& grad) {
    if (!active) return;  // an earlier micro-batch: autograd accumulates into .grad as usual
    ParamSlot& slot = slots[index];
    if (slot.ready)
      throw Error(fmt::format("[comm] GradBucketer: gradient of parameter {} produced twice in "
                              "one backward; call prepare_for_backward() before each reduced "
                              "backward and finish() after it",
                              index));
    fill_entry(index, grad);
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
  s.hook_handles.assign(static_cast<size_t>(n), 0);

  // Reverse registration order, closing a bucket when the next parameter would overflow it or
  // has another dtype or device (a flat buffer holds one of each). A parameter larger than a
  // bucket lands alone in a fresh one.
  for (int64_t i = n - 1; i >= 0; --i) {
    const at::Tensor& p = s.params[i];
    if (!p.defined()) throw Error(fmt::format("[comm] GradBucketer: parameter {} is undefined", i));
    if (!p.requires_grad()) continue;  // frozen: nothing to reduce
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
  for (Bucket& bucket : s.buckets) {
    const at::Tensor& first = s.params[bucket.params.front()];
    const int64_t numel = bucket.bytes / static_cast<int64_t>(first.element_size());
    bucket.buffer = at::empty({numel}, first.options().requires_grad(false));
  }

  s.hook_state->impl = impl_.get();
  for (int64_t i = 0; i < n; ++i) {
    if (s.slots[i].bucket < 0) continue;
    std::shared_ptr<Impl::HookState> state = s.hook_state;
    s.hook_handles[i] = s.params[i].register_hook([state, i](const at::TensorBase& grad) {
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->impl != nullptr) state->impl->on_grad(i, at::Tensor(grad));
    });
  }
}

GradBucketer::~GradBucketer() {
  {
    std::lock_guard<std::mutex> lock(impl_->hook_state->mutex);
    impl_->hook_state->impl = nullptr;
  }
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    if (impl_->slots[i].bucket < 0) continue;
    try {
      impl_->params[i].remove_hook(impl_->hook_handles[i]);
    } catch (...) {
      // The hook is a no-op already (impl == nullptr); a destructor must not throw.
    }
  }
  // A reduction still in flight (finish() never came) writes into its bucket's buffer: wait
  // for each one here, while every buffer is alive (a handle's destructor waits).
  for (Bucket& bucket : impl_->buckets) bucket.handle.reset();
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
    bucket.launched = false;
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
    // (unused in this rank's graph) count with their existing .grad or zeros, which completes
    // every bucket; the rest launch in index order behind those launched during backward.
    s.active = false;
    for (size_t i = 0; i < s.slots.size(); ++i) {
      ParamSlot& slot = s.slots[i];
      if (slot.bucket < 0 || slot.ready) continue;
      s.fill_entry(static_cast<int64_t>(i), at::Tensor());
      slot.ready = true;
      --s.buckets[slot.bucket].pending;
    }
    s.launch_ready();
  }

  // Wait in launch order and write the averages back. .grad is overwritten, not added to:
  // autograd has already accumulated this backward's gradient into it after the hook.
  for (Bucket& bucket : s.buckets) {
    bucket.handle->wait();
    bucket.handle.reset();
    bucket.buffer.div_(s.comm.size());
    for (int64_t index : bucket.params) {
      at::Tensor& param = s.params[index];
      at::Tensor averaged = s.entry(index).view(param.sizes());
      at::Tensor& grad = param.mutable_grad();
      if (grad.defined()) {
        grad.copy_(averaged);
      } else {
        grad = at::empty_like(param, param.options().requires_grad(false));
        grad.copy_(averaged);
      }
    }
  }
}

int64_t GradBucketer::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

std::vector<std::vector<int64_t>> GradBucketer::bucket_assignment() const {
  std::vector<std::vector<int64_t>> result;
  result.reserve(impl_->buckets.size());
  for (const Bucket& bucket : impl_->buckets) result.push_back(bucket.params);
  return result;
}

}  // namespace diffusion
