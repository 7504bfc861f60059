"""Studies as data: TOML study files, the shipped presets, validation, ``reproduce --config``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nngp_ppl import NNGPInputError
from nngp_ppl.cli.main import main
from nngp_ppl.study.spec import (
    PRESETS,
    get_preset,
    load_study,
    plan_dict,
    study_from_text,
    supported_orders,
)
from nngp_ppl.study.stages import stages

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_shipped_presets_form_a_complete_stage_graph(name):
    """Each shipped study as a pipeline: every stage reads only files an earlier stage
    wrote, every file is written by exactly one stage, every file the plan names for a run
    is written, the runs are the study file's [[run]] tables in order, with the study's
    widths unless they set their own, and runs on the authors' inputs get
    paper_inputs(ensemble, d_in) (physics.md §9). (This replaces a golden master of the
    plans the hard-coded presets gave before they became TOML: a finished migration.)"""
    import tomllib

    from nngp_ppl import paper_inputs

    preset = get_preset(name)
    written = {}
    for stage in stages(preset):
        assert [i for i in stage.inputs if i not in written] == [], stage.name
        for out in stage.outputs:
            assert out not in written, (out, written.get(out), stage.name)
            written[out] = stage.name
    toml = tomllib.loads((Path(__file__).resolve().parent.parent / "nngp_ppl" / "studies"
                          / f"{name}.toml").read_text())
    plan = plan_dict(preset)
    assert [r["key"] for r in plan["runs"]] == [t["key"] for t in toml["run"]]
    for r, t in zip(plan["runs"], toml["run"], strict=True):
        files = r["files"]
        named = [files["run"], files["posterior"], files["beta"], *files["fit"].values(),
                 *(files.get(k) for k in ("exact", "posterior2", "beta2", "sixpoint"))]
        assert [f for f in named if f is not None and f not in written] == [], r["key"]
        assert r["ensemble"] == t["ensemble"]
        assert r["widths"] == list(t.get("widths", preset.widths)), r["key"]
        if r["inputs_source"] == "paper":
            assert r["inputs"] == paper_inputs(r["ensemble"], r["d_in"]).tolist(), r["key"]
        assert r["ngp_width"] in r["widths"]


def test_a_replaced_preset_still_resizes_its_runs():
    """Runs without their own widths follow the study's; infer_widths overrides by key."""
    tiny = dataclasses.replace(PRESETS["quick"], widths=(2, 20), infer_widths={"relu": (20,)},
                               only=("erf", "relu"))
    erf, relu = tiny.runs()
    assert erf.widths == (2, 20) and relu.widths == (2, 20)
    assert relu.infer_widths == (20,)
    assert erf.ngp_width == 2  # the sampled width nearest the file's ngp_width = 5


BASE = """
name = "t"
n_nets = 1000
widths = [2, 5]
fit_cutoffs = [10, 100]
infer_cutoffs = [10]
"""
RUN = """
[[run]]
key = "a"
ensemble = "tanh"
inputs = [0.5, 1.0]
"""


def test_a_minimal_study_gets_the_defaults():
    p = study_from_text(BASE + RUN)
    (r,) = p.runs()
    assert (p.chunk, p.seed, p.num_chains, p.six_point_cutoff) == (1000, 0, 4, 10.0)
    assert r.widths == (2, 5) and r.infer_widths == (2, 5) and r.order == 1
    assert r.inputs().shape == (2, 1) and r.net().to_dict()["ensemble"] == "tanh"
    assert r.label == "tanh-net"
    assert [s.name for s in stages(p)] == ["sample_a", "exact_a", "fit_a", "infer_a",
                                           "flow_a", "report"]


def test_an_ensemble_without_an_oracle_has_no_exact_stage(tmp_path):
    text = BASE + RUN.replace('"tanh"', '"mlp"') + "[run.params]\ndepth = 2\nactivation = 'tanh'\n"
    p = study_from_text(text)
    (r,) = p.runs()
    assert r.net().depth == 2 and not r.has_exact()
    names = [s.name for s in stages(p)]
    assert "exact_a" not in names and "sample_a" in names
    assert plan_dict(p)["runs"][0]["files"]["exact"] is None
    assert plan_dict(p)["runs"][0]["exact_oracle"] == {"moments": None, "max_order": 0,
                                                      "needed_order": 6}
    # Accepted by reproduce (the report shows such a run without the exact comparison,
    # tests/test_report_no_oracle.py): a dry run lists the stages, the exact one absent.
    from nngp_ppl.study.stages import reproduce

    result = reproduce(p, tmp_path / "study", dry_run=True, progress=False,
                       log=lambda _: None)
    assert list(result.status) == ["sample_a", "fit_a", "infer_a", "flow_a", "report"]


@pytest.mark.parametrize(("text", "words"), [
    (BASE + RUN + "widht = 3\n", "unknown key 'widht'"),
    (BASE.replace('name = "t"\n', "") + RUN, "missing required key 'name'"),
    (BASE.replace("n_nets = 1000", "n_nets = 1.5") + RUN, "n_nets must be an integer"),
    (BASE.replace("[2, 5]", "[2, -5]") + RUN, "widths must be a list of distinct positive"),
    (BASE.replace("[10, 100]", '"many"') + RUN, "fit_cutoffs must be a list"),
    (BASE + RUN.replace('"tanh"', '"swish"'), "[[run]] 1 (a): ensemble 'swish'"),
    (BASE + RUN + "infer_widths = [7]\n", "infer_widths must be among the sampled"),
    (BASE + RUN + "order = 3\n", "order must be one of"),
    (BASE + RUN + 'role = "other"\n', "role must be one of"),
    (BASE + RUN + 'propagators = ["half"]\n', "propagators must be a list"),
    (BASE + RUN.replace("[0.5, 1.0]", "[[0.5, 1.0], [1.0]]"), "inputs must be"),
    (BASE + RUN.replace("[0.5, 1.0]", '"paper"'), 'inputs = "paper" exists only'),
    (BASE + RUN + "d_in = 2\n", "inputs has points of dimension 1, d_in is 2"),
    (BASE + RUN + RUN, "run key 'a' is used twice"),
    (BASE + RUN + "[run.params]\ndepth = 2\n", "ensemble 'tanh'"),
    (BASE + RUN + "[run.params]\nd_in = 2\n", "params.d_in belongs at the run level"),
    (BASE + "[infer_widths]\nb = [2]\n" + RUN, "infer_widths: no run 'b'"),
    (BASE + "run = 3\n", "run must be one or more"),
    ("name = \n", "not valid TOML"),
])
def test_bad_studies_are_refused_naming_the_key(text, words):
    with pytest.raises(NNGPInputError) as err:
        study_from_text(text, "s.toml")
    assert words in str(err.value) and str(err.value).startswith("s.toml"), str(err.value)


def test_order_follows_what_infer_couplings_accepts():
    import inspect

    from nngp_ppl.inference import infer_couplings

    takes = "order" in inspect.signature(infer_couplings).parameters
    assert supported_orders() == ((1, 2) if takes else (1,))
    if not takes:
        with pytest.raises(NNGPInputError, match="order must be one of"):
            study_from_text(BASE + RUN + "order = 2\n")


def test_the_cli_reads_a_config_and_refuses_a_bad_one(tmp_path, capsys):
    good = tmp_path / "s.toml"
    good.write_text(BASE + RUN)
    assert main(["reproduce", "--config", str(good), "--dry-run", "--out",
                 str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "preset t ->" in text and "would run   sample_a" in text
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + RUN + "widht = 3\n")
    for argv, words in [
        (["--config", str(bad)], "unknown key 'widht'"),
        (["--config", str(tmp_path / "none.toml")], "--config: cannot read"),
        (["--config", str(good), "--preset", "quick"], "not allowed with"),
    ]:
        try:
            code = main(["reproduce", *argv, "--dry-run", "--out", str(tmp_path / "o")])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err


def test_the_example_study_is_valid():
    p = load_study(EXAMPLES / "tanh_2d.toml")
    (r,) = p.runs()
    assert r.d_in == 2 and r.net().name == "tanh" and r.has_exact()
