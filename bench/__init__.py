r"""mlmjax's benchmarks: a plain package beside `mlmjax`, run from the repository root.

    python -m bench.train --config=configs/bench.py:tiny --steps=3    # the real train step
    python -m bench.fit --config=configs/bert_large.py:512            # the largest batch
    python -m bench.masking                                           # strategies vs HF collator
    python -m bench.data                                              # preparation and loader
    python -m bench.torch_baseline                                    # HF BertForMaskedLM
    python -m bench.trace PROFILE_DIR                                 # where the step's time goes
    python -m bench.report a.json b.json                              # one Markdown table

They are not installed with mlmjax (setup.py packages `mlmjax` only) and nothing in `mlmjax`
imports them. What they share: `harness.py` (the timer, the result record and its JSON files),
`report.py` (the Markdown table of records) and `synthetic.py` (rows of a made-up vocabulary).
`bench/gpu_report.sh` runs them all on one GPU; bench/README.md says what each figure means.
"""
