"""Issue 26 adds an opt-in GenEval-shaped world; this pins that today's world did not move by a byte.

The fingerprints below were computed on ``main`` before the GenEval-shaped world was added
(commit 98f9796) and pasted here: the first samples of every split of the default world
(prompt, description and image bytes, for two data seeds and both scene sizes the stages
use), the default tokenizer's vocabulary and context, and every stage's cache identity at
every profile. If one of them changes, today's data, tokenizer or cached models changed.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from llmimg.core.data import SPLITS, ShapesWorld

N_SAMPLES = 48


def world_fingerprint(seed: int, max_objects: int, split: str, n: int = N_SAMPLES) -> str:
    """SHA-256 (first 16 hex digits) of the first ``n`` samples of a split: prompt, description, image bytes."""
    digest = hashlib.sha256()
    for sample in ShapesWorld(seed=seed, max_objects=max_objects).samples(n, split):
        digest.update(sample.prompt.encode() + b"\0" + sample.description.encode() + b"\0")
        digest.update(sample.image.tobytes())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint() -> str:
    """SHA-256 of the default tokenizer's vocabulary (word -> id) and context length."""
    from llmimg.core.text import train_tokenizer

    tok = train_tokenizer()
    text = json.dumps({"vocab": tok.get_vocab(), "context": tok.model_max_length}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_fingerprint(stage: str, profile: str) -> str:
    """SHA-256 of a stage's default configuration identity at ``profile``: what its cache key is made of."""
    import importlib

    config = importlib.import_module(f"llmimg.stages.{stage}.config").default_config(profile)
    return hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode()).hexdigest()[:16]


# (seed, max_objects, split) -> fingerprint, pasted from main
WORLD = {
    (0, 1, "train"): "e01c99cfbc642a21", (0, 1, "val"): "1de0966026e655b1", (0, 1, "heldout"): "b0e08c6fd1e3f65b",
    (0, 2, "train"): "3efddca40e757181", (0, 2, "val"): "a1cbf56f9a63eb9c", (0, 2, "heldout"): "1f30d45692ae0954",
    (1, 1, "train"): "3e1d73a01bed68d9", (1, 1, "val"): "f4429717d28742ef", (1, 1, "heldout"): "27533a37b60b7f45",
    (1, 2, "train"): "972ae260139af225", (1, 2, "val"): "51815a65ff5dbfd9", (1, 2, "heldout"): "90dd02ae07e7f891",
}
TOKENIZER = "e64f181187300b6c"
# (stage, profile) -> fingerprint
IDENTITIES = {
    ("clip", "smoke"): "a0eee45f6913f27d", ("clip", "default"): "33a757f433c6bc86",
    ("clip", "full"): "e16eb74231094aaf", ("llm", "smoke"): "18ae67a48ef1e4ee",
    ("llm", "default"): "2f40829349ba6bde", ("llm", "full"): "d58fefd1206f4b88",
    ("generator", "smoke"): "48f2694d9a98c777", ("generator", "default"): "b62becec2bd7e1bc",
    ("generator", "full"): "06784229aaf3acd2",
}


@pytest.mark.parametrize("seed,max_objects,split", sorted(WORLD))
def test_default_world_samples_are_unchanged(seed, max_objects, split):
    assert world_fingerprint(seed, max_objects, split) == WORLD[seed, max_objects, split]


def test_default_tokenizer_vocabulary_is_unchanged():
    assert tokenizer_fingerprint() == TOKENIZER


@pytest.mark.parametrize("stage,profile", sorted(IDENTITIES))
def test_stage_cache_identities_are_unchanged(stage, profile):
    assert identity_fingerprint(stage, profile) == IDENTITIES[stage, profile]


if __name__ == "__main__":  # how the fingerprints above were computed
    print({(s, m, split): world_fingerprint(s, m, split) for s in (0, 1) for m in (1, 2) for split in SPLITS})
    print(repr(tokenizer_fingerprint()))
    print({(st, p): identity_fingerprint(st, p) for st in ("clip", "llm", "generator")
           for p in ("smoke", "default", "full")})
