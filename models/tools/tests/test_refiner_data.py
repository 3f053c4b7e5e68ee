"""refiner.packed and refiner.data on synthetic caches written in the dataset's byte layout (conftest.py): reading,
refusals, the split by clip name, batch shapes and ranges, and the packed form's round trip through ffmpeg."""
from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import write_cache_clip
from refiner import packed
from refiner.data import Data, aligned_source, is_validation_clip
from refiner.errors import BAD_CACHE, NO_DATA, RefinerError


def test_cache_clip_reads_back_what_was_written(tmp_path) -> None:
    w = write_cache_clip(str(tmp_path), "clip", n=3, r=32)
    c = packed.read_cache_clip(str(tmp_path), "clip")
    assert c is not None
    for k in ("src", "mask", "warp", "truth", "drive", "canvas"):
        assert np.array_equal(c[k], w[k]), k
    assert c["warp"].shape == (3, 32, 32, 3) and c["drive"].shape == (3, 64, 64) and c["canvas"].shape == (64, 64, 3)
    assert packed.read_cache_clip(str(tmp_path), "absent") is None


def test_version_1_cache_has_no_canvas_and_a_truncated_file_is_refused(tmp_path) -> None:
    write_cache_clip(str(tmp_path), "old", n=2, version=1)
    c = packed.read_cache_clip(str(tmp_path), "old")
    assert c is not None and c["canvas"] is None
    with open(tmp_path / "old.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(RefinerError) as e:
        packed.read_cache_clip(str(tmp_path), "old")
    assert e.value.code == BAD_CACHE and "expected" in e.value.message


def test_split_by_name_hash_and_batches(tmp_path) -> None:
    names = [f"clip{i}" for i in range(6)]
    for i, n in enumerate(names):
        write_cache_clip(str(tmp_path), n, n=3, seed=i)
    d = Data(str(tmp_path), names + ["not_cached"], val_every=2)
    want_val = [n for n in names if int(hashlib.sha1(n.encode()).hexdigest(), 16) % 2 == 0]
    assert [d.clip_names[i] for i in d.val_clips] == want_val == [n for n in names if is_validation_clip(n, 2)]
    assert 0 < len(want_val) < len(names)
    assert len(d.val_idx) == 3 * len(want_val) and len(d.train_idx) == 3 * (len(names) - len(want_val))
    assert set(d.owner[d.val_idx].tolist()) == set(d.val_clips)
    assert d.size == 32 and d.canvas_scale == 2 and d.strides == {2} and d.per_clip == [3] * 6
    b = d.batch(d.train_idx[:4])
    assert b["warp"].shape == (4, 3, 32, 32) and b["drive"].shape == (4, 1, 64, 64) and b["mask"].shape == (4, 1, 32, 32)
    assert b["src_al"].shape == (4, 3, 32, 32) and b["boxes"].shape == (4, 12) and b["boxes"].dtype == torch.int64
    for k in ("warp", "truth", "drive", "src", "mask", "src_al"):
        assert 0.0 <= float(b[k].min()) and float(b[k].max()) <= 1.0, k
    # Bytes / 255 exactly (no augmentation).
    assert torch.equal(b["warp"], d.warp[d.train_idx[:4]].float() / 255.0)


def test_no_clips_and_mixed_crop_sizes_are_refused(tmp_path) -> None:
    with pytest.raises(RefinerError) as e:
        Data(str(tmp_path), ["a"], val_every=8)
    assert e.value.code == NO_DATA
    write_cache_clip(str(tmp_path), "a", r=32)
    write_cache_clip(str(tmp_path), "b", r=48)
    with pytest.raises(RefinerError, match="BAD_CACHE: clip b: crop size 48 differs from 32"):
        Data(str(tmp_path), ["a", "b"], val_every=8)


def test_identity_alignment_reads_the_canvas_centre() -> None:
    # Canvas 2r square; identity alignment: the crop is the canvas's middle r x r (pixel centres coincide).
    r, cs = 8, 2
    canvas = torch.rand(1, 3, cs * r, cs * r)
    out = aligned_source(canvas, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), r, cs)
    assert torch.allclose(out, canvas[:, :, r // 2:r // 2 + r, r // 2:r // 2 + r], atol=1e-5)


def test_augmented_batches_repeat_with_the_seed(tmp_path) -> None:
    for i in range(2):
        write_cache_clip(str(tmp_path), f"c{i}", n=4, seed=i)
    d = Data(str(tmp_path), ["c0", "c1"], val_every=1000)
    idx = d.train_idx

    def draw(seed: int) -> dict:
        torch.manual_seed(seed)
        return d.batch(idx, aug=True, roll=10, move=(0.1, 0.05))

    a, b, c = draw(1), draw(1), draw(2)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["warp"], c["warp"])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/setup.sh installs it)")
def test_packed_round_trip(tmp_path) -> None:
    cache, out = str(tmp_path / "cache"), str(tmp_path / "packed")
    w = write_cache_clip(cache, "clip", n=3, r=32)
    report = packed.pack(cache, out, crf=12)
    assert report["samples"] == 3 and os.path.exists(os.path.join(out, "_packed.json"))
    assert packed.clip_names(out) == ["clip"]
    c = packed.read_packed_clip(out, "clip")
    assert c is not None and c["meta"] == w["meta"]
    for k in ("src", "mask", "canvas"):
        assert np.array_equal(c[k], w[k]), k  # lossless
    for k in ("warp", "truth", "drive"):
        assert c[k].shape == w[k].shape
        err = np.abs(c[k].astype(np.float32) - w[k]).mean() / 255
        assert err < 0.02, (k, err)
        assert report["mean_abs_error"][k] < 0.02


def test_pack_command_refuses_a_broken_cache_with_its_code(tmp_path, capsys) -> None:
    cache = str(tmp_path / "cache")
    write_cache_clip(cache, "clip", n=2)
    with open(os.path.join(cache, "clip.bin"), "ab") as f:
        f.write(b"\0\0")
    assert packed.main(["pack", "--cache", cache, "--out", str(tmp_path / "out")]) == 2
    assert "refiner.packed: error BAD_CACHE: clip clip: cache file has" in capsys.readouterr().err
