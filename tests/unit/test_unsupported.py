import re

import pytest

from longrl.train.unsupported import frozen_vision_for_cache, refuse_unbuilt


def test_refuse_unbuilt_names_every_asked_setting_and_the_command():
    pending = {"a.b=1": True, "c.d=2": False, "e.f=3": True}
    with pytest.raises(NotImplementedError) as err:
        refuse_unbuilt(pending, "longrl rl")
    message = str(err.value)
    assert "`longrl rl`" in message
    assert "a.b=1" in message and "e.f=3" in message and "c.d=2" not in message


def test_refuse_unbuilt_is_silent_when_nothing_is_asked():
    refuse_unbuilt({"a.b=1": False}, "longrl sft")
    refuse_unbuilt({}, "longrl sft")


def test_cache_needs_a_frozen_vision_tower():
    (name,) = frozen_vision_for_cache("/tmp/cache", freeze_vision_tower=False)
    assert frozen_vision_for_cache("/tmp/cache", freeze_vision_tower=False)[name] is True
    assert frozen_vision_for_cache("/tmp/cache", freeze_vision_tower=True)[name] is False
    assert frozen_vision_for_cache(None, freeze_vision_tower=False)[name] is False
    with pytest.raises(NotImplementedError, match=re.escape("data.cache_dir")):
        refuse_unbuilt(frozen_vision_for_cache("/c", False), "longrl rl")
