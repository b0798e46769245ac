"""Write diffusers SD 1.x / SDXL pipelines as original-format (LDM / A1111) single files.

Tests need real single-file checkpoints to exercise the loader, and none may be downloaded,
so this inverts diffusers' LDM -> diffusers conversion
(``diffusers.loaders.single_file_utils``) key by key. The mapping follows the layout of the
original Stable Diffusion code: UNet under ``model.diffusion_model.``, VAE under
``first_stage_model.``, CLIP under ``cond_stage_model.transformer.`` (SD 1.x) and
``conditioner.embedders.{0,1}.`` (SDXL; the second one in OpenCLIP layout).

Every function works on meta tensors too, so full-size layouts can be checked for free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file
from transformers import PreTrainedModel

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

StateDict = Mapping[str, torch.Tensor]

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_CLIP_LAYER_RE = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_QKV_RE = re.compile(r"self_attn\.([qkv])_proj")


def _unet_resnet(rest: list[str]) -> str:
    return ".".join([_UNET_RESNET.get(rest[0], rest[0]), *rest[1:]])


def _unet_key(key: str, layers_per_block: int, up_with_attention: set[int]) -> str:
    """The LDM name of one diffusers UNet parameter."""
    head, _, leaf = key.rpartition(".")
    if head in _UNET_TOP:
        return f"{_UNET_TOP[head]}.{leaf}"
    parts = key.split(".")
    stride = layers_per_block + 1
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_unet_resnet(rest)}"
        if kind == "attentions" and j == 0:
            return "middle_block.1." + ".".join(rest)
    elif parts[0] in ("down_blocks", "up_blocks"):
        block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        down = parts[0] == "down_blocks"
        if kind in ("downsamplers", "upsamplers"):
            j = layers_per_block  # the sampler sits after the block's last layer
        index = block * stride + j + (1 if down else 0)
        stem = f"input_blocks.{index}" if down else f"output_blocks.{index}"
        if kind == "resnets":
            return f"{stem}.0.{_unet_resnet(rest)}"
        if kind == "attentions":
            return f"{stem}.1." + ".".join(rest)
        if kind == "downsamplers":
            return f"{stem}.0.op.{leaf}"
        if kind == "upsamplers":
            slot = 2 if block in up_with_attention else 1
            return f"{stem}.{slot}.conv.{leaf}"
    raise ValueError(f"no LDM name for UNet parameter {key!r}")


def unet_to_ldm(state: StateDict, layers_per_block: int) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict -> LDM ``openaimodel.UNetModel`` names (no prefix)."""
    if not isinstance(layers_per_block, int):
        raise ValueError("only an integer layers_per_block has an LDM layout")
    up_with_attention = {
        int(key.split(".")[1]) for key in state if re.match(r"up_blocks\.\d+\.attentions\.", key)
    }
    return {_unet_key(k, layers_per_block, up_with_attention): v for k, v in state.items()}


def _vae_key(key: str, num_up_blocks: int) -> tuple[str, bool]:
    """The LDM name of one AutoencoderKL parameter, and whether it is a 1x1 conv there."""
    parts = key.split(".")
    leaf = parts[-1]
    if parts[0] in ("quant_conv", "post_quant_conv") or parts[1] in ("conv_in", "conv_out"):
        return key, False
    coder, section = parts[0], parts[1]
    if section == "conv_norm_out":
        return f"{coder}.norm_out.{leaf}", False
    if section == "mid_block":
        kind, j, rest = parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return f"{coder}.mid.block_{j + 1}.{rest}", False
        name = rest.rpartition(".")[0]
        if kind == "attentions" and name in _VAE_ATTENTION:
            return f"{coder}.mid.attn_1.{_VAE_ATTENTION[name]}.{leaf}", name != "group_norm"
    if section in ("down_blocks", "up_blocks"):
        block, kind = int(parts[2]), parts[3]
        # LDM numbers decoder levels from the lowest resolution up; diffusers the other way.
        level = block if section == "down_blocks" else num_up_blocks - 1 - block
        stem = f"{coder}.{'down' if section == 'down_blocks' else 'up'}.{level}"
        if kind == "resnets":
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{stem}.block.{parts[4]}.{rest}", False
        if kind == "downsamplers":
            return f"{stem}.downsample.conv.{leaf}", False
        if kind == "upsamplers":
            return f"{stem}.upsample.conv.{leaf}", False
    raise ValueError(f"no LDM name for VAE parameter {key!r}")


def vae_to_ldm(state: StateDict, num_up_blocks: int) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict -> LDM names (no prefix); attention linears become 1x1 convs."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name, is_conv = _vae_key(key, num_up_blocks)
        out[name] = value.reshape(*value.shape, 1, 1) if is_conv and value.ndim == 2 else value
    return out


def clip_to_ldm(state: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModel state dict -> the transformers-style names the original checkpoints use.

    Recent transformers flatten CLIPTextModel (no ``text_model.``); files always carry it.
    """
    return {
        prefix + (k if k.startswith("text_model.") else f"text_model.{k}"): v
        for k, v in state.items()
    }


def open_clip_to_ldm(state: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection state dict -> OpenCLIP names (fused qkv, raw projection)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix("text_model.")
        if name == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif name == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif name == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif name.startswith("final_layer_norm."):
            out[prefix + "ln_final." + name.rpartition(".")[2]] = value
        elif match := _CLIP_LAYER_RE.fullmatch(name):
            layer, module, leaf = match.groups()
            block = f"{prefix}transformer.resblocks.{layer}."
            if qkv_match := _QKV_RE.fullmatch(module):
                qkv.setdefault((int(layer), leaf), {})[qkv_match.group(1)] = value
            elif module in _CLIP_LAYER:
                out[block + f"{_CLIP_LAYER[module]}.{leaf}"] = value
            else:
                raise ValueError(f"no OpenCLIP name for {key!r}")
        else:
            raise ValueError(f"no OpenCLIP name for {key!r}")
    for (layer, leaf), parts in qkv.items():
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = fused
    return out


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def pipeline_to_ldm(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """The whole checkpoint of an SD 1.x or SDXL pipeline, in original key format."""
    unet, vae = pipe.unet, pipe.vae
    checkpoint = _prefixed(
        UNET_PREFIX, unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    )
    checkpoint |= _prefixed(
        VAE_PREFIX, vae_to_ldm(vae.state_dict(), len(vae.config.up_block_types))
    )
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    if text_encoder_2 is None:
        checkpoint |= clip_to_ldm(pipe.text_encoder.state_dict(), SD1_CLIP_PREFIX)
    else:
        checkpoint |= clip_to_ldm(pipe.text_encoder.state_dict(), SDXL_CLIP_PREFIX)
        checkpoint |= open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_OPENCLIP_PREFIX)
    return checkpoint


def config_dir_for(path: Path) -> Path:
    """The sidecar directory that holds a single file's diffusers configs: ``<stem>.config``."""
    return path.with_suffix(".config")


def write_config_dir(pipe: DiffusionPipeline, directory: Path) -> Path:
    """Save the pipeline's diffusers configs and tokenizers, without any weights."""
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_config(directory)  # model_index.json
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = directory / name
        if isinstance(component, PreTrainedModel):
            component.config.save_pretrained(target)
        elif hasattr(component, "save_config"):  # diffusers models and schedulers
            component.save_config(target)
        elif hasattr(component, "save_pretrained"):  # tokenizers, image processors
            component.save_pretrained(target)
    return directory


def save_single_file(pipe: DiffusionPipeline, path: Path) -> Path:
    """Write ``pipe`` as an LDM-format .safetensors file plus its ``<stem>.config/`` sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in pipeline_to_ldm(pipe).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    write_config_dir(pipe, config_dir_for(path))
    return path
