"""sppcore/kernels.py: the tools' CPU kernels are capped at AVX2 before torch loads."""
import os
import subprocess
import sys

import pytest

from sppcore import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return str(path)


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")


def test_pins_every_library_on_an_avx2_processor(tmp_path, x86):
    env = {}
    assert kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=_cpuinfo(tmp_path, "avx avx2 avx512f"))
    assert env == kernels.PIN_ENVIRONMENT


def test_leaves_the_choice_alone_where_it_cannot_pin(tmp_path, x86, monkeypatch):
    avx2 = _cpuinfo(tmp_path, "avx avx2")
    env = {"SPPDET_CPU_KERNELS": "native"}
    assert not kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=avx2)
    assert env == {"SPPDET_CPU_KERNELS": "native"}
    env = {}
    assert not kernels.pin_cpu_kernels(env, modules={"torch": object()}, cpuinfo_path=avx2)  # too late
    assert not kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=_cpuinfo(tmp_path, "avx sse4_2"))
    assert not kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=str(tmp_path / "missing"))
    monkeypatch.setattr(kernels.platform, "machine", lambda: "arm64")
    assert not kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=avx2)
    assert env == {}


def test_keeps_what_the_user_set(tmp_path, x86):
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert kernels.pin_cpu_kernels(env, modules={}, cpuinfo_path=_cpuinfo(tmp_path, "avx2"))
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"


def test_a_bad_choice_is_one_line_and_exit_2():
    env = {**os.environ, "SPPDET_CPU_KERNELS": "fastest", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", "import detect"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["-c: error: SPPDET_CPU_KERNELS='fastest': expected avx2 or native"]


@pytest.mark.skipif(not kernels.cpu_has_avx2(), reason="the processor has no AVX2 (or is not x86)")
def test_importing_detect_first_runs_torch_on_avx2_kernels():
    code = "import detect, torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k not in kernels.PIN_ENVIRONMENT and k != "SPPDET_CPU_KERNELS"}
    env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"
