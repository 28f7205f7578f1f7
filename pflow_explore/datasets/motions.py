"""Stick-figure skeletons and synthetic keypoint-motion clips (walk, wave, jump).

A skeleton has K = 11 keypoints (:data:`JOINTS`) joined by the bones of :data:`BONES`
(parent, child); a pose is given by one world angle per bone and the bone lengths, and
placed by forward kinematics from the neck. A clip is F frames of the K keypoints,
(K, F, 2), in the clip's own time tau_f = f / (F - 1) in [0, 1]; motions are generated
by code with random amplitudes, phases, frequencies and proportions:

- walk: thighs swing in antiphase, the arms against them, knees bend on the back swing,
  a small forward drift and bob;
- wave: the right arm rises and its forearm waves;
- jump: a crouch, a vertical leap with the arms raised, a landing crouch.

:func:`motion_clips` returns displacements from frame 0, d_f = x_f - x_0 (so d_0 = 0):
the motion prior of chapter 10 is learned on these, and a character with rest keypoints r
moves to r + d_f. Pure data, float32, CPU, reproducible from a ``torch.Generator``.
Time convention: physical time of the animation, clip time tau in [0, 1], frame 0 the rest
(clipart) pose.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

JOINTS = (
    "head",
    "neck",
    "pelvis",
    "l_elbow",
    "l_hand",
    "r_elbow",
    "r_hand",
    "l_knee",
    "l_foot",
    "r_knee",
    "r_foot",
)
# bones (parent, child), parents placed first; the neck is the root
BONES = ((1, 0), (1, 2), (1, 3), (3, 4), (1, 5), (5, 6), (2, 7), (7, 8), (2, 9), (9, 10))
LENGTHS = (0.25, 0.5, 0.3, 0.28, 0.3, 0.28, 0.4, 0.38, 0.4, 0.38)
DOWN = -math.pi / 2
REST_ANGLES = (
    math.pi / 2,
    DOWN,
    DOWN - 0.35,
    DOWN - 0.2,
    DOWN + 0.35,
    DOWN + 0.2,
    DOWN - 0.15,
    DOWN - 0.1,
    DOWN + 0.15,
    DOWN + 0.1,
)
MOTIONS = ("walk", "wave", "jump")
ROOT = (0.0, 0.35)  # the neck's rest position (the figure spans y in about [-0.9, 0.6])


def forward_kinematics(angles: Tensor, lengths: Tensor, root: Tensor) -> Tensor:
    """Keypoints (..., K, 2) from bone angles (..., B), lengths (B,) or (..., B) and the
    neck's position root (..., 2): child = parent + length (cos a, sin a), bone by bone."""
    pts: list[Tensor | None] = [None] * len(JOINTS)
    pts[1] = root
    for b, (p, c) in enumerate(BONES):
        a = angles[..., b]
        step = torch.stack([torch.cos(a), torch.sin(a)], -1) * lengths[..., b, None]
        pts[c] = pts[p] + step
    return torch.stack(pts, -2)  # type: ignore[arg-type]


def rest_pose(lengths: Tensor | None = None) -> Tensor:
    """The rest keypoints (K, 2) for bone ``lengths`` (B,) (default :data:`LENGTHS`)."""
    lengths = torch.tensor(LENGTHS) if lengths is None else lengths
    return forward_kinematics(torch.tensor(REST_ANGLES), lengths, torch.tensor(ROOT))


def _motion_angles(kind: str, tau: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(angles (F, B), root offset (F, 2)) for one clip; u (6,) uniform draws in [0, 1]."""
    rest = torch.tensor(REST_ANGLES).expand(len(tau), -1).clone()
    offset = torch.zeros(len(tau), 2)
    amp, phase, freq = 0.3 + 0.4 * u[0], 2 * math.pi * u[1], 0.6 + 0.5 * u[2]
    s = torch.sin(2 * math.pi * freq * tau + phase)
    if kind == "walk":
        rest[:, 6] += amp * s
        rest[:, 8] -= amp * s
        rest[:, 7] = rest[:, 6] - 0.8 * amp * torch.relu(-s)  # knees bend on the back swing
        rest[:, 9] = rest[:, 8] - 0.8 * amp * torch.relu(s)
        rest[:, 2] -= 0.8 * amp * s
        rest[:, 4] += 0.8 * amp * s
        rest[:, 3] = rest[:, 2] + 0.3 * amp * s
        rest[:, 5] = rest[:, 4] + 0.3 * amp * s
        offset[:, 0] = (0.1 + 0.3 * u[3]) * tau
        offset[:, 1] = 0.03 * s.abs()
    elif kind == "wave":
        lift = (1.4 + 0.6 * u[3]) * torch.clamp(tau / 0.3, max=1.0)
        rest[:, 4] += lift
        wave = 0.5 * amp * torch.sin(2 * math.pi * 2 * freq * tau + phase)
        rest[:, 5] = rest[:, 4] + (0.6 + 0.5 * u[4]) * lift / lift.max() + wave
        rest[:, 0] += 0.1 * amp * s  # the head sways
    elif kind == "jump":
        height = 0.2 + 0.25 * u[3]
        air = torch.clamp((tau - 0.25) / 0.5, 0.0, 1.0)
        offset[:, 1] = height * torch.sin(math.pi * air)
        crouch = (0.3 + 0.4 * u[4]) * (
            torch.exp(-(((tau - 0.15) / 0.1) ** 2)) + torch.exp(-(((tau - 0.9) / 0.1) ** 2))
        )
        offset[:, 1] -= 0.15 * crouch
        rest[:, 6] -= crouch
        rest[:, 8] += crouch
        rest[:, 7] += crouch
        rest[:, 9] -= crouch
        raise_ = (1.2 + 0.8 * u[5]) * torch.sin(math.pi * air)
        rest[:, 2] -= raise_
        rest[:, 3] -= raise_
        rest[:, 4] += raise_
        rest[:, 5] += raise_
    else:
        raise ValueError(f"motion must be one of {MOTIONS}, got {kind!r}")
    return rest, offset


def motion_clips(
    n: int,
    kind: str | int,
    frames: int = 16,
    generator: torch.Generator | None = None,
    proportions: float = 0.15,
) -> Tensor:
    """n clips of one motion as displacements from frame 0, (n, K, F, 2), float32.

    Each clip draws its amplitudes, phase and frequency and scales each bone length by
    U(1 - proportions, 1 + proportions) (several characters' proportions)."""
    kind = MOTIONS[kind] if isinstance(kind, int) else kind
    if kind not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {kind!r}")
    if frames < 2 or n < 1:
        raise ValueError(f"need n >= 1 clips of frames >= 2, got n={n}, frames={frames}")
    tau = torch.linspace(0, 1, frames)
    out = []
    for _ in range(n):
        u = torch.rand(6, generator=generator)
        scale = 1 + proportions * (2 * torch.rand(len(BONES), generator=generator) - 1)
        angles, offset = _motion_angles(kind, tau, u)
        x = forward_kinematics(angles, torch.tensor(LENGTHS) * scale, torch.tensor(ROOT) + offset)
        out.append((x - x[:1]).transpose(0, 1))  # (K, F, 2), frame 0 at zero
    return torch.stack(out)


def labelled_clips(
    n: int,
    frames: int = 16,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(clips (n, K, F, 2), labels (n,) in 0..2 = :data:`MOTIONS`), the motions in turn."""
    labels = torch.arange(n) % len(MOTIONS)
    clips = torch.cat(
        [motion_clips(int((labels == k).sum()), k, frames, generator) for k in range(len(MOTIONS))]
    )
    order = torch.cat([torch.nonzero(labels == k).flatten() for k in range(len(MOTIONS))])
    out = torch.empty_like(clips)
    out[order] = clips
    return out, labels
