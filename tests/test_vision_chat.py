"""Image chat end to end on the tiny model: the prompt's token layout (spec §1.3 / §4.4), the image
embeddings injected at the <unk> spans (checked against the numpy reference of vision + LLM),
KV-cache reuse across turns, few-shot image ids, video-style prompts, the C API, the CLI and bad
image inputs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minicpmo_cpp
from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from c_demos import build_c_demo

from reference import vision as vref
from backend import SESSION

PKG_DIR = Path(minicpmo_cpp.__file__).parent
UNK = 128244
IMAGE_MARKER = "<image>./</image>"


def _image(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: resampling has something to do and slices differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h - 2, 1))], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vsession(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


def _expected_ids(session: OmniSession, msgs, images, use_image_id=True, max_slice_nums=9) -> list[int]:
    """Render with the template, replace each marker with the reference placeholder text and
    tokenize the whole string: an independent route to the same ids."""
    text = session.apply_chat_template(msgs)
    for k, im in enumerate(images):
        grid = vref.get_sliced_grid((im.shape[1], im.shape[0]), max_slice_nums, 448)
        text = text.replace(IMAGE_MARKER, vref.image_placeholder_text(grid, k, use_image_id), 1)
    assert IMAGE_MARKER not in text
    return session.tokenize(text)


@pytest.mark.parametrize("size", [(448, 448), (640, 480), (1024, 768), (1920, 1080), (300, 2000)])
def test_prompt_layout_matches_spec(vsession, size):
    img = _image(*size, seed=1)
    msgs = [{"role": "user", "content": [img, "What is in the picture?"]}]
    ids = vsession.prompt_token_ids(msgs)
    assert ids == _expected_ids(vsession, msgs, [img])
    tokens_per_image = {(448, 448): 64, (640, 480): 192, (1024, 768): 320, (1920, 1080): 576, (300, 2000): 320}
    assert ids.count(UNK) == tokens_per_image[size]  # spec §1.2 worked examples


def test_prompt_literal_of_spec_4_4(vsession):
    """The literal image-chat prompt of spec §4.4 (a 2x2 grid)."""
    img = _image(1024, 768, seed=2)
    ids = vsession.prompt_token_ids([{"role": "user", "content": [img, "Q"]}])
    u = "<unk>" * 64
    literal = ("<|im_start|>user\n<image_id>0</image_id><image>" + u + "</image><slice>" + u + "</slice><slice>" + u +
               "</slice>\n<slice>" + u + "</slice><slice>" + u + "</slice>\nQ<|im_end|>\n<|im_start|>assistant\n"
               "<think>\n\n</think>\n\n")
    assert ids == vsession.tokenize(literal)


def test_few_shot_ids_and_video_layout(vsession):
    a, b, c = _image(500, 400, 3), _image(300, 300, 4), _image(640, 480, 5)
    msgs = [{"role": "user", "content": [a, "first"]}, {"role": "assistant", "content": "one"},
            {"role": "user", "content": [b, c, "and these?"]}]
    assert vsession.prompt_token_ids(msgs) == _expected_ids(vsession, msgs, [a, b, c])
    # video style: frames without ids, one source image each
    frames = [_image(640, 360, 10 + i) for i in range(3)]
    vmsgs = [{"role": "user", "content": [*frames, "what happens?"]}]
    ids = vsession.prompt_token_ids(vmsgs, max_slice_nums=1, use_image_id=False)
    assert ids == _expected_ids(vsession, vmsgs, frames, use_image_id=False, max_slice_nums=1)
    assert ids.count(UNK) == 3 * 64


def test_chat_logits_match_reference(vsession, tiny_state, tiny_ref):
    """Greedy chat's first-step logits = the numpy Qwen3 reference run on token embeddings with the
    numpy vision reference's rows at the image spans (F32 model, F32 KV: 1e-4 relative, as the
    text-only logits test)."""
    sd, cfg = tiny_state
    img = _image(640, 480, seed=6)  # 2x1 grid: source + 2 slices
    msgs = [{"role": "user", "content": [img, "Describe it."]}]
    ids = vsession.prompt_token_ids(msgs)
    rows = vref.encode_image(sd, cfg, img, 9)
    embd = tiny_ref.embed[np.asarray(ids)].copy()
    pos = [i for i, t in enumerate(ids) if t == UNK]
    assert len(pos) == rows.shape[0]
    embd[pos] = rows
    ref_logits, _ = tiny_ref.forward_embeddings(embd, logits_all=False)

    vsession.reset()
    vsession.chat(msgs, max_new_tokens=0)
    got = _testing.hooks(vsession).last_logits()[0]
    err = np.max(np.abs(got - ref_logits[0])) / np.max(np.abs(ref_logits[0]))
    assert err < 1e-4, err


def test_kv_cache_reuses_images_across_turns(vsession):
    img, other = _image(640, 480, 7), _image(640, 480, 8)
    greedy = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=4)
    vsession.reset()
    msgs = [{"role": "user", "content": [img, "Describe it."]}]
    r1 = vsession.chat(msgs, **greedy)
    last_unk = max(i for i, t in enumerate(vsession.prompt_token_ids(msgs)) if t == UNK)
    msgs2 = msgs + [{"role": "assistant", "content": r1}, {"role": "user", "content": "More?"}]
    vsession.chat(msgs2, **greedy)
    reused, _ = vsession.last_prefill
    assert reused > last_unk  # the image's positions stayed in the cache
    # the same layout with other pixels must not reuse the image positions
    msgs3 = [{"role": "user", "content": [other, "Describe it."]}] + msgs2[1:]
    vsession.chat(msgs3, **greedy)
    reused3, _ = vsession.last_prefill
    first_unk = vsession.prompt_token_ids(msgs3).index(UNK)
    assert reused3 <= first_unk


def test_image_forms_give_same_prompt_and_embeddings(vsession, tmp_path):
    img = _image(320, 240, 9)
    path = tmp_path / "im.png"
    Image.fromarray(img).save(path)
    ref = vsession.encode_image(img)
    for form in (Image.fromarray(img), str(path), {"type": "image_url", "image_url": {"url": str(path)}}):
        np.testing.assert_array_equal(vsession.encode_image(form), ref)


@pytest.fixture(scope="module")
def image_demo(tmp_path_factory) -> Path:
    return build_c_demo("image_demo", tmp_path_factory.mktemp("capi_image"))


def _reply(out: bytes, tag: str) -> str:
    m = re.search(rb"^" + tag.encode() + rb" (\d+)\n", out, re.M)
    assert m, out
    return out[m.end(): m.end() + int(m.group(1))].decode("utf-8")


def test_c_api_and_cli_match_python(tiny_f32, image_demo, tmp_path):
    model = str(tiny_f32[0])
    img = _image(640, 480, 11)
    raw, png = tmp_path / "im.rgb", tmp_path / "im.png"
    raw.write_bytes(img.tobytes())
    Image.fromarray(img).save(png)
    prompt, n = "What is this?", 8
    s = OmniSession(model, n_threads=2, n_ctx=2048)
    expected = s.chat([{"role": "user", "content": [img, prompt]}], do_sample=False, repetition_penalty=1.0,
                      max_new_tokens=n)
    res = subprocess.run([str(image_demo), model, str(raw), "640", "480", prompt, str(n)], capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert _reply(res.stdout, "REPLY") == expected
    assert _reply(res.stdout, "LOWLEVEL") == expected
    out = res.stdout.decode()
    assert re.search(r"^BAD:invalid argument:.*size", out, re.M), out
    assert re.search(r"^PREPARE_BAD:invalid argument:.*must be >= 1, got 640x0", out, re.M), out
    assert re.search(r"^COUNT:invalid argument:.*image placeholder", out, re.M), out

    cli = shutil.which("minicpmo-cli")
    res = subprocess.run([cli, "-m", model, "--image", str(png), "-p", prompt, "-n", str(n), "--temp", "0",
                          "--repeat-penalty", "1", "-c", "2048", "-t", "2"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout.decode() == expected + "\n"


def test_cli_bad_image_files(tiny_f32, tmp_path):
    cli = shutil.which("minicpmo-cli")
    trunc = tmp_path / "trunc.png"
    buf = tmp_path / "ok.png"
    Image.fromarray(_image(64, 64, 12)).save(buf)
    trunc.write_bytes(buf.read_bytes()[:100])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for path, message in ((tmp_path / "missing.png", "does not exist"), (trunc, "trunc.png"),
                          (text, "is not an image that can be read")):
        res = subprocess.run([cli, "-m", str(tiny_f32[0]), "--image", str(path), "-p", "hi"], capture_output=True,
                             timeout=60)
        assert res.returncode == 1
        assert message in res.stderr.decode(), res.stderr.decode()
    res = subprocess.run([cli, "-m", str(tiny_f32[0]), "--max-slices", "0", "-p", "hi"], capture_output=True, timeout=60)
    assert res.returncode == 2 and "--max-slices" in res.stderr.decode()


def test_bad_image_inputs(vsession, tiny_f32, tmp_path):
    with pytest.raises(MinicpmoError, match="uint8"):
        vsession.encode_image(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(MinicpmoError):
        vsession.encode_image(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(MinicpmoError):
        vsession.encode_image(np.zeros((20000, 2, 3), np.uint8))  # beyond the 16384-pixel side limit
    with pytest.raises(MinicpmoError, match="max_slice_nums"):
        vsession.encode_image(_image(64, 64, 1), max_slice_nums=0)
    tiny = vsession.encode_image(np.full((1, 1, 3), 7, np.uint8))  # 1x1 is legal: upscaled to 448x448
    assert tiny.shape == (64, 64)
    # a marker typed by the user without an image is a clear error, not a crash
    with pytest.raises(MinicpmoError, match="placeholder"):
        vsession.chat([{"role": "user", "content": [_image(64, 64, 1), "see " + IMAGE_MARKER]}], max_new_tokens=1)
    # a model without its companion says images need it
    lonely = tmp_path / "llm_only.gguf"
    lonely.write_bytes(Path(tiny_f32[0]).read_bytes())
    with pytest.warns(UserWarning, match="loaded text-only"):
        s = OmniSession(str(lonely), n_threads=2, n_ctx=512)
    with pytest.raises(MinicpmoError, match="omni"):
        s.chat([{"role": "user", "content": [_image(64, 64, 1), "hi"]}], max_new_tokens=1)


def test_two_sessions_one_model_same_embeddings(tiny_f32):
    img = _image(640, 480, 13)
    a = OmniSession(str(tiny_f32[0]), n_threads=1, n_ctx=512)
    b = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=512)
    np.testing.assert_allclose(a.encode_image(img), b.encode_image(img), rtol=0, atol=1e-5)
