"""The `ript` command line: the main job, evaluation and config inspection.

Every command takes `--config FILE` (YAML) and trailing `key.sub=value` overrides; both
are validated against the same typed config the code uses, so a typo is an error that
names the key and where it came from, never a silently ignored setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ript_robot.config import ConfigError, QuickstartConfig, dump_config, load_config
from ript_robot.policies import CheckpointError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ript", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, help="YAML config (defaults are embedded; see configs/)")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config values")
        return p

    qs = add("quickstart", "pretrain, SFT from one demo per task, then RIPT on the built-in task")
    qs.add_argument("--quiet", action="store_true", help="no progress bars")
    ev = add("eval", "success rate of a checkpoint on the built-in task, with a confidence interval")
    ev.add_argument("checkpoint", type=Path, help="checkpoint folder (model.safetensors + policy.json)")
    ev.add_argument("--contexts", choices=["train", "heldout"], default="heldout", help="which context set")
    ev.add_argument("--sampled", action="store_true", help="sample actions instead of the mean")
    ev.add_argument("--rollouts", type=int, default=None, help="rollouts per context")
    ev.add_argument("--json", type=Path, help="also write the result as JSON here")
    add("config", "print the resolved configuration as YAML")
    return parser


def _quickstart(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from sim_bridge.quickstart import run_quickstart

    summary = run_quickstart(cfg, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "success_per_iteration"}, indent=2))


def _eval(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.policies import load_policy
    from ript_robot.train.evaluate import evaluate
    from sim_bridge.quickstart import builtin_rollouts, context_sets

    policy = load_policy(args.checkpoint)
    eval_cfg = cfg.eval.model_copy(update={"deterministic": not args.sampled})
    if args.rollouts is not None:
        eval_cfg.rollouts_per_context = args.rollouts
    train, heldout = context_sets(cfg)
    contexts = train if args.contexts == "train" else heldout
    sim = builtin_rollouts(cfg)
    result = evaluate(lambda c, det: sim(policy, c, det, desc="eval"), contexts, eval_cfg)
    sim.close()
    print(f"{args.checkpoint} (policy v{policy.version}) on {len(contexts)} {args.contexts} contexts: {result}")
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(QuickstartConfig, args.config, args.overrides)
        if args.command == "config":
            print(dump_config(cfg), end="")
        elif args.command == "quickstart":
            _quickstart(cfg, args)
        elif args.command == "eval":
            _eval(cfg, args)
    except (ConfigError, CheckpointError) as exc:
        print(f"ript {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
