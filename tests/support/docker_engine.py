"""A Docker engine for the tests that need one (compose smoke, container experiments).

Where no engine runs, ``../shared/tools/docker-sandbox up`` starts one and builds stand-ins for
the public base images (no registry here) and a wheelhouse for pip inside builds. The tests skip,
saying why, only where no engine can be had. Shared by test_compose.py, test_compose_scale.py
and test_docker_experiment.py so that the engine is started one way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from support.base import REPO_ROOT

ROOT = REPO_ROOT
SANDBOX = ROOT.parent / "shared" / "tools" / "docker-sandbox"


def engine_up() -> bool:
    return (
        shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


def ensure_engine() -> str | None:
    """None when an engine runs (starting the sandbox if needed), else the reason to skip."""
    if engine_up() and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        if SANDBOX.exists():  # stand-ins and the wheelhouse are still needed without a registry
            subprocess.run(["bash", str(SANDBOX), "up", str(ROOT)], capture_output=True, timeout=1800)
        return None
    if not SANDBOX.exists():
        return f"no Docker engine running and no {SANDBOX} to start one"
    if os.geteuid() != 0:
        return "no Docker engine running and docker-sandbox needs root to start one"
    r = subprocess.run(["bash", str(SANDBOX), "up", str(ROOT)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0 or not engine_up():
        return f"docker-sandbox could not start an engine: {r.stderr.strip()[-500:]}"
    return None


def build_image(client: Any, tag: str) -> Any:
    """The project's Dockerfile built with the SDK; on the host network, where the sandbox's
    wheelhouse serves pip (as its compose override does for ``docker compose build``)."""
    image, _logs = client.images.build(path=str(ROOT), tag=tag, network_mode="host", rm=True, forcerm=True)
    return image
