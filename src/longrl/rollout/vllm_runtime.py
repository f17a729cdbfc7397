"""Process-level plumbing for an in-process vLLM engine (used by `vllm_engine`).

Environment defaults, loading Qwen2.5-VL without torchvision, in-process model
registration, the tied-LM-head repack after a weight reload, and undoing what vLLM
does to the process (global RNG seeding, torch.distributed groups, log noise).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from longrl.rollout.vllm_inputs import VllmUnsupportedError


def apply_environment_defaults(work_dir: str | Path) -> dict[str, str]:
    """Set vLLM's environment for an in-process engine where the user has not; returns what
    was set. Must run before vLLM is imported (some values are read at import)."""
    work = Path(work_dir)
    defaults = {
        # In-process engine: weights are synced by reference, startup is ~3 s instead of ~20 s.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        # CPU: KV cache in GiB; without it vLLM reserves most of the RAM.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # Run-local caches and temp files instead of ~/.cache and /tmp.
        "VLLM_CACHE_ROOT": str(work / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        "TMPDIR": str(work / "tmp"),
        # Without it vLLM drops the whole process (training too) to one torch thread.
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    applied = {}
    for key, value in defaults.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    if "TMPDIR" in applied:
        tempfile.tempdir = None  # let tempfile pick up the new TMPDIR
    if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
        raise VllmUnsupportedError(
            "the vLLM backend runs vLLM in this process (weights are synced by reference); "
            "unset VLLM_ENABLE_V1_MULTIPROCESSING or set it to 0"
        )
    return applied


# --- Qwen2.5-VL without torchvision -------------------------------------------------------


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def install_torchvision_free_qwen_vl() -> bool:
    """Let vLLM load Qwen2.5-VL where torchvision cannot be imported (CPU torch builds).

    vLLM's model file imports transformers' torchvision-based Qwen2-VL image
    processor module and builds the processor with AutoProcessor. Here that
    module is served by transformers' own PIL implementation, and vLLM is
    given longrl's torch-only processor for the checkpoint. vLLM only reads
    token strings and size limits from it: this backend always passes video
    embeddings, never pixels. Returns False (and changes nothing) when
    torchvision imports.
    """
    if _torchvision_importable():
        return False
    name = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    if name not in sys.modules:
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil

        module = types.ModuleType(name)
        module.smart_resize = pil.smart_resize
        module.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil
        module.Qwen2VLImageProcessorKwargs = pil.Qwen2VLImageProcessorKwargs
        sys.modules[name] = module
    _register_longrl_processor()
    return True


@lru_cache(maxsize=1)
def _register_longrl_processor() -> None:
    from vllm import ModelRegistry
    from vllm.model_executor.models import qwen2_5_vl
    from vllm.multimodal import MULTIMODAL_REGISTRY

    class LongrlProcessingInfo(qwen2_5_vl.Qwen2_5_VLProcessingInfo):
        def get_hf_processor(self, **kwargs):
            return _processor_for(self.ctx.model_config.model)

    @MULTIMODAL_REGISTRY.register_processor(
        qwen2_5_vl.Qwen2_5_VLMultiModalProcessor,
        info=LongrlProcessingInfo,
        dummy_inputs=qwen2_5_vl.Qwen2_5_VLDummyInputsBuilder,
    )
    class LongrlQwen2_5_VL(qwen2_5_vl.Qwen2_5_VLForConditionalGeneration):
        """vLLM's Qwen2.5-VL with longrl's processor (registered as a class, so vLLM
        inspects it in this process, where the module above is installed)."""

    ModelRegistry.register_model("Qwen2_5_VLForConditionalGeneration", LongrlQwen2_5_VL)


@lru_cache(maxsize=4)
def _processor_for(model_path: str):
    from longrl.models.load import load_processor

    processor = load_processor(model_path)
    config = processor.image_processor.config
    # vLLM sizes its encoder budget from the official `size` attribute.
    processor.image_processor.size = {
        "shortest_edge": config.min_pixels,
        "longest_edge": config.max_pixels,
    }
    return processor


def register_in_process(architectures) -> None:
    """Have vLLM inspect these model classes in this process.

    A lazily registered class is inspected in a fresh Python subprocess that imports
    vLLM again (~10 s per start with a new cache directory); registering the class
    object itself skips that.
    """
    from vllm import ModelRegistry

    for architecture in architectures:
        entry = ModelRegistry.models.get(architecture)
        if entry is not None and hasattr(entry, "load_model_cls"):
            ModelRegistry.register_model(architecture, entry.load_model_cls())


def repack_tied_lm_heads(model: torch.nn.Module) -> int:
    """Rebuild the output projection of a tied LM head from the reloaded embedding.

    vLLM's in-place reload updates the shared embedding tensor but, on CPU, the
    tied head keeps the matrix it packed for oneDNN at startup: logits would
    come from the old weights. Runs inside vLLM (`LLM.apply_model`).
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        ParallelLMHead,
        VocabParallelEmbedding,
    )

    embeddings = {m.weight.data_ptr() for m in model.modules() if type(m) is VocabParallelEmbedding}
    repacked = 0
    for module in model.modules():
        if isinstance(module, ParallelLMHead) and module.weight.data_ptr() in embeddings:
            module.quant_method.process_weights_after_loading(module)
            repacked += 1
    return repacked


@contextmanager
def quiet_loggers(*logger_names: str) -> Iterator[None]:
    """Silence expected warnings (layers deliberately not reloaded: vision tower, rotary)."""
    targets = [logging.getLogger(name) for name in logger_names]
    levels = [target.level for target in targets]
    for target in targets:
        target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for target, level in zip(targets, levels, strict=True):
            target.setLevel(level)


class _ExpectedNotice(logging.Filter):
    """Drops one known message of a vLLM logger."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# (logger, message) vLLM logs in this setup that say nothing new:
# - its CPU worker warns on every torch.set_num_threads call it blocks, and vLLM calls
#   it around every multimodal request (one line per rollout);
# - its multimodal warm-up feeds dummy pixels to the processor, which longrl's refuses
#   (this backend sends embeddings, never pixels).
_EXPECTED_NOTICES = [
    _ExpectedNotice("torch.set_num_threads"),
    _ExpectedNotice("Multi-modal warmup failed"),
]
_NOTICE_LOGGERS = ("vllm.v1.worker.cpu_worker", "vllm.renderers.base")


def drop_expected_notices() -> None:
    for name, notice in zip(_NOTICE_LOGGERS, _EXPECTED_NOTICES, strict=True):
        logging.getLogger(name).addFilter(notice)  # the same object is added once


@contextmanager
def global_rng_preserved() -> Iterator[None]:
    """vLLM seeds the global RNGs of the process it starts in; keep the trainer's."""
    state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.random.set_rng_state(state[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def process_group_kept(owned: bool) -> Iterator[None]:
    """vLLM's shutdown destroys torch.distributed's default group. When the trainer owns
    that group, destroy only the groups vLLM built on it; when the trainer already
    destroyed it (and with it vLLM's groups), only drop vLLM's references to them."""
    from vllm.distributed import parallel_state as state

    if owned:
        yield
        return

    def vllm_groups() -> list[str]:
        return [k for k, v in vars(state).items() if isinstance(v, state.GroupCoordinator)]

    def destroy_vllm_world() -> None:
        if state._WORLD is not None:
            state._WORLD.destroy()
        state._WORLD = None

    def forget_vllm_groups() -> None:
        for name in vllm_groups():
            setattr(state, name, None)

    saved = (state.destroy_model_parallel, state.destroy_distributed_environment)
    if torch.distributed.is_initialized():
        state.destroy_distributed_environment = destroy_vllm_world
    else:
        state.destroy_model_parallel = forget_vllm_groups
        state.destroy_distributed_environment = forget_vllm_groups
    try:
        yield
    finally:
        state.destroy_model_parallel, state.destroy_distributed_environment = saved
