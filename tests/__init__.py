"""The test suite; what its modules share is in `tests.support`."""

import pytest

# The support modules assert too (a page without errors, a signed-in client): show their values.
pytest.register_assert_rewrite("tests.support")
