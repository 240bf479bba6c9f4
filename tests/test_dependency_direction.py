"""Dependencies point one way (STYLE.md, "one direction of dependencies"):

    sppcore  <-  proposals, svm  <-  detect

``sppcore`` imports none of the other three (nor torch); ``proposals`` and ``svm`` import
``sppcore`` but never ``detect``; ``detect`` may import all. Checked twice: statically, on
every import statement of every module (absolute and relative, at any depth, inside
functions too), and at run time: importing proposals/ and svm/ must not load torch or the
network modules of detect."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORK_MODULES = ("torch", "torchvision", "detect.trunks", "detect.spp", "detect.features")
# top-level names each package must never import
FORBIDDEN = {
    "sppcore": {"detect", "proposals", "svm", "torch", "torchvision"},
    "proposals": {"detect", "torch", "torchvision"},
    "svm": {"detect", "proposals", "torch", "torchvision"},
    "detect": set(),
}
# what sppcore holds; no other package keeps a module of the same name
SHARED_MODULES = ("boxes", "errors", "fileio", "faults", "images", "kernels", "matcher")


def package_modules(root, package):
    """(module name, path) of every ``.py`` file under ``root/package``."""
    out = []
    for directory, _, files in os.walk(os.path.join(root, package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out.append((".".join(parts), path))
    return out


def imported_modules(path, module):
    """(line, absolute module name) of every import in the file; relative imports are
    resolved against ``module``'s package (one going above the top level resolves to
    the names it reaches there)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if os.path.basename(path) == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: max(0, len(parts) - (node.level - 1))]
                if node.module:
                    found.append((node.lineno, ".".join(base + [node.module])))
                else:  # from . import a, b: each name is a module or a name of the package
                    found += [(node.lineno, ".".join(base + [alias.name])) for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations(root, package, forbidden):
    return [f"{os.path.relpath(path, root)}:{line}: imports {name}"
            for module, path in package_modules(root, package)
            for line, name in imported_modules(path, module)
            if name.split(".")[0] in forbidden]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    modules = package_modules(ROOT, package)
    assert len(modules) > 2, f"{package}: no modules found"
    bad = violations(ROOT, package, FORBIDDEN[package])
    assert not bad, "\n".join(bad)


def test_shared_modules_live_in_sppcore_only():
    for name in SHARED_MODULES:
        assert os.path.isfile(os.path.join(ROOT, "sppcore", f"{name}.py")), name
        for package in ("detect", "proposals", "svm"):
            assert not os.path.exists(os.path.join(ROOT, package, f"{name}.py")), f"{package}/{name}.py"


def test_the_static_check_finds_every_kind_of_import(tmp_path):
    (tmp_path / "svm" / "sub").mkdir(parents=True)
    (tmp_path / "svm" / "__init__.py").write_text("from . import sub\n")
    (tmp_path / "svm" / "ok.py").write_text("import numpy as np\nfrom sppcore.boxes import box_iou\nfrom .sub import x\n")
    (tmp_path / "svm" / "sub" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "svm" / "sub" / "deep.py").write_text(
        "import os\n"
        "def f():\n"
        "    import detect.trunks\n"            # line 3: inside a function
        "    from ...detect import voc\n"       # line 4: relative, above the top level
        "from .. import detect\n"               # line 5: a sibling resolved as svm.detect: allowed
        "import torch.nn as nn\n")              # line 6
    (tmp_path / "svm" / "rel.py").write_text("from ..proposals.store import ProposalStore\n")
    bad = sorted(violations(str(tmp_path), "svm", FORBIDDEN["svm"]))
    assert bad == [os.path.join("svm", "rel.py") + ":1: imports proposals.store",
                   os.path.join("svm", "sub", "deep.py") + ":3: imports detect.trunks",
                   os.path.join("svm", "sub", "deep.py") + ":4: imports detect",
                   os.path.join("svm", "sub", "deep.py") + ":6: imports torch.nn"]
    assert violations(str(tmp_path), "svm", {"sppcore"}) == [os.path.join("svm", "ok.py") + ":2: imports sppcore.boxes"]


def _loaded_after_importing(packages):
    code = (
        "import sys, importlib, pkgutil\n"
        f"for pkg in {packages!r}:\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.iter_modules(m.__path__):\n"
        "        importlib.import_module(pkg + '.' + info.name)\n"
        "print(','.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.strip().split(","))


def test_proposals_and_svm_do_not_load_network_code():
    loaded = _loaded_after_importing(("proposals", "svm"))
    assert not [n for n in NETWORK_MODULES if n in loaded], f"network modules loaded: {sorted(loaded & set(NETWORK_MODULES))}"
    assert not [n for n in loaded if n.split(".")[0] == "detect"], "proposals/svm loaded a module of detect"


def test_sppcore_loads_nothing_above_it():
    loaded = _loaded_after_importing(("sppcore",))
    above = sorted(n for n in loaded if n.split(".")[0] in FORBIDDEN["sppcore"])
    assert not above, f"importing sppcore loaded {above}"
