"""Typed, frozen views of the validated config: what the engines, the output kinds and the report read.

The config is validated against ``config/schema.yaml``, which fills every default
(:func:`medrepro.config.validate_config`); :func:`run_spec` then turns one experiment's block
into a :class:`RunSpec` of frozen dataclasses, :func:`study_spec` a study's into a
:class:`StudySpec` (whose :meth:`StudySpec.run` makes each of its runs' :class:`RunSpec`) and
:func:`paper_spec` a paper's into a :class:`PaperSpec` (its outputs, comparison rows, headline
metrics and departures), built by ``dacite`` in strict mode: a key the dataclasses do not know,
or a key they need that the block lacks, is an error that names it.  So no engine keeps a
default of its own, and a typo in a key cannot pass silently (``tests/test_specs.py`` checks
that the dataclasses and the schema list the same keys).

Keys that only a later step reads are not passed to the earlier ones (a rule's params are what
its step depends on: ``medrepro.plan.LATER_KEYS``): there the field is
``None``, "not this step's concern" (``threshold`` and ``detect.score_threshold`` when
training, say).  Lists become tuples; mappings the engines pass on whole (an augmentation's
``params``) stay mappings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import dacite


class SpecError(ValueError):
    """A run block that does not make a run spec (a key missing, unknown or of the wrong type)."""


@dataclass(frozen=True)
class ClassSpec:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class AugmentStep:
    """One albumentations transform: its class name and keyword arguments."""
    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a sequential model or head; ``None``: Keras' default for the layer
    (:func:`medrepro.classify.models.build_sequential` holds them, as Keras does)."""
    type: str
    filters: int | None = None
    kernel: int | None = None
    stride: int | None = None
    padding: str | None = None
    size: int | None = None
    units: int | None = None
    rate: float | None = None
    l2: float | None = None
    activation: str | None = None
    momentum: float | None = None
    epsilon: float | None = None


@dataclass(frozen=True)
class DetectorSpec:
    """``model.detector``: the Mask R-CNN's architecture (schema: experiments.model.detector)."""
    backend: str
    backbone: str
    norm: str
    trainable_layers: int
    last_stage: int
    anchor_sizes: tuple[int, ...]
    rpn_pre_nms_top_n: int
    rpn_post_nms_top_n: int
    rpn_batch_size_per_image: int
    roi_batch_size_per_image: int
    min_score: float
    max_detections: int
    fpn_channels: int
    box_head_size: int
    mask_head_layers: tuple[int, ...]
    pretrained: str | None


@dataclass(frozen=True)
class ModelSpec:
    """``model``: a sequential CNN (``layers``), a transfer model (``backbone`` + ``head``) or a
    Mask R-CNN (``detector``); the other architectures' keys are ``None``."""
    arch: str
    input_size: tuple[int, int]
    channels: int
    output: str
    init: str
    freeze: bool
    pool: str
    normalize: str
    backbone: str | None = None
    head: tuple[LayerSpec, ...] | None = None
    layers: tuple[LayerSpec, ...] | None = None
    detector: DetectorSpec | None = None

    @property
    def frozen_transfer(self) -> bool:
        """A transfer model whose backbone does not train (only its head does): the one place
        that decides it."""
        return self.arch == "transfer" and self.freeze


@dataclass(frozen=True)
class EarlyStoppingSpec:
    patience: int
    min_delta: float
    restore_best_weights: bool


@dataclass(frozen=True)
class ReduceLRSpec:
    patience: int
    factor: float
    min_lr: float
    min_delta: float


@dataclass(frozen=True)
class TrainSpec:
    """``train``: the optimisation, the device and the validation split (schema: train_spec)."""
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    steps_per_epoch: int | None
    warmup_iterations: int
    clip_grad_norm: float | None
    weight_decay: float
    class_weights: str
    sampling: str
    early_stopping: EarlyStoppingSpec | None
    tested_weights: str
    reduce_lr: ReduceLRSpec | None
    seed: int
    feature_cache: str
    validate_on: str
    device: str
    num_workers: int
    amp: bool
    channels_last: bool
    deterministic: bool | str
    gpus: int
    allow_cpu: bool


@dataclass(frozen=True)
class DeviceSpec:
    """Where a step runs: the device keys of a ``train`` block (the features rule, which serves
    every run of a dataset, gets only these)."""
    device: str
    gpus: int
    amp: bool
    allow_cpu: bool
    channels_last: bool


@dataclass(frozen=True)
class DetectSpec:
    """``detect``: annotation, preprocessing and evaluation of a detection run.  ``train_classes``
    ``None``: every class; the evaluation keys are ``None`` in the steps before evaluation."""
    mask_shape: str
    equalization: str
    positive_class: str
    train_classes: tuple[str, ...] | None = None
    score_threshold: float | str | None = None
    iou_threshold: float | None = None
    false_positive: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One trained model: an experiment (``experiments.<name>``) or one run of a study stage
    (:meth:`StudySpec.run`).  ``threshold`` is ``None`` in the training step."""
    dataset: str
    classes: tuple[ClassSpec, ...]
    model: ModelSpec
    train: TrainSpec
    augment: tuple[AugmentStep, ...]
    task: str = "classify"
    threshold: float | None = None
    detect: DetectSpec | None = None

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def as_dict(self) -> dict:
        """The plain-data form (model files, fingerprints, JSON): :func:`run_spec` reads it back."""
        return as_plain(self)


@dataclass(frozen=True)
class CandidateSpec:
    """A stage-1 candidate of a study: a backbone's input size and head."""
    input_size: tuple[int, int]
    head: tuple[LayerSpec, ...]


@dataclass(frozen=True)
class StudyModelSpec:
    """``studies.<name>.model``: what every run of the study shares."""
    channels: int
    normalize: str
    output: str
    init: str
    pool: str


@dataclass(frozen=True)
class FineTuneSpec:
    unfreeze_fraction: float
    count_layers: str
    lr: float
    epochs: int
    start: str


@dataclass(frozen=True)
class StudySpec:
    """A staged study (``studies.<name>``).  Each stage's rule passes only what the stage reads
    (``medrepro.plan.STUDY_STAGE_KEYS``): the other stages' keys are ``None``
    there.  :meth:`run` is the one definition of a run of the study."""
    dataset: str
    classes: tuple[ClassSpec, ...]
    model: StudyModelSpec
    backbones: dict[str, CandidateSpec]
    train: TrainSpec
    label: str | None = None
    batch_sizes: tuple[int, ...] | None = None
    learning_rates: tuple[float, ...] | None = None
    augment: tuple[AugmentStep, ...] | None = None
    augment_epochs: int | None = None
    fine_tune: FineTuneSpec | None = None
    select_on: str | None = None
    select_metric: str | None = None

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def run(self, backbone: str, batch_size: int | None = None, lr: float | None = None,
            augment: bool = False) -> RunSpec:
        """One run of the study: ``backbone``'s candidate, frozen, with the study's shared model
        settings and training block (``batch_size`` and ``lr`` replacing its own), augmented with
        the study's ``augment`` list when ``augment``.  The binary threshold is 0.5, as the
        thesis' Keras models predicted."""
        c, m = self.backbones[backbone], self.model
        model = ModelSpec(arch="transfer", backbone=backbone, input_size=c.input_size, head=c.head, freeze=True,
                          channels=m.channels, normalize=m.normalize, output=m.output, init=m.init, pool=m.pool)
        train = dataclasses.replace(self.train, **{k: v for k, v in (("batch_size", batch_size), ("lr", lr))
                                                   if v is not None})
        return RunSpec(dataset=self.dataset, classes=self.classes, model=model, train=train,
                       augment=tuple(self.augment or ()) if augment else (), threshold=0.5)


@dataclass(frozen=True)
class OutputSpec:
    """One table or figure of a paper (``papers.<paper>.outputs``): its ``kind`` and file ``name``,
    and the options of its kind (``None``: the option does not apply, or the kind's own default,
    :mod:`medrepro.publish.outputs` and :mod:`medrepro.publish.study`)."""
    kind: str
    name: str
    caption: str | None = None
    layout: str | None = None
    covers: tuple[str, ...] | None = None
    experiment: str | None = None
    experiments: tuple[str, ...] | None = None
    split: str | None = None
    stage: int | str | None = None
    best_per: str | None = None
    method: str | None = None
    pick: str | None = None
    class_names: tuple[str, ...] | None = None
    row_labels: Mapping[str, str] | None = None
    columns: Mapping[str, str] | None = None
    metrics: tuple[str, ...] | None = None
    label: str | None = None
    n: int | None = None
    bins: int | None = None
    size: int | None = None
    index: int | None = None
    seed: int | None = None

    @property
    def runs(self) -> list[str | None]:
        """The experiments or studies it shows: ``experiments``, else ``[experiment]``."""
        return list(self.experiments or [self.experiment])


@dataclass(frozen=True)
class CompareRow:
    """One ``compare`` row: a reproduced metric (a dotted path into the experiment's metrics.json)
    beside a published one (a dotted path into the paper's YAML); ``experiment`` ``None``: the
    paper's first."""
    metric: str
    reproduced: str
    published: str
    experiment: str | None = None


@dataclass(frozen=True)
class TablePattern:
    """One ``compare_tables`` entry: comparison rows for a whole published table, from patterns
    (:func:`medrepro.publish.compare.expand_table_comparisons`)."""
    published: str
    experiment: str
    reproduced: str
    metric: str
    derive: Mapping[str, Any] | None = None
    only: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class NotCompared:
    """Published values (a dotted path prefix) that no comparison row sets beside a reproduced one, and why."""
    published: str
    reason: str


@dataclass(frozen=True)
class NotProduced:
    """A numbered table or figure of the paper that the workflow does not make, and why."""
    name: str
    reason: str


@dataclass(frozen=True)
class HeadlineSpec:
    """A metric that shows whether a run learnt, beside its chance level (both paths into the same metrics.json)."""
    experiment: str
    metric: str
    reproduced: str
    chance: str


@dataclass(frozen=True)
class Departure:
    """Where the reproduction departs from the paper (or follows it by a ``setting``).  ``value``
    and ``follows`` are not written in config: :func:`medrepro.departures.resolved_departures` fills
    them with the setting's value in this run and whether it is ``paper_value``."""
    topic: str
    paper: str
    here: str
    why: str
    touches: str
    setting: str | None = None
    paper_value: Any = None
    value: Any = None
    follows: bool | None = None


@dataclass(frozen=True)
class StatedSetting:
    """A setting the paper states (``papers.<paper>.stated``): a config key, the paper's value, where."""
    setting: str
    value: Any
    source: str


@dataclass(frozen=True)
class PaperSpec:
    """A paper's validated block (``papers.<paper>``): its runs, outputs and what the report sets
    beside the published numbers."""
    published: str
    experiments: tuple[str, ...]
    class_labels: Mapping[str, str]
    not_produced: tuple[NotProduced, ...]
    compare_tables: tuple[TablePattern, ...]
    not_compared: tuple[NotCompared, ...]
    departures: tuple[Departure, ...]
    stated: tuple[StatedSetting, ...]
    outputs: tuple[OutputSpec, ...]
    headline: tuple[HeadlineSpec, ...]
    compare: tuple[CompareRow, ...]
    title: str | None = None
    # what the paper reported of each TRIPOD+AI and CLAIM 2024 item (medrepro.publish.checklist)
    checklist: str | None = None
    # the paper's test-set size: a number, a path into the published YAML, or per experiment
    published_test_size: float | str | Mapping[str, float | str] | None = None


def _plain(obj):
    """Tuples as lists and mappings as dicts, all the way down (JSON's and YAML's shapes)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _number(v):
    """YAML writes 1e-3 as a float but 0 as an int: a float field takes both."""
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


_DACITE = dacite.Config(strict=True, cast=[tuple], type_hooks={float: _number})

# keys of an experiment block that describe where it is reported, not how it runs (inflation_of:
# the run an inflation pair's arm repeats, medrepro.config.with_inflation)
_NOT_RUN = ("paper", "subset", "split", "inflation_of")


def _from_block(cls, block, where: str, drop=()):
    """``cls`` from a validated block without its keys ``drop``; a ``cls`` passes through."""
    if isinstance(block, cls):
        return block
    data = {k: v for k, v in block.items() if k not in drop}
    try:
        return dacite.from_dict(cls, data, config=_DACITE)
    except dacite.DaciteError as exc:
        raise SpecError(f"{where}: {exc} (the block must be validated against config/schema.yaml first)") from exc


def run_spec(block: Mapping | RunSpec, where: str = "run") -> RunSpec:
    """The :class:`RunSpec` of a validated experiment block (or of a spec's :meth:`RunSpec.as_dict`);
    a :class:`RunSpec` passes through.  The block's ``paper``, ``subset`` and ``split`` (the split
    step's and the report's) are left out; in the model block, the keys of the other
    architectures are ``None``."""
    return _from_block(RunSpec, block, where, _NOT_RUN)


def lr_key(lr: float) -> str:
    """A stage-2 run's name for its learning rate, in full (``lr_0.0001``, ``lr_0.00012``,
    ``lr_1e-05``): distinct rates never share a name."""
    return f"lr_{float(lr)!r}"


def train_spec(block: Mapping | TrainSpec, where: str = "train") -> TrainSpec:
    """A validated ``train`` block as a :class:`TrainSpec`; a :class:`TrainSpec` passes through."""
    return _from_block(TrainSpec, block, where)


def study_spec(block: Mapping | StudySpec, where: str = "study") -> StudySpec:
    """The :class:`StudySpec` of a validated study block (or of a stage's part of one); a
    :class:`StudySpec` passes through.  The block's ``paper``, ``subset`` and ``split`` are left out."""
    return _from_block(StudySpec, block, where, _NOT_RUN)


def output_spec(block: Mapping | OutputSpec, where: str = "output") -> OutputSpec:
    """A validated ``outputs`` entry as an :class:`OutputSpec`; an :class:`OutputSpec` passes through."""
    return _from_block(OutputSpec, block, where)


def paper_spec(block: Mapping | PaperSpec, where: str = "paper") -> PaperSpec:
    """A validated ``papers.<paper>`` block as a :class:`PaperSpec`; a :class:`PaperSpec` passes through."""
    return _from_block(PaperSpec, block, where)


def device_spec(block: Mapping | TrainSpec | DeviceSpec) -> DeviceSpec:
    """The device keys (``device``, ``gpus``, ``amp``, ``allow_cpu``, ``channels_last``) of a
    ``train`` block or of a device block, as a :class:`DeviceSpec`."""
    if isinstance(block, DeviceSpec):
        return block
    keys = [f.name for f in dataclasses.fields(DeviceSpec)]
    if isinstance(block, TrainSpec):
        return DeviceSpec(**{k: getattr(block, k) for k in keys})
    try:
        return dacite.from_dict(DeviceSpec, {k: block[k] for k in keys if k in block}, config=_DACITE)
    except dacite.DaciteError as exc:
        raise SpecError(f"device block: {exc}") from exc


def as_plain(spec) -> dict:
    """A spec's plain-data form (tuples as lists): what model files and fingerprints store."""
    return _plain(dataclasses.asdict(spec))


def from_plain(cls, data: Mapping):
    """The ``cls`` spec stored as ``data`` by :func:`as_plain` (a model file's model block, say)."""
    try:
        return dacite.from_dict(cls, dict(data), config=_DACITE)
    except dacite.DaciteError as exc:
        raise SpecError(f"{cls.__name__}: {exc}") from exc


def model_spec(block: Mapping | ModelSpec) -> ModelSpec:
    """A validated ``model`` block as a :class:`ModelSpec`; a :class:`ModelSpec` passes through."""
    return block if isinstance(block, ModelSpec) else from_plain(ModelSpec, block)


def as_specs(cls, items, what: str | None = None) -> tuple:
    """A list of mappings (or of ``cls``) as a tuple of ``cls``; an item that does not fit is an
    error naming ``what`` and its index."""
    what = what or cls.__name__
    out = []
    for i, v in enumerate(items or ()):
        try:
            out.append(v if isinstance(v, cls) else dacite.from_dict(cls, dict(v), config=_DACITE))
        except dacite.DaciteError as exc:
            raise SpecError(f"{what} {i}: {exc}") from exc
    return tuple(out)


def augment_steps(items) -> tuple[AugmentStep, ...]:
    """A list of ``{name, params}`` mappings (or :class:`AugmentStep`) as :class:`AugmentStep`."""
    return as_specs(AugmentStep, items, "augmentation step")


def layer_specs(layers) -> tuple[LayerSpec, ...]:
    """A list of layer mappings (or :class:`LayerSpec`) as :class:`LayerSpec`."""
    return as_specs(LayerSpec, layers, "layer")


def replace(spec, **changes):
    """A copy of the frozen ``spec`` with ``changes`` (dotted names reach into nested specs:
    ``replace(run, **{"train.lr": 1e-4})``)."""
    nested: dict[str, dict] = {}
    flat = {}
    for k, v in changes.items():
        head, _, rest = k.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    for head, sub in nested.items():
        flat[head] = replace(flat.get(head, getattr(spec, head)), **sub)
    return dataclasses.replace(spec, **flat)
