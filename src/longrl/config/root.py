"""The whole run: one recipe file = one `RunConfig`."""

from __future__ import annotations

from pydantic import Field, model_validator

from longrl.config.algorithm import AlgorithmConfig
from longrl.config.base import Section
from longrl.config.data import DataConfig
from longrl.config.trainer import TrainerConfig
from longrl.config.worker import WorkerConfig


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> RunConfig:
        rollout_batch = self.data.rollout_batch_size
        mini_batch = self.worker.actor.global_batch_size
        if mini_batch > rollout_batch or rollout_batch % mini_batch:
            raise ValueError(
                f"worker.actor.global_batch_size ({mini_batch}) must divide "
                f"data.rollout_batch_size ({rollout_batch})"
            )
        algo = self.algorithm
        if (
            not algo.disable_kl
            and not algo.use_kl_loss
            and algo.adv_estimator != "reinforce_plus_plus"
        ):
            raise ValueError(
                "KL in the reward (algorithm.use_kl_loss=false) is only defined for "
                "adv_estimator=reinforce_plus_plus; set algorithm.use_kl_loss=true or "
                "algorithm.disable_kl=true"
            )
        if not self.worker.actor.reuse_video_embeddings and self.data.cache_dir is not None:
            raise ValueError(
                "worker.actor.reuse_video_embeddings=false re-encodes videos from their "
                "pixels in every pass, and data.cache_dir skips decoding them: unset one"
            )
        return self

    @property
    def uses_reference_model(self) -> bool:
        if self.worker.ref.enable is not None:
            return self.worker.ref.enable
        return not self.algorithm.disable_kl and self.algorithm.kl_coef > 0
