"""OmniSession: the Python face of the runtime (names follow the official MiniCPM-o API)."""

from __future__ import annotations

import os
import random
import warnings
import weakref
from typing import Iterator, NamedTuple

import numpy as np

from . import _core
from ._core import MinicpmoError
from .audio_input import load_audio
from .defaults import DUPLEX, REPLY, SESSION
from .media import load_image
from .media_cache import MediaCache
from .messages import parse_messages
from .simplex import streaming_message
from .voice_prompts import get_sys_prompt as _get_sys_prompt
from .voices import Voice, clone_voice as _clone_voice, resolve_voice as _resolve_voice


_NO_AUDIO = np.zeros(0, np.float32)
_NO_AUDIO.flags.writeable = False


class Reply(str):
    """A text reply: the ``str`` itself, plus ``finish_reason``: "stop" (the model ended it),
    "length" (``max_new_tokens``), "context" (the context window is full: what was generated is
    kept) or "cancelled"."""

    finish_reason: str

    def __new__(cls, text: str, finish_reason: str = ""):
        reply = super().__new__(cls, text)
        reply.finish_reason = finish_reason
        return reply


class ReplyStream:
    """Iterator over a streamed reply (text pieces, or ``(text, audio)`` pairs); ``finish_reason``
    ("stop", "length", "context", "cancelled") is set once the reply has ended, "" before. The
    session is held only while a step runs, so the stream may be advanced from any thread; a new
    request on the session abandons it (its next step raises)."""

    def __init__(self, native, spoken: bool, output_audio_path=None, voice: Voice | None = None):
        self.finish_reason = ""
        self._native = native
        self._voice = voice  # a voice cloned for this reply lives as long as the stream
        self._steps = self._spoken(output_audio_path) if spoken else self._pieces()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._steps)

    def close(self) -> None:
        """Stops the reply (unless another request already took the session over)."""
        self._steps.close()
        self._native.abandon()

    def _step(self):
        more, piece, audio = self._native.next()
        if not more:
            self.finish_reason = self._native.finish_reason
        return more, piece, audio

    def _pieces(self) -> Iterator[str]:
        try:
            more = True
            while more:
                more, piece, _ = self._step()
                if piece:
                    yield piece
        finally:
            self._native.abandon()

    def _spoken(self, output_audio_path) -> Iterator[tuple[str, np.ndarray]]:
        """(text piece, audio chunk) pairs: the chunk is empty or float32 24 kHz samples (1 s while
        speaking, the rest at the end)."""
        chunks = []  # kept only for the WAV file
        try:
            more = True
            while more:
                more, piece, audio = self._step()
                if output_audio_path is not None:
                    chunks += audio
                if piece and not audio:
                    yield piece, _NO_AUDIO
                for i, chunk in enumerate(audio):
                    yield (piece if i == 0 else ""), chunk
        finally:
            self._native.abandon()
        if output_audio_path is not None:
            full = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            SpokenReply("", full, self._native.sample_rate).save(output_audio_path)


class _Closed:
    """Stands in for the native objects of a closed session."""

    def __getattr__(self, name):
        raise MinicpmoError(f"{name}: the session is closed")


class SpokenReply:
    """A spoken reply: ``text`` and ``audio`` (float32 mono samples at ``sample_rate`` Hz);
    ``finish_reason`` as ``Reply.finish_reason``."""

    def __init__(self, text: str, audio: np.ndarray, sample_rate: int, finish_reason: str = ""):
        self.text = text
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self.finish_reason = finish_reason

    def save(self, path: str | os.PathLike) -> None:
        """Writes the audio as a float WAV file."""
        import soundfile as sf

        sf.write(os.fspath(path), self.audio, self.sample_rate, subtype="FLOAT")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"SpokenReply(text={self.text!r}, seconds={self.audio.size / self.sample_rate:.2f})"


class PromptForward(NamedTuple):
    """What ``OmniSession.forward_messages`` returns (unpacks like ``forward()``'s pair first)."""

    logits: np.ndarray | None  # float32 [n, vocab], or None when not asked for
    hidden: np.ndarray         # float32 [n, hidden]: final-norm hidden states
    token_ids: np.ndarray      # int32 [n]: the prompt (media positions hold <unk>)
    media_mask: np.ndarray     # bool [n]: positions fed from image / audio encoder rows


class OmniSession:
    """A loaded MiniCPM-o model and one conversation (KV cache) over it.

    ``OmniSession("MiniCPM-o-4_5-Q4_K_M.gguf")`` finds the omni companion through the LLM file's
    ``minicpmo.omni_file`` key (or take ``omni_path``). Multi-turn chat keeps earlier turns in the KV
    cache: each ``chat(msgs)`` renders the whole conversation and only decodes what is new.
    ``kv_cache_type="f32"`` trades memory for exact parity with the float reference.

    Devices: ``device="auto"`` (the default) computes on the first GPU this build and machine have
    (CUDA, Metal, Vulkan), the CPU otherwise; ``"cpu"`` or a name from ``minicpmo_cpp.device_names()``
    (``"Vulkan0"``, ``"CUDA0"``, ``"MTL0"``) choose one. The vision and audio encoders, the speech
    decoder and Token2Wav run on that device; ``n_gpu_layers`` says how many LLM layers go there (-1:
    all; with ``"auto"``, 0 keeps everything on the CPU). ``graph_placements()`` shows where each
    stage's graphs ran.

    Precision on the CPU: ``compute_type="bf16"`` runs the matrix products of the vision and audio
    encoders and of the Token2Wav flow in BF16 through oneDNN (AMX or AVX-512 BF16: 2-3x faster,
    about 1e-2 relative from the exact path; builds with oneDNN only); ``"int8"`` runs them as 8-bit
    integer products through oneDNN on any CPU with AVX2 (weights in 7 bits per row, activations in
    8 bits per row: about 2x the F32 rate, a few 1e-2 relative from the exact path; asked for only,
    never chosen by ``"auto"``); ``"f32"`` is the exact path; ``"auto"`` (the default) takes the environment variable ``MINICPMO_COMPUTE``, else ``"bf16"``
    where oneDNN has native BF16 kernels for this CPU (AMX or AVX-512 BF16) and ``"f32"`` elsewhere.
    ``compute_type`` (the property) says which one the session took.

    Threads: a session serves one call at a time. A call made while another thread is inside a call
    on the same session raises ``MinicpmoError("session is busy ...")`` at once (nothing waits, nothing
    changes); use one session per thread or serialize the calls. A streamed reply holds the session
    only while it computes a step. ``close()`` (or ``with OmniSession(...) as s:``) frees the native
    memory; later calls raise ``MinicpmoError`` "the session is closed".
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        omni_path: str | os.PathLike | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        n_ctx: int = SESSION.n_ctx,
        n_batch: int = SESSION.n_batch,
        seed: int | None = None,
        use_mmap: bool = True,
        kv_cache_type: str = SESSION.kv_cache_type,
        device: str = "auto",
        compute_type: str = "auto",
    ):
        if not isinstance(device, str):
            raise TypeError(f"device must be a str ('auto', 'cpu' or a device name), got {type(device).__name__}")
        n_ctx, n_batch, n_gpu_layers = (_int_arg(name, v) for name, v in
                                        (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_gpu_layers", n_gpu_layers)))
        n_threads = 0 if n_threads is None else _int_arg("n_threads", n_threads)
        model_path = os.fspath(model_path)
        if not os.path.exists(model_path):
            raise FileNotFoundError(2, f"model file '{model_path}' does not exist", model_path)
        if omni_path is not None:
            omni_path = os.fspath(omni_path)
            if not os.path.exists(omni_path):
                raise FileNotFoundError(2, f"omni file '{omni_path}' does not exist", omni_path)
        model = _core.Model(model_path, omni_path or "", n_gpu_layers, use_mmap, device)
        for message in model.load_warnings:  # e.g. no companion found: text-only
            warnings.warn(message, stacklevel=2)
        self._open(model, n_ctx, n_threads, n_batch, seed, kv_cache_type, compute_type)

    def _open(self, model, n_ctx, n_threads, n_batch, seed, kv_cache_type, compute_type) -> None:
        """A conversation (KV cache, encoders' scratch, speech state) over the loaded ``model``."""
        if not isinstance(compute_type, str):
            raise TypeError("compute_type must be a str ('auto', 'f32', 'bf16' or 'int8'), "
                            f"got {type(compute_type).__name__}")
        self._model = model
        self._session = _core.Session(model, n_ctx, n_threads or 0, n_batch, kv_cache_type, compute_type)
        self._options = dict(n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, kv_cache_type=kv_cache_type,
                             compute_type=compute_type)
        self._compute_type = self._session.compute_type  # what "auto" resolved to
        self._seed_rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._media = MediaCache()  # decoded media of the conversation, across its turns
        self._simplex_stream = None  # simplex streaming conversation, made on first use
        self._duplexes = weakref.WeakSet()  # duplex conversations over this session (closed with it)
        self._closed = False

    def new_session(self, seed: int | None = None, **options) -> "OmniSession":
        """Another conversation over the same loaded model: the weights are shared (loaded once),
        the KV cache and every per-conversation state are its own, so the two sessions may compute
        at the same time from two threads. ``options`` (``n_ctx``, ``n_threads``, ``n_batch``,
        ``kv_cache_type``, ``compute_type``) default to this session's. Closing either session
        leaves the other working."""
        if self._closed:
            raise MinicpmoError("the session is closed")
        unknown = set(options) - set(self._options)
        if unknown:
            raise TypeError(f"new_session() got unexpected options {sorted(unknown)}; it takes {sorted(self._options)}")
        merged = {**self._options, **options}
        for name in ("n_ctx", "n_batch"):
            merged[name] = _int_arg(name, merged[name])
        if merged["n_threads"] is not None:
            merged["n_threads"] = _int_arg("n_threads", merged["n_threads"])
        other = OmniSession.__new__(OmniSession)
        other._open(self._model, seed=seed, **merged)
        return other

    # ---- lifetime ----
    def close(self) -> None:
        """Frees the native memory (KV cache, encoders, speech components, and the model unless
        another session shares it) and stops the speech threads of duplex conversations over this
        session. Later calls raise ``MinicpmoError`` "the session is closed"; closing twice is a
        no-op. Raises "session is busy" while another thread runs a call on the session."""
        if self._closed:
            return
        for duplex in list(self._duplexes):
            duplex.close()
        self._session.close()
        self._closed = True
        self._simplex_stream = None
        self._media.clear()
        self._model = _Closed()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def compute_type(self) -> str:
        """How the encoders and the Token2Wav flow compute on the CPU: "bf16", "int8" or "f32", what the
        ``compute_type`` argument ("auto" included) resolved to when the session was made."""
        return self._compute_type

    @property
    def device(self) -> str:
        """The device the model computes on: "CPU" or a ggml device name ("Vulkan0", "CUDA0", ...)."""
        return self._model.device

    def graph_placements(self) -> dict:
        """Where the model's work went. ``"llm"``: its weight buffers as libllama placed them
        (``weight_buffers``: buffer type -> bytes; the token embedding always stays on the CPU) and the
        scheduler splits of its graph for a prompt batch and for one token (1: one backend). Then,
        for each stage that has run in this session (vision, audio, tts, flow, hift): graphs computed,
        scheduler splits summed over them, and the nodes computed on the device and on the CPU -- a
        stage wholly on the device has one split per graph and no CPU node -- and, in sessions whose
        products run on oneDNN (compute bf16 or int8), ``ggml_weight_products``: products with a
        weight left to ggml's CPU kernels instead."""
        out = self._session.graph_placements()
        buffers: dict = {}
        for name, nbytes in self._model.llm_weight_buffers:
            buffers[name] = buffers.get(name, 0) + int(nbytes)
        out["llm"]["weight_buffers"] = buffers
        return out

    def __enter__(self) -> "OmniSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, what: str):
        """Holds the native session for one request (a context manager): another thread's calls
        get "session is busy" meanwhile (a request that prefills or generates abandons the replies
        still streaming from earlier ones)."""
        return self._session.hold(what)  # raises "session is busy" / "the session is closed"

    # ---- model facts ----
    @property
    def has_omni(self) -> bool:
        return self._model.has_omni

    @property
    def has_speech(self) -> bool:
        """Whether the model files hold the speech components (speech decoder, Token2Wav, a voice)."""
        return {"tts", "token2wav", "voice"} <= set(self._model.omni_components)

    @property
    def voices(self) -> list[str]:
        """The voice names of the model file (``voice=`` of the speaking calls), the default first;
        [] when the files have no speech components."""
        if not self.has_speech:
            return []
        names, default = self._model.voices
        return [default] + [n for n in names if n != default]

    @property
    def can_clone_voices(self) -> bool:
        """Whether the model file holds the voice encoders ``clone_voice`` needs (and Token2Wav)."""
        return {"token2wav", "speech_tokenizer", "speaker_encoder"} <= set(self._model.omni_components)

    def clone_voice(self, audio) -> Voice:
        """A voice cloned from a reference recording (any form ``load_audio`` takes, 0.5 s to 17 s),
        as the official code clones one: the omni file's speech tokenizer and CAM++ speaker encoder
        make its prompt tokens and x-vector, its 24 kHz log-mel conditions the vocoder. Pass it as
        ``voice=`` to any speaking call of any session of this model (``.name``, ``.tokens``, ``.spk``,
        ``.mel`` show it); it lasts as long as the object. ``voice=<recording>`` clones per call."""
        return _clone_voice(self._model, audio, self._options["n_threads"] or 0)

    def save_voice(self, voice, name: str, path: str | os.PathLike | None = None) -> str:
        """Stores ``voice`` (a ``Voice``, or a recording to clone) as voice ``name`` in the companion
        file ``path`` (default: this model's), for every later load; the file is rewritten whole and
        replaced when complete. Returns the path."""
        from .convert.voice_gguf import add_voice_prompts, voice_from_arrays  # noqa: PLC0415 - converter code

        if not isinstance(voice, Voice):
            voice = self.clone_voice(voice)
        target = os.fspath(path) if path is not None else self.omni_path
        if not target:
            raise MinicpmoError("save_voice: the model has no omni companion file to store the voice in")
        try:
            add_voice_prompts(target, [voice_from_arrays(name, voice.tokens, voice.spk, voice.mel, target)], quiet=True)
        except Exception as e:  # ConversionError: the converter's own message names the file and the problem
            if type(e).__name__ == "ConversionError":
                raise MinicpmoError(f"save_voice: {e}") from None
            raise
        return target

    def _voice_for_call(self, voice) -> tuple[str, Voice | None]:
        return _resolve_voice(self._model, voice, self.voices if self.has_speech else [],
                              self._options["n_threads"] or 0)

    @property
    def omni_path(self) -> str:
        return self._model.omni_path

    @property
    def n_ctx(self) -> int:
        return self._session.n_ctx

    @property
    def n_past(self) -> int:
        """Positions in use in the KV cache."""
        return self._session.n_past

    @property
    def last_generated_ids(self) -> list[int]:
        """Token ids of the last reply, including the terminator when one was sampled."""
        return list(self._session.last_generated)

    @property
    def last_prefill(self) -> tuple[int, int]:
        """(tokens reused from the KV cache, tokens decoded) of the last prompt."""
        return tuple(self._session.last_prefill)

    def set_n_threads(self, n_threads: int) -> None:
        self._session.set_n_threads(_int_arg("n_threads", n_threads))

    # ---- text ----
    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        return self._model.tokenize(text, parse_special)

    def detokenize(self, ids) -> str:
        return self._model.detokenize([int(i) for i in ids]).decode("utf-8", errors="replace")

    def apply_chat_template(
        self,
        msgs,
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
        use_tts_template: bool = False,
        omni_mode: bool = False,
    ) -> str:
        """The prompt text; each image appears as the placeholder ``<image>./</image>`` and each
        audio as ``<audio>./</audio>``."""
        pairs = parse_messages(msgs, omni_mode).pairs
        return _core.render_chat(pairs, add_generation_prompt, enable_thinking, use_tts_template)

    def prompt_token_ids(
        self,
        msgs,
        enable_thinking: bool = False,
        max_slice_nums: int | None = None,
        use_image_id: bool | None = None,
        omni_mode: bool = False,
        use_tts_template: bool | None = None,
    ) -> list[int]:
        """Token ids ``chat(msgs)`` prefills, with each image and audio expanded to its layout of
        <unk> placeholders (spec §1.3, §3.3) whose embeddings the encoders provide."""
        parsed = parse_messages(msgs, omni_mode, cache=self._media)
        with self._session.hold("prompt_token_ids"):
            return list(self._session.conversation_tokens(
                parsed.pairs, parsed.images, self._slices(parsed.images, max_slice_nums),
                self._image_id_flag(use_image_id), parsed.audios, bool(enable_thinking),
                self._template_flag(use_tts_template)))

    # ---- audio ----
    def encode_audio(self, audio) -> np.ndarray:
        """LLM input embeddings of one audio, (n_tokens, hidden): 10 rows per second, as the chat
        path computes them (log-mel in 30-s pieces, Whisper encoder with 1-s block-causal attention,
        projector, average pooling by 5). ``audio``: float32 16 kHz mono array, ``(pcm, rate)``,
        path or OpenAI audio part (other rates and channel counts are converted, see
        ``minicpmo_cpp.audio_input``)."""
        pcm = load_audio(audio)
        with self._request("encode_audio"):
            return self._session.encode_audio(pcm, "block")

    def audio_token_count(self, audio) -> int:
        """Audio placeholders (LLM tokens) an audio takes in the prompt."""
        return int(self._session.audio_token_count(load_audio(audio)))

    @staticmethod
    def get_sys_prompt(ref_audio=None, mode: str = "default", language: str = "zh") -> dict:
        """System message of a voice mode ("default", "omni", "audio_assistant", "audio_roleplay",
        "voice_cloning") with ``ref_audio`` as the voice; see ``minicpmo_cpp.voice_prompts``."""
        return _get_sys_prompt(ref_audio, mode, language)

    @staticmethod
    def _template_flag(use_tts_template: bool | None) -> bool | None:
        # None: the native default (the spoken-reply template when the conversation holds audio)
        return None if use_tts_template is None else bool(use_tts_template)

    # ---- vision ----
    def encode_image(self, image, max_slice_nums: int | None = None) -> np.ndarray:
        """LLM input embeddings of one image, (n_tokens, hidden): query_num (64) rows for the
        whole image, then 64 per slice row by row (the prompt order). ``image``: PIL image, uint8
        array, path, data URI or OpenAI image part. ``max_slice_nums`` defaults to the model's 9."""
        pixels, slices = load_image(image), self._slice_arg(max_slice_nums)
        with self._request("encode_image"):
            return self._session.encode_image(pixels, slices)

    def prepare_images(self, width: int, height: int, max_slice_nums: int | None = None) -> None:
        """Readies the vision tower for images of ``width`` x ``height`` pixels: packs its weights for
        the fast BF16/int8 kernels and makes those kernels, computing nothing, so that the first
        such image (a live conversation's first camera frame) encodes as fast as the next ones.
        ``max_slice_nums`` as in ``encode_image`` (1 for live frames). Other sizes still gain: the
        weights are packed once for every size and every session of the model. Nothing to do at
        ``compute_type="f32"`` or on a GPU."""
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise MinicpmoError(f"prepare_images: {name} must be an integer, got {v!r}")
        slices = self._slice_arg(max_slice_nums)
        with self._request("prepare_images"):
            self._session.prepare_images(int(width), int(height), slices)

    def vision_features(self, image, max_slice_nums: int | None = None) -> list[np.ndarray]:
        """Post-LayerNorm SigLIP output per slice (whole image first), each (h*w patches, width)."""
        pixels, slices = load_image(image), self._slice_arg(max_slice_nums)
        with self._request("vision_features"):
            return list(self._session.vision_features(pixels, slices))

    @staticmethod
    def _slice_arg(max_slice_nums: int | None) -> int:
        if max_slice_nums is None:
            return 0
        if isinstance(max_slice_nums, bool) or not isinstance(max_slice_nums, (int, np.integer)) or max_slice_nums < 1:
            raise MinicpmoError(f"max_slice_nums must be an integer >= 1, got {max_slice_nums!r}")
        return int(max_slice_nums)

    def _slices(self, images: list, max_slice_nums: int | None) -> list[int]:
        return [self._slice_arg(max_slice_nums)] * len(images)

    @staticmethod
    def _image_id_flag(use_image_id: bool | None) -> int:
        return -1 if use_image_id is None else int(bool(use_image_id))

    def forward(self, token_ids) -> tuple[np.ndarray, np.ndarray]:
        """Logits [n, vocab] and final-norm hidden states [n, hidden] of every position, computed on
        a fresh cache (the conversation is cleared)."""
        ids = [int(t) for t in token_ids]
        with self._request("forward"):
            return self._session.forward(ids)

    def forward_messages(
        self,
        msgs,
        logits: bool = True,
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
        max_slice_nums: int | None = None,
        use_image_id: bool | None = None,
        omni_mode: bool = False,
        use_tts_template: bool | None = None,
    ) -> PromptForward:
        """``forward()`` for the prompt ``chat(msgs)`` prefills, images and audio included (same
        content and options as ``chat``): a ``PromptForward`` of ``logits`` [n, vocab] (None with
        ``logits=False``, which saves n x vocab floats when only embeddings are wanted), final-norm
        ``hidden`` states [n, hidden], the prompt's ``token_ids`` (int32; media positions hold the
        <unk> placeholder) and ``media_mask`` (True where image / audio encoder rows replaced the
        token embedding). Like ``forward()`` it runs on an empty cache and clears the conversation,
        so the next ``chat`` prefills its prompt from the start."""
        parsed = parse_messages(msgs, omni_mode, cache=self._media)
        slices = self._slices(parsed.images, max_slice_nums)
        with self._request("forward_messages"):
            ids, mask, out_logits, hidden = self._session.forward_conversation(
                parsed.pairs, parsed.images, slices, self._image_id_flag(use_image_id), parsed.audios,
                bool(enable_thinking), self._template_flag(use_tts_template), bool(add_generation_prompt), bool(logits))
        return PromptForward(out_logits, hidden, np.asarray(ids, np.int32), mask)

    def as_duplex(self, sliding_window: bool | str = False, window_high: int = DUPLEX.window_high,
                  window_low: int = DUPLEX.window_low,
                  seed: int | None = None, generate_audio: bool | None = None, voice: str | Voice | None = None,
                  **window_options):
        """This session as a full-duplex conversation (spec §6); call ``prepare`` on the result.
        ``as_simplex()`` on it comes back here. ``generate_audio`` (default: when the model file
        has the speech components) speaks the speaking units with ``voice``. ``sliding_window``:
        False, True / "basic" or "context" (``window_options``: ``context_max_units``,
        ``context_previous_max_tokens``, ``context_previous_marker``; see ``DuplexSession``)."""
        from .duplex import DuplexSession

        duplex = DuplexSession(self, self._session, self._reply_seed(seed), self.has_speech, sliding_window,
                               window_high, window_low, generate_audio, voice, **window_options)
        self._duplexes.add(duplex)  # closed with this session
        return duplex

    def reset(self) -> None:
        """Forget the conversation."""
        with self._request("reset"):
            self._session.reset()
            self._media.clear()

    def chat(
        self,
        msgs,
        stream: bool = False,
        max_new_tokens: int = REPLY.max_new_tokens,
        do_sample: bool = REPLY.do_sample,
        temperature: float = REPLY.temperature,
        top_p: float = REPLY.top_p,
        top_k: int = REPLY.top_k,
        repetition_penalty: float = REPLY.repetition_penalty,
        seed: int | None = None,
        enable_thinking: bool = False,
        max_slice_nums: int | None = None,
        use_image_id: bool | None = None,
        omni_mode: bool = False,
        use_tts_template: bool | None = None,
        generate_audio: bool = False,
        output_audio_path: str | os.PathLike | None = None,
        voice: str | Voice | None = None,
        max_speech_tokens: int | None = None,
    ) -> str | Iterator[str] | SpokenReply:
        """Reply to the conversation ``msgs``. Defaults are the official chat() sampling settings;
        ``do_sample=False`` is greedy. With ``stream=True`` returns an iterator of text pieces.

        Content may mix text and images (PIL images, uint8 arrays, paths, data URIs, OpenAI
        ``image_url`` parts) in any message. ``max_slice_nums`` (default 9) bounds the
        high-resolution slices per image; ``use_image_id`` (default True) numbers the images with
        ``<image_id>k</image_id>`` tags, which video chat turns off (with ``max_slice_nums=1``).
        ``omni_mode`` joins content items with "" instead of "\\n". Audio parts (float32 16 kHz
        arrays, ``(pcm, rate)`` tuples, paths, OpenAI ``input_audio`` / ``audio_url`` parts) go
        through the Whisper encoder; with audio in the conversation the prompt ends with
        ``<|tts_bos|>`` like the official chat() (``use_tts_template`` overrides). Media already in
        the KV cache from earlier turns are not encoded again.

        ``generate_audio=True`` speaks the reply: the prompt ends with ``<|tts_bos|>``, the reply's
        LLM hidden states condition the speech-token decoder (chat layout, spec §5.1) and Token2Wav
        turns its tokens into 24 kHz audio with ``voice``: a voice name of the model file, a ``Voice``
        from ``clone_voice``, or a reference recording (any form ``load_audio`` takes) cloned for this
        reply; None = the file's default voice. Returns a ``SpokenReply`` (``.text``, ``.audio`` float32, ``.sample_rate``)
        and writes a WAV file when ``output_audio_path`` is given. The spoken text ends at
        ``<|tts_eos|>``; a reply that stops before one is spoken as far as it went.
        ``max_speech_tokens`` caps the speech tokens (25 per second; default the model's 2048).

        ``stream=True`` with ``generate_audio=True`` streams the spoken reply as the official
        streaming pipeline does (spec §6.1): every 10 reply tokens condition the speech decoder's
        streaming layout, and each 25 speech tokens become one second of audio at once. It yields
        ``(text_piece, audio_chunk)`` pairs: ``audio_chunk`` is float32 24 kHz, empty while the next
        second is not ready, 24000 samples while speaking and the rest at the end. The reply ends at
        ``<|tts_eos|>``. ``max_speech_tokens`` then caps the speech tokens of each text chunk
        (default 500)."""
        if output_audio_path is not None and not generate_audio:
            raise MinicpmoError("output_audio_path needs generate_audio=True")
        voice, cloned = self._voice_for_call(voice) if generate_audio else ("", None)
        parsed = parse_messages(msgs, omni_mode, cache=self._media)
        self._media.end_turn()  # the conversation's media: kept for the next turn
        seed = self._reply_seed(seed)
        options = self._reply_options(do_sample, temperature, top_p, top_k, repetition_penalty, seed, max_new_tokens,
                                      ("streamed" if stream else "whole") if generate_audio else "none", voice,
                                      max_speech_tokens)
        start = dict(messages=parsed.pairs, images=parsed.images,
                     max_slice_nums=self._slices(parsed.images, max_slice_nums),
                     use_image_id=self._image_id_flag(use_image_id), audios=parsed.audios,
                     image_keys=parsed.image_keys, audio_keys=parsed.audio_keys,
                     enable_thinking=bool(enable_thinking),
                     use_tts_template=self._template_flag(use_tts_template), **options)
        if stream:
            with self._request("chat"):  # the stream's start; each step holds the session again
                native = _core.start_reply(self._session, **start)
            return ReplyStream(native, bool(generate_audio), output_audio_path, cloned)
        with self._request("chat"):  # the whole reply
            native = _core.start_reply(self._session, **start)
            pieces, audio = [], []
            more = True
            while more:
                more, piece, chunks = native.next()
                pieces.append(piece)
                audio += chunks
        text = "".join(pieces)
        if not generate_audio:
            return Reply(text, native.finish_reason)
        reply = SpokenReply(text, audio[0] if audio else np.zeros(0, np.float32), native.sample_rate,
                            native.finish_reason)
        if output_audio_path is not None:
            reply.save(output_audio_path)
        return reply

    # ---- simplex streaming (spec §6.1) ----
    def _simplex(self):
        if self._simplex_stream is None:
            self._simplex_stream = _core.SimplexStream(self._session)
        return self._simplex_stream

    def streaming_prefill(self, msgs) -> int:
        """Prefills one message into the KV cache at once (positions continue); returns the
        positions it added. ``msgs``: ``{"role": ..., "content": [...]}`` or a list of one such dict.

        A system message (text and audio, the audio encoded whole with full attention) may only
        open the conversation. User turns may come in pieces, typically one per second: a frame
        (PIL image or uint8 array; not sliced, no ``<image_id>``) and 1 s of float32 16 kHz audio,
        content items joined with "" (omni mode). The first piece of a turn opens
        ``<|im_start|>user\n``, later pieces append. A piece holds at most one audio: the turn's
        first up to 16560 samples (front-padded with zeros to 1.035 s), later exactly 16000; it goes
        through the streaming mel and the Whisper streaming cache, restarted for every user turn,
        so the embeddings differ from ``chat()``'s whole-audio encoding. An assistant message (text)
        closes an open turn. After ``reset()`` (or on a fresh session) a new conversation starts."""
        role, text, images, audios = streaming_message(msgs)
        with self._request("streaming_prefill"):
            before = self.n_past
            self._simplex().prefill(role, text, images, audios)
            return self.n_past - before

    def streaming_generate(
        self,
        generate_audio: bool = True,
        enable_thinking: bool = False,
        max_new_tokens: int = 256,
        voice: str | Voice | None = None,
        do_sample: bool = REPLY.do_sample,
        temperature: float = REPLY.temperature,
        top_p: float = REPLY.top_p,
        top_k: int = REPLY.top_k,
        repetition_penalty: float = REPLY.repetition_penalty,
        seed: int | None = None,
        max_speech_tokens: int | None = None,
    ) -> Iterator:
        """Answers the user turn prefilled by ``streaming_prefill``: feeds
        ``<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>`` (no think
        block with ``enable_thinking``) and returns an iterator over the reply while the LLM decodes
        it: ``(text_piece, audio_chunk)`` pairs with ``generate_audio`` (as ``chat(stream=True,
        generate_audio=True)``: float32 24 kHz chunks of 1 s, the rest at the end, empty while the
        next second is not ready), text pieces without. The reply ends at ``<|tts_eos|>``,
        ``<|im_end|>``, ``<unk>`` or ``max_new_tokens`` and stays in the cache; the next
        ``streaming_prefill`` of a user message continues the conversation (the cache then holds
        ``…reply<|tts_eos|><|im_end|>\n<|im_start|>user\n…``, one ``<|tts_eos|>`` whether or not
        the reply produced it)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise MinicpmoError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        voice, cloned = self._voice_for_call(voice) if generate_audio else ("", None)
        seed = self._reply_seed(seed)
        options = self._reply_options(do_sample, temperature, top_p, top_k, repetition_penalty, seed, max_new_tokens,
                                      "streamed" if generate_audio else "none", voice, max_speech_tokens)
        with self._request("streaming_generate"):
            native = _core.start_streaming_reply(self._simplex(), bool(enable_thinking), **options)
        return ReplyStream(native, bool(generate_audio), voice=cloned)

    # the instruction the model was trained with for reading text aloud (seed README usage)
    TTS_INSTRUCTION = "请朗读以下内容。"

    def tts(self, text: str, voice: str | Voice | None = None, ref_audio=None, language: str = "zh",
            output_audio_path: str | os.PathLike | None = None, max_new_tokens: int = 1024, **chat_options) -> SpokenReply:
        """Text to speech with the model's reading template: a user turn "请朗读以下内容。" + ``text``
        answered with the spoken-reply template; the model reads the text and the speech decoder and
        Token2Wav voice it with ``voice`` (as in ``chat``). ``ref_audio`` adds the "audio_assistant"
        system prompt with that reference (the conditioning the official examples use) and, when
        ``voice`` is None and the model file holds the voice encoders, also clones the voice from it.
        Other keyword arguments go to ``chat``."""
        if voice is None and ref_audio is not None and self.can_clone_voices:
            voice = ref_audio
        return self.chat(self.tts_messages(text, ref_audio, language), generate_audio=True,
                         output_audio_path=output_audio_path, voice=voice, max_new_tokens=max_new_tokens, **chat_options)

    @classmethod
    def tts_messages(cls, text: str, ref_audio=None, language: str = "zh") -> list[dict]:
        """The conversation ``tts()`` answers (for callers that stream it through ``chat``)."""
        if not isinstance(text, str) or not text.strip():
            raise MinicpmoError("tts() needs a non-empty text to read")
        msgs = []
        if ref_audio is not None:
            msgs.append(cls.get_sys_prompt(ref_audio, mode="audio_assistant", language=language))
        msgs.append({"role": "user", "content": cls.TTS_INSTRUCTION + text})
        return msgs

    def _reply_seed(self, seed: int | None) -> int:
        """The sampling seed of one reply: the caller's, else the next draw of the session's seed stream
        (so replies of a session seeded at construction are reproducible)."""
        if seed is None:
            return self._seed_rng.getrandbits(63)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise MinicpmoError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        return int(seed)

    @staticmethod
    def _reply_options(do_sample, temperature, top_p, top_k, repetition_penalty, seed, max_new_tokens, speech, voice,
                       max_speech_tokens) -> dict:
        """The native reply settings; with speech and sampling the reply's seed also seeds the
        speech sampling and the vocoder noise (greedy speech tokens otherwise)."""
        if max_speech_tokens is not None and (isinstance(max_speech_tokens, bool) or max_speech_tokens < 1):
            raise MinicpmoError(f"max_speech_tokens must be >= 1, got {max_speech_tokens!r}")
        return dict(do_sample=bool(do_sample), temperature=temperature, top_p=top_p, top_k=top_k,
                    repetition_penalty=repetition_penalty, seed=int(seed), max_new_tokens=int(max_new_tokens),
                    speech=speech, voice=voice or "", max_speech_tokens=int(max_speech_tokens or 0),
                    speech_seed=int(seed) if do_sample and speech != "none" else None)

    def __repr__(self) -> str:
        if self._closed:
            return "OmniSession(closed)"
        return f"OmniSession({self._model.path!r}, omni={self.omni_path or None!r}, n_ctx={self.n_ctx})"


def _int_arg(name: str, value) -> int:
    """An integer parameter as given (its range is checked natively); other types are refused by name."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MinicpmoError(f"{name} must be an integer, got {value!r}")
    return int(value)


__all__ = ["OmniSession", "Reply", "ReplyStream", "SpokenReply", "PromptForward", "MinicpmoError", "Voice"]


