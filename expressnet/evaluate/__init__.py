"""Evaluation: metrics, model evaluation with MoE routing and ablation, reports, dataset reports, plots."""
