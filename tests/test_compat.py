"""The third-party private attributes behind compat/ still exist, or an upgrade fails here.

Each check names the library, the attribute and the function of compat that relies on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from kombu.transport.virtual.base import Transport
from pynetdicom import AE, Association
from pynetdicom.acse import ACSE
from pynetdicom.dul import DULServiceProvider

import compat
from tests.helpers import REPO_ROOT


def test_pynetdicom_keeps_its_server_list() -> None:
    ae = AE()
    assert isinstance(ae._servers, list), "pynetdicom AE._servers moved: fix compat.add_server"
    marker = object()
    compat.add_server(ae, marker)
    assert ae._servers == [marker]


def test_pynetdicom_reactor_delay_is_an_attribute_of_the_dul() -> None:
    ae = AE()
    assoc = Association(ae, mode="acceptor")
    assert isinstance(assoc.dul, DULServiceProvider)
    assert hasattr(assoc.dul, "_run_loop_delay"), (
        "pynetdicom DULServiceProvider._run_loop_delay moved: fix compat.set_reactor_delay"
    )
    compat.set_reactor_delay(assoc, 0.0002)
    assert assoc.dul._run_loop_delay == 0.0002


def test_pynetdicom_acse_can_still_send_a_rejection() -> None:
    assert callable(getattr(ACSE, "send_reject", None)), (
        "pynetdicom ACSE.send_reject moved: fix compat.reject_and_close"
    )
    assert callable(getattr(Association, "kill", None))


def test_kombu_polling_loop_is_recognised_by_its_code() -> None:
    assert callable(getattr(Transport, "drain_events", None)), (
        "kombu virtual Transport.drain_events moved: fix compat.is_idle_in_kombu_polling"
    )
    assert not compat.is_idle_in_kombu_polling(sys._getframe())
    assert not compat.is_idle_in_kombu_polling(None)


@pytest.mark.parametrize("multiprocess", [False, True])
def test_prometheus_multiprocess_mode_is_detected(tmp_path: object, multiprocess: bool) -> None:
    # prometheus_client decides at import time, so each case runs in a fresh interpreter.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    code = textwrap.dedent(
        """
        import compat
        from prometheus_client import values
        assert hasattr(values, "ValueClass"), "prometheus_client values.ValueClass moved"
        print(compat.prometheus_writes_to_files())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(multiprocess), (
        "prometheus_client ValueClass._multiprocess moved: fix compat.prometheus_writes_to_files"
    )
