"""What the tests share besides fixtures: a tool's ``main()`` run in-process, and the
settings of a cheap model (random fc layers of width 64, one small scale, 300 proposals)
that trains in seconds on the tiny generated dataset of ``conftest.synthetic_voc``."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
FAST_MODEL = ["network.fc_dim=64", "network.weights=random", "features.scales=[300]", "proposals.max_boxes=300"]


def load_tool(name: str):
    """``tools/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name: str, argv: list) -> int:
    """The exit code of ``tools/<name>.py main(argv)``."""
    return load_tool(name).main(argv)


def fast_overrides(data_root, out) -> list:
    """``--set`` values of the cheap model on ``data_root``, with caches and outputs under ``out``."""
    return [f"data.root={data_root}", f"cache_dir={out}/cache", f"output_dir={out}/output", *FAST_MODEL]


def record_threads(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` so that each call appends torch's intra-op thread count at that
    moment to the returned list (the call itself goes on as before)."""
    import torch

    original = getattr(module, name)
    seen = []

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen
