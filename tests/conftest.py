"""Shared pytest set-up: the `slow` switch and a tiny synthetic twin made once per session."""
import os
import pytest


def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', help='also run tests marked slow (or set PNEUMONIA_KIT_SLOW=1)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--slow') or os.environ.get('PNEUMONIA_KIT_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: run with --slow or PNEUMONIA_KIT_SLOW=1')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)


@pytest.fixture(scope='session')
def tiny_twin(tmp_path_factory):
    "A 24-image synthetic twin at 256 px with its 128-px cache (train and test)"
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.cache import build_cache
    root = tmp_path_factory.mktemp('twin')
    synth_dataset(root, n_images=24, n_test=6, seed=3, size=256, progress=False)
    for split in ('train', 'test'): build_cache(root, size=128, split=split, workers=1, progress=False)
    return root
