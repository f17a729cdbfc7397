"""vLLM rollout backend: the `RolloutEngine` interface on top of an in-process vLLM engine.

Same inputs and outputs as `TorchRolloutEngine`: a `PromptBatch` (token ids, or
embeddings with the video scattered at its placeholders, plus training's
positions) in; response ids, masks and per-token log-probs out. How prompts
are handed to vLLM, and which are refused because vLLM would see other
positions or embeddings than training, is in `vllm_inputs`.

Weights: `sync_weights(policy)` copies the policy's language-model weights
into the engine in place (no restart), then clears the prefix cache and the
encoder cache, whose entries were computed with the old weights. The vision
tower is not sent: the engine is always given the policy's own video
embeddings. `generate` refuses to run if the policy's parameters were modified
since the last sync.

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so weights are
passed by reference; vLLM allows one such engine per process. Environment
defaults (set only when unset) are in `apply_environment_defaults`.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch

from longrl.models.inputs import is_mrope_model
from longrl.models.rope import MRopeSpec
from longrl.rollout.engine import PromptBatch, RolloutOutput, text_position_ids
from longrl.rollout.sampling import SamplingParams
from longrl.rollout.vllm_inputs import (
    LOGPROBS_MODES,
    VllmUnsupportedError,
    assemble_output,
    matching_logprobs_modes,
    mrope_request,
    text_request,
)
from longrl.rollout.vllm_runtime import (
    apply_environment_defaults,
    drop_expected_notices,
    global_rng_preserved,
    install_torchvision_free_qwen_vl,
    process_group_kept,
    quiet_loggers,
    register_in_process,
    repack_tied_lm_heads,
)

logger = logging.getLogger("longrl.rollout")

_live_engine: VllmRolloutEngine | None = None


# --- weights -------------------------------------------------------------------------------


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return getattr(tensor, "_local_tensor", tensor)  # DTensor (FSDP2) -> this rank's shard


def parameter_versions(model: torch.nn.Module) -> tuple[int, ...]:
    """In-place modification counters of every parameter (optimizer steps bump them)."""
    return tuple(_local(p)._version for p in model.parameters())


def weights_to_sync(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(transformers name, full tensor) of every parameter except the vision tower's."""
    inner = getattr(model, "model", None)
    visual = getattr(inner, "visual", None)
    skip = {id(p) for p in visual.parameters()} if visual is not None else set()
    weights = []
    for name, param in model.named_parameters():
        if id(param) in skip:
            continue
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        weights.append((name, tensor))
    return weights


# --- the engine ----------------------------------------------------------------------------


class VllmRolloutEngine:
    """Rollouts with vLLM, weights kept equal to `model`'s by `sync_weights`.

    model: the policy module (its config decides 1-D vs M-RoPE inputs; its
    token embeddings check M-RoPE prompts). model_path: the checkpoint vLLM
    starts from (config, tokenizer); its weights are replaced by `model`'s
    at once. logprobs_mode: see `vllm_inputs.choose_logprobs_mode`.
    llm_kwargs: extra `vllm.LLM` arguments (e.g. gpu_memory_utilization,
    tensor_parallel_size on GPUs).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        model_path: str | Path,
        *,
        pad_token_id: int,
        eos_token_ids: tuple[int, ...],
        max_model_len: int,
        work_dir: str | Path,
        dtype: str = "float32",
        seed: int = 0,
        logprobs_mode: str = "processed_logprobs",
        enable_prefix_caching: bool = True,
        enforce_eager: bool = True,
        max_videos_per_prompt: int = 4,
        max_images_per_prompt: int = 4,
        trust_remote_code: bool = False,
        llm_kwargs: dict | None = None,
    ) -> None:
        global _live_engine
        self._llm = None
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}, got {logprobs_mode}")
        # vLLM joins an existing one-process group (the trainer's) and builds its own
        # groups on top; across several processes it would need one engine per rank with
        # its own layout, which is not built.
        self._owns_process_group = not torch.distributed.is_initialized()
        if not self._owns_process_group and torch.distributed.get_world_size() > 1:
            raise VllmUnsupportedError(
                "worker.rollout.name=vllm runs one vLLM engine inside a one-process trainer; "
                f"this process group has {torch.distributed.get_world_size()} processes. "
                "Use worker.rollout.name=builtin for multi-process training."
            )
        apply_environment_defaults(work_dir)
        close_live_engine()
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_model_len = max_model_len
        self.logprobs_mode = logprobs_mode
        self.dtype = getattr(torch, dtype)
        self.mrope = is_mrope_model(model.config)
        self.spec = MRopeSpec.from_config(model.config) if self.mrope else None
        options = dict(
            model=str(model_path),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            logprobs_mode=logprobs_mode,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            generation_config="vllm",  # sampling settings come from SamplingParams only
        )
        if self.mrope:
            options.update(
                enable_mm_embeds=True,
                limit_mm_per_prompt={
                    "video": max_videos_per_prompt,
                    "image": max_images_per_prompt,
                },
                skip_mm_profiling=True,
            )
        else:
            options["enable_prompt_embeds"] = True
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM rewinds a seeded request's generator after a partial (chunked) prefill,
            # which CPU generators cannot do ("CPU Generator does not use offset"): prefill
            # whole prompts instead.
            options.update(enable_chunked_prefill=False, max_num_batched_tokens=max_model_len)
        options.update(llm_kwargs or {})
        if not (self.mrope and install_torchvision_free_qwen_vl()):
            register_in_process(getattr(model.config, "architectures", None) or ())
        from vllm import LLM

        self._set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it
        with global_rng_preserved():
            self._llm = LLM(**options)
        drop_expected_notices()
        _live_engine = self
        self._synced_versions: tuple[int, ...] | None = None
        self.sync_weights(model)

    # -- weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy `model`'s weights into vLLM in place; drop caches computed with the old ones."""
        self._require_open()
        if model is self.model and parameter_versions(model) == self._synced_versions:
            return  # not modified since the last sync
        self.model = model
        weights = weights_to_sync(model)
        with quiet_loggers(
            "vllm.model_executor.model_loader.reload.layerwise",
            "vllm.model_executor.model_loader.reload.inplace",
        ):
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self._llm.apply_model(repack_tied_lm_heads)
        if not self._llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight sync")
        engine = self._llm.llm_engine
        if hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()
        if hasattr(self._llm, "reset_mm_cache"):
            self._llm.reset_mm_cache()
        self._synced_versions = parameter_versions(model)

    # -- generation

    @torch.no_grad()
    def generate(self, prompts: PromptBatch, params: SamplingParams) -> RolloutOutput:
        self._require_open()
        if parameter_versions(self.model) != self._synced_versions:
            raise RuntimeError(
                "the policy's parameters changed since the last sync_weights(model): call "
                "engine.sync_weights(policy.model) after every update"
            )
        if self.logprobs_mode not in matching_logprobs_modes(params):
            raise VllmUnsupportedError(
                f"this engine returns {self.logprobs_mode}, which differ from training's "
                f"log-probs at temperature={params.temperature}, top_p={params.top_p}, "
                f"top_k={params.top_k}; build it for these settings (choose_logprobs_mode)"
            )
        for row, length in enumerate(prompts.attention_mask.sum(-1).tolist()):
            if length + params.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"row {row}: {length} prompt tokens + max_new_tokens "
                    f"{params.max_new_tokens} exceed the engine's max_model_len "
                    f"{self.max_model_len}"
                )
        requests, expected_ids = self._requests(prompts)
        sampling = [self._sampling_params(params, row) for row in range(len(requests))]
        outputs = self._llm.generate(requests, sampling, use_tqdm=False)
        samples = []
        for row, (output, ids) in enumerate(zip(outputs, expected_ids, strict=True)):
            if ids is not None and list(output.prompt_token_ids or []) != ids:
                raise RuntimeError(
                    f"row {row}: vLLM built a prompt of {len(output.prompt_token_ids or [])} "
                    f"tokens instead of the {len(ids)} training uses"
                )
            drawn = [_tokens_and_log_probs(c) for c in sorted(output.outputs, key=_index)]
            # vLLM takes greedy requests with n=1 only; the n greedy samples are equal.
            samples.append(drawn * params.n if params.greedy else drawn)
        out = assemble_output(
            samples,
            n=params.n,
            pad_token_id=self.pad_token_id,
            stop_token_ids=self._stop_ids(params),
        )
        device = prompts.attention_mask.device
        return RolloutOutput(**{k: getattr(out, k).to(device) for k in _OUTPUT_FIELDS})

    def _requests(self, prompts: PromptBatch) -> tuple[list[dict], list[list[int] | None]]:
        positions = prompts.position_ids
        if positions is None:
            positions = text_position_ids(prompts.attention_mask)
        if positions.dim() == 3 and not self.mrope:
            raise VllmUnsupportedError("3-D positions given for a 1-D RoPE model")
        embedding = self.model.get_input_embeddings()
        requests, expected = [], []
        for row in range(prompts.batch_size):
            real = prompts.attention_mask[row].bool()
            ids = None if prompts.input_ids is None else prompts.input_ids[row][real]
            embeds = None
            if prompts.inputs_embeds is not None:
                embeds = prompts.inputs_embeds[row][real].to(self.dtype).cpu()
            row_pos = positions[:, row][:, real] if positions.dim() == 3 else positions[row][real]
            if not self.mrope:
                requests.append(text_request(row, ids, embeds, row_pos))
                expected.append(None if embeds is not None else ids.tolist())
                continue
            if ids is None:
                raise VllmUnsupportedError(
                    f"row {row}: an M-RoPE model needs input_ids (vLLM's prompt_embeds path "
                    "uses 1-D positions, not training's 3-D ones)"
                )
            if row_pos.dim() == 1:
                row_pos = row_pos.expand(3, -1)
            token_embeds = None if embeds is None else embedding(ids).to(self.dtype).cpu()
            request, full_ids = mrope_request(
                row, ids.cpu(), embeds, row_pos.cpu(), self.spec, token_embeds
            )
            requests.append(request)
            expected.append(full_ids)
        return requests, expected

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        return sorted({*self.eos_token_ids, *params.stop_token_ids})

    def _sampling_params(self, params: SamplingParams, row: int):
        from vllm import SamplingParams as VllmSamplingParams

        seed = None
        if params.seed is not None:
            # vLLM seeds sample k of a request with seed + k: rows get disjoint ranges.
            seed = (params.seed + row * params.n) % 2**62
        return VllmSamplingParams(
            n=1 if params.greedy else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else 0,
            max_tokens=params.max_new_tokens,
            stop_token_ids=self._stop_ids(params),
            ignore_eos=True,  # stop exactly where the built-in engine stops: at our stop ids
            logprobs=0,
            detokenize=False,
            seed=seed,
        )

    # -- lifetime

    def _require_open(self) -> None:
        if self._llm is None:
            raise RuntimeError("this vLLM engine was closed (one engine per process)")

    def close(self) -> None:
        """Shut vLLM down and undo its process-wide state (process group, thread setter)."""
        global _live_engine
        if self._llm is None:
            return
        with process_group_kept(owned=self._owns_process_group):
            self._llm.llm_engine.engine_core.shutdown()
        self._llm = None
        gc.collect()
        torch.set_num_threads = self._set_num_threads
        if _live_engine is self:
            _live_engine = None


def close_live_engine() -> None:
    """Close this process's vLLM engine, if one is open (vLLM allows one per process)."""
    if _live_engine is not None:
        logger.info("closing the previous in-process vLLM engine")
        _live_engine.close()


_OUTPUT_FIELDS = ("response_ids", "response_mask", "log_probs", "prompt_index", "finished")


def _index(completion) -> int:
    return completion.index


def _tokens_and_log_probs(completion) -> tuple[list[int], list[float]]:
    if completion.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended a sample with finish_reason={completion.finish_reason}")
    tokens = list(completion.token_ids)
    values = [step[token].logprob for step, token in zip(completion.logprobs, tokens, strict=True)]
    return tokens, values
