"""The `ript` command line: the main job, the trainer and actors, the store, evaluation, config.

Every command takes `--config FILE` (YAML) and trailing `key.sub=value` overrides; both
are validated against the same typed config the code uses, so a typo is an error that
names the key and where it came from, never a silently ignored setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ript_robot.calibration.cli import add_calibrate_commands, run_calibrate
from ript_robot.config import ConfigError, QuickstartConfig, dump_config, load_config
from ript_robot.data.backend import StoreError
from ript_robot.types import CheckpointError

if TYPE_CHECKING:
    from ript_robot.data.store import EpisodeStore


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
    ev.add_argument("checkpoint", help="checkpoint folder (model.safetensors + policy.json), or an episode store URI")
    ev.add_argument("--version", type=int, help="for a store: the published policy version (default: the latest)")
    ev.add_argument("--contexts", choices=["train", "heldout"], default="heldout", help="which context set")
    ev.add_argument("--sampled", action="store_true", help="sample actions instead of the mean")
    ev.add_argument("--rollouts", type=int, default=None, help="rollouts per context")
    ev.add_argument("--json", type=Path, help="also write the result as JSON here")
    tr = add("train", "the off-board trainer: RIPT updates from groups that actors commit to the store")
    tr.add_argument("--store", help="store URI (default: store.uri of the config)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    ac = add("actor", "a simulated actor on the built-in task: claims scheduled rollouts, commits them")
    ac.add_argument("--store", help="store URI (default: store.uri of the config)")
    ac.add_argument("--max-episodes", type=int, help="stop after this many episodes (default: when training ends)")
    ac.add_argument("--quiet", action="store_true", help="no progress bars")
    st = add("store", "inspect, verify and export an episode store")
    st.add_argument("action", choices=["info", "list", "verify", "export", "import"], help="what to do")
    st.add_argument("--store", help="store URI (default: store.uri of the config)")
    st.add_argument("--episode", help="export: the episode id (a unique prefix is enough)")
    st.add_argument("--out", type=Path, help="export: output video file (.mp4)")
    st.add_argument("--fps", type=float, default=10.0, help="export: frames per second of the video")
    st.add_argument("--limit", type=int, default=50, help="list: newest episodes shown")
    st.add_argument("--bag", type=Path, help="import: a rosbag2 folder or .db3/.mcap file of a teleoperated demo")
    st.add_argument("--topics", type=Path, help="import: YAML naming the bag's topics (see configs/bag_topics.yaml)")
    st.add_argument("--instruction", help="import: the task instruction the demonstration shows")
    st.add_argument("--context-id", help="import: context id (default: the bag's name)")
    sim = add("sim-train", "SFT then RIPT on LIBERO tasks, through the store, trainer and actor a robot uses")
    sim.add_argument("--store", help="store URI (default: store.uri of the config)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    la = add("label-app", "the operator's tablet app: pair a tablet, label episodes, start and stop the arm")
    la.add_argument("--store", help="store URI (default: store.uri of the config)")
    de = add("detector", "train the vision success detector on the store's labeled episodes")
    de.add_argument("--store", help="store URI (default: store.uri of the config)")
    de.add_argument("--out", type=Path, required=True, help="folder to save the trained detector in")
    de.add_argument("--quiet", action="store_true", help="no progress bars")
    add("config", "print the resolved configuration as YAML")
    add_calibrate_commands(sub)
    return parser


# `ript sim-train` reads these LIBERO settings unless --config names another file
LIBERO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "libero.yaml"


def _sim_train(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.train.sim_train import run_sim_train

    if args.store:
        cfg.store.uri = args.store
    summary = run_sim_train(cfg, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


def _quickstart(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.train.quickstart import run_quickstart

    summary = run_quickstart(cfg, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "success_per_iteration"}, indent=2))


def _eval(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.data.backend import Backend
    from ript_robot.data.store import MARKER
    from ript_robot.envs.pick import context_sets
    from ript_robot.policies import load_policy
    from ript_robot.policies.published import load_published
    from sim_bridge.rollouts import builtin_rollouts

    source = args.checkpoint
    if source.startswith("s3://") or (Path(source) / MARKER).is_file():
        policy = load_published(Backend(source), args.version)
    else:
        policy = load_policy(source)
    eval_cfg = cfg.eval.model_copy(update={"deterministic": not args.sampled})
    if args.rollouts is not None:
        eval_cfg.rollouts_per_context = args.rollouts
    train, heldout = context_sets(cfg.task)
    contexts = train if args.contexts == "train" else heldout
    sim = builtin_rollouts(cfg)
    result = sim.evaluate(policy, contexts, eval_cfg, desc="eval")
    sim.close()
    print(f"{source} (policy v{policy.version}) on {len(contexts)} {args.contexts} contexts: {result}")
    if args.json:
        args.json.write_text(json.dumps({**result.as_dict(), "policy_version": policy.version}, indent=2))


def _store(cfg: QuickstartConfig, args: argparse.Namespace) -> EpisodeStore:
    from ript_robot.data.store import EpisodeStore

    if args.store:
        cfg.store.uri = args.store
    creates = args.command in ("train", "actor") or getattr(args, "action", None) == "import"
    return EpisodeStore(cfg.store.uri, create=creates)


def _train(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    import torch

    from ript_robot.rl.distributed import init_from_env, membership

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rank, world = init_from_env()  # under torchrun: data-parallel ranks, rank 0 leads
    with membership():
        _train_rank(cfg, args, rank, world)


def _train_rank(cfg: QuickstartConfig, args: argparse.Namespace, rank: int, world: int) -> None:
    """One trainer process: rank 0 leads (pretrains or resumes, schedules, publishes), the others follow."""
    from ript_robot.data.checkpoints import latest_version
    from ript_robot.envs.pick import context_sets
    from ript_robot.policies import load_policy
    from ript_robot.rl.distributed import barrier
    from ript_robot.train.logging import MetricsLogger
    from ript_robot.train.quickstart import pretrain_and_sft
    from ript_robot.train.service import StoreTrainer

    train, _ = context_sets(cfg.task)
    if rank > 0:
        barrier()  # rank 0 creates the store first
        follower = StoreTrainer(_store(cfg, args), train, cfg.ript, cfg.trainer, cfg.seed)
        follower.start()  # waits for rank 0 to start (and publish version 0)
        print(f"rank {rank}/{world}: {follower.follow()} updates alongside rank 0", file=sys.stderr)
        return
    store = _store(cfg, args)
    barrier()  # the store exists: the other ranks may open it
    cfg.trainer.output_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLogger(cfg.trainer.output_dir)
    initial = None
    if latest_version(store.backend) is None:  # a new store: start from a checkpoint, or pretrain + SFT
        initial = (
            load_policy(cfg.init_checkpoint) if cfg.init_checkpoint else pretrain_and_sft(cfg, log, not args.quiet)
        )
    trainer = StoreTrainer(store, train, cfg.ript, cfg.trainer, cfg.seed, log)
    resumed = trainer.start(initial)
    assert trainer.policy is not None
    print(
        f"{'resumed' if resumed else 'started'} at policy v{trainer.policy.version} in {store.uri}; "
        f"{len(trainer.consumed)} episodes already used",
        file=sys.stderr,
    )
    history = trainer.run(cfg.ript.iterations, progress=not args.quiet)
    log.close()
    for m in history:
        print(json.dumps({k: m.get(k) for k in ("policy_version", "rollout_success", "episodes", "groups_accepted")}))
    if trainer.stop_reason:
        raise SystemExit(f"ript train: {trainer.stop_reason}")


def _actor(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.train.sim_actor import run_actor

    report = run_actor(cfg, _store(cfg, args), args.max_episodes, progress=not args.quiet)
    print(json.dumps({"episodes": report.episodes, "policy_versions": report.policy_versions}))
    if report.failures:
        raise StoreError(f"{len(report.failures)} episodes were not stored; first: {report.failures[0]}")


def _label_app(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.labeling.robot import load_link
    from ript_robot.labeling.server import LabelServer, build_app

    if args.store:
        cfg.store.uri = args.store
    app_cfg = cfg.label_app
    robot = None
    if app_cfg.robot == "sim":
        robot = load_link("sim", {"store_uri": cfg.store.uri, "config": cfg})
    elif app_cfg.robot == "ros":
        robot = load_link("ros", {})
    server = LabelServer(build_app(app_cfg, cfg.store, cfg.detector, robot), app_cfg.host, app_cfg.port).start()
    print(
        f"[label-app] serving {cfg.store.uri} on {server.url} (robot: {app_cfg.robot}); Ctrl-C stops", file=sys.stderr
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if robot is not None:
            robot.close()


def _detector(cfg: QuickstartConfig, args: argparse.Namespace) -> None:
    from ript_robot.success.detector import train_detector

    try:
        detector, report = train_detector(_store(cfg, args), cfg.detector, cfg.seed, progress=not args.quiet)
    except ValueError as exc:  # too few labeled episodes, or none with frames
        raise ConfigError(str(exc)) from exc
    detector.save(args.out, report)
    print(json.dumps({"saved": str(args.out), **report}, indent=2))


def _store_command(cfg: QuickstartConfig, args: argparse.Namespace) -> int:
    store = _store(cfg, args).refresh()
    if args.action == "info":
        print(json.dumps(store.info(), indent=2))
    elif args.action == "list":
        print(f"{'episode':34} {'context':28} {'v':>4} {'robot':10} {'steps':>5} label")
        for r in store.records(kind=None)[-args.limit :]:
            m = r.meta
            label = "-" if m.label is None else f"{'success' if m.label.success else 'failure'} ({m.label.source})"
            print(
                f"{m.episode_id:34} {m.context.context_id:28} {m.policy_version:>4} {m.robot_id:10} "
                f"{m.num_steps:>5} {label}"
            )
    elif args.action == "verify":
        from tqdm import tqdm

        with tqdm(desc="verify", unit="episode", disable=not sys.stderr.isatty()) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = store.verify(advance)
        for problem in report.problems:
            print(f"DAMAGED  {problem}")
        for note in report.unverifiable:
            print(f"UNVERIFIABLE  {note}")
        for name in report.uncommitted:
            print(f"staging  {name}: never committed (a writer stopped mid-episode); invisible to readers")
        for name in report.unindexed:
            print(f"orphan   {name}: promoted but not indexed (a writer stopped at commit); invisible to readers")
        print(
            f"{report.checked} committed episodes checked, {len(report.problems)} damaged (never trained on), "
            f"{len(report.unverifiable)} unverifiable (written before object manifests)"
        )
        return 0 if report.ok else 1
    elif args.action == "export":
        from ript_robot.data.video import export_video

        if not args.episode or not args.out:
            raise ConfigError("store export needs --episode ID and --out FILE.mp4")
        matches = [i for i in store.index.episodes if i.startswith(args.episode)]
        if len(matches) != 1:
            raise StoreError(f"{len(matches)} episodes match {args.episode!r}; give a longer prefix")
        path = export_video(store.read_episode(matches[0]), args.out, args.fps)
        print(f"wrote {path}")
    elif args.action == "import":
        from ript_robot.data.rosbag import BagImportError, BagTopics, import_bag

        if not args.bag or not args.topics or not args.instruction:
            raise ConfigError("store import needs --bag PATH, --topics FILE.yaml and --instruction TEXT")
        topics = load_config(BagTopics, args.topics)
        try:
            episode_id = import_bag(args.bag, store, topics, args.instruction, args.context_id)
        except BagImportError as exc:
            raise ConfigError(str(exc)) from exc
        print(f"imported {args.bag} as demonstration {episode_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = args.config
        if path is None and args.command == "sim-train" and LIBERO_CONFIG.is_file():
            path = LIBERO_CONFIG
        cfg = load_config(QuickstartConfig, path, args.overrides)
        if args.command == "config":
            print(dump_config(cfg), end="")
        elif args.command == "quickstart":
            _quickstart(cfg, args)
        elif args.command == "eval":
            _eval(cfg, args)
        elif args.command == "train":
            _train(cfg, args)
        elif args.command == "actor":
            _actor(cfg, args)
        elif args.command == "store":
            return _store_command(cfg, args)
        elif args.command == "sim-train":
            _sim_train(cfg, args)
        elif args.command == "label-app":
            _label_app(cfg, args)
        elif args.command == "detector":
            _detector(cfg, args)
        elif args.command == "calibrate":
            return run_calibrate(args)
    except (ConfigError, CheckpointError, StoreError) as exc:
        print(f"ript {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
