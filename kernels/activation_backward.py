"""The activation's backward with the router probability: one definition for the fused data-gradient epilogue
and for the standalone elementwise kernel that runs after a plain-epilogue data-gradient GEMM.

The fc1 output is kept as ``[gate | linear]`` (``[R, 2F]``, gated) or ``[R, F]``; the fc2 input was
``act(gate) · linear · p``. From ``dA`` (the fc2 data-gradient, bf16 as in the unfused path):
``d_fc1 = [dA·p·linear·act'(gate) | dA·p·act(gate)]`` (non-gated: ``dA·p·act'(x)``) and
``d_prob = Σ_j dA·act(gate)·linear``. The standalone kernel can also store the fc2 input ``act(gate)·linear·p``
(the fc2 weight gradient needs it) from the same loads, with the forward epilogue's formula and rounding.
"""

import triton
import triton.language as tl


@triton.jit
def act_and_derivative(x, ACT: tl.constexpr):
    if ACT == 0:  # silu
        s = tl.sigmoid(x)
        return x * s, s * (1.0 + x * (1.0 - s))
    else:  # exact gelu
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        pdf = 0.3989422804014327 * tl.exp(-0.5 * x * x)
        return x * cdf, cdf + x * pdf


@triton.jit
def activation_backward_block(
    grad_act,
    rows64,
    row_mask,
    cols,
    prob,
    preact_ptr,
    d_fc1_ptr,
    F,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    fc2_input_ptr=None,
    STORE_FC2_INPUT: tl.constexpr = False,
):
    """``grad_act`` (fp32 ``[rows, cols]``) of the fc1-output columns ``cols < F``: stores their ``d_fc1``
    (both halves when gated), with ``STORE_FC2_INPUT`` also their fc2 input ``[R, F]``, and returns each row's
    share of ``d_prob`` (fp32 ``[rows]``)."""
    mask = row_mask[:, None] & (cols < F)[None, :]
    width = F * (2 if GATED else 1)
    at = rows64[:, None] * width + cols[None, :]
    gate = tl.load(preact_ptr + at, mask=mask, other=0.0).to(tl.float32)
    act, act_prime = act_and_derivative(gate, ACT)
    grad_unscaled = grad_act * prob[:, None]
    if GATED:
        linear = tl.load(preact_ptr + at + F, mask=mask, other=0.0).to(tl.float32)
        act_linear = act * linear
        d_prob = tl.sum(tl.where(mask, grad_act * act_linear, 0.0), axis=1)
        tl.store(d_fc1_ptr + at, (grad_unscaled * linear * act_prime).to(tl.bfloat16), mask=mask)
        tl.store(d_fc1_ptr + at + F, (grad_unscaled * act).to(tl.bfloat16), mask=mask)
    else:
        act_linear = act
        d_prob = tl.sum(tl.where(mask, grad_act * act, 0.0), axis=1)
        tl.store(d_fc1_ptr + at, (grad_unscaled * act_prime).to(tl.bfloat16), mask=mask)
    if STORE_FC2_INPUT:  # the forward epilogue's act·linear·p (dispatch_fc1), rounded to bf16 once
        at_f = rows64[:, None] * F + cols[None, :]
        tl.store(fc2_input_ptr + at_f, (act_linear * prob[:, None]).to(tl.bfloat16), mask=mask)
    return d_prob


@triton.jit
def activation_backward_kernel(
    d_fc1_ptr,
    preact_ptr,
    probs_ptr,
    d_prob_ptr,
    fc2_input_ptr,
    R,
    F,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    STORE_FC2_INPUT: tl.constexpr,
    BR: tl.constexpr,
    BF: tl.constexpr,
):
    """In place: ``dA`` was stored in ``d_fc1``'s last ``F`` columns (the linear half when gated) by the
    data-gradient GEMM; replace every row by its ``d_fc1`` and write its ``d_prob`` (and, with
    ``STORE_FC2_INPUT``, its fc2 input ``[R, F]`` bf16 at ``fc2_input_ptr``). Each element is read before its
    own program overwrites it."""
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    row_mask = rows < R
    rows64 = rows.to(tl.int64)
    width = F * (2 if GATED else 1)
    prob = tl.load(probs_ptr + rows64, mask=row_mask, other=0.0)
    d_prob = tl.zeros((BR,), dtype=tl.float32)
    for f0 in range(0, F, BF):
        cols = f0 + tl.arange(0, BF)
        mask = row_mask[:, None] & (cols < F)[None, :]
        grad_at = d_fc1_ptr + rows64[:, None] * width + (width - F + cols)[None, :]
        grad_act = tl.load(grad_at, mask=mask, other=0.0).to(tl.float32)
        d_prob += activation_backward_block(
            grad_act, rows64, row_mask, cols, prob, preact_ptr, d_fc1_ptr, F, GATED, ACT, fc2_input_ptr, STORE_FC2_INPUT
        )
    tl.store(d_prob_ptr + rows64, d_prob, mask=row_mask)
