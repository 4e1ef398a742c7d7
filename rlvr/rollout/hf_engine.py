"""``transformers`` ``generate`` as the rollout engine, for machines without vLLM.

Batched with left padding, KV cache on, ``num_return_sequences = n``. Temperature and top-p are applied by
our own last logits processor (built from transformers' warpers), so it sees exactly the scores that are
sampled from and records each sampled token's log-prob on the fly: one ``[batch, vocab]`` tensor alive at a
time instead of ``output_scores``' whole ``[steps, batch, vocab]`` history.

The engine keeps its own copy of the model; ``update_weights`` copies the trainer's tensors into it in place.
Sharing the trainer's module instead would save memory but would couple train/eval modes, gradient
checkpointing and dtype of the two, so the copy is deliberate.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from rlvr.rollout import register
from rlvr.rollout.base import Completion, GroupCallback, RolloutEngine, resolve_dtype


@register("hf")
class HFEngine(RolloutEngine):
    """Sampling with ``transformers``; the same seed, weights and prompts give identical samples.

    Options: ``device`` (default ``cuda`` when available, else ``cpu``) and ``batch_size`` (prompts per
    ``generate`` call, default all of them; lower it to bound memory). ``gpu_memory_utilization``,
    ``sleep_between_steps`` and ``batch_sequences`` do not apply and are ignored.
    """

    name = "hf"

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
        device: str | None = None,
        batch_size: int | None = None,
        **options: object,
    ) -> None:
        super().__init__(model_path, max_model_len=max_model_len, seed=seed)
        if options:
            raise TypeError(f"the hf rollout engine has no option(s) {sorted(options)}; it takes device and batch_size")
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, resolve_dtype(dtype, self.device.type != "cpu")))
        self.model.to(self.device).eval()
        self.eos_token_ids = _eos_token_ids(self.model.generation_config, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = self.eos_token_ids[0] if pad is None else pad
        # Checkpoints ship sampling defaults (top_k, repetition_penalty...) that would change the distribution
        # the trainer assumes; only the token ids are kept.
        self.model.generation_config = GenerationConfig(
            eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id, bos_token_id=self.model.config.bos_token_id
        )
        self._seeds = torch.Generator().manual_seed(seed)

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_group: GroupCallback | None = None,
    ) -> list[list[Completion]]:
        """See :meth:`RolloutEngine.generate`. Without ``seed``, one is drawn from the engine's own generator
        (seeded at construction), so a fresh engine repeats its sequence of calls exactly. The global torch
        RNG is left as it was."""
        self.check_request(prompt_token_ids, n, max_new_tokens, temperature, top_p)
        if seed is None:
            seed = int(torch.randint(2**62, (1,), generator=self._seeds))
        batch_size = self.batch_size or len(prompt_token_ids)
        groups: list[list[Completion]] = []
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(prompt_token_ids), batch_size):
                batch = prompt_token_ids[start : start + batch_size]
                for group in self._generate_batch(batch, n, max_new_tokens, temperature, top_p):
                    if on_group is not None:
                        on_group(len(groups), group)
                    groups.append(group)
        return groups

    def _generate_batch(
        self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, top_p: float
    ) -> list[list[Completion]]:
        from transformers import LogitsProcessorList

        width = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        recorder = _SampledTokenLogprobs(temperature, top_p)
        # Greedy decoding refuses num_return_sequences > 1; its n answers are one answer copied.
        samples = n if temperature > 0 else 1
        # transformers' global default top_k=50 applies to sampling unless turned off; the recorder does
        # temperature and top-p itself.
        sampling = {"do_sample": True, "top_k": 0} if temperature > 0 else {"do_sample": False}
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            **sampling,
            num_return_sequences=samples,
            max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList([recorder]),
        )
        logprobs = recorder.finish(sequences).cpu()
        responses = sequences[:, width:].cpu()
        completions = [self._completion(responses[row].tolist(), logprobs[row], max_new_tokens) for row in range(len(responses))]
        groups = [completions[index * samples : (index + 1) * samples] for index in range(len(prompts))]
        return [group if samples == n else [copy.deepcopy(group[0]) for _ in range(n)] for group in groups]

    def _completion(self, tokens: list[int], logprobs: torch.Tensor, max_new_tokens: int) -> Completion:
        end = next((position for position, token in enumerate(tokens) if token in self.eos_token_ids), None)
        if end is None:
            if len(tokens) != max_new_tokens:
                raise RuntimeError(f"generate stopped after {len(tokens)} of {max_new_tokens} tokens without an EOS")
            finish_reason = "length"
        else:
            tokens, finish_reason = tokens[: end + 1], "stop"
        return Completion(
            token_ids=tokens,
            logprobs=logprobs[: len(tokens)].tolist(),
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            finish_reason=finish_reason,
        )

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy each named tensor into the parameter (or buffer) of the same name, in place."""
        targets = dict(self.model.named_parameters(remove_duplicate=False))
        targets.update(self.model.named_buffers())
        with torch.no_grad():
            for name, tensor in named_tensors:
                target = targets.get(name)
                if target is None:
                    raise KeyError(
                        f"{name!r} is not a parameter of the model in the hf rollout engine ({self.model_path}); "
                        "pass the names of the trainer model's named_parameters() for the same architecture"
                    )
                target.copy_(tensor)

    def close(self) -> None:
        """Drop the model (and the CUDA cache it used)."""
        self.__dict__.pop("model", None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _SampledTokenLogprobs:
    """The only logits processor: temperature, then top-p, and the log-prob of whatever token gets sampled.

    The token sampled from step t's scores shows up as ``input_ids[:, -1]`` at step t + 1, so each call
    collects the previous step's log-prob; :meth:`finish` collects the last one from the final sequences.
    """

    def __init__(self, temperature: float, top_p: float) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.warpers = []
        if temperature > 0 and temperature != 1:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.previous: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._collect(input_ids)
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _collect(self, input_ids: torch.Tensor) -> None:
        if self.previous is not None:
            self.logprobs.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``[batch, steps]`` log-probs of the sampled tokens."""
        self._collect(sequences)
        self.previous = None
        return torch.stack(self.logprobs, dim=1)


def _eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the checkpoint's generation-config EOS list."""
    configured = generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no EOS token (neither tokenizer nor generation_config); set eos_token")
    return ids
