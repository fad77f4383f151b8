"""medrepro: reproduce medical-imaging deep-learning papers end to end.

The package holds all logic; the Snakemake workflow in ``workflow/`` only wires
files to the functions here.  Modules, by stage:

- :mod:`medrepro.config` - load and validate the workflow configuration.
- :mod:`medrepro.synth` - synthetic stand-ins written in the real on-disk formats.
- :mod:`medrepro.datasets` - readers ("ingest") for the five datasets.
- :mod:`medrepro.dicom` - DICOM decoding to one image contract.
- :mod:`medrepro.convert` - parallel conversion to normalised PNG.
- :mod:`medrepro.splits` - seeded, stratified, patient-grouped splits and audit.
- :mod:`medrepro.models`, :mod:`medrepro.data`, :mod:`medrepro.training` - classifiers
  (sequential CNNs, frozen torchvision backbones with heads), their data and training.
- :mod:`medrepro.evaluation`, :mod:`medrepro.tables`, :mod:`medrepro.figures` - results.
- :mod:`medrepro.publish` - each paper's tables and figures, from the outputs listed in config.
- :mod:`medrepro.annotation`, :mod:`medrepro.detection_metrics`, :mod:`medrepro.preprocessing` -
  boxes to masks to COCO/VIA, the Mask R-CNN paper's metrics, equalisation and augmentation.
- :mod:`medrepro.download` - real datasets (pooch, Kaggle, SHA-256 manifests) and ImageNet weights.
- :mod:`medrepro.accel` - the device of a step, AMP and the GPU-only settings, the GPU check;
  :mod:`medrepro.distributed` - data-parallel training on several GPUs.
- :mod:`medrepro.pipeline` - one function per workflow rule.
"""

__version__ = "0.1.0"
