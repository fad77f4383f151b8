"""The detection backends behind one interface, chosen by ``model.detector.backend``.

A backend is a module with ``train(annotations_dir, experiment, model_out, history_out,
summary_out, checkpoint=None, weights=None)`` and ``predict(model_path, coco, experiment)``
returning a COCO results list; both read the same COCO JSON through
:class:`medrepro.detect.dataset.DetectionSet`, so evaluation does not know which one ran, and
both save ``checkpoint`` every epoch and resume from it when
:func:`medrepro.detect.dataset.resume_fingerprint` (spec, weights, annotations) matches.
"""
from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {"torchvision": "torchvision_backend", "detectron2": "detectron2_backend"}


def get(name: str) -> ModuleType:
    """The backend module named ``name`` (imported on first use: detectron2 is optional)."""
    if name not in BACKENDS:
        raise ValueError(f"model.detector.backend {name!r}; expected one of {sorted(BACKENDS)}")
    return importlib.import_module(f"{__package__}.{BACKENDS[name]}")
