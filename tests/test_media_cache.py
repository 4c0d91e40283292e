"""Media decoded once per object across the turns of a conversation (minicpmo_cpp.media_cache):
an image or audio given by an immutable source (file path, data URI, bytes, content dict of those)
is decoded once, handed out read-only, and known to the native side by a content key; a rewritten
file, an array or a PIL image is decoded (and hashed) again. The replies must not change: the
same conversation given as arrays (pixels hashed natively, nothing cached) is the reference."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

import minicpmo_cpp.media_cache as media_cache
from minicpmo_cpp import OmniSession
from minicpmo_cpp.media import load_image
from minicpmo_cpp.audio_input import load_audio
from minicpmo_cpp.media_cache import MediaCache

GREEDY = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=4)


def _png(path, seed: int, size=(40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _counting(loader, calls: list):
    def load(obj):
        calls.append(obj)
        return loader(obj)
    return load


def test_a_file_is_decoded_once_while_the_conversation_keeps_it(tmp_path):
    path = tmp_path / "a.png"
    pixels = _png(path, 1)
    cache, calls = MediaCache(), []
    load = _counting(load_image, calls)
    a, key = cache.get("image", str(path), load)
    cache.end_turn()
    b, key2 = cache.get("image", str(path), load)
    assert len(calls) == 1 and b is a and key2 == key != 0
    np.testing.assert_array_equal(a, pixels)
    assert not a.flags.writeable  # handed out again: read-only
    # a rewritten file is a new image (new size or time), decoded again with a new key
    cache.end_turn()
    pixels = _png(path, 2, size=(41, 30))
    c, key3 = cache.get("image", str(path), load)
    assert len(calls) == 2 and key3 not in (0, key)
    np.testing.assert_array_equal(c, pixels)


def test_entries_a_turn_does_not_use_are_dropped(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for i, p in enumerate(paths):
        _png(p, i)
    cache, calls = MediaCache(), []
    load = _counting(load_image, calls)
    for p in paths:
        cache.get("image", p, load)
    cache.end_turn()
    cache.get("image", paths[0], load)  # the next turn keeps only the first
    cache.end_turn()
    cache.get("image", paths[1], load)
    assert [os.fspath(c) for c in calls] == [os.fspath(paths[0]), os.fspath(paths[1]), os.fspath(paths[1])]


def test_mutable_sources_are_not_cached():
    cache, calls = MediaCache(), []
    load = _counting(load_image, calls)
    arr = np.zeros((8, 8, 3), np.uint8)
    for obj in (arr, Image.fromarray(arr), bytearray(b"x")):
        assert media_cache._frozen(obj) is None
    got, key = cache.get("image", arr, load)
    assert key == 0 and got.flags.writeable
    pcm = np.zeros(1600, np.float32)
    assert cache.get("audio", (pcm, 16000), load_audio)[1] == 0


def test_immutable_sources_and_parts_have_keys(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 5, 3), 7, np.uint8)).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    part = {"type": "image_url", "image_url": {"url": uri}}
    cache, calls = MediaCache(), []
    load = _counting(load_image, calls)
    keys = {cache.get("image", obj, load)[1] for obj in (buf.getvalue(), uri, part)}
    assert 0 not in keys and len(keys) == 3  # three sources, three entries
    assert cache.get("image", dict(part), load)[1] in keys  # an equal dict is the same source
    assert len(calls) == 3


@pytest.fixture(scope="module")
def omni(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=4096, kv_cache_type="f32")


def test_replies_are_those_of_the_same_media_as_arrays(omni, tmp_path, monkeypatch):
    import minicpmo_cpp.messages as messages

    decoded_files = []
    load = messages.load_image
    monkeypatch.setattr(messages, "load_image", _counting(load, decoded_files))
    paths = [tmp_path / "x.png", tmp_path / "y.png"]
    arrays = [_png(p, 10 + i, size=(70, 50)) for i, p in enumerate(paths)]
    parts = [{"type": "image", "image": str(p)} for p in paths]  # file paths: decoded once, cached
    replies = []
    for first_image, second_image in ((parts[0], parts[1]), (arrays[0], arrays[1])):
        omni.reset()
        conv = [{"role": "user", "content": [first_image, "What is it?"]}]
        first = omni.chat(conv, max_slice_nums=1, **GREEDY)
        assert omni.last_prefill[1] > 64  # the image's rows are in the prompt
        conv += [{"role": "assistant", "content": first},
                 {"role": "user", "content": [first_image, second_image, "And these?"]}]
        second = omni.chat(conv, max_slice_nums=1, **GREEDY)
        reused, decoded = omni.last_prefill
        replies.append((str(first), str(second), reused))
        if first_image is parts[0]:  # the second turn decoded only its new file
            assert [d["image"] for d in decoded_files] == [str(paths[0]), str(paths[1])]
    assert replies[0][:2] == replies[1][:2]
    # the second turn kept the first turn's prompt (with its image) in the cache in both forms
    assert replies[0][2] == replies[1][2] > 64
