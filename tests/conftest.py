"""Shared fixtures only (helpers live in :mod:`tests.helpers`): small generated data, so tests never need downloads."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import blobs_image


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep torch to the machine's cores: oversubscription makes CPU tests crawl."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def blobs():
    """(image, truth, annotations) of a 96² disc image."""
    return blobs_image()


@pytest.fixture
def one_torch_thread():
    """One torch thread for real training beside a GUI or another job: on 2 shared cores, two
    OpenMP threads oversubscribe the CPU and spin-waiting makes training crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
