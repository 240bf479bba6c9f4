import json
import os


def run_tool(name, argv):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def settings(voc_root, tmp_path):
    # images segmented at 250 px (boxes mapped back) keep these runs to a few seconds
    return ["--set", f"data.root={voc_root}", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
            "proposals.max_side=250"]


def test_eval_proposals_report(synthetic_voc, tmp_path, capsys):
    out = tmp_path / "report"
    rc = run_tool("eval_proposals", ["--backends", "rcnn_fast", "opencv_fast", "--num-images", "3",
                                     "--out", str(out)] + settings(synthetic_voc, tmp_path))
    assert rc == 0
    report = json.loads((out / "proposal_recall.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["rcnn_fast", "opencv_fast"]
    for row in report["rows"]:
        assert row["images"] == 3 and row["objects"] > 0
        assert 0.5 < row["recall_0.5"] <= 1 and row["recall_0.7"] <= row["recall_0.5"]
        assert row["average_recall"] <= row["recall_0.5"] and row["seconds_per_image"] > 0
    assert (out / "proposal_recall.png").stat().st_size > 10_000 and (out / "config.yaml").is_file()
    assert "rcnn_fast" in capsys.readouterr().out


def test_compute_proposals_tool_and_errors(synthetic_voc, tmp_path, capsys):
    args = ["--image-set", "test", "--num-images", "2", "--workers", "1"] + settings(synthetic_voc, tmp_path)
    assert run_tool("compute_proposals", args) == 0
    assert "test: 2 images" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "cache" / "proposals")) == 1
    # bad settings: one line on stderr and exit code 2, no traceback
    assert run_tool("compute_proposals", args + ["proposals.backend=magic"]) == 2
    assert run_tool("compute_proposals", args + ["proposals.backend=rcnn_mat"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'magic'" in err and "needs proposals.mat_path" in err and "Traceback" not in err
