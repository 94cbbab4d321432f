// UNet (Ho et al. 2020, App. B; Nichol & Dhariwal 2021's improved-diffusion layout).
#include "core/models/unet.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/base/error.h"

namespace diffusion {
namespace nn = torch::nn;

namespace {

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

nn::Conv2d conv1x1(int64_t in, int64_t out) { return nn::Conv2d(nn::Conv2dOptions(in, out, 1)); }

template <typename Module>
void zero_init(Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.zero_();
}

// Self-attention after the blocks at downsampling factor `ds` (attention resolutions are sizes
// for an input of image_size).
bool wants_attention(const UNetConfig& c, int64_t ds) {
  return std::any_of(c.attention_resolutions.begin(), c.attention_resolutions.end(),
                     [&](int64_t r) { return c.image_size / r == ds; });
}

}  // namespace

void validate_unet_config(const UNetConfig& c) {
  const auto fail = [](const std::string& what) { throw Error("unet config: " + what); };
  if (c.in_channels < 1) fail(fmt::format("in_channels = {}, expected >= 1", c.in_channels));
  if (c.channel_mult.empty()) fail("channel_mult is empty");
  if (c.num_res_blocks < 1) fail(fmt::format("num_res_blocks = {}, expected >= 1", c.num_res_blocks));
  for (int64_t m : c.channel_mult) {
    const int64_t ch = m * c.base_channels;
    if (m < 1 || ch % c.num_groups != 0)
      fail(fmt::format("channels {}·{} = {} must be positive and divisible by num_groups = {}", m,
                       c.base_channels, ch, c.num_groups));
  }
  if (c.base_channels % c.num_groups != 0)
    fail(fmt::format("base_channels = {} not divisible by num_groups = {}", c.base_channels,
                     c.num_groups));
  for (int64_t r : c.attention_resolutions)
    if (r < 1 || c.image_size % r != 0)
      fail(fmt::format("attention resolution {} does not divide image_size {}", r, c.image_size));
  if (c.num_heads < 1) fail("num_heads must be >= 1");
  if (c.dropout < 0 || c.dropout >= 1) fail(fmt::format("dropout = {}, expected [0, 1)", c.dropout));
  if (c.num_classes < 0) fail("num_classes must be >= 0");
}

ResBlockImpl::ResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t emb_dim,
                           double dropout, int64_t groups) {
  norm1_ = register_module("norm1", nn::GroupNorm(groups, in_channels));
  conv1_ = register_module("conv1", conv3x3(in_channels, out_channels));
  emb_proj_ = register_module("emb_proj", nn::Linear(emb_dim, out_channels));
  norm2_ = register_module("norm2", nn::GroupNorm(groups, out_channels));
  dropout_ = register_module("dropout", nn::Dropout(dropout));
  conv2_ = register_module("conv2", conv3x3(out_channels, out_channels));
  zero_init(conv2_);
  if (in_channels != out_channels) skip_ = register_module("skip", conv1x1(in_channels, out_channels));
}

at::Tensor ResBlockImpl::forward(const at::Tensor& x, const at::Tensor& emb) {
  auto h = conv1_(torch::silu(norm1_(x)));
  h = h + emb_proj_(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);  // [B, C, 1, 1]
  h = conv2_(dropout_(torch::silu(norm2_(h))));
  return (skip_ ? skip_(x) : x) + h;
}

AttentionBlockImpl::AttentionBlockImpl(int64_t channels, int64_t num_heads, int64_t groups)
    : num_heads_(num_heads) {
  if (channels % num_heads != 0)
    throw Error(fmt::format("attention: {} channels not divisible by {} heads", channels, num_heads));
  norm_ = register_module("norm", nn::GroupNorm(groups, channels));
  qkv_ = register_module("qkv", conv1x1(channels, 3 * channels));
  proj_ = register_module("proj", conv1x1(channels, channels));
  zero_init(proj_);
}

at::Tensor AttentionBlockImpl::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t d = C / num_heads_;
  auto qkv = qkv_(norm_(x)).reshape({B, 3, num_heads_, d, H * W});  // [B, 3, heads, d, HW]
  auto q = qkv.select(1, 0).transpose(-1, -2);                          // [B, heads, HW, d]
  auto k = qkv.select(1, 1).transpose(-1, -2);
  auto v = qkv.select(1, 2).transpose(-1, -2);
  auto a = at::scaled_dot_product_attention(q, k, v);                    // [B, heads, HW, d]
  a = a.transpose(-1, -2).reshape({B, C, H, W});
  return x + proj_(a);
}

UNetEncoder build_unet_encoder(nn::Module& owner, const UNetConfig& config, const std::function<void()>& between) {
  validate_unet_config(config);
  const int64_t ch = config.base_channels;
  const int64_t emb_dim = 4 * ch;
  const int64_t groups = config.num_groups;

  UNetEncoder e;
  e.time_mlp = owner.register_module(
      "time_mlp", nn::Sequential(nn::Linear(ch, emb_dim), nn::SiLU(), nn::Linear(emb_dim, emb_dim)));
  if (between) between();
  e.conv_in = owner.register_module("conv_in", conv3x3(config.in_channels, ch));

  // Down path; skip_channels records what each stage leaves for the up path.
  e.skip_channels = {ch};
  int64_t cur = ch, ds = 1;
  const auto levels = static_cast<int64_t>(config.channel_mult.size());
  for (int64_t level = 0; level < levels; ++level) {
    for (int64_t i = 0; i < config.num_res_blocks; ++i) {
      const int64_t out = config.channel_mult[level] * ch;
      UNetStage stage;
      const std::string name = fmt::format("down{}", e.down.size());
      stage.res = owner.register_module(name + "_res", ResBlock(cur, out, emb_dim, config.dropout, groups));
      if (wants_attention(config, ds))
        stage.attn = owner.register_module(name + "_attn", AttentionBlock(out, config.num_heads, groups));
      e.down.push_back(stage);
      cur = out;
      e.skip_channels.push_back(cur);
    }
    if (level + 1 < levels) {
      UNetStage stage;
      stage.resample = owner.register_module(fmt::format("down{}_downsample", e.down.size()),
                                             conv3x3(cur, cur, /*stride=*/2));
      e.down.push_back(stage);
      e.skip_channels.push_back(cur);
      ds *= 2;
    }
  }

  e.mid_res1 = owner.register_module("mid_res1", ResBlock(cur, cur, emb_dim, config.dropout, groups));
  e.mid_attn = owner.register_module("mid_attn", AttentionBlock(cur, config.num_heads, groups));
  e.mid_res2 = owner.register_module("mid_res2", ResBlock(cur, cur, emb_dim, config.dropout, groups));
  e.channels = cur;
  e.downsample = ds;
  return e;
}

at::Tensor run_unet_encoder(UNetEncoder& e, const at::Tensor& x, const at::Tensor& emb, std::vector<at::Tensor>* skips) {
  auto h = e.conv_in(x);  // [B, ch, H, W]
  if (skips) skips->push_back(h);
  for (auto& stage : e.down) {
    if (stage.resample) {
      h = stage.resample(h);
    } else {
      h = stage.res(h, emb);
      if (stage.attn) h = stage.attn(h);
    }
    if (skips) skips->push_back(h);
  }
  return e.mid_res2(e.mid_attn(e.mid_res1(h, emb)), emb);
}

UNetImpl::UNetImpl(const UNetConfig& config) : config_(config) {
  encoder_ = build_unet_encoder(*this, config_, [&] {
    if (config_.num_classes > 0)
      class_embedding_ =
          register_module("class_embedding", nn::Embedding(config_.num_classes + 1, 4 * config_.base_channels));
  });
  const int64_t ch = config_.base_channels;
  const int64_t emb_dim = 4 * ch;
  const int64_t groups = config_.num_groups;
  std::vector<int64_t> skip_channels = encoder_.skip_channels;
  int64_t cur = encoder_.channels, ds = encoder_.downsample;
  const auto levels = static_cast<int64_t>(config_.channel_mult.size());

  // Up path: num_res_blocks + 1 blocks per level, each concatenating one skip.
  for (int64_t level = levels - 1; level >= 0; --level) {
    for (int64_t i = 0; i <= config_.num_res_blocks; ++i) {
      const int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      const int64_t out = config_.channel_mult[level] * ch;
      UNetStage stage;
      const std::string name = fmt::format("up{}", up_.size());
      stage.res =
          register_module(name + "_res", ResBlock(cur + skip, out, emb_dim, config_.dropout, groups));
      if (wants_attention(config_, ds))
        stage.attn = register_module(name + "_attn", AttentionBlock(out, config_.num_heads, groups));
      up_.push_back(stage);
      cur = out;
    }
    if (level > 0) {
      UNetStage stage;
      stage.resample = register_module(fmt::format("up{}_upsample", up_.size()), conv3x3(cur, cur));
      up_.push_back(stage);
      ds /= 2;
    }
  }

  norm_out_ = register_module("norm_out", nn::GroupNorm(groups, cur));
  const int64_t out_channels = config_.in_channels * (config_.learned_variance ? 2 : 1);
  conv_out_ = register_module("conv_out", conv3x3(cur, out_channels));
  zero_init(conv_out_);
}

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  if (x.dim() != 4 || x.size(1) != config_.in_channels)
    throw Error(fmt::format("unet: input has shape [{}], expected [B, {}, H, W]",
                            fmt::join(x.sizes(), ", "), config_.in_channels));
  auto emb = encoder_.time_mlp->forward(timestep_embedding(t, config_.base_channels));  // [B, 4ch]
  if (class_embedding_)
    emb = emb + class_embedding_(labels_or_null(y, x.size(0), config_.num_classes, x.device()));

  std::vector<at::Tensor> skips;
  auto h = run_unet_encoder(encoder_, x, emb, &skips);
  for (auto& stage : up_) {
    if (stage.resample) {
      // Upsample to the size of the skip that comes next, so odd sizes (28 → 14 → 7 → 4) find
      // their way back exactly.
      const auto& next = skips.back();
      h = torch::nn::functional::interpolate(
          h, torch::nn::functional::InterpolateFuncOptions()
                 .size(std::vector<int64_t>{next.size(2), next.size(3)})
                 .mode(torch::kNearest));
      h = stage.resample(h);
    } else {
      h = stage.res(torch::cat({h, skips.back()}, /*dim=*/1), emb);
      skips.pop_back();
      if (stage.attn) h = stage.attn(h);
    }
  }
  return conv_out_(torch::silu(norm_out_(h)));
}

}  // namespace diffusion
