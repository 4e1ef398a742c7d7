"""A ``transformers`` model with a KV cache as the rollout engine, for machines without vLLM.

Our own decoding loop rather than ``model.generate``, for what RL sampling needs and ``generate`` does not do:
each distinct prompt is prefilled once and its KV cache copied to its ``n`` samples (``generate`` repeats the
prompt ``n`` times first, which on GRPO-sized groups is most of the prefill work); rows that have finished
leave the batch; each sampled token's log-prob under the distribution it was drawn from (temperature, then
top-p) is kept as it is drawn, one ``[batch, vocab]`` tensor alive at a time.

The engine keeps its own copy of the model; ``update_weights`` copies the trainer's tensors into it in place.
Sharing the trainer's module instead would save memory but would couple train/eval modes, gradient
checkpointing and dtype of the two, so the copy is deliberate.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch

from rlvr.rollout import register
from rlvr.rollout.base import Completion, GroupCallback, RolloutEngine, resolve_dtype


@register("hf")
class HFEngine(RolloutEngine):
    """Sampling with ``transformers``; the same seed, weights and prompts give identical samples.

    Options: ``device`` (default ``cuda`` when available, else ``cpu``) and ``batch_size`` (prompts decoded
    together, default all of them; lower it to bound memory). ``gpu_memory_utilization``,
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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, resolve_dtype(dtype, self.device.type != "cpu")))
        self.model.to(self.device).eval()
        self.eos_token_ids = _eos_token_ids(self.model.generation_config, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        # Checkpoints' sampling defaults (top_k, repetition_penalty... in generation_config) are ignored: the
        # trainer assumes exactly temperature + top-p.
        self.pad_token_id = self.eos_token_ids[0] if pad is None else pad
        self._seeds = torch.Generator().manual_seed(seed)

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
        """See :meth:`RolloutEngine.generate`. Without ``seed``, one is drawn from the engine's own generator
        (seeded at construction), so a fresh engine repeats its sequence of calls exactly.

        Prompt ``i`` of the call samples from its own generator, seeded ``seed + i * n`` (vLLM's per-request
        seeds): its samples do not depend on which other prompts share the call or the batch, so a caller that
        splits the prompts (data-parallel ranks, ``batch_size``) and offsets ``seed`` by ``first_index * n`` gets
        the samples of one whole call. The global torch RNG is left as it was."""
        limits = self.check_request(prompt_token_ids, n, max_new_tokens, temperature, top_p, stop)
        if seed is None:
            seed = int(torch.randint(2**62, (1,), generator=self._seeds))
        generators = [torch.Generator(self.device).manual_seed(seed + index * n) for index in range(len(prompt_token_ids))]
        batch_size = self.batch_size or len(prompt_token_ids)
        groups: list[list[Completion]] = []
        with torch.inference_mode():
            for start in range(0, len(prompt_token_ids), batch_size):
                batch = prompt_token_ids[start : start + batch_size]
                batch_generators = generators[start : start + batch_size]
                for group in self._generate_batch(batch, n, limits[start : start + batch_size], temperature, top_p,
                                                  batch_generators, tuple(stop)):
                    if on_group is not None:
                        on_group(len(groups), group)
                    groups.append(group)
        return groups

    def _generate_batch(self, prompts: list[list[int]], n: int, limits: list[int], temperature: float, top_p: float,
                        generators: list[torch.Generator], stop: tuple[str, ...]) -> list[list[Completion]]:
        from transformers import DynamicCache

        # Greedy answers are one answer copied n times.
        samples = n if temperature > 0 else 1
        width = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        cache = DynamicCache()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True).logits[:, -1]
        # Each prompt's cache and last logits, copied to its samples (rows prompt-major: p * samples + j).
        cache.batch_repeat_interleave(samples)
        logits, mask = logits.repeat_interleave(samples, 0), mask.repeat_interleave(samples, 0)
        rows = len(prompts) * samples
        max_new_tokens = max(limits)
        row_limits = torch.tensor(limits, device=self.device).repeat_interleave(samples)
        tokens = torch.full((rows, max_new_tokens), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros((rows, max_new_tokens))
        lengths = row_limits.cpu().clone()
        stop_reasons: list[str | None] = [None] * rows
        active = torch.arange(rows, device=self.device)  # batch row -> output row
        eos = torch.tensor(self.eos_token_ids, device=self.device)
        for step in range(max_new_tokens):
            token, logprob = _sample(logits, temperature, top_p, _uniforms(active // samples, generators, self.device))
            tokens[active.cpu(), step], logprobs[active.cpu(), step] = token.cpu(), logprob.float().cpu()
            done = torch.isin(token, eos) | (row_limits[active] == step + 1)
            if stop:
                for place, row in enumerate(active.tolist()):
                    if not done[place] and (matched := self._stop_string(tokens[row, : step + 1], stop)) is not None:
                        stop_reasons[row] = matched
                        done[place] = True
            lengths[active[done].cpu()] = step + 1
            if step + 1 == max_new_tokens or bool(done.all()):
                break
            if bool(done.any()):  # finished rows leave the batch (and the cache)
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, token, mask = active[keep], token[keep], mask[keep]
            mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=-1)
            logits = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                                past_key_values=cache, use_cache=True).logits[:, -1]
        completions = [self._completion(tokens[row, : lengths[row]].tolist(), logprobs[row, : lengths[row]],
                                        int(row_limits[row]), stop_reasons[row]) for row in range(rows)]
        groups = [completions[index * samples : (index + 1) * samples] for index in range(len(prompts))]
        return [group if samples == n else [copy.deepcopy(group[0]) for _ in range(n)] for group in groups]

    def _stop_string(self, tokens: torch.Tensor, stop: tuple[str, ...]) -> str | None:
        """The stop string the newest token completed, if any. Only the tail is decoded: a stop string of L
        characters lies within the last L tokens (a token decodes to at least one character, except pieces of
        one UTF-8 character, hence the slack); an earlier match would have stopped the row before."""
        window = max(map(len, stop)) + 4
        head = self.tokenizer.decode(tokens[-window:-1].tolist(), skip_special_tokens=True)
        text = self.tokenizer.decode(tokens[-window:].tolist(), skip_special_tokens=True)
        for candidate in stop:
            # a match that ends in the newest token's text: present now, not in the text before it
            if candidate in text and candidate not in head:
                return candidate
        return None

    def _completion(self, tokens: list[int], logprobs: torch.Tensor, max_new_tokens: int,
                    stop_reason: str | None = None) -> Completion:
        end = next((position for position, token in enumerate(tokens) if token in self.eos_token_ids), None)
        if stop_reason is not None and end is None:
            finish_reason = "stop"
        elif end is None:
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
            stop_reason=stop_reason if finish_reason == "stop" and end is None else None,
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


def _uniforms(prompt_of_row: torch.Tensor, generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """One uniform draw in (0, 1] per batch row, each from its prompt's generator. Rows are prompt-major, so a
    prompt's active rows are contiguous: each prompt draws as many values as it has rows still decoding, which
    depends on its own samples only."""
    prompts, counts = torch.unique_consecutive(prompt_of_row.cpu(), return_counts=True)
    draws = [torch.rand(int(count), generator=generators[int(prompt)], device=device)
             for prompt, count in zip(prompts, counts, strict=True)]
    return 1.0 - torch.cat(draws)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row, and its log-prob under the distribution it was drawn from: ``logits / temperature``
    renormalised over the top-p nucleus (greedy: the argmax, with its plain log-softmax). Sampling inverts each
    row's cumulative distribution at its own ``uniforms`` value (in (0, 1]), so a row's token depends on its
    logits and its draw only, not on the other rows of the batch; the first token whose cumulative mass reaches
    the draw has positive probability, so tokens outside the nucleus are never drawn."""
    if temperature == 0:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        token = logprobs.argmax(-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        # the smallest set of most likely tokens whose mass reaches top_p (always at least the most likely one)
        sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)
        mass_before = sorted_logprobs.exp().cumsum(-1) - sorted_logprobs.exp()
        outside = torch.zeros_like(order, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
        logprobs = torch.log_softmax(logprobs.masked_fill(outside, float("-inf")), dim=-1)
    cumulative = logprobs.exp().cumsum(-1)
    targets = (uniforms.to(cumulative.dtype) * cumulative[:, -1])[:, None]
    token = torch.searchsorted(cumulative, targets).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


def _eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the checkpoint's generation-config EOS list."""
    configured = generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no EOS token (neither tokenizer nor generation_config); set eos_token")
    return ids
