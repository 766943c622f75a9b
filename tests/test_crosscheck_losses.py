"""The from-scratch losses against hand-derived values and properties (no TRL involved)."""

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dpo_recipes.core.scoring import TokenLogps, token_logps
from dpo_recipes.crosscheck import losses
from dpo_recipes.crosscheck.logprobs import ld_sequence, pair_weights, wpo_weights

LN2 = math.log(2)
t = functools.partial(torch.tensor, dtype=torch.float64)
floats = st.floats(-20, 20, allow_nan=False)


def close(a, b, tol=1e-9):
    """float64 comparison (the losses are exact formulas; the tolerance only absorbs rounding)."""
    as64 = functools.partial(torch.as_tensor, dtype=torch.float64)
    torch.testing.assert_close(as64(a), as64(b), atol=tol, rtol=tol)


def test_index_api_with_logits_0_10_20():
    """Policy margins 0, 10, 20 over a zero reference: the DPO logits are β·[0, 10, 20]."""
    pi_logps = t([-1.0, -1.0, -5.0, -15.0, -20.0, -40.0])
    ref_logps = torch.zeros(6, dtype=torch.float64)
    yw, yl = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    loss, rewards = losses.dpo_loss(pi_logps, ref_logps, yw, yl, beta=0.1)
    close(loss, -torch.nn.functional.logsigmoid(0.1 * t([0.0, 10.0, 20.0])))
    close(loss[0], LN2)
    close(rewards, 0.1 * pi_logps)
    assert not rewards.requires_grad


def test_zero_log_ratios():
    zero = torch.zeros(3, dtype=torch.float64)
    close(losses.sigmoid(zero, 0.1), [LN2] * 3)
    close(losses.sigmoid(zero, 0.1, label_smoothing=0.3), [LN2] * 3)  # cDPO is ln 2 at zero too
    close(losses.ipo(zero, 0.1), [(1 / (2 * 0.1)) ** 2] * 3)  # (1/(2τ))² = 25
    close(losses.hinge(zero, 0.1), [1.0] * 3)
    close(losses.nca_pair(zero, zero, 0.1), [2 * LN2] * 3)  # ln 2 + ½ ln 2 + ½ ln 2
    close(losses.bco_pair(zero, zero, 0.1), [2 * LN2] * 3)
    close(losses.apo_zero(zero, zero, 0.1), [1.0] * 3)  # 1 − ½ + ½
    close(losses.apo_down(zero, zero, 0.1), [1.0] * 3)  # ½ + 1 − ½
    close(losses.sppo_hard(zero, zero, 0.5), [1.0] * 3)  # ((−1)² + 1²)/2, the SPPO authors' mean
    close(losses.sppo_hard(zero, zero, 0.5, summed=True), [2.0] * 3)  # TRL's sum
    close(losses.discopop(zero, 0.1, 0.05), [0.5 * LN2 + 0.5] * 3)  # m = ½: ½ ln 2 + ½ e⁰


def test_hand_values_away_from_zero():
    close(
        losses.sigmoid(t([1.0]), 1.0, label_smoothing=0.1),
        [-0.9 * math.log(1 / (1 + math.e**-1)) - 0.1 * math.log(1 / (1 + math.e))],
    )
    close(losses.hinge(t([5.0, 20.0]), 0.1), [0.5, 0.0])
    close(losses.sppo_hard(t([1.0]), t([-1.0]), 0.5), [0.0])  # exactly on the targets ±1/(2β)
    close(losses.bco_pair(t([1.0]), t([1.0]), 1.0, delta=1.0), [2 * LN2])  # δ centres the rewards


def test_exo_is_zero_at_its_target_and_positive_elsewhere():
    """With normalized target log-weights (TRL's (log(1 − ε), log ε)) EXO is a KL divergence: 0 at its target,
    positive elsewhere. The authors' unnormalized (0, −10) target is the KL to p = (1, e⁻¹⁰)/(1 + e⁻¹⁰) shifted by
    −log(1 + e⁻¹⁰): its minimum sits where σ(βh) = 1/(1 + e⁻¹⁰)."""
    epsilon, beta = 0.01, 0.5
    target = math.log((1 - epsilon) / epsilon) / beta  # σ(βh) = 1 − ε
    trl_form = (math.log1p(-epsilon), math.log(epsilon))
    close(losses.exo_pair(t([target]), beta, *trl_form), [0.0])
    assert (losses.exo_pair(t([0.0, 2 * target, -target]), beta, *trl_form) > 0).all()
    authors_minimum = 10 / beta  # log((1)/(e⁻¹⁰)) / β
    close(losses.exo_pair(t([authors_minimum]), beta), [-math.log1p(math.exp(-10))])
    assert (losses.exo_pair(t([0.0, -authors_minimum]), beta) > -math.log1p(math.exp(-10))).all()


@given(floats, st.floats(0.0, 0.45))
def test_robust_dpo_is_unbiased_under_label_flips(h, epsilon):
    """rDPO's defining property: averaged over a label flipped with probability ε, it is plain DPO."""
    h = t([h])
    mixed = (1 - epsilon) * losses.robust(h, 0.1, epsilon) + epsilon * losses.robust(-h, 0.1, epsilon)
    close(mixed, losses.sigmoid(h, 0.1), tol=1e-7)


@given(floats)
def test_f_scores_vanish_at_the_reference_and_reverse_kl_is_dpo(logratio):
    zero = torch.zeros(1, dtype=torch.float64)
    for divergence in ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"):
        close(losses.f_scores(zero, divergence), [0.0])
    x = t([logratio])
    close(losses.f_scores(x, "alpha_divergence", alpha=0.0), x)
    close(losses.f_scores(x, "js_divergence"), math.log(2) + torch.nn.functional.logsigmoid(x))


@given(st.floats(-5, 5), st.floats(0.05, 0.95))
def test_trl_alpha_coefficient_is_one_minus_the_papers_alpha(logratio, coef):
    u = math.exp(logratio)
    trl_style = (u ** (coef - 1) - 1) / (coef - 1)
    close(losses.f_scores(t([logratio]), "alpha_divergence", alpha=1 - coef), [trl_style], 1e-7)


@given(st.lists(st.tuples(floats, floats), min_size=2, max_size=6), st.randoms())
def test_aot_depends_on_the_sets_of_margins_not_their_pairing(pairs, random):
    policy, ref = (t(values) for values in zip(*pairs, strict=True))
    shuffled = list(range(len(pairs)))
    random.shuffle(shuffled)
    close(losses.aot(policy, ref, 0.1).mean(), losses.aot(policy, ref[shuffled], 0.1).mean())
    sorted_policy, sorted_ref = torch.sort(policy).values, torch.sort(ref).values
    close(losses.aot(sorted_policy, sorted_ref, 0.1), losses.sigmoid(sorted_policy - sorted_ref, 0.1))


def test_discopop_limits():
    """A tiny τ turns the modulation into a switch: exponential loss for ρ > 0, logistic for ρ < 0."""
    h = t([20.0, -20.0])
    close(losses.discopop(h, 0.1, tau=1e-3), [math.exp(-2.0), -math.log(1 / (1 + math.e**2))])


def test_sft_and_combine():
    token_logps = t([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = t([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    close(losses.sft(token_logps, mask), [(2 + 3) / 2, 4.0])  # RPO: each answer's NLL over its own length
    close(losses.sft(token_logps, mask, per_token=True), [(2 + 3 + 4) / 3] * 2)  # TRL: over the batch's tokens
    close(losses.combine([t([1.0, 3.0]), t([10.0])], [0.5, 2.0]), 0.5 * 2.0 + 2.0 * 10.0)


def _tokens(logps, mask):
    logps, mask = t(logps), t(mask)
    return TokenLogps(logps, mask, torch.zeros_like(logps))


def test_ld_dpo_weights_only_the_longer_completions_tail():
    # chosen has 2 completion tokens, rejected 4: tokens 3 and 4 of the rejected get weight α
    tokens = _tokens(
        [[-1.0, -1.0, -1.0, -9.0, -9.0], [-1.0, -2.0, -2.0, -3.0, -3.0]], [[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    )
    close(ld_sequence(tokens, alpha=0.5), [-2.0, -4.0 + 0.5 * -6.0])
    close(ld_sequence(tokens, alpha=1.0), tokens.sequence())


def test_wpo_pair_weight_is_clamped_at_one_as_the_authors_clamp_it():
    logps = t([[-0.1, -0.1], [-0.2, -0.2]])  # likely tokens of peaked distributions: each sequence weight > 1
    tokens = TokenLogps(logps, torch.ones(2, 2, dtype=torch.float64), torch.full((2, 2), -1.0, dtype=torch.float64))
    product = math.exp(1 - 0.1) * math.exp(1 - 0.2)
    close(pair_weights(tokens, clamped=False), [product])
    close(pair_weights(tokens), [1.0])


def test_wpo_weight_is_one_under_a_uniform_next_token_distribution():
    vocab = 7
    logps = torch.full((2, 3), -math.log(vocab), dtype=torch.float64)
    log_sum_sq = torch.full((2, 3), math.log(vocab * (1 / vocab) ** 2), dtype=torch.float64)
    tokens = TokenLogps(logps, torch.ones(2, 3, dtype=torch.float64), log_sum_sq)
    close(wpo_weights(tokens), [1.0, 1.0])


def test_token_logps_match_a_step_by_step_computation(tiny_sft_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path).eval()
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 9, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    completion = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0]])
    tokens = token_logps(model, ids, attention, completion)
    for row in range(2):
        expected = 0.0
        for position in range(1, 5):
            if completion[row, position]:  # log-prob of this token given the prefix, one forward per step
                logits = model(input_ids=ids[row : row + 1, :position]).logits[0, -1].double()
                expected += torch.log_softmax(logits, -1)[ids[row, position]].item()
        assert tokens.sequence()[row].item() == pytest.approx(expected, abs=1e-5)
