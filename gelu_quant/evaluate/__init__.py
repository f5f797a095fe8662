"""Evaluation: comparing a converted model with its fp32 reference, reports and the CI gate."""
