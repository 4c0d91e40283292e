"""The torch-free reading of Token2Wav assets: convert/torch_zip.py against torch.load / torch.save
(PyTorch CPU is a test dependency), hostile pickles refused before anything runs, and flow.yaml read
as plain data whatever tags it carries."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import _import_convert

pytestmark = pytest.mark.torch  # every test round-trips through torch

torch_zip = _import_convert(".torch_zip")
asset_yaml = _import_convert(".asset_yaml")
ConversionError = _import_convert("").ConversionError


def _state_dict_zoo() -> OrderedDict:
    """Tensors of every storage type and view kind a checkpoint may hold."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    sd = OrderedDict()
    sd["f32"] = torch.randn(3, 4, 5, generator=g)
    sd["f16"] = torch.randn(6, generator=g).half()
    sd["bf16"] = torch.randn(2, 3, generator=g).to(torch.bfloat16)
    sd["f64"] = torch.randn(4, generator=g).double()
    sd["i64"] = torch.arange(-3, 9)
    sd["i32"] = torch.arange(5, dtype=torch.int32)
    sd["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["column_view"] = base[:, 2]  # offset 2, stride 7 into a shared storage
    sd["transposed_view"] = base.t()  # strides (1, 7)
    sd["row_slice"] = base[1:3]  # offset 7
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    return sd


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def test_reader_equals_torch_load(tmp_path):
    sd = _state_dict_zoo()
    p = tmp_path / "zoo.pt"
    torch.save(sd, p)
    ref = torch.load(p, weights_only=True)
    src = torch_zip.TorchZipSource.open(p)
    assert src.names() == list(ref)
    for name, t in ref.items():
        assert src.shape(name) == tuple(t.shape), name
        got = src.float32(name) if t.dtype == torch.bfloat16 else src.array(name)
        want = _to_numpy(t)
        assert got.dtype == want.dtype and np.array_equal(got, want), name  # storages are copied bit for bit
    # float32 decoding: exact for every float storage type
    for name in ("f32", "f16", "bf16", "f64", "column_view"):
        assert np.array_equal(src.float32(name), ref[name].float().numpy()), name
    assert np.array_equal(src.float32("transposed_view", slice(1, 3)), ref["transposed_view"][1:3].numpy())
    with pytest.raises(ConversionError, match="i64.*I64.*float"):
        src.float32("i64")


def test_reader_reads_a_module_state_dict_with_weight_norm(tmp_path):
    """torch.save(module.state_dict()): an OrderedDict carrying `_metadata` (a BUILD opcode) and
    weight-norm parametrizations, as flow.pt / hift.pt are saved; also nested dicts."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(1)
    m = torch.nn.Sequential(weight_norm(torch.nn.Conv1d(3, 4, 5)), torch.nn.ConvTranspose1d(4, 2, 3))
    p = tmp_path / "m.pt"
    torch.save({"generator": m.state_dict(), "epoch": 7}, p)
    src = torch_zip.TorchZipSource.open(p)
    ref = m.state_dict()
    assert src.names() == [f"generator.{k}" for k in ref]  # nested keys flattened, the int skipped
    for k, t in ref.items():
        assert np.array_equal(src.float32(f"generator.{k}"), t.detach().numpy()), k


def test_writer_output_loads_in_torch(tmp_path):
    rng = np.random.default_rng(2)
    tensors = [("a.weight", rng.standard_normal((3, 4, 5)).astype(np.float32)),
               ("a.bias", rng.standard_normal(3).astype(np.float32)),
               ("scalar", np.array(1.5, np.float32)), ("empty", np.zeros((0, 2), np.float32))]
    p = tmp_path / "w.pt"
    torch_zip.write_torch_zip(p, tensors)
    ref = torch.load(p, weights_only=True)  # torch's own safe loader accepts the file
    assert list(ref) == [n for n, _ in tensors]
    src = torch_zip.TorchZipSource.open(p)
    for name, a in tensors:
        assert tuple(ref[name].shape) == a.shape and ref[name].dtype == torch.float32
        assert np.array_equal(ref[name].numpy(), a) and np.array_equal(src.float32(name), a), name
    assert not (tmp_path / "w.pt.part").exists()


# ------------------------------------------------------------------------------------------------
# hostile or foreign pickles
# ------------------------------------------------------------------------------------------------

def _zip_with_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", b"3\n")
    return path


class _Boom:
    """Unpickling this would run os.system (the classic malicious-pickle payload)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_hostile_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Boom(marker)}, protocol=protocol)
    assert b"system" in payload  # it really is an os.system / posix.system reduce
    p = _zip_with_pickle(tmp_path / "evil.pt", payload)
    with pytest.raises(ConversionError) as ei:
        torch_zip.TorchZipSource.open(p)
    msg = str(ei.value)
    assert "refusing to load global" in msg and "system" in msg and "evil.pt" in msg, msg
    assert not marker.exists()  # nothing was executed


def test_hand_written_posix_system_reduce_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    payload = b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with pytest.raises(ConversionError, match=r"refusing to load global 'posix\.system'"):
        torch_zip.TorchZipSource.open(_zip_with_pickle(tmp_path / "evil2.pt", payload))
    assert not marker.exists()


def test_builtins_and_whole_modules_are_refused(tmp_path):
    payload = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(ConversionError, match=r"builtins\.eval"):
        torch_zip.TorchZipSource.open(_zip_with_pickle(tmp_path / "e.pt", payload))
    # a whole pickled module (torch.save(model)) is not a state dict
    p = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 3), p)
    with pytest.raises(ConversionError, match="refusing to load global 'torch.nn"):
        torch_zip.TorchZipSource.open(p)


@pytest.mark.parametrize("case", ["not_zip", "legacy", "no_pickle", "truncated", "missing_storage",
                                  "view_out_of_range", "not_a_dict", "garbage_pickle"])
def test_bad_archives_give_clear_errors(tmp_path, case):
    p = tmp_path / f"{case}.pt"
    if case == "not_zip":
        p.write_bytes(b"hello")
        words = ["not a torch zip archive"]
    elif case == "legacy":
        torch.save({"a": torch.ones(2)}, p, _use_new_zipfile_serialization=False)
        words = ["legacy", "not supported"]
    elif case == "no_pickle":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/version", b"3\n")
        words = ["data.pkl"]
    elif case == "truncated":
        torch.save({"a": torch.ones(1000)}, p)
        p.write_bytes(p.read_bytes()[:-300])
        words = [p.name]
    elif case == "missing_storage":
        torch.save({"a": torch.ones(3)}, p)
        with zipfile.ZipFile(p) as z:
            items = [(i.filename, z.read(i.filename)) for i in z.infolist() if not i.filename.endswith("data/0")]
        with zipfile.ZipFile(p, "w") as z:
            for n, b in items:
                z.writestr(n, b)
        words = ["storage '0'", "lacks"]
    elif case == "view_out_of_range":
        # a view reaching past its 3-element storage (offset 2, size 2)
        payload = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a"
                   b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
                   b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x03tQK\x02K\x02\x85K\x01\x85\x89ccollections\n"
                   b"OrderedDict\n)RtRu.")
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", payload)
            z.writestr("archive/data/0", np.zeros(3, np.float32).tobytes())
        words = ["reaches past its storage"]
    elif case == "not_a_dict":
        torch.save([torch.ones(2)], p)
        words = ["expected a state dict"]
    else:
        _zip_with_pickle(p, b"\x80\x02}q\x00(X\x01")
        words = ["corrupt or unsupported pickle"]
    with pytest.raises(ConversionError) as ei:
        src = torch_zip.TorchZipSource.open(p)
        for n in src.names():  # a truncated storage shows when it is read
            src.float32(n)
    msg = str(ei.value)
    print(f"{case}: {msg}")
    for w in words:
        assert w in msg, (case, msg)


# ------------------------------------------------------------------------------------------------
# YAML: tags are data, never code
# ------------------------------------------------------------------------------------------------

def test_yaml_tags_are_plain_data(tmp_path):
    marker = tmp_path / "yaml_pwned"
    p = tmp_path / "flow.yaml"
    p.write_text(
        "sr: 24000\n"
        "flow: !new:os.system\n"
        f"    command: touch {marker}\n"
        "    rate: !ref <sr>\n"
        "    listed: !new:builtins.list [1, 2]\n"
        "    fn: !name:os.remove\n", encoding="utf-8")
    data = asset_yaml.load_plain_yaml(p)
    assert data == {"sr": 24000, "flow": {"command": f"touch {marker}", "rate": 24000, "listed": [1, 2],
                                          "fn": ""}}
    assert not marker.exists()


@pytest.mark.parametrize("text,words", [
    ("flow: !!python/object/apply:os.system ['touch {m}']\n", ["invalid YAML", "python/object/apply"]),
    ("flow: !!python/name:os.system ''\n", ["invalid YAML"]),
    ("flow: !ref <nowhere>\n", ["!ref <nowhere>", "no top-level key"]),
    ("- 1\n- 2\n", ["expected a mapping"]),
    ("flow: [1, 2\n", ["invalid YAML"]),
])
def test_yaml_python_tags_and_bad_files_are_refused(tmp_path, text, words):
    marker = tmp_path / "yaml_pwned2"
    p = tmp_path / "flow.yaml"
    p.write_text(text.format(m=marker), encoding="utf-8")
    with pytest.raises(ConversionError) as ei:
        asset_yaml.load_plain_yaml(p)
    for w in words:
        assert w in str(ei.value), str(ei.value)
    assert not marker.exists()
