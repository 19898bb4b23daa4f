"""Evaluation and reports: metrics with patient-level bootstrap CIs, calibration, paired comparison.

Modules (imported on demand, so that `import medrec.eval` stays light):
    metrics      metric functions: one weighted, vectorised path (plain values and bootstrap replicates)
    bootstrap    patient-level percentile bootstrap of any statistic of row weights
    crossfit     the cross-fitting loop (fit on the other folds, apply to this one)
    thresholds   operating-point rules and cross-fitted thresholds
    calibration  ECE, Brier score, reliability curve, temperature scaling
    oof          out-of-fold predictions as arrays; the run's metrics as a statistic
    evaluate     `evaluate(oof, cfg)`: everything the report states
    inputs       a run folder's evaluation inputs (run.json, config.yaml, oof_predictions.csv)
    document     the metrics.json document
    tables, render, thumbnails, plots   the report's tables, HTML/Markdown, worst cases, figures
    report       `build_report(run_dir)`: metrics.json, report.html, report.md, plots/
    compare      `compare_runs(run_a, run_b)`: DeLong and paired patient-level bootstrap
"""
