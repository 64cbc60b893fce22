"""The study service: per-(architecture, shortcut option) tuning of learning rate and weight decay for the
CIFAR-10 experiments of He et al. 2015, "Deep Residual Learning for Image Recognition" (Sec. 4.2), with
Ray Tune + Optuna for the search and MLflow for tracking. The study itself is described by a YAML spec
(:mod:`study.spec`)."""
