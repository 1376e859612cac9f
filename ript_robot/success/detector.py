"""The vision success detector: a small image classifier of an episode's final scene.

On a real arm nobody but a person knows whether an episode succeeded, unless a detector
learns it from the labels people (and simulators) already gave. This one looks at the
final frame of one camera (three conv layers with coordinate channels and batch norm, the
instruction modulating the middle one, flattened so where things are is kept) and outputs a success
probability. Training holds out a share of the labeled episodes to
calibrate it: a temperature that makes its probabilities honest, the decision threshold,
and an auto zone (probabilities at or above `auto_high`, at or below `auto_low`) where its
error on the held-out episodes is at most `auto_max_error`. Modes: `suggest` shows its
guess to the operator, `auto` labels on its own inside the auto zone and asks the operator
otherwise, `off`. `DetectorService` does that on a store and counts how often operators
agree with what it suggested.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ript_robot.config import DetectorConfig
from ript_robot.data.index import EpisodeRecord
from ript_robot.data.store import EpisodeStore
from ript_robot.images import resize_area
from ript_robot.policies.vision import VOCAB_SIZE, pad_tokens, tokenize
from ript_robot.types import Episode, EpisodeMeta, Label

WEIGHTS, CONFIG = "model.safetensors", "detector.json"
TRAINED_ON = ("sim", "operator")  # never the detector's own labels


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame at (size, size, 3), by area interpolation (as the policy node resizes)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the detector takes RGB uint8 frames (H, W, 3), got {image.dtype} {image.shape}")
    return resize_area(image, (size, size))


class SuccessDetector(nn.Module):
    """Final frame + instruction -> success logit; calibration lives in buffers saved with the weights."""

    def __init__(self, config: DetectorConfig, camera: str):
        """camera: the camera name it looks through (recorded, so a store's frames are matched by name)."""
        super().__init__()
        self.config = config
        self.camera = camera
        e, size = 32, config.image_size
        self.words = nn.EmbeddingBag(VOCAB_SIZE, e, mode="mean", padding_idx=0)
        # two coordinate channels (CoordConv): whether a grasp succeeded can depend on where in the view it is
        self.conv1 = nn.Conv2d(5, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.film = nn.Linear(e, 2 * 64)
        self.conv3 = nn.Conv2d(64, 32, 3, padding=1)
        # batch norm after each conv: without it training sat at the base rate ("always failure") for
        # 1,000-6,000 steps or for good; with it both seeds tried left it within 500 steps
        self.norm1, self.norm2, self.norm3 = nn.BatchNorm2d(32), nn.BatchNorm2d(64), nn.BatchNorm2d(32)
        cells = 32 * (size // 8) * (size // 8)  # three 2x poolings; flattened, so positions are kept
        self.classifier = nn.Sequential(nn.Linear(cells + e, 128), nn.ReLU(), nn.Linear(128, 1))
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("threshold", torch.full((), 0.5))
        self.register_buffer("auto_low", torch.zeros(()))  # auto-label failure at or below (0: never)
        self.register_buffer("auto_high", torch.full((), 2.0))  # auto-label success at or above (> 1: never)

    def batch(self, frames: list[np.ndarray], instructions: list[str]) -> dict[str, torch.Tensor]:
        size = self.config.image_size
        return {
            "image": torch.from_numpy(np.stack([resize(f, size) for f in frames])),
            "tokens": pad_tokens([tokenize(text) for text in instructions]),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Uncalibrated logits (B,)."""
        words = self.words(batch["tokens"])
        x = batch["image"].permute(0, 3, 1, 2).float() / 255.0
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([x, xs, ys], dim=1).contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        gamma, beta = self.film(words).chunk(2, dim=-1)  # the instruction picks what to look for
        x = self.norm2(self.conv2(x)) * (1.0 + gamma[..., None, None]) + beta[..., None, None]
        x = F.max_pool2d(F.relu(x), 2)
        x = F.max_pool2d(F.relu(self.norm3(self.conv3(x))), 2)
        return self.classifier(torch.cat([x.flatten(1), words], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def probability(self, frames: list[np.ndarray], instructions: list[str]) -> np.ndarray:
        """Calibrated success probability of each final frame."""
        self.eval()
        logits = self(self.batch(frames, instructions))
        return torch.sigmoid(logits / self.temperature).numpy()

    def judge(self, probability: float) -> dict[str, Any]:
        """What the app shows: the probability, the guess at the threshold, and whether auto mode would label."""
        return {
            "probability": float(probability),
            "success": bool(probability >= float(self.threshold)),
            "confident": bool(probability >= float(self.auto_high) or probability <= float(self.auto_low)),
        }

    def save(self, folder: str | Path, report: dict[str, Any] | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))
        meta = {"config": self.config.model_dump(mode="json"), "camera": self.camera, "report": report or {}}
        (folder / CONFIG).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SuccessDetector:
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise FileNotFoundError(
                f"{folder} is not a trained detector (needs {WEIGHTS} and {CONFIG}); train one with `ript detector`"
            )
        meta = json.loads((folder / CONFIG).read_text())
        detector = cls(DetectorConfig.model_validate(meta["config"]), meta["camera"])
        try:
            detector.load_state_dict(load_file(str(folder / WEIGHTS)))
        except RuntimeError as exc:
            raise ValueError(f"{folder}: weights do not fit the detector's architecture: {exc}") from exc
        return detector


@dataclass
class Examples:
    """Final frames with their labels, grouped by episode (so validation never shares an episode)."""

    frames: list[np.ndarray]
    instructions: list[str]
    labels: np.ndarray  # (N,) 1.0 success
    episodes: np.ndarray  # (N,) index of the episode each frame came from


def _examples(episodes: Iterable[tuple[EpisodeMeta, Callable[[], list[np.ndarray]]]]) -> Examples:
    """Each labeled episode's frames with its label (labels from sim or operators only); frames load lazily."""
    frames, instructions, labels, index = [], [], [], []
    for i, (meta, load) in enumerate(episodes):
        if meta.label is None or meta.label.source not in TRAINED_ON:
            continue
        for frame in load():
            frames.append(frame)
            instructions.append(meta.context.instruction)
            labels.append(meta.label.reward)
            index.append(i)
    return Examples(frames, instructions, np.asarray(labels, np.float32), np.asarray(index))


def examples(store: EpisodeStore, records: list[EpisodeRecord], config: DetectorConfig, camera: str) -> Examples:
    """The last `config.last_frames` frames of each labeled episode of a store (its final scene last)."""
    n = config.last_frames
    return _examples((r.meta, partial(store.key_frames, r.episode_id, n, camera, last=True)) for r in records)


def _auto_bound(p: np.ndarray, y: np.ndarray, max_error: float, high: bool, min_count: int = 5) -> float:
    """The loosest threshold whose zone (p >= t, or p <= t) has held-out error <= max_error."""
    order = np.argsort(-p if high else p)
    wrong = (y[order] == 0) if high else (y[order] == 1)
    errors = np.cumsum(wrong)
    counts = np.arange(1, len(p) + 1)
    ok = (errors / counts <= max_error) & (counts >= min_count)
    if not ok.any():
        return 2.0 if high else -1.0  # never confident enough
    last = int(np.flatnonzero(ok)[-1])
    return float(p[order][last])


def calibrate(detector: SuccessDetector, logits: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """Set temperature, threshold and auto zone from held-out logits; returns the held-out figures."""
    target = torch.from_numpy(y)
    temperatures = torch.logspace(-1, 1, 41)
    nll = [F.binary_cross_entropy_with_logits(logits / t, target).item() for t in temperatures]
    detector.temperature.fill_(float(temperatures[int(np.argmin(nll))]))
    p = torch.sigmoid(logits / detector.temperature).numpy()
    candidates = np.unique(np.concatenate([[0.5], p]))
    accuracy = np.array([((p >= t) == (y == 1)).mean() for t in candidates])
    best = candidates[accuracy == accuracy.max()]
    detector.threshold.fill_(float(best[np.argmin(np.abs(best - 0.5))]))
    detector.auto_high.fill_(max(float(detector.threshold), _auto_bound(p, y, detector.config.auto_max_error, True)))
    detector.auto_low.fill_(min(float(detector.threshold), _auto_bound(p, y, detector.config.auto_max_error, False)))
    confident = (p >= float(detector.auto_high)) | (p <= float(detector.auto_low))
    return {
        "heldout_accuracy": float(((p >= float(detector.threshold)) == (y == 1)).mean()),
        "heldout_auto_coverage": float(confident.mean()),
        "heldout_auto_accuracy": (
            float(((p >= float(detector.threshold)) == (y == 1))[confident].mean()) if confident.any() else None
        ),
        "temperature": float(detector.temperature),
        "threshold": float(detector.threshold),
        "auto_low": float(detector.auto_low),
        "auto_high": float(detector.auto_high),
    }


def episode_examples(episodes: Iterable[Episode], config: DetectorConfig, camera: str) -> Examples:
    """The same examples from episodes in memory (their last steps' frames, then their final scene).

    `episodes` may be a generator: only the kept frames outlive each episode, so many thousands fit."""

    def last_frames(episode: Episode) -> list[np.ndarray]:
        kept = [s.observation.images[camera] for s in episode.steps if s.observation.images]
        if episode.final is not None:
            kept.append(episode.final.images[camera])
        return kept[-config.last_frames :]

    return _examples((e.meta, partial(last_frames, e)) for e in episodes)


def train_detector(
    store: EpisodeStore, config: DetectorConfig, seed: int = 0, progress: bool = True
) -> tuple[SuccessDetector, dict[str, Any]]:
    """Train and calibrate a detector on the store's labeled rollouts; returns it and its report."""
    store.refresh()
    records = store.records()
    camera = config.camera or next((c[0] for r in records if (c := store.cameras(r.episode_id))), None)
    if camera is None:
        raise ValueError(f"store {store.uri} has no rollout with camera frames to learn from")
    return fit_detector(examples(store, records, config, camera), config, camera, seed, progress, f"store {store.uri}")


@torch.no_grad()
def _logits(detector: SuccessDetector, batch: dict[str, torch.Tensor], index: np.ndarray) -> torch.Tensor:
    """The detector's logits for the examples at `index`, a thousand at a time (their activations are large)."""
    parts = [
        detector({k: v[torch.from_numpy(index[i : i + 1000])] for k, v in batch.items()})
        for i in range(0, len(index), 1000)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def fit_detector(
    data: Examples, config: DetectorConfig, camera: str, seed: int = 0, progress: bool = True, source: str = "the data"
) -> tuple[SuccessDetector, dict[str, Any]]:
    """Train on a share of the examples' episodes, calibrate on the rest; returns the detector and its report."""
    n_episodes = len(np.unique(data.episodes))
    if n_episodes < 8 or len(np.unique(data.labels)) < 2:
        raise ValueError(
            f"need labeled successes and failures of at least 8 episodes to train a detector, "
            f"{source} has {n_episodes} labeled episodes with {int(data.labels.sum())} success frames"
        )
    rng = np.random.default_rng(seed)
    episode_ids = np.unique(data.episodes)
    held = set(rng.permutation(episode_ids)[: max(2, round(config.validation_fraction * len(episode_ids)))])
    val = np.array([e in held for e in data.episodes])
    torch.manual_seed(seed)
    detector = SuccessDetector(config, camera)
    batch = detector.batch(data.frames, data.instructions)
    y = torch.from_numpy(data.labels)
    train_idx = np.flatnonzero(~val)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)  # fine steps at the end
    detector.train()
    losses = []
    for _ in tqdm(range(config.steps), desc="detector", disable=not progress, leave=False):
        idx = torch.from_numpy(rng.choice(train_idx, size=min(config.batch_size, len(train_idx)), replace=False))
        minibatch = {k: v[idx] for k, v in batch.items()}
        if config.rotate_augment:  # (B, H, W, 3): a quarter turn about the image centre
            minibatch["image"] = torch.rot90(minibatch["image"], int(rng.integers(4)), dims=(1, 2))
        logits = detector(minibatch)
        loss = F.binary_cross_entropy_with_logits(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    detector.eval()
    logits = _logits(detector, batch, np.flatnonzero(val))
    train_logits = _logits(detector, batch, train_idx)
    train_accuracy = float(((train_logits > 0).numpy() == (data.labels[train_idx] == 1)).mean())
    report = calibrate(detector, logits, data.labels[val])
    report.update(
        {
            "camera": camera,
            "train_episodes": int(len(episode_ids) - len(held)),
            "heldout_episodes": len(held),
            "success_share": float(data.labels.mean()),
            "final_loss": float(np.mean(losses[-20:])),
            "train_accuracy": train_accuracy,
        }
    )
    return detector, report


class DetectorService:
    """The detector on a store: suggestions for the tablet, auto labels, agreement with operators."""

    def __init__(self, store: EpisodeStore, detector: SuccessDetector, mode: str = "suggest"):
        if mode not in ("suggest", "auto"):
            raise ValueError(f"DetectorService mode must be 'suggest' or 'auto', got {mode!r} (off: no service)")
        self.store = store
        self.detector = detector
        self.mode = mode
        self._cache: dict[str, dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def suggestion(self, episode_id: str) -> dict[str, Any] | None:
        """The detector's judgment of an episode's final frame (None when it has no frame of its camera)."""
        with self._lock:
            if episode_id in self._cache:
                return self._cache[episode_id]
        record = self.store.index.episodes[episode_id]
        frames = self.store.key_frames(episode_id, 1, self.detector.camera, last=True)
        judged = None
        if frames:
            p = float(self.detector.probability(frames, [record.meta.context.instruction])[0])
            judged = self.detector.judge(p)
        with self._lock:
            self._cache[episode_id] = judged
        return judged

    def auto_label(self, records: list[EpisodeRecord]) -> int:
        """In auto mode, label the never-labeled episodes it is confident about; returns how many."""
        if self.mode != "auto":
            return 0
        done = 0
        for record in records:
            if record.labels:  # labeled, or an operator undid a label: never overrule a person
                continue
            judged = self.suggestion(record.episode_id)
            if judged is None or not judged["confident"]:
                continue
            p = judged["probability"]
            success = judged["success"]
            label = Label(success, "detector", p if success else 1.0 - p, "detector", suggestion=p)
            self.store.add_label(record.episode_id, label)
            done += 1
        return done

    def summary(self, records: list[EpisodeRecord]) -> dict[str, Any]:
        """Mode, agreement with operators on what it suggested, and how many labels it gave itself."""
        threshold = float(self.detector.threshold)
        compared = agree = auto = 0
        for record in records:
            label = record.meta.label
            if label is None:
                continue
            if label.source == "detector":
                auto += 1
            elif label.source == "operator" and label.suggestion is not None:
                compared += 1
                agree += (label.suggestion >= threshold) == label.success
        return {"mode": self.mode, "agree": agree, "compared": compared, "auto_labeled": auto}
