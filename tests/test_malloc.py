"""core.malloc: glibc keeps freed tensors in the process (see the module doc for the measurement)."""
import os
import platform
import subprocess
import sys

import pytest

from xnn_support.core.malloc import tune_malloc


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc (Linux) only")
def test_tune_malloc_applies_on_glibc_and_can_be_switched_off():
    assert tune_malloc() is True
    code = "from xnn_support.core.malloc import tune_malloc; print(tune_malloc())"
    env = dict(os.environ, XNN_MALLOC="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
