"""Drawing a data-parallel replica's share of the global prompt batch.

Every rank walks the same prompt order (same seed, same position). A round takes
the next `count` samples whose videos decode, exactly as one process would
(`prompts.draw_decodable`); replica d keeps the positions `dp_share` gives it and
decodes only those. Which candidates failed to decode is exchanged (one small
all-gather), so all ranks agree on the global batch, the skip counts and the
order position, and then each replica decodes any sample that moved into its
share. The ranks of one sequence-parallel group decode the same samples.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.models.inputs import VideoClip
from longrl.train.distributed import DistributedRunError, TrainerParallel, dp_share
from longrl.train.prompts import video_clips

logger = logging.getLogger("longrl.train")

_OK, _VIDEO_ERROR, _BAD_REQUEST, _FATAL = 0, 1, 2, 3
_REASONS = {_VIDEO_ERROR: "video_error", _BAD_REQUEST: "bad_frame_request"}


def draw_share(
    next_sample: Callable[[], Sample],
    count: int,
    mini_batch: int,
    data: DataConfig,
    skipped: Counter,
    parallel: TrainerParallel,
    max_attempts: int | None = None,
) -> list[tuple[Sample, list[VideoClip]]]:
    """This replica's decoded share of the next `count` decodable samples, in global order.

    `skipped` counts the failures this replica decoded (sum over replicas = global).
    """
    from longrl.video.errors import VideoError
    from longrl.video.sampling import SamplingError

    mine = set(dp_share(count, mini_batch, parallel.dp, parallel.dp_rank))
    accepted: list[Sample] = []
    clips: dict[int, list[VideoClip]] = {}  # id(sample) -> decoded clips, this replica's
    attempts = 0
    limit = max_attempts or max(10 * count, 100)
    while len(accepted) < count:
        candidates = [next_sample() for _ in range(count - len(accepted))]
        attempts += len(candidates)
        status = [_OK] * len(candidates)
        fatal: BaseException | None = None
        for i, sample in enumerate(candidates):
            if len(accepted) + i not in mine:
                continue  # another replica decodes it (tentatively at this position)
            try:
                clips[id(sample)] = video_clips(sample, data)
            except (VideoError, SamplingError) as err:
                status[i] = _VIDEO_ERROR if isinstance(err, VideoError) else _BAD_REQUEST
                if data.on_bad_sample == "raise":
                    status[i], fatal = _FATAL, err
                else:
                    skipped[_REASONS[status[i]]] += 1
                    logger.warning("skipping %s: %s", sample.source or sample.problem_id, err)
        everyone = parallel.gather_json(status, over="dp")
        merged = [max(column) for column in zip(*everyone, strict=True)]
        if _FATAL in merged:
            if fatal is not None:
                raise fatal
            where = candidates[merged.index(_FATAL)]
            raise DistributedRunError(
                f"{where.source or where.problem_id}: its video failed to decode on another "
                "replica and data.on_bad_sample=raise (that rank's log has the reason)"
            )
        accepted.extend(s for s, code in zip(candidates, merged, strict=True) if code == _OK)
        if len(accepted) < count and attempts >= limit:
            raise RuntimeError(
                f"{attempts} samples drawn but only {len(accepted)} of {count} had decodable "
                "videos (over all replicas). Check the dataset's videos."
            )
    share = [accepted[p] for p in sorted(mine)]
    return [(s, clips[id(s)] if id(s) in clips else video_clips(s, data)) for s in share]
