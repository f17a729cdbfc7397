"""Cache keys: everything a video embedding depends on, hashed.

The embedding of one video is a function of four things, each hashed on its own:

1. content     -- the file's bytes: SHA-256 of the whole file (~1.5 GB/s with
                  OpenSSL here). No partial hash: sampling "first and last MB +
                  size" could collide for an edited video and serve a stale entry.
                  The digest is memoised per process by (device, inode, size,
                  mtime_ns), so each file is read once per process.
2. sampling    -- which frames: fps / num_frames / min_frames / max_frames after
                  per-record overrides, plus the decoder (PyAV version, which pins
                  its FFmpeg) and the version of longrl's frame-selection rules.
3. preprocess  -- how frames become patches: min/max/total pixels, patch, temporal
                  patch and merge sizes, mean/std (`VisionPreprocessConfig`).
4. vision      -- the vision tower: SHA-256 over its state-dict tensors (names,
                  dtypes, shapes, bytes), its config, the attention implementation
                  and the torch/transformers versions that run it.

content + sampling give the *clip key* (which frames: independent of the model);
clip key + preprocess + vision give the *entry key* (the embedding). A change to
any component changes the entry key, so an entry is never served for inputs it was
not computed from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.models.preprocess import VisionPreprocessConfig

# Bump when a change in longrl alters which frames are picked or how they are decoded.
FRAME_RULES_VERSION = 1
# Bump when the entry format or the meaning of a key component changes.
KEY_FORMAT_VERSION = 1

_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class SamplingSettings:
    """The frame request of one video: exactly what `read_frames` is called with."""

    num_frames: int | None
    fps: float | None
    min_frames: int
    max_frames: int

    def read_frames_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def effective_sampling(sample: Sample, data: DataConfig) -> SamplingSettings:
    """Per-record fps/num_frames win over the config's; a record's fps drops data.num_frames."""
    num_frames = sample.num_frames or (None if sample.fps else data.num_frames)
    fps = None if num_frames else (sample.fps or data.fps)
    return SamplingSettings(num_frames, fps, data.min_frames, data.max_frames)


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- content ---------------------------------------------------------------------------

_content_memo: dict[tuple[int, int, int, int], str] = {}


def content_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex). Raises OSError for a missing/unreadable file."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        known = _content_memo.get(identity)
        if known is not None:
            return known
        digest = hashlib.sha256()
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    _content_memo[identity] = digest.hexdigest()
    return _content_memo[identity]


# --- sampling + decoder ----------------------------------------------------------------


def sampling_component(sampling: SamplingSettings) -> dict[str, Any]:
    import av

    from longrl.video.sampling import DEFAULT_FPS

    request = asdict(sampling)
    if request["num_frames"] is None and request["fps"] is None:
        request["fps"] = DEFAULT_FPS  # what read_frames does; keyed explicitly
    if request["fps"] is not None:
        request["fps"] = float(request["fps"]).hex()  # exact, no float repr ambiguity
    return {"request": request, "av": av.__version__, "frame_rules": FRAME_RULES_VERSION}


def clip_key(content: str, sampling: SamplingSettings) -> str:
    """Names the frames of a video: its content + the frame request + the decoder."""
    return _digest(
        {"format": KEY_FORMAT_VERSION, "content": content, "sampling": sampling_component(sampling)}
    )


# --- preprocessing ---------------------------------------------------------------------


def preprocess_fingerprint(cfg: VisionPreprocessConfig) -> str:
    return _digest({"preprocess": cfg.to_dict(), "torch": torch.__version__})


# --- vision weights ---------------------------------------------------------------------

_vision_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_state(visual: torch.nn.Module) -> tuple:
    """Changes whenever a tensor is replaced, moved, cast or modified in place."""
    tensors = itertools.chain(visual.parameters(), visual.buffers())
    return tuple((t.data_ptr(), t.dtype, t.device, t._version) for t in tensors)


def vision_fingerprint(visual: torch.nn.Module, vision_config: Any = None) -> str:
    """SHA-256 of the vision tower's state-dict tensors + what else shapes its output.

    Memoised per module; recomputed when any weight changes (version counters) or
    the config does.
    """
    import transformers

    config = vision_config.to_dict() if hasattr(vision_config, "to_dict") else vision_config
    environment = json.dumps(
        {
            "config": config,
            "attention": getattr(vision_config, "_attn_implementation", None),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        sort_keys=True,
        default=str,
    )
    state = (_weights_state(visual), environment)
    known = _vision_memo.get(visual)
    if known is not None and known[0] == state:
        return known[1]
    digest = hashlib.sha256(environment.encode("utf-8"))
    for name, tensor in sorted(visual.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())  # buffer, no copy
    fingerprint = digest.hexdigest()
    _vision_memo[visual] = (state, fingerprint)
    return fingerprint


# --- the entry ---------------------------------------------------------------------------


def entry_key(clip: str, preprocess: str, vision: str) -> str:
    """Names one embedding: which frames, how they were preprocessed, which ViT."""
    return _digest(
        {"format": KEY_FORMAT_VERSION, "clip": clip, "preprocess": preprocess, "vision": vision}
    )
