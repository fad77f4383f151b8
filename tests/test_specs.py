"""The typed run specs (medrepro.specs) against config/schema.yaml: the same keys, every run of the
shipped configs converts, and a block that was not validated is refused with the key named."""
from __future__ import annotations

import dataclasses

import pytest

from medrepro import specs
from medrepro.plan import study_run_spec
from medrepro.specs import SpecError, run_spec

from .conftest import demo_config
from .test_config_docs import SCHEMA, resolve

EXPERIMENT = resolve(SCHEMA["properties"]["experiments"]["additionalProperties"])
STUDY = resolve(SCHEMA["properties"]["studies"]["additionalProperties"])
PAPER = resolve(SCHEMA["properties"]["papers"]["additionalProperties"])


def props(node: dict) -> set[str]:
    return set(resolve(node)["properties"])


def fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls, node", [
    (specs.RunSpec, EXPERIMENT),
    (specs.ModelSpec, EXPERIMENT["properties"]["model"]),
    (specs.DetectorSpec, EXPERIMENT["properties"]["model"]["properties"]["detector"]),
    (specs.DetectSpec, EXPERIMENT["properties"]["detect"]),
    (specs.TrainSpec, SCHEMA["$defs"]["train_spec"]),
    (specs.EarlyStoppingSpec, SCHEMA["$defs"]["train_spec"]["properties"]["early_stopping"]),
    (specs.ReduceLRSpec, SCHEMA["$defs"]["train_spec"]["properties"]["reduce_lr"]),
    (specs.LayerSpec, SCHEMA["$defs"]["layers"]["items"]),
    (specs.AugmentStep, SCHEMA["$defs"]["augment_spec"]["items"]),
    (specs.ClassSpec, SCHEMA["$defs"]["classes_spec"]["items"]),
    (specs.StudySpec, STUDY),
    (specs.StudyModelSpec, STUDY["properties"]["model"]),
    (specs.CandidateSpec, STUDY["properties"]["backbones"]["additionalProperties"]),
    (specs.FineTuneSpec, STUDY["properties"]["fine_tune"]),
    (specs.OutputSpec, PAPER["properties"]["outputs"]["items"]),
    (specs.PaperSpec, PAPER),
    (specs.CompareRow, PAPER["properties"]["compare"]["items"]),
    (specs.TablePattern, PAPER["properties"]["compare_tables"]["items"]),
    (specs.NotCompared, PAPER["properties"]["not_compared"]["items"]),
    (specs.NotProduced, PAPER["properties"]["not_produced"]["items"]),
    (specs.HeadlineSpec, PAPER["properties"]["headline"]["items"]),
    (specs.Departure, PAPER["properties"]["departures"]["items"]),
])
def test_each_spec_has_the_schemas_keys(cls, node):
    """A key added to the schema and not to its spec (or the other way round) fails here, not in a
    run; the run spec leaves out only what the split step and the report read (and which run an
    inflation pair's arm repeats)."""
    assert set(specs._NOT_RUN) == {"paper", "subset", "split", "inflation_of"}
    expected = props(node) - (set(specs._NOT_RUN) if cls in (specs.RunSpec, specs.StudySpec) else set())
    if cls is specs.Departure:  # what the workflow resolves from the setting (departures.resolved_departures)
        expected |= {"value", "follows"}
    assert fields(cls) == expected
    assert fields(specs.DeviceSpec) < fields(specs.TrainSpec)


@pytest.mark.parametrize("overlays", [(), ("full.yaml",), ("full.yaml", "smoke.yaml")])
def test_every_run_of_the_shipped_configs_is_a_spec(overlays):
    cfg = demo_config(*overlays)
    runs = {name: e for name, e in cfg["experiments"].items()}
    runs |= {f"{name}/{b}": study_run_spec(st, b) for name, st in cfg["studies"].items() for b in st["backbones"]}
    assert len(runs) >= 20
    for name, block in runs.items():
        spec = run_spec(block, name)
        assert run_spec(spec.as_dict()) == spec  # what model files store reads back the same
        assert spec.class_names == [c["name"] for c in block["classes"]]
        assert list(spec.model.input_size) == block["model"]["input_size"]
        assert spec.train.seed == block["train"]["seed"] and isinstance(spec.train.lr, float)
        assert (spec.model.detector is not None) == (block.get("task") == "detect")
    mr = run_spec(cfg["experiments"]["mr_exp1"])
    assert isinstance(mr.model.detector.anchor_sizes, tuple) and mr.detect.iou_threshold == 0.45


@pytest.mark.parametrize("overlays", [(), ("full.yaml",)])
def test_every_shipped_paper_is_a_spec_with_its_departures_resolved(overlays):
    from medrepro.departures import resolved_departures

    cfg = demo_config(*overlays)
    for name, block in cfg["papers"].items():
        paper = specs.paper_spec({**block, "departures": resolved_departures(cfg, name)}, name)
        assert paper.experiments == tuple(block["experiments"]) and len(paper.outputs) == len(block["outputs"])
        assert all(isinstance(c, specs.CompareRow) for c in paper.compare)
        assert all(d.follows is not None for d in paper.departures if d.setting)
    mr = specs.paper_spec(cfg["papers"]["maskrcnn_opacity"])
    assert {h.experiment for h in mr.headline} == {"mr_exp1", "mr_exp2", "mr_exp3"}
    with pytest.raises(SpecError, match="headline 0"):
        specs.as_specs(specs.HeadlineSpec, [{"experiment": "e", "metric": "m", "reproduced": "r"}], "headline")


def test_every_output_of_the_shipped_papers_is_a_spec():
    papers = demo_config()["papers"]
    outputs = [specs.output_spec(o, f"{p}.{o['name']}") for p in papers.values() for o in p["outputs"]]
    assert len(outputs) > 50 and all(o.kind and o.name for o in outputs)
    table = next(o for o in outputs if o.name == "table2_opacity_detection")
    assert table.runs == ["mr_exp1", "mr_exp2", "mr_exp3"] and table.columns["f1"] == "opacity.f1"
    assert table.split is None  # not given: the kind's own default applies
    with pytest.raises(SpecError, match='can not match "colums"'):
        specs.output_spec({"kind": "metrics_table", "name": "t", "colums": {}}, "t")


def test_a_study_run_is_its_candidate_frozen_with_the_shared_settings():
    study = demo_config()["studies"]["tm_ER"]
    spec = specs.study_spec(study, "tm_ER")
    run = spec.run("resnet50", batch_size=16, lr=0.01, augment=True)
    m = run.model
    assert (m.arch, m.backbone, m.freeze, m.pool, m.output) == ("transfer", "resnet50", True, "flatten", "sigmoid")
    assert m.head == specs.layer_specs(study["backbones"]["resnet50"]["head"])
    assert list(m.input_size) == study["backbones"]["resnet50"]["input_size"]
    assert (run.train.batch_size, run.train.lr, run.train.epochs) == (16, 0.01, study["train"]["epochs"])
    assert [a.name for a in run.augment] == [a["name"] for a in study["augment"]]
    assert spec.run("resnet50").augment == () and spec.run("resnet50").train.lr == study["train"]["lr"]
    assert study_run_spec(study, "resnet50", 16, 0.01, True) == run.as_dict()
    # a stage's part of the study: the keys of the other stages are None
    stage2 = specs.study_spec({k: study[k] for k in ("dataset", "classes", "model", "backbones", "train",
                                                     "learning_rates", "select_on", "select_metric")})
    assert stage2.batch_sizes is None and stage2.fine_tune is None and stage2.learning_rates[-1] == 1e-5


def test_a_spec_is_frozen_and_replace_reaches_into_it():
    spec = run_spec(demo_config()["experiments"]["cnn_kermany"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.lr = 1.0
    changed = specs.replace(spec, threshold=0.3, **{"train.lr": 0.5, "train.epochs": 2})
    assert (changed.threshold, changed.train.lr, changed.train.epochs) == (0.3, 0.5, 2)
    assert (spec.threshold, spec.train.lr) == (0.5, 0.001) and changed.model == spec.model


def test_a_step_without_a_later_steps_key_gets_none():
    """The training step's params leave out the threshold and the evaluation keys (the rules'
    LATER_KEYS): the spec says None, and no default stands in for them."""
    e = demo_config()["experiments"]["mr_exp1"]
    trained = {**e, "threshold": None, "detect": {k: v for k, v in e["detect"].items()
                                                  if k not in ("score_threshold", "iou_threshold")}}
    trained.pop("threshold")
    spec = run_spec(trained)
    assert spec.threshold is None and spec.detect.score_threshold is None and spec.detect.iou_threshold is None
    assert spec.detect.mask_shape == "ellipse"


@pytest.mark.parametrize("change, message", [
    (lambda e: e["train"].update(lr_decay=0.1), 'can not match "lr_decay"'),
    (lambda e: e["train"].pop("seed"), 'missing value for field "train.seed"'),
    (lambda e: e["model"].update(channels="three"), 'wrong value type for field "model.channels"'),
    (lambda e: e["model"].pop("freeze"), 'missing value for field "model.freeze"'),
])
def test_a_block_that_was_not_validated_is_refused_with_the_key_named(change, message):
    e = demo_config()["experiments"]["cnn_pediatric"]
    change(e)
    with pytest.raises(SpecError, match=rf"cnn_pediatric: .*{message}"):
        run_spec(e, "cnn_pediatric")


def test_layers_and_augmentation_read_from_mappings_or_specs():
    layers = specs.layer_specs([{"type": "dense", "units": 4}, specs.LayerSpec("flatten")])
    assert layers[0] == specs.LayerSpec("dense", units=4) and layers[0].activation is None  # Keras' default
    steps = specs.augment_steps([{"name": "HorizontalFlip", "params": {"p": 0.5}}])
    assert steps == (specs.AugmentStep("HorizontalFlip", {"p": 0.5}),)
    with pytest.raises(SpecError, match='layer 0: can not match "unit"'):
        specs.layer_specs([{"type": "dense", "unit": 4}])
