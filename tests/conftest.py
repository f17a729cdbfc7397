import os

import pytest

# Tests are single-threaded by default on the 2-core machines; keeps timings sane
# when several test processes run at once.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torchvision  # noqa: F401

        have_torchvision = True
    except Exception:
        have_torchvision = False
    skip_tv = pytest.mark.skip(reason="torchvision not importable beside this torch build")
    for item in items:
        if "torchvision" in item.keywords and not have_torchvision:
            item.add_marker(skip_tv)
