"""``visiontune tune -c cfg.yaml [key=value ...]``: a hyper-parameter search (Optuna) over training runs.

The search is the ``tune`` section of the config (``visiontune config keys tune``); every other key configures the
trials, as for ``visiontune train``.
"""

from __future__ import annotations

import argparse

from visiontune.cli._common import Command, add_config_arguments, launched_as_main_rank


def run_tune(args: argparse.Namespace) -> int:
    from visiontune.config import load_config
    from visiontune.tune import format_tune_summary, tune

    config = load_config(args.config, args.overrides)
    result = tune(config)
    if launched_as_main_rank():
        print()
        print(format_tune_summary(result))
        if result.exit_code:
            print("stopped by a signal: the same command continues the study")
    return result.exit_code


COMMANDS = (
    Command(
        "tune", "search hyper-parameters (Optuna): trials are training runs; pruning, resume, final seeds",
        "  visiontune tune -c configs/classification/mobilenetv2_100_linear_probe.yaml data.root=data/flowers \\\n"
        "      \"tune.space={optim.lr: 'loguniform(1e-4, 0.3)', optim.weight_decay: 'loguniform(1e-6, 1e-2)'}\" "
        "tune.trials=30\n"
        "  visiontune tune -c cfg.yaml \"tune.space={finetune.freeze: 'choice([backbone, none])', "
        "finetune.layer_decay: 'uniform(0.6, 1.0)'}\" tune.sampler=random tune.pruner=hyperband\n"
        "  visiontune tune -c cfg.yaml ...   # the same command again continues the study (tune.resume)\n"
        "  torchrun --nproc-per-node 4 -m visiontune tune -c cfg.yaml ...   # every trial on all processes",
        lambda parser: add_config_arguments(parser, run_tune),
    ),
)
