"""Export of the trained networks as a model pack: encoder.onnx, refiner.onnx (the student) and refiner_teacher.onnx,
one graph per step (opset 16; the engine runs the step loop), and manifest.json with every file's sha256, input and
output names, shapes and dtypes, the source each step network reads, the resolution and the default steps (the
server's ModelPack validates it before loading)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .constants import CODE, DRIVE
from .terms import MANIFEST_LICENSE

Shape = List[int]
Manifest = Dict[str, Any]

MANIFEST_BASE: Dict[str, Any] = {
    "name": "refiner",
    "version": "0.1.0",
    "license": MANIFEST_LICENSE,
    "description": "Learned refiner for the default engine: an expression encoder (driving face, grey 64x64 -> code) and an InDI few-step refiner of the warp output in the paste region (student: refiner.onnx, distilled for k = 1, 2, 4; teacher: refiner_teacher.onnx, 8 steps). One graph per step; the engine runs the step loop.",
}


class EncoderExport(nn.Module):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__()
        self.enc = enc

    def forward(self, drive: torch.Tensor) -> torch.Tensor:
        return self.enc(drive)


class StepExport(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, xt: torch.Tensor, warp: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                code: torch.Tensor) -> torch.Tensor:
        return self.net(xt, warp, source, mask, t, code)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def step_inputs(r: int) -> List[Tuple[str, Shape]]:
    """The step graphs' inputs (name, shape) at crop side r."""
    return [("xt", [1, 3, r, r]), ("warp", [1, 3, r, r]), ("source", [1, 3, r, r]), ("mask", [1, 1, r, r]), ("t", [1, 1]),
            ("code", [1, CODE])]


def export(enc: nn.Module, teacher: nn.Module, student: nn.Module, out_dir: str, size: int,
           residual: str = "paste") -> List[Dict[str, Any]]:
    """Writes the three ONNX graphs into out_dir; returns the manifest's files entries."""
    os.makedirs(out_dir, exist_ok=True)
    r = size
    files: List[Tuple[Any, ...]] = []
    enc.eval()
    torch.onnx.export(EncoderExport(enc), (torch.zeros(1, 1, DRIVE, DRIVE),), os.path.join(out_dir, "encoder.onnx"),
                      input_names=["drive"], output_names=["code"], opset_version=16)
    files.append(("encoder.onnx", "encoder", [("drive", [1, 1, DRIVE, DRIVE])], [("code", [1, CODE])]))
    ins = step_inputs(r)
    dummy = tuple(torch.zeros(*s) for _, s in ins)
    for name, role, net in (("refiner.onnx", "refiner", student), ("refiner_teacher.onnx", "refiner_teacher", teacher)):
        net.eval()
        torch.onnx.export(StepExport(net), dummy, os.path.join(out_dir, name), input_names=[n for n, _ in ins],
                          output_names=["x0"], opset_version=16)
        files.append((name, role, ins, [("x0", [1, 3, r, r])], "aligned" if getattr(net, "aligned", False) else "region"))
    return [
        {
            "path": p,
            "role": role,
            "sha256": sha256(os.path.join(out_dir, p)),
            "inputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in ins_],
            "outputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in outs],
            **({"source": src[0]} if src else {}),
            **({"residual": residual} if role == "refiner" and residual != "paste" else {}),
        }
        for p, role, ins_, outs, *src in files
    ]


def write_manifest(out_dir: str, files: Sequence[Dict[str, Any]], resolution: int, steps: int) -> Manifest:
    """manifest.json of the pack (and returns it)."""
    manifest = {**MANIFEST_BASE, "resolution": resolution, "steps": steps, "files": list(files)}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest
