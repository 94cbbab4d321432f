"""Reading run folders: config.ini, checkpoints (manifest.json + HDF5 shards, docs/formats.md
"Checkpoints"), with the checks core/io/checkpoint.cpp makes. Every error is a RunFormatError
whose message names the file or folder at fault and what was expected.
"""
import json
import os
import re
import zlib

import h5py
import numpy as np
import torch


class RunFormatError(ValueError):
    """A folder, config or checkpoint that is not what a diffusion-cluster program writes."""


_STEP_DIR = re.compile(r"^step-(\d{8})$")


def _has_manifest(folder):
    return os.path.isfile(os.path.join(folder, "manifest.json"))


def find_checkpoint(path):
    """The step folder to load for PATH: a run folder, its checkpoints/ folder or a step folder.
    Follows `latest`; when it is missing or names a folder without a manifest, takes the
    complete step-* folder with the highest step (as find_checkpoint in core does)."""
    if not os.path.isdir(path):
        raise RunFormatError(f"{path}: not a folder (expected a run folder with checkpoints/)")
    if _has_manifest(path):
        return path
    ckpts = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpts):
        ckpts = path if os.path.basename(os.path.normpath(path)) == "checkpoints" else None
    if ckpts is None:
        raise RunFormatError(f"{path}: not a run folder (no checkpoints/ folder and no manifest.json)")
    latest = os.path.join(ckpts, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            name = f.read().strip()
        if name and _has_manifest(os.path.join(ckpts, name)):
            return os.path.join(ckpts, name)
    steps = sorted((int(m.group(1)), d) for d in os.listdir(ckpts)
                   if (m := _STEP_DIR.match(d)) and _has_manifest(os.path.join(ckpts, d)))
    if not steps:
        raise RunFormatError(f"{ckpts}: holds no complete checkpoint (no step-*/manifest.json)")
    return os.path.join(ckpts, steps[-1][1])


_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int64": np.int64,
           "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
           "complex64": np.complex64, "complex128": np.complex128}


def read_manifest(step_dir):
    path = os.path.join(step_dir, "manifest.json")
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunFormatError(f"{path}: not a readable JSON manifest: {e}") from None
    for key in ("format", "total_bytes", "tensors", "shards", "config_text", "step"):
        if key not in m:
            raise RunFormatError(f"{path}: missing key '{key}'")
    if m["format"] != "diffusion-checkpoint" or m.get("format_version") != 1:
        raise RunFormatError(f"{path}: format {m['format']!r} version {m.get('format_version')!r}, "
                             "expected 'diffusion-checkpoint' version 1")
    return m


def read_checkpoint(step_dir):
    """(manifest, {name: torch.Tensor}) of a step folder; checks sizes, tiling and CRC32."""
    m = read_manifest(step_dir)
    mpath = os.path.join(step_dir, "manifest.json")
    total = int(m["total_bytes"])
    stream = np.zeros(total, np.uint8)
    pos = 0
    for s in m["shards"]:
        file = os.path.join(step_dir, s["file"])
        if int(s["begin"]) != pos:
            raise RunFormatError(f"{mpath}: shard {s['file']} begins at {s['begin']}, expected {pos}")
        try:
            with h5py.File(file, "r") as f:
                b = f["bytes"][:]
        except (OSError, KeyError) as e:
            raise RunFormatError(f"{file}: cannot read the shard's `bytes` dataset: {e}") from None
        if len(b) != int(s["end"]) - int(s["begin"]):
            raise RunFormatError(f"{file}: {len(b)} bytes, the manifest says {int(s['end']) - int(s['begin'])}")
        crc = f"{zlib.crc32(b.tobytes()):08x}"
        if crc != s["crc32"]:
            raise RunFormatError(f"{file}: checksum mismatch: crc32 {crc}, manifest {mpath} says {s['crc32']}")
        stream[pos:pos + len(b)] = b
        pos += len(b)
    if pos != total:
        raise RunFormatError(f"{mpath}: shards cover {pos} bytes, total_bytes is {total}")
    tensors = {}
    for t in m["tensors"]:
        off, n = int(t["offset"]), int(t["nbytes"])
        if off + n > total:
            raise RunFormatError(f"{mpath}: tensor {t['name']} ends past total_bytes")
        raw = stream[off:off + n]
        if t["dtype"] == "bfloat16":  # no NumPy type: the high half of a float32
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif t["dtype"] in _DTYPES:
            arr = raw.view(np.dtype(_DTYPES[t["dtype"]]).newbyteorder("<"))
        else:
            raise RunFormatError(f"{mpath}: tensor {t['name']} has unknown dtype {t['dtype']!r}")
        tensors[t["name"]] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True)).reshape(t["shape"])
    return m, tensors


def parse_config(text, source):
    """The INI text of a resolved config as {section: {key: value}} (comments after # or ;)."""
    sections, current = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        line = re.split(r"\s[#;]|^[#;]", line, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
        else:
            raise RunFormatError(f"{source}: line {number}: expected [section] or key = value")
    return sections
