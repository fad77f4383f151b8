"""The leakage audit: patients and pictures shared between splits, and between datasets."""


rule image_hashes:
    """SHA-256 and perceptual hash of every converted image of a dataset."""
    input:
        f"{RESULTS}/converted/{{dataset}}/manifest.csv",
    output:
        f"{RESULTS}/leakage/hashes/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/image_hashes/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/image_hashes/{{dataset}}.tsv"
    conda:
        ENV
    script:
        "../scripts/image_hashes.py"


rule leakage:
    input:
        splits=[f"{d}/split.csv" for d in split_files().values()],
        audits=[f"{d}/split_audit.json" for d in split_files().values()],
        hashes=expand(
            f"{RESULTS}/leakage/hashes/{{dataset}}.csv", dataset=leakage_datasets()
        ),
        manifests=expand(
            f"{RESULTS}/manifests/{{dataset}}.csv", dataset=leakage_datasets()
        ),
    output:
        report(
            directory(f"{RESULTS}/leakage/audit"),
            patterns=["{name}.csv"],
            caption="../report/leakage.rst",
            category="audits",
            subcategory="leakage",
        ),
    log:
        f"{RESULTS}/logs/leakage.log",
    benchmark:
        f"{RESULTS}/benchmarks/leakage.tsv"
    localrule: True
    conda:
        ENV
    params:
        names=list(split_files()),
        datasets=canonical(
            {
                **{e: x["dataset"] for e, x in config["experiments"].items()},
                **{s: x["dataset"] for s, x in STUDIES.items()},
            }
        ),
        dataset_names=leakage_datasets(),
        # synthetic stand-ins list the duplicates they planted in SYNTHETIC.json
        synthetic={
            d: f"{RESULTS}/raw/{d}/SYNTHETIC.json"
            for d in leakage_datasets()
            if config["datasets"][d].get("source", "synthetic") == "synthetic"
        },
        leakage=LEAKAGE,
        scale=config["scale"],
    script:
        "../scripts/leakage.py"


rule inflation:
    """Leakage inflation: each pair of `inflation` (the same run on one image-level split with and
    without the test patients' other images), the difference of its scores on the same test images.
    """
    input:
        inflation_files(),
    output:
        report(
            directory(f"{RESULTS}/inflation"),
            patterns=["{name}.csv"],
            caption="../report/inflation.rst",
            category="audits",
            subcategory="leakage inflation",
        ),
    log:
        f"{RESULTS}/logs/inflation.log",
    localrule: True
    conda:
        ENV
    params:
        pairs=INFLATION,
        bootstrap=canonical(config["bootstrap"]),
        scale=config["scale"],
    script:
        "../scripts/inflation.py"


rule source_probe:
    """The collection of each image told from outside its lungs (config `source_probe`)."""
    input:
        f"{RESULTS}/converted/{{dataset}}/manifest.csv",
    output:
        report(
            directory(f"{RESULTS}/probe/{{dataset}}"),
            patterns=["{name}.csv"],
            caption="../report/probe.rst",
            category="audits",
            subcategory="source probe",
        ),
    log:
        f"{RESULTS}/logs/source_probe/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/source_probe/{{dataset}}.tsv"
    conda:
        ENV
    params:
        probe=canonical(
            {k: v for k, v in config["source_probe"].items() if k != "datasets"}
        ),
        confidence=config["bootstrap"]["confidence"],
        scale=config["scale"],
    script:
        "../scripts/source_probe.py"
