"""medrepro: reproduce medical-imaging deep-learning papers end to end.

The package holds all logic; the Snakemake workflow in ``workflow/`` only wires
files to the functions here.  Modules, by stage:

- :mod:`medrepro.config` - load and validate the workflow configuration.
- :mod:`medrepro.synth` - synthetic stand-ins written in the real on-disk formats.
- :mod:`medrepro.datasets` - readers ("ingest") for the five datasets.
- :mod:`medrepro.dicom` - DICOM decoding to one image contract.
- :mod:`medrepro.convert` - parallel conversion to normalised PNG.
- :mod:`medrepro.splits` - seeded, stratified, patient-grouped splits and audit.
- :mod:`medrepro.models`, :mod:`medrepro.training` - classifiers and their training.
- :mod:`medrepro.evaluation`, :mod:`medrepro.tables`, :mod:`medrepro.figures` - results.
"""

__version__ = "0.1.0"
