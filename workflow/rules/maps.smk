# Study maps (config `maps`, ltpa.analysis.maps_workflow): <results_dir>/maps/<name>.nii.gz with its
# .json sidecar (what was computed, the top centers), from every scan's pkl and npy of the
# map's atlas (and its pattern file when the workflow builds it: config `patterns`).
# A map is rebuilt when an input is newer, or when ltpa.study.staleness finds it out of date: its
# sidecar against the inputs' sizes and times and the map's parameters now (a changed
# option, scan list or scan_group), so the answer lives with the study.
# Resources: one map holds one block of every scan's patterns at a time (at most
# ltpa.analysis.run.BLOCK_ENTRIES entries; each block's mapped pages dropped after it) plus,
# when no pattern file is built, one scan's patterns being computed. Measured: 1.2 GB
# (coverage) and 1.5 GB (similarity) peak over 50 scans of 10^6 streamlines, 84 and 210 s
# (docs/maps.md, benchmarks/ltpa_bench.py); 4 GB and an hour, more on retry.
# Threads: 1 (the built-in statistics run in one process).
# Targets and inputs: rules/maps_common.smk.


rule ltpa_map:
    input:
        map_inputs,
    output:
        nii=f"{RESULTS}/maps/{{name}}.nii.gz",
    log:
        f"{LOG_DIR}/ltpa_map/{{name}}.log",
    wildcard_constraints:
        name=ids_alternation(MAP_NAMES),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        job=lambda wc: MAP_JOBS[wc.name].to_json(),
        config=dict(config),
    script:
        "../scripts/ltpa_map.py"


rule plot_map:
    input:
        nii=f"{RESULTS}/maps/{{name}}.nii.gz",
    output:
        png=report(
            f"{RESULTS}/report/maps/{{name}}.png",
            caption="../report/maps.rst",
            category="Maps",
            subcategory="{name}",
            labels={"map": "{name}", "figure": "slices"},
        ),
        tsv=report(
            f"{RESULTS}/report/maps/{{name}}.top.tsv",
            caption="../report/maps_table.rst",
            category="Maps",
            subcategory="{name}",
            labels={"map": "{name}", "figure": "top centers"},
        ),
    log:
        f"{LOG_DIR}/plot_map/{{name}}.log",
    wildcard_constraints:
        name=ids_alternation(MAP_NAMES),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    script:
        "../scripts/plot_map.py"
