"""The networks' weights in and out of the training: plain float32 .npz files (portable between PyTorch versions and
machines: a run on a lent GPU hands its weights back to this machine's exporter), and an exported pack's weights read
back from its ONNX initializers (a fine-tune starts from a pack)."""
from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn

from .errors import NOT_A_PACK, PACK_WEIGHTS, RefinerError

# The files an exported refiner pack has (export.py), and those --finetune-from needs.
PACK_FILES = ("training.json", "encoder.onnx", "refiner.onnx", "refiner_teacher.onnx")


def teacher_path(path: str) -> str:
    """The teacher's file beside PATH: PATH.teacher.npz (without PATH's .npz)."""
    return path[:-4] + ".teacher.npz" if path.endswith(".npz") else path + ".teacher.npz"


def _parts(path: str, enc: nn.Module, teacher: nn.Module, student: nn.Module
           ) -> Tuple[Tuple[str, Tuple[Tuple[str, nn.Module], ...]], ...]:
    return ((path, (("enc.", enc), ("student.", student))), (teacher_path(path), (("teacher.", teacher),)))


def save_weights(path: str, enc: nn.Module, teacher: nn.Module, student: nn.Module) -> None:
    """The three networks' weights as float32 arrays in two files, so that each stays small: PATH (encoder and
    student) and PATH.teacher.npz."""
    for p, parts in _parts(path, enc, teacher, student):
        arrays: Dict[str, np.ndarray] = {}
        for pre, m in parts:
            for k, v in m.state_dict().items():
                arrays[pre + k] = v.detach().float().cpu().numpy()
        np.savez(p, **arrays)


def load_weights(path: str, enc: nn.Module, teacher: nn.Module, student: nn.Module) -> None:
    """The weights save_weights wrote, into networks of the same widths."""
    for p, parts in _parts(path, enc, teacher, student):
        with np.load(p) as z:
            for pre, m in parts:
                m.load_state_dict({k[len(pre):]: torch.from_numpy(z[k]) for k in z.files if k.startswith(pre)})


def check_pack(pack_dir: str) -> None:
    """Refuses (NOT_A_PACK) a folder without the files of an exported refiner pack."""
    if not all(os.path.exists(os.path.join(pack_dir, f)) for f in PACK_FILES):
        raise RefinerError(NOT_A_PACK, f"--finetune-from {pack_dir}: not an exported refiner pack (no training.json, "
                           "encoder.onnx, refiner.onnx and refiner_teacher.onnx there)")


def load_pack_weights(pack_dir: str, enc: nn.Module, teacher: nn.Module, student: nn.Module) -> None:
    """The weights of an exported pack, read back from its ONNX initializers (the export keeps the parameter names:
    enc.* in encoder.onnx, net.* in refiner.onnx and refiner_teacher.onnx), and which source each step network reads
    (the manifest's source). Every parameter must be there (PACK_WEIGHTS)."""
    import onnx
    from onnx import numpy_helper

    with open(os.path.join(pack_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for entry in manifest.get("files", []):
        if entry.get("role") in ("refiner", "refiner_teacher"):
            (student if entry["role"] == "refiner" else teacher).aligned = entry.get("source") == "aligned"
    for fname, pre, m in (("encoder.onnx", "enc.", enc), ("refiner.onnx", "net.", student), ("refiner_teacher.onnx", "net.", teacher)):
        g = onnx.load(os.path.join(pack_dir, fname)).graph
        arrays = {i.name[len(pre):]: numpy_helper.to_array(i) for i in g.initializer if i.name.startswith(pre)}
        want = m.state_dict()
        # The exporter keeps one copy of bitwise-equal parameters (an untrained, zero-initialised layer equals its twin)
        # and passes it on under the other's name through an Identity node.
        alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and len(n.input) == 1}
        for k in [k for k in want if k not in arrays]:
            name = pre + k
            for _ in range(8):
                name = alias.get(name, name)
            if name.startswith(pre) and name[len(pre):] in arrays:
                arrays[k] = arrays[name[len(pre):]]
        missing = [k for k in want if k not in arrays]
        if missing:
            raise RefinerError(PACK_WEIGHTS, f"{pack_dir}/{fname}: no weights for {', '.join(missing[:5])}")
        m.load_state_dict({k: torch.from_numpy(np.array(arrays[k], dtype=np.float32)).reshape(want[k].shape) for k in want})
