"""Converters for MiniCPM-o 4.5 (package `minicpmo_cpp.convert`).

    convert_checkpoint(hf_dir, out_dir, outtype="f16", name="MiniCPM-o-4_5", *, token2wav_dir=None,
                       voice_wav=None, voice_npz=None, voices=()) -> (llm_path, omni_path)
    add_voices(omni_path, [(name, wav_or_npz), ...], token2wav_dir) -> omni_path
    make_tiny_checkpoint(out_dir, seed=0, vocab_gguf=None) -> Path

Only relative imports inside this package: it is vendored into the wheel under another name.
"""

from typing import Any

from .errors import ConversionError
from .pipeline import DEFAULT_NAME, convert_checkpoint, output_names
from .voice_gguf import add_voices

__all__ = ["ConversionError", "DEFAULT_NAME", "add_voices", "convert_checkpoint", "make_tiny_checkpoint",
           "output_names"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m ...convert.make_tiny` does not import the module twice.
    if name == "make_tiny_checkpoint":
        from .make_tiny import make_tiny_checkpoint

        return make_tiny_checkpoint
    raise AttributeError(name)
