# Shared pytest setup: seeded randomness and one torch thread (small matrices run faster
# single-threaded, and the suite does not fight other processes for the two cores).
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
