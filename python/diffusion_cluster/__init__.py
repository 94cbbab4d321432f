"""diffusion_cluster: diffusion-cluster's trained models in PyTorch (docs/interop.md).

    import diffusion_cluster as dc
    model = dc.load("runs/fashion_mnist")          # nn.Module with .settings
    x = dc.ddim_sample(model, model.settings, torch.randn(16, *model.settings.sample_shape),
                       labels=torch.arange(16) % model.settings.num_classes)
    # a consistency model (settings.consistency): one network evaluation per sample
    x = dc.consistency_sample(model, model.settings, torch.randn(16, *model.settings.sample_shape))

`python -m diffusion_cluster.export RUN --out model.pt` writes TorchScript for
`diffusion-sample --torchscript` plus safetensors weights with a JSON config;
`python -m diffusion_cluster.plot RUN [RUN ...] --out DIR` draws the training curves.
"""
from .checkpoint import RunFormatError, find_checkpoint, read_checkpoint
from .model import DiffusionSettings, Distilled, build_network, load
from .nets import MlpDenoiser, UNet, cpp_name, python_name, timestep_embedding
from .sampling import consistency_sample, ddim_sample, timestep_spacing, to_uint8

__all__ = ["RunFormatError", "find_checkpoint", "read_checkpoint", "DiffusionSettings", "Distilled",
           "build_network", "load", "MlpDenoiser", "UNet", "cpp_name", "python_name", "timestep_embedding", "ddim_sample",
           "consistency_sample", "timestep_spacing", "to_uint8"]
