"""io: folders written whole or not at all; readers that turn bad files into one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from difflab.errors import DifflabError
from difflab.io import atomic_write_text, read_json, read_tensors, sha256, tensor_bytes, write_folder


def test_write_folder_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "deep" / "entry"
    write_folder(target, {"a.safetensors": tensor_bytes({"x": torch.arange(3.0)}), "meta.json": b'{"v": 1}'})
    write_folder(target, {"b.safetensors": tensor_bytes({"y": torch.ones(2)}, {"k": "v"}), "meta.json": b'{"v": 2}'})
    assert sorted(p.name for p in target.iterdir()) == ["b.safetensors", "meta.json"]
    assert read_json(target / "meta.json") == {"v": 2} and torch.equal(read_tensors(target / "b.safetensors")["y"],
                                                                         torch.ones(2))
    assert [p.name for p in target.parent.iterdir()] == ["entry"]            # no temporary folder left


def test_a_failed_replace_keeps_the_old_folder_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    write_folder(target, {"meta.json": b'{"v": 1}'})
    rename = os.rename

    def rename_fails_for_the_new_folder(src, dst):
        if os.path.basename(src).startswith(".tmp_entry_") and "_old_" not in os.path.basename(src):
            raise OSError(28, "No space left on device")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_fails_for_the_new_folder)
    with pytest.raises(OSError, match="No space"):
        write_folder(target, {"meta.json": b'{"v": 2}'})
    assert read_json(target / "meta.json") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_readers_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text(json.dumps([1]))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 7)
    for path, match in [(tmp_path / "missing.json", "missing"), (tmp_path / "bad.json", "corrupt"),
                        (tmp_path / "list.json", "JSON object")]:
        with pytest.raises(DifflabError, match=match):
            read_json(path)
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        read_tensors(tmp_path / "bad.safetensors")


def test_atomic_write_text_leaves_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "one")
    atomic_write_text(tmp_path / "f.txt", "two")
    assert (tmp_path / "f.txt").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_changed_byte_is_caught_by_the_recorded_checksum(tmp_path):
    data = tensor_bytes({"w": torch.arange(64.0)})
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    assert torch.equal(read_tensors(path, sha256(data))["w"], torch.arange(64.0))
    flipped = bytearray(data)
    flipped[-5] ^= 0x01                                   # inside the tensor data: safetensors still loads it
    path.write_bytes(bytes(flipped))
    assert not torch.equal(read_tensors(path)["w"], torch.arange(64.0))
    with pytest.raises(DifflabError, match="damaged"):
        read_tensors(path, sha256(data))


def test_new_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        write_folder(tmp_path / "d", {"a": b"1"})
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
