"""Each method package installs alone: core and nothing of the other methods."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
METHODS = ["mgca", "cxrclip", "carzero", "afloc", "mavl"]


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for dist in ["cxrvlp-core", *[f"cxrvlp-{m}" for m in METHODS], "cxrvlp-bench"]:
        subprocess.run(
            [uv, "build", "--wheel", "--package", dist, "--out-dir", str(out), "--quiet"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        built[dist] = next(out.glob(dist.replace("-", "_") + "-*.whl"))
    return built


@pytest.mark.parametrize("method", METHODS)
def test_method_wheel_depends_on_core_only(wheels, method):
    reqs = _requires(wheels[f"cxrvlp-{method}"])
    ours = sorted(r.split()[0].split(">")[0].split("=")[0] for r in reqs if r.startswith("cxrvlp"))
    assert ours == ["cxrvlp-core"], f"cxrvlp-{method} requires {ours}"


def test_core_wheel_has_no_method_dependency_and_no_namespace_init(wheels):
    reqs = _requires(wheels["cxrvlp-core"])
    assert not [r for r in reqs if r.startswith("cxrvlp")]
    with zipfile.ZipFile(wheels["cxrvlp-core"]) as zf:
        names = zf.namelist()
    assert "cxrvlp/__init__.py" not in names  # PEP 420 namespace shared by every distribution
    assert "cxrvlp/core/__init__.py" in names


def test_bench_depends_on_every_method(wheels):
    reqs = {r.split()[0].split(">")[0].split("=")[0] for r in _requires(wheels["cxrvlp-bench"])}
    assert {f"cxrvlp-{m}" for m in METHODS} | {"cxrvlp-core"} <= reqs


@pytest.mark.parametrize("method", ["mgca", "cxrclip"])
def test_method_installs_and_imports_alone(wheels, method, tmp_path):
    """Install core + one method into a fresh venv (third-party libraries borrowed from this env)."""
    uv = shutil.which("uv")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python",
            str(py),
            str(wheels["cxrvlp-core"]),
            str(wheels[f"cxrvlp-{method}"]),
        ],
        check=True,
    )
    # Borrow torch & co. from the workspace env without its editable cxrvlp installs: a plain path line
    # in a .pth file adds that directory but does not process the .pth files inside it.
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz_borrow_thirdparty.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    others = [m for m in METHODS if m != method]
    code = (
        "import importlib, importlib.util\n"
        f"import cxrvlp.core, cxrvlp.{method}\n"
        f"missing = [m for m in {others!r} if importlib.util.find_spec('cxrvlp.' + m) is not None]\n"
        "assert not missing, f'other methods importable: {missing}'\n"
        "assert importlib.util.find_spec('cxrvlp.bench') is None\n"
        "from cxrvlp.core.registry import installed_methods\n"
        f"assert set(installed_methods()) == {{'{method}'}}, installed_methods()\n"
        f"print('ok', cxrvlp.{method}.__file__)\n"
    )
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(venv) in res.stdout
