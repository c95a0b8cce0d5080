# Per-batch outputs: the screening table and the review page.


rule screening:
    input:
        unpack(screening_inputs),
    output:
        tsv=report(
            batch_path("screening.tsv"),
            caption="../report/screening.rst",
            category="Batch",
            labels={"file": "screening table"},
        ),
        json=batch_path("screening.json"),
    log:
        batch_path("logs/screening.log"),
    benchmark:
        batch_path("benchmarks/screening.tsv")
    localrule: True
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # audit.tsv is appended to, never an output: Snakemake would delete it before the job.
        options=screening_options,
    shell:
        "cd125gate screening {input.results:q}"
        " --tsv {output.tsv:q} --json {output.json:q} {params.options} > {log:q} 2>&1"


rule review_page:
    input:
        screening=batch_path("screening.json"),
        results=all_samples("result.json"),
        plots=all_samples("qc.png"),
        reviewed_plots=reviewed_results(),
    output:
        report(
            batch_path("report.html"),
            caption="../report/review_page.rst",
            category="Batch",
            labels={"file": "review page"},
        ),
    log:
        batch_path("logs/review_page.log"),
    benchmark:
        batch_path("benchmarks/review_page.tsv")
    localrule: True
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        results_dir=lambda wildcards, input: os.path.dirname(
            os.path.dirname(input.results[0])
        ),
        # The page's reviews file starts with the lines this batch was run with.
        reviews=review_page_option,
    shell:
        "cd125gate report --results-dir {params.results_dir:q}"
        " --out {output:q} --screening {input.screening:q} {params.reviews} > {log:q} 2>&1"


rule flowjo_workspace:
    input:
        results=all_samples("result.json"),
        gates=all_samples("gates.xml"),
        # Re-gated samples: their edited gates are the workspace's second group.
        reviewed=reviewed_results(),
    output:
        batch_path("batch.wsp"),
    log:
        batch_path("logs/flowjo_workspace.log"),
    benchmark:
        batch_path("benchmarks/flowjo_workspace.tsv")
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "cd125gate workspace {input.results:q} --reviewed {input.reviewed:q}"
        " --out {output:q} > {log:q} 2>&1"


rule signout_records:
    input:
        screening=batch_path("screening.json"),
        results=all_samples("result.json"),
        plots=all_samples("qc.png"),
        reviewed_plots=reviewed_results(),
    output:
        all_samples("signout.pdf"),
    log:
        batch_path("logs/signout_records.log"),
    benchmark:
        batch_path("benchmarks/signout_records.tsv")
    localrule: True
    conda:
        "../envs/cd125gate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        results_dir=lambda wildcards, input: os.path.dirname(
            os.path.dirname(input.results[0])
        ),
    shell:
        "cd125gate signout --screening {input.screening:q}"
        " --results-dir {params.results_dir:q} > {log:q} 2>&1"
