"""`pbx run` answers SIPp's OPTIONS over UDP and TCP (issue 2's "done means")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PbxProcess
from tests.interop.sipp import SCENARIOS, run_sipp

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_options_answered_with_200(shared_pbx: PbxProcess, tmp_path: Path, transport: str) -> None:
    res = run_sipp(
        SCENARIOS / "options.xml",
        shared_pbx.host,
        shared_pbx.port,
        tmp_path,
        transport=transport,
        calls=20,
        rate=50,
    )
    assert res.returncode == 0, res.output
    assert res.successful == 20
    assert res.failed == 0
