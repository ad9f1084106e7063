"""Where things live, decided in one place (STYLE 9).

| kind | appliance | developer machine |
|---|---|---|
| read-only assets (factory tables, prompts) | /usr/share/pbx, /etc/pbx/factory | the source tree |
| writable state (generations, voicemail, CDRs) | /data | $PBX_DATA_DIR |
| RAM (compiled snapshots, sockets, logs) | /run/pbx | $PBX_RUNTIME_DIR or a per-user temp dir |

Nothing writes next to sys.executable or __file__.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FACTORY_CONFIG = Path("/etc/pbx/factory")
DATA_DIR = Path(os.environ.get("PBX_DATA_DIR", "/data"))


def runtime_dir() -> Path:
    """A RAM directory for this process's scratch files (created if missing)."""
    env = os.environ.get("PBX_RUNTIME_DIR")
    if env:
        path = Path(env)
    elif os.access("/run", os.W_OK):
        path = Path("/run/pbx")
    else:
        path = Path(tempfile.gettempdir()) / f"pbx-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def control_socket() -> Path:
    """The daemon's control socket (see pbx_core/pbx/control.py)."""
    env = os.environ.get("PBX_CONTROL")
    return Path(env) if env else runtime_dir() / "control.sock"


def asset(name: str) -> Path:
    """A read-only asset (prompts, music on hold): $PBX_ASSETS, /usr/share/pbx on the
    appliance, else output/assets in the source tree (made by the image build)."""
    env = os.environ.get("PBX_ASSETS")
    if env:
        return Path(env) / name
    system = Path("/usr/share/pbx") / name
    if system.exists():
        return system
    return Path(__file__).resolve().parent.parent / "output" / "assets" / name


def state_db() -> Path:
    """The writable runtime-state LMDB (toggles, voicemail index, CDRs) on /data."""
    return DATA_DIR / "state.mdb"
