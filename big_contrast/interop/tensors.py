"""Weight files by name: `.safetensors` and `.npz` with NumPy alone, torch pickles with torch.

`read_weights(path)` → {name: np.ndarray}; `write_safetensors(path, tensors)`.
The safetensors format is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}} and the raw little-endian bytes; reading
and writing it needs nothing beyond NumPy (bfloat16 through `ml_dtypes`, which
JAX ships). `.pt`, `.pth` and `.bin` pickles need PyTorch (the `torch` extra)
and are read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
  "F64": np.dtype("<f8"),
  "F32": np.dtype("<f4"),
  "F16": np.dtype("<f2"),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "I64": np.dtype("<i8"),
  "I32": np.dtype("<i4"),
  "I16": np.dtype("<i2"),
  "I8": np.dtype("i1"),
  "U8": np.dtype("u1"),
  "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 8:
    raise ValueError(f"{path}: too short for a safetensors file")
  (n,) = struct.unpack("<Q", data[:8])
  try:
    header = json.loads(data[8 : 8 + n])
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a safetensors file (unreadable header: {e})") from None
  body = memoryview(data)[8 + n :]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, not supported here")
    start, end = info["data_offsets"]
    dtype = _DTYPES[info["dtype"]]
    array = np.frombuffer(body[start:end], dtype=dtype).reshape(tuple(info["shape"]))
    out[name] = array.copy()
  return out


def write_safetensors(
  path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
  """Writes `tensors` (C-contiguous little-endian copies) as a safetensors file."""
  header, chunks, offset = {}, [], 0
  for name in sorted(tensors):
    array = np.asarray(tensors[name])
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-d)
      array = array.copy(order="C")
    if array.dtype.newbyteorder("<") in _NAMES:
      array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    if array.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r}: dtype {array.dtype} has no safetensors name")
    raw = array.tobytes()
    header[name] = {
      "dtype": _NAMES[array.dtype],
      "shape": list(array.shape),
      "data_offsets": [offset, offset + len(raw)],
    }
    chunks.append(raw)
    offset += len(raw)
  if metadata:
    header["__metadata__"] = dict(metadata)
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)))
    f.write(encoded)
    for raw in chunks:
      f.write(raw)


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # noqa: PLC0415 — optional: only torch pickles need it
  except ImportError:
    raise ImportError(
      f"{path} is a PyTorch pickle; reading it needs PyTorch (pip install 'big_contrast[torch]'), "
      "or convert it to .safetensors"
    ) from None
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
  out = {}
  for name, value in obj.items():
    if not hasattr(value, "detach"):
      continue
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      out[name] = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      out[name] = value.numpy()
  # DataParallel / DDP checkpoints prefix every name with 'module.'.
  if out and all(k.startswith("module.") for k in out):
    out = {k[len("module.") :]: v for k, v in out.items()}
  return out


def read_weights(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a `.safetensors`, `.npz`, `.pt`, `.pth` or `.bin` weight file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no weight file {path!r}")
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      out = {k: f[k] for k in f.files}
    # NumPy stores bfloat16 as 2-byte void; big_vision's `recover_dtype` does the same.
    return {
      k: v.view(ml_dtypes.bfloat16) if v.dtype.kind == "V" and v.itemsize == 2 else v
      for k, v in out.items()
    }
  if path.endswith((".pt", ".pth", ".bin")):
    return _read_torch(path)
  raise ValueError(f"{path}: expected a .safetensors, .npz, .pt, .pth or .bin weight file")
