# Per-sample analysis: one `cd125gate analyze` job per sample writes all of its outputs.


rule analysis_config:
    output:
        batch_path("analysis_config.yaml"),
    log:
        batch_path("logs/analysis_config.log"),
    benchmark:
        batch_path("benchmarks/analysis_config.tsv")
    localrule: True
    threads: 1
    resources:
        mem_mb=200,
        runtime=2,
    params:
        # As a param, a changed `analysis:` block reruns this rule and so every sample.
        analysis=config["analysis"],
    run:
        write_analysis_config(output[0], params.analysis)


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


rule regate:
    input:
        unpack(regate_inputs),
    output:
        sample_path("reviewed_result.json"),
    log:
        batch_path("logs/regate/{sample_id}.log"),
    benchmark:
        batch_path("benchmarks/regate/{sample_id}.tsv")
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        # As a param, an edited REGATE line (reviewer, date, reason) reruns the re-gating.
        review=lambda wildcards: regate_review(wildcards),
        reviews=config.get("reviews") or "",
        options=regate_options,
    shell:
        "cd125gate regate {input.result:q} --gates {input.gates:q} --out {output:q}"
        " --reviews {params.reviews:q} {params.options} > {log:q} 2>&1"
