"""`data.*`: where samples come from and how their videos are sampled."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from longrl.config.base import Section


class DataConfig(Section):
    train_files: str | None = Field(
        None,
        description="Training records: .json, .jsonl or .parquet (LongVideo-Reason or EasyR1 style).",
    )
    val_files: str | None = Field(None, description="Held-out records for validation/eval.")
    video_root: str | None = Field(
        None, description="Directory that relative video paths in the records are resolved against."
    )
    prompt_key: str | None = Field(
        None,
        description="Question column; null accepts `problem` (LongVideo-Reason) or `prompt` (EasyR1).",
    )
    answer_key: str = Field("answer", description="Column with the ground-truth answer.")
    video_key: str | None = Field(
        None, description="Video column; null accepts `videos` (list or path) or `video`."
    )
    max_prompt_length: int = Field(
        16384,
        gt=0,
        description="Prompts longer than this (tokens, video included) are filtered or refused.",
    )
    max_response_length: int = Field(
        256, gt=0, description="Maximum generated tokens per response."
    )
    filter_overlong_prompts: bool = Field(
        True, description="Skip (and count) samples whose prompt exceeds max_prompt_length."
    )
    rollout_batch_size: int = Field(
        8, gt=0, description="Prompts per RL step (each sampled n times)."
    )
    val_batch_size: int = Field(-1, description="Prompts per validation batch; -1 = all at once.")
    shuffle: bool = Field(True, description="Shuffle the training records each epoch.")
    seed: int = Field(1, description="Seed of the data order.")
    thinking: bool = Field(
        True,
        description="Thinking prompt template (<think>..</think><answer>..</answer>) or answer-only.",
    )
    # Frame sampling (video/).
    fps: float | None = Field(
        2.0, gt=0, description="Frames sampled per second of video; exclusive with num_frames."
    )
    num_frames: int | None = Field(
        None, gt=0, description="Sample exactly this many frames uniformly (overrides fps)."
    )
    min_frames: int = Field(
        4, gt=0, description="Fewest frames sampled per video (if it has them)."
    )
    max_frames: int = Field(
        768, gt=0, le=8192, description="Most frames sampled per video (<= 8192)."
    )
    # Preprocessing (models/preprocess.py), explicit so small frames are never upscaled.
    min_pixels: int = Field(28 * 28, gt=0, description="Minimum pixels per frame after resizing.")
    max_pixels: int = Field(224 * 224, gt=0, description="Maximum pixels per frame after resizing.")
    video_total_pixels: int | None = Field(
        None, gt=0, description="Pixel budget per video; lowers max_pixels for long videos."
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "On-disk video-embedding cache (Long-RL: data.cache_dir), filled by `longrl cache` "
            "or on first use; needs a frozen vision tower. Keyed by video content, frame "
            "sampling, preprocessing and vision weights; a hit skips decoding and the ViT."
        ),
    )
    cache_memory_bytes: int = Field(
        1 << 30,
        ge=0,
        description="In-memory LRU in front of data.cache_dir, in bytes of embeddings (0: off).",
    )
    cache_on_mismatch: Literal["raise", "recompute"] = Field(
        "raise",
        description=(
            "A cache entry whose shape/dtype/grid/tokens do not fit the prompt raises, or is "
            "re-encoded with a warning. Corrupt files are always re-encoded with a warning."
        ),
    )
    on_bad_sample: Literal["skip", "raise"] = Field(
        "skip",
        description="A bad record/video is skipped with a logged reason and counted, or raises.",
    )

    @model_validator(mode="after")
    def _frames_consistent(self) -> DataConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) > max_frames ({self.max_frames})")
        if self.num_frames is not None and self.num_frames > self.max_frames:
            raise ValueError(f"num_frames ({self.num_frames}) > max_frames ({self.max_frames})")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")
        return self
