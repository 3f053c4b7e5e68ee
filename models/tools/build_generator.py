"""Builds and exports the default pack's warp generator (models/default/generator.onnx).

The generator is a fixed (weight-free) differentiable graph, written in PyTorch so that the same code can later host
learned parts, and exported to ONNX (opset 16: GridSample inside the graph, so the pack runs unchanged on the CUDA
execution provider). Per frame it:

1. evaluates a thin-plate-spline backward map from the target control points `ctrl` and the coefficients `coef`
   (solved in JS: the (N+3)x(N+3) system is tiny) on a coarse grid of crop-space nodes, upsampled to the overlay grid;
2. draws a procedural mouth interior (dark cavity, upper teeth band, tongue, tinted by `colors`) in a frame
   attached to the target mouth (`mouth`);
3. paints closing eyelids (`masks` channels 2-3: lid and lash line, rasterized by the engine; colours from
   `colors` rows 3-4), and samples the flow, the masks and the overlay at the output pixels of the paste region
   (`region`: crop-space coordinates of the paste region's first and last output pixel centres; the TPS nodes and
   the mask nodes span that region, so going to output resolution is a bilinear Resize, no GridSample), and shifts
   the iris inside the eye mask by `gaze`;
4. warps the portrait crop `source` with one GridSample straight to output resolution (one resampling only),
   composites the mouth interior inside the target inner-lip mask, pastes over `background` with the feathered
   `paste_mask`, and converts to I420 planes (BT.601 limited range, as server/util/image.ts).

Coordinates: crop-space grid units in [-1, 1] (x right, y down). `source` is sampled with align_corners=False
(pixel centres at (2i+1)/R - 1); `masks` are M x M nodes spanning `region` (node k at x0 + (x1 - x0) k / (M - 1)).
TPS kernel: U(r^2) = r^2 * log(r^2), U(0) = 0; map(p) = a0 + ax*px + ay*py + sum_i w_i U(|p - ctrl_i|^2).

Two graphs are exported from the same module: `generator.onnx` (the whole per-frame step above, GridSample inside;
what a GPU execution provider runs) and `fields.onnx` (steps 1-2 and the node-resolution grid/mouth fields only: on
the CPU provider, GridSample and Resize at output resolution cost 3-4x a fused JS loop, so the CPU engine does the
warp, mouth composite, paste and I420 conversion in one pass over the paste region; same maths, see
server/avatar/engines/default/warp.ts). The manifest lists both with their sha256 and declared inputs/outputs.

Usage: /usr/bin/python3 models/tools/build_generator.py --out-dir models/default
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

N_CTRL = 96  # 68 landmarks + 12 head-ring points + 16 fixed outer-ellipse anchors (engines/default/prepare.ts)
SOURCE_RES = 512  # portrait crop resolution
MASK_RES = 128  # overlay grid: flow, eye/mouth masks, mouth interior
TPS_RES = 48  # coarse TPS evaluation grid, upsampled to MASK_RES (the flow is smooth; Log dominates the graph)


def node_grid(n: int) -> torch.Tensor:
    """[n*n, 2] node coordinates (x, y) spanning [-1, 1] inclusive, row-major (y outer)."""
    t = torch.linspace(-1.0, 1.0, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("tps_t", torch.linspace(0.0, 1.0, TPS_RES))
        self.register_buffer("mask_t", torch.linspace(0.0, 1.0, MASK_RES))
        # RGB -> YUV (BT.601 limited), rows Y, U, V; offsets added after.
        self.register_buffer("yuv", torch.tensor([[66.0, 129.0, 25.0], [-38.0, -74.0, 112.0], [112.0, -94.0, -18.0]]) / 256.0)
        # +0.5 so that the truncating cast rounds to nearest.
        self.register_buffer("ybias", torch.tensor([16.5]))
        self.register_buffer("uvw", (self.yuv[1:3] / 4.0).reshape(2, 3, 1, 1).expand(2, 3, 2, 2).contiguous())
        self.register_buffer("uvbias", torch.tensor([128.5, 128.5]))

    def nodes(self, t: torch.Tensor, region: torch.Tensor):
        """Node coordinates (x, y) of an n x n grid spanning the region (crop-space corners of the output region)."""
        r = region[0]
        xs = r[0] + (r[2] - r[0]) * t
        ys = r[1] + (r[3] - r[1]) * t
        n = t.shape[0]
        return xs.reshape(1, n).expand(n, n), ys.reshape(n, 1).expand(n, n)

    def fields(self, ctrl, coef, masks, gaze, mouth, colors, region):
        """Node-resolution fields: the sampling grid [1, 2, M, M] and the premultiplied mouth interior [1, 4, M, M]."""
        # 1. TPS backward map on the coarse grid: r^2 = |p|^2 + |c|^2 - 2 p.c (a MatMul; broadcasting a subtraction
        # over [G, N, 2] is ~10x slower on the CPU provider).
        tx, ty = self.nodes(self.tps_t, region)
        p = torch.stack([tx.reshape(-1), ty.reshape(-1)], dim=1)  # [G, 2]
        c = ctrl[0]  # [N, 2]
        r2 = (p * p).sum(dim=1, keepdim=True) + (c * c).sum(dim=1).reshape(1, -1) - 2.0 * (p @ c.t())
        r2 = torch.relu(r2)
        u = r2 * torch.log(r2 + 1e-20)
        k = coef[0]
        w = k[:N_CTRL]
        a = k[N_CTRL:]
        flow = u @ w + a[0:1] + p[:, 0:1] * a[1:2] + p[:, 1:2] * a[2:3]  # [G, 2]
        flow = flow.reshape(1, TPS_RES, TPS_RES, 2).permute(0, 3, 1, 2)
        flow = F.interpolate(flow, size=(MASK_RES, MASK_RES), mode="bilinear", align_corners=True)

        # 2. Procedural mouth interior in the target mouth frame (units of the mouth half-width).
        mx, my = self.nodes(self.mask_t, region)
        m = mouth[0]
        cx, cy, cs, sn, hw, top, bottom = m[0], m[1], m[2], m[3], m[4], m[5], m[6]
        dx = (mx - cx).reshape(1, 1, MASK_RES, MASK_RES)
        dy = (my - cy).reshape(1, 1, MASK_RES, MASK_RES)
        uu = (dx * cs + dy * sn) / hw
        vv = (dy * cs - dx * sn) / hw
        dark = colors[0, 0].reshape(1, 3, 1, 1)
        teeth = colors[0, 1].reshape(1, 3, 1, 1)
        tongue = colors[0, 2].reshape(1, 3, 1, 1)
        side = 1.0 - 0.45 * uu * uu  # darker towards the mouth corners
        depth = torch.sigmoid((vv - top) / 0.06) * torch.sigmoid((bottom - vv) / 0.06)
        col = dark * (0.75 + 0.25 * side) * (0.8 + 0.2 * depth)
        tg = torch.sigmoid((1.0 - (uu / 0.62) ** 2 - ((vv - bottom - 0.12) / 0.38) ** 2) / 0.18)
        col = col + tg * (tongue * (0.7 + 0.3 * side) - col)
        tm = torch.sigmoid((top + 0.26 - vv) / 0.035) * torch.sigmoid((0.82 - uu.abs()) / 0.06)
        gap = torch.sigmoid((uu * 6.0).cos() * 4.0 - 3.2)  # faint gaps between teeth
        col = col + tm * (teeth * side * (1.0 - 0.12 * gap) - col)

        # 3. The sampling grid (flow, minus the iris shift inside the eye openings) and the mouth interior
        # premultiplied by its mask.
        eye = masks[:, 0:1]
        grid = flow - eye * gaze.reshape(1, 2, 1, 1)
        am = masks[:, 1:2] * m[7]
        # Eyelids: closing lids are painted over the eye opening (skin colour, a lash line along the lid's edge)
        # rather than warped down, which would drag the brows into the eyes on faces with big eyes.
        lid_col = colors[0, 3].reshape(1, 3, 1, 1)
        lash_col = colors[0, 4].reshape(1, 3, 1, 1)
        lash = masks[:, 3:4]
        col_lid = lid_col + lash * (lash_col - lid_col)
        a_lid = masks[:, 2:3] * (1.0 - am)
        return grid, torch.cat([col * am + col_lid * a_lid, am + a_lid], dim=1)

    def forward(self, source, ctrl, coef, masks, gaze, mouth, colors, region, background, paste_mask):
        grid, overlay = self.fields(ctrl, coef, masks, gaze, mouth, colors, region)
        # Up to output resolution: node grids are aligned with the output region, so these are bilinear Resizes.
        size = background.shape[2:]
        grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
        mouth_px = F.interpolate(overlay, size=size, mode="bilinear", align_corners=True)

        # 4. Warp (one resampling of the crop, straight to output resolution), then mouth and paste folded into
        # out = (bg (1 - pm) + pm mouth_premult) + warped * pm (1 - a).
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        pm = paste_mask
        base = background * (1.0 - pm) + pm * mouth_px[:, 0:3]
        rgb = base + warped * (pm * (1.0 - mouth_px[:, 3:4]))
        # BT.601 limited range as 1x1 and 2x2/stride-2 convolutions (the 2x2 average for chroma), then saturate.
        y = F.conv2d(rgb, self.yuv[0].reshape(1, 3, 1, 1), bias=self.ybias)
        uv = F.conv2d(rgb, self.uvw, bias=self.uvbias, stride=2)
        y8 = y.clamp(0.0, 255.0).to(torch.uint8)
        uv8 = uv.clamp(0.0, 255.0).to(torch.uint8)
        return y8, uv8, rgb


class Fields(nn.Module):
    """The generator's node-resolution part alone (the CPU path: the warp itself runs as a fused JS loop)."""

    def __init__(self, gen: Generator) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, ctrl, coef, masks, gaze, mouth, colors, region):
        return self.gen.fields(ctrl, coef, masks, gaze, mouth, colors, region)


FIELD_INPUTS = ["ctrl", "coef", "masks", "gaze", "mouth", "colors", "region"]
FIELD_OUTPUTS = ["grid", "overlay"]
INPUTS = ["source", "ctrl", "coef", "masks", "gaze", "mouth", "colors", "region", "background", "paste_mask"]
OUTPUTS = ["y", "uv", "rgb"]


def example_inputs(h: int = 64, w: int = 96):
    src = torch.rand(1, 3, SOURCE_RES, SOURCE_RES) * 255
    ctrl = torch.rand(1, N_CTRL, 2) * 2 - 1
    coef = torch.zeros(1, N_CTRL + 3, 2)
    coef[0, N_CTRL + 1, 0] = 1
    coef[0, N_CTRL + 2, 1] = 1
    masks = torch.zeros(1, 4, MASK_RES, MASK_RES)
    gaze = torch.zeros(1, 2)
    mouth = torch.tensor([[0.0, 0.5, 1.0, 0.0, 0.2, 0.0, 0.1, 0.0]])
    colors = torch.full((1, 5, 3), 100.0)
    region = torch.tensor([[-0.5, -0.4, 0.5, 0.6]])
    bg = torch.rand(1, 3, h, w) * 255
    pm = torch.rand(1, 1, h, w)
    return (src, ctrl, coef, masks, gaze, mouth, colors, region, bg, pm)


def export(model: nn.Module, inputs, in_names, out_names, dyn, declared, path: str, opset: int):
    import onnx

    with torch.no_grad():
        torch.onnx.export(model, inputs, path, input_names=in_names, output_names=out_names,
                          dynamic_axes=dyn, opset_version=opset, do_constant_folding=True)
    m = onnx.load(path)
    # Declare the output shapes exactly (the exporter's inference leaves generated names on some dimensions).
    for o in m.graph.output:
        dims = o.type.tensor_type.shape.dim
        for d, v in zip(dims, declared[o.name]):
            d.Clear()
            if isinstance(v, int):
                d.dim_value = v
            else:
                d.dim_param = v
    onnx.checker.check_model(m)
    del m.metadata_props[:]
    for k, v in {"producer": "models/tools/build_generator.py", "n_ctrl": str(N_CTRL), "source_res": str(SOURCE_RES),
                 "mask_res": str(MASK_RES), "tps_res": str(TPS_RES)}.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, path)
    print(f"wrote {path}")
    return m


def main() -> None:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="models/default")
    ap.add_argument("--opset", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = Generator().eval()
    full = os.path.join(args.out_dir, "generator.onnx")
    fields = os.path.join(args.out_dir, "fields.onnx")
    dyn = {"background": {2: "H", 3: "W"}, "paste_mask": {2: "H", 3: "W"},
           "y": {2: "H", 3: "W"}, "uv": {2: "H2", 3: "W2"}, "rgb": {2: "H", 3: "W"}}
    m_full = export(gen, example_inputs(), INPUTS, OUTPUTS, dyn,
                    {"y": [1, 1, "H", "W"], "uv": [1, 2, "H2", "W2"], "rgb": [1, 3, "H", "W"]}, full, args.opset)
    ex = example_inputs()
    m_fields = export(Fields(gen).eval(), (ex[1], ex[2], ex[3], ex[4], ex[5], ex[6], ex[7]), FIELD_INPUTS,
                      FIELD_OUTPUTS, {}, {"grid": [1, 2, MASK_RES, MASK_RES], "overlay": [1, 4, MASK_RES, MASK_RES]},
                      fields, args.opset)
    write_manifest(os.path.join(args.out_dir, "manifest.json"), [("generator", full, m_full), ("fields", fields, m_fields)])


DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def write_manifest(manifest_path: str, files) -> None:
    """Writes the pack manifest: the file's sha256 and its inputs/outputs as the exported graph declares them."""
    import hashlib
    import json
    import os

    def values(vs):
        out = []
        for v in vs:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": DTYPES[t.elem_type], "shape": shape})
        return out

    manifest = {
        "name": "default",
        "version": "1.0.0",
        "license": "MIT (generator graph and code of this project); see README.md for the landmark model's license",
        "description": "Warp generator: TPS warp from landmark control points, procedural mouth interior, eyelid "
                       "and gaze retargeting, feathered paste-back and I420 conversion. 'generator' is the whole "
                       "frame step in one graph (GridSample; for GPU execution providers); 'fields' is its "
                       "node-resolution part, whose warp and paste the engine runs as a fused CPU loop.",
        "resolution": SOURCE_RES,
        "steps": 0,
        "files": [{
            "path": os.path.basename(path),
            "role": role,
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
            "inputs": values(m.graph.input),
            "outputs": values(m.graph.output),
        } for role, path, m in files],
    }
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {manifest_path}")


if __name__ == "__main__":
    main()
