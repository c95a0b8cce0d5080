# Per-sample analysis: every sample's outputs, from a job of its own or from its chunk's job.


rule analysis_config:
    output:
        batch_path("analysis_config.yaml"),
    log:
        batch_path("logs/analysis_config.log"),
    benchmark:
        batch_path("benchmarks/analysis_config.tsv")
    localrule: True
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=200,
        runtime=2,
    params:
        # As a param, a changed `analysis:` block reruns this rule and so every sample.
        text=analysis_config_text(config["analysis"]),
    # printf, not a run: block: Snakemake runs a run: block in a Python process of its own
    # (~2-3 s each, more than the whole write).
    shell:
        "printf '%s' {params.text:q} > {output:q} 2> {log:q}"


# analyze_chunk: 1 keeps one `cd125gate analyze` job (one process) per sample; above 1,
# one job per chunk of consecutive samples runs `cd125gate analyze-chunk`, which pays
# the imports once and forks one process per sample (docs/workflow.md).
if ANALYZE_CHUNK == 1:

    rule analyze:
        input:
            unpack(analyze_inputs),
        output:
            result=sample_path("result.json"),
            gates=sample_path("gates.xml"),
            counts=report(
                sample_path("gate_counts.tsv"),
                caption="../report/gate_counts.rst",
                category="Samples",
                subcategory="{sample_id}",
                labels={"sample": "{sample_id}", "file": "gate counts"},
            ),
            qc=report(
                sample_path("qc.png"),
                caption="../report/qc.rst",
                category="Samples",
                subcategory="{sample_id}",
                labels={"sample": "{sample_id}", "file": "QC plots"},
            ),
            extra_plots=[sample_path(f"qc.{fmt}") for fmt in EXTRA_PLOT_FORMATS],
        log:
            batch_path("logs/analyze/{sample_id}.log"),
        benchmark:
            batch_path("benchmarks/analyze/{sample_id}.tsv")
        # Lets a cluster run bundle many samples into one job (--group-components
        # analyze=N): each job pays ~2-3 s of Python imports and a scheduler round trip.
        group:
            "analyze"
        conda:
            "../envs/cd125gate.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        params:
            out=lambda wildcards, output: os.path.dirname(output.result),
            formats=",".join(config["plot_formats"]),
            options=analyze_options,
        shell:
            "(echo slurm_job_id=${{SLURM_JOB_ID:-none}};"
            " cd125gate analyze {input.fcs:q} --out {params.out:q}"
            " --sample-id {wildcards.sample_id} --config {input.config:q}"
            " --plot-formats {params.formats} --threads {threads} --exit-zero {params.options})"
            " > {log:q} 2>&1"

else:
    for number, chunk in enumerate(analyze_chunks(), start=1):

        rule:
            name:
                f"analyze_spec_{number}"
            output:
                batch_path(f"analyze_chunks/{number}.json"),
            log:
                batch_path(f"logs/analyze_spec/{number}.log"),
            localrule: True
            conda:
                "../envs/cd125gate.yaml"
            threads: 1
            resources:
                mem_mb=200,
                runtime=2,
            params:
                # As a param, a changed sheet value or setting path rewrites the spec, and
                # so reruns the chunk.
                text=chunk_spec_text(chunk),
            shell:
                "printf '%s' {params.text:q} > {output:q} 2> {log:q}"

        rule:
            name:
                f"analyze_chunk_{number}"
            input:
                **chunk_inputs(chunk, batch_path(f"analyze_chunks/{number}.json")),
            output:
                chunk_outputs(chunk),
            log:
                chunk=batch_path(f"logs/analyze_chunk/{number}.log"),
                samples=[batch_path(f"logs/analyze/{sid}.log") for sid in chunk],
            benchmark:
                batch_path(f"benchmarks/analyze_chunk/{number}.tsv")
            # --group-components analyze=N bundles N chunks into one cluster job.
            group:
                "analyze"
            conda:
                "../envs/cd125gate.yaml"
            # Its samples run one after the other, each in a process of its own.
            threads: 1
            resources:
                mem_mb=2000,
                runtime=15 + 2 * len(chunk),
            shell:
                "(echo slurm_job_id=${{SLURM_JOB_ID:-none}};"
                " cd125gate analyze-chunk {input.spec:q} --threads {threads})"
                " > {log.chunk:q} 2>&1"


rule regate:
    input:
        unpack(regate_inputs),
    output:
        directory(regate_output()),
    log:
        batch_path("logs/regate/{sample_id}.{decision}.log"),
    benchmark:
        batch_path("benchmarks/regate/{sample_id}.{decision}.tsv")
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        reviews=config.get("reviews") or "",
        # The latest reviewed result beside result.json, written only once this one is complete.
        current=lambda wildcards: sample_path("reviewed_result.json").format(
            sample_id=wildcards.sample_id
        ),
        options=regate_options,
    shell:
        "cd125gate regate {input.result:q} --gates {input.gates:q}"
        " --out {output:q}/reviewed_result.json --failure {output:q}/failed.txt"
        " --current {params.current:q} --config {input.config:q} --reviews {params.reviews:q}"
        " {params.options} > {log:q} 2>&1"
