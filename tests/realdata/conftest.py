import pytest

from medssl.data.paths import data_dir


@pytest.fixture(scope="session")
def real_data():
    """The real datasets folder (``$MEDSSL_DATA_DIR`` or ``../shared/data``); skips when absent."""
    root = data_dir()
    if not (root / "pneumoniamnist").is_dir():
        pytest.skip(f"real data not found at {root} (set MEDSSL_DATA_DIR)")
    return root
