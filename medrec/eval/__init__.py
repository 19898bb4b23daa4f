"""Evaluation and reports: metrics with patient-level bootstrap CIs, calibration, paired comparison.

Modules (imported on demand, so that `import medrec.eval` stays light):
    metrics      metric functions, operating points (cross-fitted), bootstrap, `evaluate`
    calibration  ECE, Brier score, reliability curve, temperature scaling
    plots        ROC/PR curves, reliability diagram, confusion matrix as PNG bytes
    report       `build_report(run_dir)`: metrics.json, report.html, report.md, plots/
    compare      `compare_runs(run_a, run_b)`: DeLong and paired patient-level bootstrap
"""
