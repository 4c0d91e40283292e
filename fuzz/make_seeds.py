#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: OUT/<target>/<name> (small files, made here from
scratch; deterministic). Used by scripts/fuzz.sh and replayed by tests/test_fuzz_replay.py.

    python fuzz/make_seeds.py OUT_DIR

Needs numpy, Pillow and soundfile (the package's own dependencies) and the gguf package.
The GGUF seeds include hand-written headers with the shapes of past llama.cpp GGUF CVEs: huge
key and tensor counts, huge string and array lengths, tensor offsets and sizes that overflow,
n_dims > 4, unknown types, a bad alignment."""

from __future__ import annotations

import io
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

# GGUF value types (gguf.h)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
U64_MAX = 2**64 - 1


# ---- GGUF written by hand, byte by byte (so malformed headers can be made) ----
def _s(text: str | bytes, length: int | None = None) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b) if length is None else length) + b


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _tensor_info(name: str, dims: list[int], ttype: int, offset: int) -> bytes:
    return _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ttype, offset)


def _gguf(kvs: list[bytes], tensors: list[bytes], data: bytes = b"", n_kv: int | None = None,
          n_tensors: int | None = None, version: int = 3, align: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % align
    return body + b"\0" * pad + data


def _arch(name: str) -> bytes:
    return _kv("general.architecture", STR, _s(name))


def _omni_keys() -> list[bytes]:
    comps = [b"vision", b"audio"]
    return [_arch("minicpmo-omni"), _kv("minicpmo.version", STR, _s("4.5")),
            _kv("minicpmo.llm.embedding_length", U32, struct.pack("<I", 64)),
            _kv("minicpmo.components", ARR, struct.pack("<IQ", STR, len(comps)) + b"".join(_s(c) for c in comps)),
            _kv("minicpmo.bad_token_ids", ARR, struct.pack("<IQ", I32, 2) + struct.pack("<ii", 5, 7))]


def gguf_cve_seeds() -> dict[str, bytes]:
    """Malformed GGUF headers, after the shapes of past llama.cpp GGUF advisories."""
    f32 = 0
    ok_tensor = _tensor_info("v.w", [4, 2], f32, 0)
    data = np.arange(8, dtype=np.float32).tobytes()
    return {
        "cve_huge_n_kv": _gguf(_omni_keys(), [], n_kv=2**62),
        "cve_huge_n_tensors": _gguf(_omni_keys(), [], n_tensors=2**62),
        "cve_n_tensors_wraps_alloc": _gguf(_omni_keys(), [ok_tensor], data, n_tensors=2**61 + 1),
        "cve_huge_key_length": _gguf([_s("general.architecture", U64_MAX)], []),
        "cve_huge_string_value": _gguf([_kv("general.architecture", STR, _s("minicpmo-omni", 2**63))], []),
        "cve_huge_array": _gguf([_kv("minicpmo.components", ARR, struct.pack("<IQ", STR, 2**62))], []),
        "cve_huge_int_array": _gguf([_kv("minicpmo.bad_token_ids", ARR, struct.pack("<IQ", I32, 2**62 - 1))], []),
        "cve_array_of_arrays": _gguf([_kv("x", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U8, 1) + b"\1")], []),
        "cve_bad_value_type": _gguf([_kv("x", 99, b"\0" * 8)], []),
        "cve_duplicate_key": _gguf([_arch("minicpmo-omni"), _arch("minicpmo-omni")], []),
        "cve_n_dims_5": _gguf(_omni_keys(), [_tensor_info("v.w", [2, 2, 2, 2, 2], f32, 0)], data * 4),
        "cve_n_dims_huge": _gguf(_omni_keys(), [_s("v.w") + struct.pack("<I", 2**31) + b"\1" * 64], data),
        "cve_dim_product_overflow": _gguf(_omni_keys(), [_tensor_info("v.w", [2**62, 2**62, 4], f32, 0)], data),
        "cve_dim_negative": _gguf(_omni_keys(), [_tensor_info("v.w", [2**64 - 4, 2], f32, 0)], data),
        "cve_dim_zero": _gguf(_omni_keys(), [_tensor_info("v.w", [0, 2], f32, 0)], data),
        "cve_offset_past_end": _gguf(_omni_keys(), [_tensor_info("v.w", [4, 2], f32, 2**20)], data),
        "cve_offset_wraps": _gguf(_omni_keys(), [_tensor_info("v.w", [4, 2], f32, U64_MAX - 31)], data),
        "cve_offset_misaligned": _gguf(_omni_keys(), [_tensor_info("v.w", [4, 2], f32, 3)], data),
        "cve_overlapping_tensors": _gguf(_omni_keys(), [ok_tensor, _tensor_info("v.b", [4, 2], f32, 0)], data),
        "cve_duplicate_tensor": _gguf(_omni_keys(), [ok_tensor, ok_tensor], data + data),
        "cve_bad_tensor_type": _gguf(_omni_keys(), [_tensor_info("v.w", [4, 2], 1000, 0)], data),
        "cve_block_type_bad_row": _gguf(_omni_keys(), [_tensor_info("v.w", [5, 2], 2, 0)], data),  # Q4_0, 5 % 32
        "cve_alignment_zero": _gguf([_kv("general.alignment", U32, struct.pack("<I", 0))] + _omni_keys(), [ok_tensor], data),
        "cve_alignment_not_pow2": _gguf([_kv("general.alignment", U32, struct.pack("<I", 48))] + _omni_keys(), [ok_tensor], data),
        "cve_version_1": _gguf(_omni_keys(), [], version=1),
        "cve_version_huge": _gguf(_omni_keys(), [], version=2**31),
        "cve_truncated_header": _gguf(_omni_keys(), [ok_tensor], data)[:40],
        "cve_truncated_data": _gguf(_omni_keys(), [ok_tensor], data)[:-5],
        "cve_empty_name": _gguf(_omni_keys(), [_tensor_info("", [4, 2], f32, 0)], data),
        "cve_long_name": _gguf(_omni_keys(), [_tensor_info("v." + "x" * 200, [4, 2], f32, 0)], data),
        "magic_only": b"GGUF",
        "empty": b"",
    }


def gguf_valid_seeds(tmp: Path) -> dict[str, dict[str, bytes]]:
    """Small well-formed files through the gguf package: an omni companion and a qwen3 LLM."""
    import gguf

    out: dict[str, dict[str, bytes]] = {"omni": {}, "llm": {}}
    rng = np.random.default_rng(0)

    w = gguf.GGUFWriter(str(tmp / "omni.gguf"), "minicpmo-omni")
    w.add_string("minicpmo.version", "4.5")
    w.add_uint32("minicpmo.llm.embedding_length", 64)
    w.add_array("minicpmo.components", ["vision", "audio", "tts"])
    w.add_array("minicpmo.bad_token_ids", [1, 2, 3])
    w.add_float32("minicpmo.tts.temperature", 0.8)
    w.add_bool("minicpmo.vision.use_slices", True)
    w.add_tensor("v.patch_embd.weight", rng.standard_normal((8, 12)).astype(np.float32))
    w.add_tensor("v.pos_embd", rng.standard_normal((4, 8)).astype(np.float16))
    w.add_tensor("a.mel_filters", rng.random((3, 5)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out["omni"]["omni_valid"] = (tmp / "omni.gguf").read_bytes()

    # a one-layer qwen3 with a 16-token BPE vocabulary holding the chat tokens
    n_embd, n_head, n_kv, head, n_ff = 8, 2, 1, 4, 16
    tokens = ["a", "b", "c", "ab", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "\n", " ", "h", "i", "hi",
              "Ġ", "Ċ", "x", "y"]
    w = gguf.GGUFWriter(str(tmp / "llm.gguf"), "qwen3")
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head)
    w.add_value_length(head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 4 + [3, 3, 3] + [1] * 9)
    w.add_token_merges(["a b", "h i"])
    w.add_eos_token_id(5)
    w.add_bos_token_id(6)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", f(len(tokens), n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.attn_q.weight", f(n_head * head, n_embd))
    w.add_tensor("blk.0.attn_k.weight", f(n_kv * head, n_embd))
    w.add_tensor("blk.0.attn_v.weight", f(n_kv * head, n_embd))
    w.add_tensor("blk.0.attn_output.weight", f(n_embd, n_head * head))
    w.add_tensor("blk.0.attn_q_norm.weight", np.ones(head, np.float32))
    w.add_tensor("blk.0.attn_k_norm.weight", np.ones(head, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", f(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", f(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", f(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    llm = (tmp / "llm.gguf").read_bytes()
    out["llm"]["llm_valid"] = llm
    out["llm"]["llm_truncated"] = llm[: len(llm) - 100]
    return out


def image_seeds() -> dict[str, bytes]:
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    out = {}
    for fmt, name, mode in [("PNG", "rgb.png", "RGB"), ("PNG", "gray_alpha.png", "LA"), ("PNG", "palette.png", "P"),
                            ("JPEG", "rgb.jpg", "RGB"), ("JPEG", "gray.jpg", "L"), ("BMP", "rgb.bmp", "RGB"),
                            ("GIF", "pal.gif", "P"), ("TGA", "rgb.tga", "RGB"), ("PPM", "rgb.ppm", "RGB"),
                            ("PPM", "gray.pgm", "L")]:
        b = io.BytesIO()
        img.convert(mode).save(b, fmt)
        out[name] = b.getvalue()
    b = io.BytesIO()
    img.save(b, "JPEG", progressive=True)
    out["progressive.jpg"] = b.getvalue()
    # header claims a huge image (the size limit check runs before decoding)
    png = bytearray(out["rgb.png"])
    png[16:24] = struct.pack(">II", 100000, 3)
    out["huge_header.png"] = bytes(png)
    out["empty"] = b""
    return out


def audio_seeds() -> dict[str, bytes]:
    import soundfile as sf

    t = np.arange(800) / 8000.0
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([mono, -mono], axis=1)
    out = {}
    for name, data, rate, fmt, sub in [("pcm16.wav", mono, 16000, "WAV", "PCM_16"),
                                       ("pcm8.wav", mono, 8000, "WAV", "PCM_U8"),
                                       ("pcm24_stereo.wav", stereo, 44100, "WAV", "PCM_24"),
                                       ("pcm32.wav", mono, 22050, "WAV", "PCM_32"),
                                       ("float.wav", stereo, 48000, "WAV", "FLOAT"),
                                       ("double.wav", mono, 11025, "WAV", "DOUBLE"),
                                       ("pcm16.flac", stereo, 16000, "FLAC", "PCM_16"),
                                       ("pcm24.flac", mono, 96000, "FLAC", "PCM_24")]:
        b = io.BytesIO()
        sf.write(b, data, rate, format=fmt, subtype=sub)
        out[name] = b.getvalue()
    try:
        b = io.BytesIO()
        sf.write(b, mono, 16000, format="MP3")
        out["mono.mp3"] = b.getvalue()
    except Exception:  # libsndfile without MP3 encoding: the WAV and FLAC seeds still cover the decoders
        pass
    wav = bytearray(out["pcm16.wav"])
    wav[40:44] = struct.pack("<I", 2**31)  # data chunk longer than the file
    out["data_size_huge.wav"] = bytes(wav)
    out["empty"] = b""
    return out


def resample_seeds() -> dict[str, bytes]:
    def seed(mode, rin, rout, ch, samples):
        return struct.pack("<BIIB", mode, rin, rout, ch) + np.asarray(samples, np.float32).tobytes()

    s = np.sin(np.arange(64) / 3.0)
    return {"44k_to_16k": seed(0, 44100, 16000, 1, s), "8k_to_16k_stereo": seed(0, 8000, 16000, 1, s),
            "odd_rate": seed(0, 44101, 16000, 0, s), "nan": seed(0, 22050, 16000, 0, [0.0, float("nan")]),
            "zero_rate": seed(0, 0, 16000, 0, s), "negative_rate": seed(2, 2**32 - 5, 16000, 0, s)}


def preprocess_seeds() -> dict[str, bytes]:
    def seed(w, h, scale, patch, slices, pix):
        return struct.pack("<HHHHHB", w, h, scale, patch, slices, 0) + bytes(pix)

    return {"square": seed(30, 30, 28, 14, 9, range(200)), "wide": seed(300, 20, 56, 14, 9, range(256)),
            "tall": seed(3, 900, 56, 14, 4, range(17)), "no_slices": seed(100, 60, 112, 14, 1, [7] * 9),
            "default": seed(40, 30, 448, 14, 9, range(256))}


def utf8_seeds() -> dict[str, bytes]:
    return {"valid": b"\x00hello \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80",
            "invalid": b"\x03ab\xe4\xb8\xc3\xff\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf",
            "split4": b"\x02\xf0\x9f\x98\x80\xf0\x9f"}


def main(out_dir: str) -> None:
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        valid = gguf_valid_seeds(Path(tmp))
    cve = gguf_cve_seeds()
    sets = {
        "fuzz_omni_file": {**cve, **valid["omni"]},
        "fuzz_llm_gguf": {**{k: v.replace(b"minicpmo-omni", b"qwen3\0\0\0\0\0\0\0\0") for k, v in cve.items()},
                          **valid["llm"]},
        "fuzz_image_file": image_seeds(),
        "fuzz_audio_file": audio_seeds(),
        "fuzz_resample": resample_seeds(),
        "fuzz_image_preprocess": preprocess_seeds(),
        "fuzz_utf8": utf8_seeds(),
    }
    for target, files in sets.items():
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / f"seed_{name}").write_bytes(data)
    print(f"seeds: {sum(len(v) for v in sets.values())} files in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
