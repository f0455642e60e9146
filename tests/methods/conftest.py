import pytest

#: Tiny backbone settings shared by the method tests.
TINY = {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125, "small_input": True}}


@pytest.fixture
def tiny():
    return dict(TINY)
