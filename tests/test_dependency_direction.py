"""proposals/ and svm/ work on images and arrays: importing them must not load torch
or the network modules of detect (STYLE.md, "one direction of dependencies")."""
import subprocess
import sys

NETWORK_MODULES = ("torch", "torchvision", "detect.trunks", "detect.spp", "detect.features")


def test_proposals_and_svm_do_not_load_network_code():
    code = (
        "import sys, importlib, pkgutil\n"
        "for pkg in ('proposals', 'svm'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.iter_modules(m.__path__):\n"
        "        importlib.import_module(pkg + '.' + info.name)\n"
        f"bad = [n for n in {NETWORK_MODULES!r} if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"network modules loaded: {out.stdout.strip()}"
