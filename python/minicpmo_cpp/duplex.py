"""Full-duplex conversation over an OmniSession (spec §6.2-6.5), the LLM side.

Every second the caller hands over what the model heard (1 s of 16 kHz audio) and saw (a frame),
``streaming_prefill``; then ``streaming_generate`` lets the model decide whether to listen or to
speak for that second and returns what it said. The spoken text tokens and their LLM hidden states
come out with the result for the speech decoder (``speak_token_ids`` / ``speak_hidden``).
"""

from __future__ import annotations


import numpy as np

from . import _core
from ._core import MinicpmoError
from .defaults import DUPLEX, DUPLEX_UNIT
from .audio_input import load_audio
from .media import load_image

_DECODE_MODES = ("sampling", "greedy")


class DuplexSession:
    """The duplex protocol over the KV cache of ``omni_session`` (made by ``OmniSession.as_duplex``).

    ``sliding_window`` picks the spec's window (§6.5): False / "off" for none; True / "basic": after
    a unit, when the cache holds more than ``window_high`` positions, whole oldest units after the
    system prompt are dropped until at most ``window_low`` remain; "context": after a unit, while
    more than ``context_max_units`` units are in the cache the oldest is dropped, and the text it
    spoke is kept as ``context_previous_marker`` + text (its last ``context_previous_max_tokens``
    tokens) between the prefix (prefix text + reference audio) and the suffix of the system prompt.
    ``seed`` seeds the sampling (None: the session's seed source).

    ``generate_audio`` (default: when the model file has the speech components) speaks the speaking
    units: each unit's text tokens and LLM hidden states go through the speech decoder's duplex
    layout and streaming Token2Wav with ``voice`` (a voice of the model file; None = its default),
    on a thread of the session, and ``streaming_generate`` returns the unit's 24 kHz
    ``audio_waveform`` (one second of silence for a listening unit).

    The conversation shares its OmniSession's one-call-at-a-time rule (a call while another thread
    is inside one raises "session is busy"). ``close()`` (or ``with omni.as_duplex() as d:``)
    stops the speech threads; closing the OmniSession closes its duplex conversations.
    """

    def __init__(self, omni_session, native_session, seed: int, has_speech: bool, sliding_window: bool | str = False,
                 window_high: int = DUPLEX.window_high, window_low: int = DUPLEX.window_low,
                 generate_audio: bool | None = None, voice=None,
                 context_max_units: int = DUPLEX.context_max_units,
                 context_previous_max_tokens: int = DUPLEX.context_previous_max_tokens,
                 context_previous_marker: str = DUPLEX.context_previous_marker):
        # omni_session: the OmniSession (public calls only); native_session: its native session,
        # whose KV cache and call guard the conversation shares
        self._omni = omni_session
        self._native = native_session
        self._seed = int(seed)
        mode = self._window_mode(sliding_window)
        self._duplex = _core.DuplexSession(native_session, False, int(window_high), int(window_low), self._seed,
                                           window_mode=mode, context_max_units=int(context_max_units),
                                           context_previous_max_tokens=int(context_previous_max_tokens),
                                           context_previous_marker=str(context_previous_marker))
        self._window = mode
        self._context_marker = str(context_previous_marker)
        self._generate_audio = bool(has_speech if generate_audio is None else generate_audio)
        # a cloned voice (Voice or recording) is kept alive by the conversation
        self._voice, self._cloned = omni_session._voice_for_call(voice)
        self._duplex.set_speech(self._generate_audio, self._voice, self._seed)
        self._closed = False

    def close(self) -> None:
        """Stops the speech threads (speech not taken yet is dropped) and ends the conversation;
        the OmniSession stays usable. Later calls on this object raise ``MinicpmoError``."""
        if self._closed:
            return
        if not self._omni.closed:
            with self._native.hold("duplex close"):
                self._duplex.close()
        self._closed = True

    def __enter__(self) -> "DuplexSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, what: str):
        if self._closed:
            raise MinicpmoError(f"{what}: the duplex conversation is closed")
        return self._native.hold(what)

    @property
    def generate_audio(self) -> bool:
        return self._generate_audio

    @property
    def sample_rate(self) -> int:
        """Sample rate of ``audio_waveform`` (24000)."""
        return self._native.speech_sample_rate

    def prepare(self, prefix_system_prompt: str | None = None, suffix_system_prompt: str | None = None,
                ref_audio=None, voice=None, generate_audio: bool | None = None,
                frame_size: tuple[int, int] | None = None) -> str:
        """Starts a conversation: clears the cache and the audio streams, then feeds the prefix
        (e.g. ``"<|im_start|>system\\nStreaming Omni Conversation.\\n<|audio_start|>"``), the
        reference voice's audio embeddings (any form ``load_audio`` takes; None for none) and the
        suffix (e.g. ``"<|audio_end|><|im_end|>"``). Like the official duplex demo, the reference also
        becomes the spoken voice (cloned, when the model file holds the voice encoders) unless ``voice``
        names one. ``voice``: as in ``OmniSession.chat``. ``frame_size``: ``(width, height)`` of the
        camera frames the conversation will send, if any: the vision tower is readied for them now
        (``OmniSession.prepare_images``), not at the first frame. Returns the prompt as text, the audio
        shown as ``[audio embedding]``."""
        pcm = None if ref_audio is None else load_audio(ref_audio)
        if frame_size is not None:  # first: a bad size leaves the conversation as it was
            if not isinstance(frame_size, (tuple, list)) or len(frame_size) != 2:
                raise MinicpmoError(f"frame_size must be (width, height), got {frame_size!r}")
            if self._closed:
                raise MinicpmoError("duplex prepare: the duplex conversation is closed")
            self._omni.prepare_images(frame_size[0], frame_size[1], max_slice_nums=1)
        if voice is None and ref_audio is not None and self._generate_audio and self._omni.can_clone_voices:
            voice = ref_audio
        prefix = prefix_system_prompt or ""
        suffix = suffix_system_prompt or ""
        with self._request("duplex prepare"):
            if voice is not None or generate_audio is not None:
                if generate_audio is not None:
                    self._generate_audio = bool(generate_audio)
                if voice is not None:
                    self._voice, self._cloned = self._omni._voice_for_call(voice)
                self._duplex.set_speech(self._generate_audio, self._voice, self._seed)
            self._duplex.prepare(prefix, suffix, pcm)
        if not prefix and not suffix:
            return ""
        return prefix + ("[audio embedding]" if pcm is not None else "") + suffix

    def streaming_prefill(self, audio_waveform=None, frame_list=None, text_list=None, max_slice_nums=1) -> dict:
        """Feeds one unit: ``<unit>``, the frames (each ``<image>…</image>`` plus its slices), the
        audio's 10 embeddings, the text. ``audio_waveform``: 16000 samples at 16 kHz (the first unit
        16000 to 16560, front-padded with zeros to 1.035 s). ``frame_list``: images (PIL, uint8
        arrays, paths), e.g. the frame and a stacked high-FPS composite. ``text_list``: strings,
        joined. ``max_slice_nums``: one int or one per frame (1: no slicing)."""
        pcm = None if audio_waveform is None else load_audio(audio_waveform)
        frames = [load_image(f) for f in (frame_list or [])]
        if isinstance(max_slice_nums, (list, tuple)):
            slices = [self._slice_count(s) for s in max_slice_nums]
        else:
            slices = [self._slice_count(max_slice_nums)] * len(frames)
        if isinstance(text_list, str):
            text = text_list
        else:
            text = "".join(str(t) for t in (text_list or []))
        with self._request("duplex streaming_prefill"):
            self._duplex.prefill_unit(pcm, frames, text, slices)
        return {"success": True}

    def streaming_generate(self, decode_mode: str = "sampling",
                           max_new_speak_tokens_per_chunk: int = DUPLEX_UNIT.max_new_speak_tokens,
                           listen_prob_scale: float = DUPLEX_UNIT.listen_prob_scale, force_listen: bool = False,
                           temperature: float = DUPLEX_UNIT.temperature, top_k: int = DUPLEX_UNIT.top_k,
                           top_p: float = DUPLEX_UNIT.top_p,
                           text_repetition_penalty: float = DUPLEX_UNIT.repetition_penalty,
                           text_repetition_window_size: int = DUPLEX_UNIT.repetition_window,
                           length_penalty: float = DUPLEX_UNIT.length_penalty,
                           wait_audio: bool = True, listen_top_k: int | None = None, _scripted=None) -> dict:
        """Decides the prefilled unit: listen, or speak up to ``max_new_speak_tokens_per_chunk`` - 1
        tokens (the last slot is a forced ``<|chunk_eos|>``). Returns ``is_listen``, ``text``,
        ``end_of_turn``, ``current_time`` (units heard so far), and for the speech decoder
        ``speak_token_ids`` with ``speak_hidden`` (one LLM final-norm row per id).

        With speech on, ``audio_waveform`` is the unit's float32 24 kHz audio: one second for a
        listening unit (silence) and a speaking one (left-padded with zeros when shorter), the rest
        of the utterance at a turn's end. ``wait_audio=False`` returns before the speech is
        synthesized (``audio_waveform`` None): it is made on the session's speech thread while
        the next unit is prefilled, and ``take_audio()`` hands it out in unit order."""
        if decode_mode not in _DECODE_MODES:
            raise MinicpmoError(f"decode_mode must be 'sampling' or 'greedy', got {decode_mode!r}")
        with self._request("duplex streaming_generate"):
            r = self._duplex.generate_unit(
                greedy=decode_mode == "greedy", max_new_speak_tokens=int(max_new_speak_tokens_per_chunk),
                temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                repetition_penalty=float(text_repetition_penalty), repetition_window=int(text_repetition_window_size),
                length_penalty=float(length_penalty), listen_prob_scale=float(listen_prob_scale),
                force_listen=bool(force_listen), scripted=[int(t) for t in (_scripted or [])],
                wait_audio=bool(wait_audio), listen_top_k=int(listen_top_k or 0))
        return {
            "is_listen": bool(r["is_listen"]),
            "text": r["text"].decode("utf-8", errors="replace"),
            "end_of_turn": bool(r["end_of_turn"]),
            "current_time": int(r["current_time"]),
            "speak_token_ids": list(r["speak_token_ids"]),
            "speak_hidden": r["speak_hidden"],
            "decided_token_ids": list(r["decided"]),
            "n_dropped": int(r["n_dropped"]),
            "unit": int(r["unit"]),
            "audio_waveform": r.get("audio"),
            "speech_token_ids": list(r.get("speech_tokens", [])),
        }

    def take_audio(self, wait: bool = True):
        """``(unit, audio_waveform, speech_token_ids)`` of the oldest unit generated with
        ``wait_audio=False`` whose audio was not taken yet; None when ``wait`` is False and none is
        ready."""
        if self._closed:
            raise MinicpmoError("take_audio: the duplex conversation is closed")
        return self._duplex.take_audio(bool(wait))

    def interrupt(self) -> None:
        """Stops speaking at once (barge-in): speech not handed out yet is dropped, a speaking turn
        is closed with ``<|turn_eos|>`` in the cache, and the next turn's speech starts afresh."""
        with self._request("duplex interrupt"):
            self._duplex.interrupt()

    def as_simplex(self, reset_session: bool = True):
        """Back to the plain OmniSession (its cache cleared unless ``reset_session`` is False); this
        conversation's speech threads stop (``prepare`` starts a new conversation)."""
        if not self._closed and not self._omni.closed:
            with self._native.hold("duplex as_simplex"):
                self._duplex.close()
        if reset_session:
            self._omni.reset()
        return self._omni

    # ---- state, for inspection and tests ----
    @property
    def kv_tokens(self) -> list[int]:
        """Token ids in the cache; embedding positions are -1."""
        return list(self._native.kv_tokens)

    @property
    def system_length(self) -> int:
        """Protected positions (context window: prefix + "previous" + suffix)."""
        return self._duplex.system_length

    @property
    def sliding_window(self) -> str:
        """"off", "basic" or "context"."""
        return self._window

    def get_previous_context(self) -> tuple[str, list[int]]:
        """Context window: the kept text of dropped units and the ids in the cache (marker + text);
        ("", []) before any dropped unit said something."""
        ids = list(self._duplex.previous_tokens)
        n_marker = len(self._omni.tokenize(self._context_marker, False)) if ids else 0
        return self._omni.detokenize(ids[n_marker:]), ids

    @property
    def current_time(self) -> int:
        return self._duplex.current_time

    @property
    def pending_logits(self) -> np.ndarray | None:
        """Logits the next ``streaming_generate`` decides from (None when no unit is prefilled)."""
        return self._duplex.pending_logits

    @property
    def decode_history(self) -> list[int]:
        return list(self._duplex.decode_history)

    @property
    def unit_lengths(self) -> list[int]:
        return list(self._duplex.unit_lengths)

    @property
    def forbidden_ids(self) -> list[int]:
        return list(self._duplex.forbidden_ids)

    def reseed(self, seed: int) -> None:
        self._duplex.reseed(int(seed))

    @staticmethod
    def _window_mode(value) -> str:
        if value is None or value is False or value == "off":
            return "off"
        if value is True or value == "basic":
            return "basic"
        if value == "context":
            return "context"
        raise MinicpmoError(f"sliding_window must be False/'off', True/'basic' or 'context', got {value!r}")

    @staticmethod
    def _slice_count(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise MinicpmoError(f"max_slice_nums must be an integer >= 1, got {value!r}")
        return int(value)


__all__ = ["DuplexSession"]
