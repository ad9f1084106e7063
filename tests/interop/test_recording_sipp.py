"""Call recording on demand through `pbx run`, every phone a SIPp: 100 calls 101, both
talk (sip-tester's G.711 A-law pcap), 100 presses `*1` as SIP INFO and hangs up three
seconds later. A whole WAV with audio appears in recordings/calls/ beside the state
LMDB, no `.part` is left, and `pbx cdr export` names the file in the call's record."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.media.wav import parse_wav
from tests.interop.features_env import Env, start, stop
from tests.interop.sipp_agents import wait_cdr

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = start(tmp_path_factory.mktemp("recording"))
    try:
        yield env
    finally:
        stop(env)


def test_star_one_in_sip_info_records_the_call_and_the_cdr_names_it(
    env: Env, tmp_path: Path
) -> None:
    res, answered = env.phones.talk(tmp_path, "uac_record_talk.xml", "uas_media_talk.xml")
    assert answered.requests("BYE"), answered.report()
    row = wait_cdr(env.state, res.call_id)
    assert row["disposition"] == "ANSWERED", row
    (name,) = row["recordings"].split(";")
    folder = env.tmp / "recordings" / "calls"
    assert sorted(p.name for p in folder.iterdir()) == [name], list(folder.iterdir())
    wav = parse_wav((folder / name).read_bytes())
    assert wav.format == "ulaw"
    assert 1.5 < wav.seconds < 5.0, wav.seconds  # from *1 to the BYE, about 3 s
    samples = struct.unpack(f"<{len(wav.pcm) // 2}h", wav.pcm)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert rms > 100, rms  # the pcap's audio, not silence
