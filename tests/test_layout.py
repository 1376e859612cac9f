"""The rooms of DESIGN.md hold: sim_bridge/ is simulators only, the store keeps bytes.

A newcomer looking for the training job finds it under `ript_robot/train/`; `sim_bridge/`
never reaches into the method, and the store's commands never load torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("sim_bridge", ("ript_robot.rl", "ript_robot.train")),
        ("ript_robot/data", ("ript_robot.policies", "ript_robot.rl", "ript_robot.train", "torch", "safetensors")),
        ("ript_robot/rl", ("ript_robot.train", "sim_bridge")),
    ],
)
def test_rooms_import_only_what_they_may(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offending(folder, forbidden) == []


def test_the_training_jobs_live_with_the_method() -> None:
    for job in ("quickstart", "sim_train", "sim_actor", "operator_session"):
        assert (ROOT / "ript_robot" / "train" / f"{job}.py").is_file()
        assert not (ROOT / "sim_bridge" / f"{job}.py").exists()


def test_store_commands_do_not_load_torch(tmp_path: Path) -> None:
    """`ript store info` on a real store, in a fresh interpreter: torch never gets imported."""
    store = tmp_path / "store"
    script = (
        "import sys\n"
        "from ript_robot.data.store import EpisodeStore\n"
        f"EpisodeStore({str(store)!r}, create=True)\n"
        "from ript_robot.cli import main\n"
        f"code = main(['store', 'info', '--store', {str(store)!r}])\n"
        "loaded = sorted(m for m in ('torch', 'safetensors.torch', 'ript_robot.policies') if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
        "sys.exit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
