"""One run end to end: presets, the run folder and its log and summary (`folder`, `log`, `summary`),
`runs.train_run`, the candidate set, scoring and choosing checkpoints (`choice`), `adapt` and its report
(`adapt_report`), ranking finished runs, loading a model back (`inference`)
and the pair report."""
