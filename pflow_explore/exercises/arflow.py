"""Chapter 09 (arflow) exercises: the unrolled state of gated linear attention (a
derivation), the recurrent pass across chunks, and the autoregressive generation loop.

Each reference is the package's own implementation (``nets.hybrid_attention.chunk_decays``
for the unrolled decays, ``HybridAttention.step``'s recurrence for the pass across chunks,
``ar_flow.generate`` for the loop); the worked answers are in the chapter's instructor
notebook, between nbgrader's solution markers.

Time convention: flow (t = 0 noise, t = 1 data), as :mod:`pflow_explore.ar_flow`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import ar_flow as af
from pflow_explore.exercises.check import Exercise
from pflow_explore.nets.hybrid_attention import ARFlowTransformer, chunk_decays

F64 = torch.float64


def decay_inputs(gen: torch.Generator) -> tuple:
    """log gamma (C, d) <= 0, C in 2..7, d in 1..4."""
    c, d = (
        int(torch.randint(2, 8, (1,), generator=gen)),
        int(torch.randint(1, 5, (1,), generator=gen)),
    )
    return (-torch.rand(c, d, generator=gen, dtype=F64),)


def decay_matrix(log_gamma: Tensor) -> Tensor:
    """D[c, e] = prod_{e < m < c} gamma_m for e < c, else 0: (C, d) -> (C, C, d), so that
    S_c = sum_e D[c, e] * K_e^T V_e unrolls S_{c+1} = gamma_c S_c + K_c^T V_c, S_0 = 0."""
    return chunk_decays(log_gamma)


def cross_inputs(gen: torch.Generator) -> tuple:
    """q, k, v, g (C, L, d) for C = 4 chunks of L = 3 tokens, d = 2; g <= 0 (log decays)."""
    q, k, v = (torch.randn(4, 3, 2, generator=gen, dtype=F64) for _ in range(3))
    return q, k, v, -0.5 * torch.rand(4, 3, 2, generator=gen, dtype=F64)


def cross_chunk_outputs(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
    """The path across chunks, recurrently: for c = 0..C-1, O_c = (q_c * exp(cumsum g_c)) S_c,
    then S <- exp(mean_L g_c) * S + k_c^T v_c, from S = 0. (C, L, d) each -> (C, L, d)."""
    s, out = torch.zeros(q.shape[-1], v.shape[-1], dtype=q.dtype), []
    for c in range(len(q)):
        out.append((q[c] * g[c].cumsum(0).exp()) @ s)
        s = g[c].mean(0).exp()[:, None] * s + k[c].T @ v[c]
    return torch.stack(out)


def _small_model(gen: torch.Generator) -> ARFlowTransformer:
    seed = int(torch.randint(1_000_000, (1,), generator=gen))
    torch.manual_seed(seed)
    m = ARFlowTransformer(image_size=4, patch=2, dim=8, depth=1, heads=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def generate_inputs(gen: torch.Generator) -> tuple:
    """A small random ARFlowTransformer (4x4 images, float64), z (3, 16), y (3,), n_steps."""
    z = torch.randn(3, 16, generator=gen, dtype=F64)
    y = torch.randint(10, (3,), generator=gen)
    return _small_model(gen), z, y, int(torch.randint(2, 7, (1,), generator=gen))


def autoregressive_euler(model: ARFlowTransformer, z: Tensor, y: Tensor, n_steps: int) -> Tensor:
    """K Euler steps on t_k = k / K, each appending x_{t_k} as a chunk: v, state =
    model.step(x, t_k, y, state); x <- x + (t_{k+1} - t_k) v, from a fresh state."""
    return af.generate(model, z, y, n_steps).x


DECAYS = Exercise("the unrolled decays of the state (derivation)", "decay_matrix", decay_inputs,
                  decay_matrix, rtol=1e-9, atol=1e-12)  # fmt: skip
CROSS = Exercise("the recurrent pass across chunks", "cross_chunk_outputs", cross_inputs,
                 cross_chunk_outputs, rtol=1e-9, atol=1e-12)  # fmt: skip
GENERATE = Exercise("autoregressive generation over denoising steps", "autoregressive_euler",
                    generate_inputs, autoregressive_euler, rtol=1e-8, atol=1e-10)  # fmt: skip
