"""medrepro: reproduce medical-imaging deep-learning papers end to end.

The package holds all logic; the Snakemake workflow in ``workflow/`` only wires files to the
functions here.  Base modules sit at the top level; each task has a wing (a subpackage) that
matches its rule file and imports only base modules and the wings listed before it.

Base modules:

- :mod:`medrepro.config` - load and validate the workflow configuration.
- :mod:`medrepro.synth`, :mod:`medrepro.datasets` - synthetic stand-ins in the real on-disk
  formats, and the readers ("ingest") of the five datasets; :mod:`medrepro.dicom` - DICOM
  decoding to one image contract; :mod:`medrepro.convert` - parallel conversion to PNG;
  :mod:`medrepro.download` - real datasets (pooch, Kaggle, SHA-256 manifests) and weights.
- :mod:`medrepro.splits` - seeded, stratified, patient-grouped splits and their audit.
- :mod:`medrepro.prepare` - the shared data steps (synthesize, ingest, convert, contact sheet, split).
- :mod:`medrepro.data` - image tables and augmentation (classifiers and detectors).
- :mod:`medrepro.plan` - what each rule reads and writes, and which config keys rerun which step;
  :mod:`medrepro.config_checks`, :mod:`medrepro.departures` - the config's cross-checks and the
  papers' departures; :mod:`medrepro.checkpoint` - the one checkpoint and resume protocol of the
  training engines.
- :mod:`medrepro.metrics` (classification), :mod:`medrepro.uncertainty` (bootstrap, DeLong),
  :mod:`medrepro.tables`, :mod:`medrepro.figures`, :mod:`medrepro.provenance`, :mod:`medrepro.io`.
- :mod:`medrepro.leakage` - patients and pictures shared between splits and datasets.
- :mod:`medrepro.accel` - the device of a step, AMP, seeding; :mod:`medrepro.distributed` -
  data-parallel training on several GPUs.

Wings, lowest first:

- :mod:`medrepro.classify` - models, the training engine, the feature cache, and the one
  classifier run (:mod:`medrepro.classify.run`) that experiments and study stages share.
- :mod:`medrepro.study` - staged studies: grids of classifier runs, selection, summary.
- :mod:`medrepro.detect` - Mask R-CNN: data, the torchvision and detectron2 backends behind one
  interface, boxes to masks to COCO/VIA (:mod:`medrepro.detect.annotation`), equalisation
  (:mod:`medrepro.detect.preprocessing`), the paper's scores (:mod:`medrepro.detect.scores`), the
  workflow steps.
- :mod:`medrepro.publish` - each paper's tables and figures, the audit of the published tables,
  the report and its HTML pages.
"""

__version__ = "0.1.0"
