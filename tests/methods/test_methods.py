"""AVID and CMA on tiny encoders, checked against the NCE formula written out here.

Every loss is recomputed independently from the method's own embeddings, the banks' rows
BEFORE the update, and the negatives the method drew (recorded by wrapping the samplers):
``s = exp(cos / T) / Z``, ``Pn = 1 / N``, ``h = s / (s + K * Pn)``,
``loss = mean_b[-mean_P log h(pos) - sum_K log(1 - h(neg))]``, ``Z = N * mean exp(cos / T)`` over
the first batch's negatives (docs/reference.md section 1.3).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.config import Config, from_dict
from avssl.memory.bank import MemoryBank
from avssl.methods import AVID, CMA, build_method
from avssl.methods.avid import ContrastTerm
from avssl.methods.cma import mine_positive_sets

N_ROWS, T = 30, 0.07


def make_cfg(name: str = "avid", variant: str = "cross", **method: Any) -> Config:
    """Tiny encoders (width 4), 8-d embeddings, few negatives."""
    values = {
        "seed": 0,
        "model": {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
                  "audio": {"arch": "audio_cnn", "depth": 10, "width": 4},
                  "head": {"hidden": [16], "out_dim": 8}},
        "method": {"name": name, "variant": variant, "temperature": T, "num_negatives": 6,
                   **({"num_positives": 4, "positive_negatives": 5, "resample_every": 3}
                      if name == "cma" else {}), **method},
    }
    return from_dict(values, require_paths=False)


def make_method(name: str = "avid", variant: str = "cross", **method: Any) -> AVID:
    torch.manual_seed(0)
    m = build_method(make_cfg(name, variant, **method), N_ROWS)
    assert isinstance(m, AVID)
    return m


def make_batch(idx: list[int], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = len(idx)
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g),
            "audio": torch.randn(b, 1, 40, 32, generator=g),
            "index": torch.tensor(idx)}


class Recorder:
    """Wraps a MemoryBank sampler and keeps what it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls: list[Tensor] = []
        original = getattr(MemoryBank, name)

        def spy(bank: MemoryBank, *args: Any, **kwargs: Any) -> Tensor:
            out = original(bank, *args, **kwargs)
            self.calls.append(out.clone())
            return out

        monkeypatch.setattr(MemoryBank, name, spy)


def reference_nce(emb: Tensor, rows_pos: Tensor, rows_neg: Tensor, z: float, n: int) -> Tensor:
    """Written-out NPID NCE in float64: emb (B, D); rows_pos (B, P, D); rows_neg (B, K, D)."""
    emb, rows_pos, rows_neg = emb.double(), rows_pos.double(), rows_neg.double()
    k, pn = rows_neg.shape[1], 1.0 / n
    total = torch.zeros((), dtype=torch.float64)
    for b in range(emb.shape[0]):
        term = torch.zeros((), dtype=torch.float64)
        for row in rows_pos[b]:
            s = torch.exp(torch.dot(emb[b], row) / T) / z
            term = term - torch.log(s / (s + k * pn)) / rows_pos.shape[1]
        for row in rows_neg[b]:
            s = torch.exp(torch.dot(emb[b], row) / T) / z
            term = term - torch.log(1 - s / (s + k * pn))
        total = total + term
    return total / emb.shape[0]


def reference_z(emb: Tensor, rows_neg: Tensor, n: int) -> float:
    """Z = N * mean over the batch's negatives of exp(cos / T)."""
    cos = torch.einsum("bd,bkd->bk", emb.double(), rows_neg.double())
    return n * float(torch.exp(cos / T).mean())


def embed(method: AVID, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The method's embeddings for ``batch``, computed separately (BN in train mode uses the
    batch statistics, so the output is the one the method's forward sees)."""
    with torch.no_grad():
        v, a = method.encoders(batch)
    return {"v": v, "a": a}


# term name -> (embedding, memory bank) it scores
PAIRS = {"v2a": ("v", "audio"), "a2v": ("a", "video"), "v2v": ("v", "video"),
         "a2a": ("a", "audio")}
EXPECTED_TERMS = {
    "cross": {"v2a", "a2v"},
    "self": {"v2v", "a2a"},
    "joint": {"v2a", "a2v", "v2v", "a2a"},
}


# ------------------------------------------------------------------------------------- AVID
@pytest.mark.parametrize("variant", ["cross", "self", "joint"])
def test_avid_loss_equals_written_out_nce(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    method = make_method(variant=variant)
    rec = Recorder(monkeypatch, "sample_negatives")
    banks = {"video": method.memory["video"].memory.clone(),
             "audio": method.memory["audio"].memory.clone()}
    idx = [3, 17, 0, 29, 11]
    batch = make_batch(idx)
    emb = embed(method, batch)
    out = method(batch)

    names = EXPECTED_TERMS[variant]
    assert set(out) == {"loss"} | {f"loss_{n}" for n in names}
    assert len(rec.calls) == 1
    neg = rec.calls[0]
    assert neg.shape == (5, 6)
    assert not (neg == torch.tensor(idx)[:, None]).any()  # own row is never a negative
    pos = torch.tensor(idx)[:, None]
    parts = []
    for name in sorted(names):
        e, b = PAIRS[name]
        z = reference_z(emb[e], banks[b][neg], N_ROWS)
        # Z estimated on this first batch, one per term.
        assert math.isclose(float(method.terms[name].z.log_z), math.log(z), rel_tol=0,
                            abs_tol=1e-5), name
        ref = reference_nce(emb[e], banks[b][pos], banks[b][neg], z, N_ROWS)
        torch.testing.assert_close(out[f"loss_{name}"].double(), ref, rtol=1e-5, atol=1e-5)
        parts.append(ref)
    torch.testing.assert_close(out["loss"].double(), torch.stack(parts).mean(),
                               rtol=1e-5, atol=1e-5)


def test_avid_infonce_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    method = make_method(loss="infonce")
    rec = Recorder(monkeypatch, "sample_negatives")
    bank_a = method.memory["audio"].memory.clone()
    idx = torch.tensor([1, 2, 3])
    batch = make_batch(idx.tolist())
    emb = embed(method, batch)
    out = method(batch)
    neg = rec.calls[0]
    logits = torch.cat([(emb["v"] * bank_a[idx]).sum(1, keepdim=True),
                        torch.einsum("bd,bkd->bk", emb["v"], bank_a[neg])], dim=1) / T
    ref = F.cross_entropy(logits.double(), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(out["loss_v2a"].double(), ref, rtol=1e-5, atol=1e-5)


def test_memory_update_and_frozen_z(monkeypatch: pytest.MonkeyPatch) -> None:
    method = make_method(variant="joint")
    idx = [4, 9, 21, 0]
    batch = make_batch(idx)
    before = {k: method.memory[k].memory.clone() for k in ("video", "audio")}
    emb = embed(method, batch)
    method(batch)
    others = [i for i in range(N_ROWS) if i not in idx]
    for key, e in (("video", emb["v"]), ("audio", emb["a"])):
        expected = F.normalize(0.5 * before[key][idx] + 0.5 * e, dim=1)
        after = method.memory[key].memory
        torch.testing.assert_close(after[idx], expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(after[others], before[key][others])
        torch.testing.assert_close(after.norm(dim=1), torch.ones(N_ROWS))

    log_z = {n: t.z.log_z.clone() for n, t in method.terms.items()}
    assert all(torch.isfinite(v) for v in log_z.values())
    # Second forward: other rows, other negatives; Z stays frozen and is the one used.
    rec = Recorder(monkeypatch, "sample_negatives")
    batch2 = make_batch([1, 2, 3, 5], seed=1)
    banks = {k: method.memory[k].memory.clone() for k in ("video", "audio")}
    emb2 = embed(method, batch2)
    out2 = method(batch2)
    for name, t in method.terms.items():
        assert torch.equal(t.z.log_z, log_z[name]), name
    e, b = "v", "audio"
    ref = reference_nce(emb2[e], banks[b][batch2["index"][:, None]], banks[b][rec.calls[0]],
                        math.exp(float(log_z["v2a"])), N_ROWS)
    torch.testing.assert_close(out2["loss_v2a"].double(), ref, rtol=1e-5, atol=1e-5)

    # state_dict round trip keeps Z (and the banks); the copy does not re-estimate it.
    state = method.state_dict()
    assert {f"terms.{n}.z.log_z" for n in method.terms} <= set(state)
    fresh = make_method(variant="joint")
    assert all(torch.isnan(t.z.log_z) for t in fresh.terms.values())
    fresh.load_state_dict(state)
    for name, t in fresh.terms.items():
        assert torch.equal(t.z.log_z, log_z[name])
    assert torch.equal(fresh.memory["video"].memory, method.memory["video"].memory)
    fresh(make_batch([7, 8, 9], seed=2))
    for name, t in fresh.terms.items():
        assert torch.equal(t.z.log_z, log_z[name]), name


def test_gradients_reach_encoders_and_heads_not_banks() -> None:
    method = make_method()
    out = method(make_batch([0, 5, 10, 15]))
    out["loss"].backward()
    enc = method.encoders
    for part in (enc.video, enc.audio, enc.video_head, enc.audio_head):
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0  # type: ignore[union-attr]
    param_ids = {id(p) for p in method.parameters()}
    for bank in method.memory.values():
        assert id(bank.memory) not in param_ids
        assert not bank.memory.requires_grad and bank.memory.grad is None
    for term in method.terms.values():
        assert not term.z.log_z.requires_grad


def test_scores_in_fp32_under_bf16_autocast() -> None:
    """The NCE term must score in fp32 even under autocast (bf16 would round cos/T by up to
    0.06 near 1/T = 14)."""
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(N_ROWS, 8, seed=0)
    emb = F.normalize(bank.memory[:4] + 0.05 * torch.randn(4, 8, generator=g), dim=1)
    pos = torch.arange(4)[:, None]
    neg = torch.randint(4, N_ROWS, (4, 6), generator=g)
    term = ContrastTerm()
    ref = term(emb, bank, pos, neg, T, "nce")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = term(emb, bank, pos, neg, T, "nce")
        got_info = ContrastTerm()(emb, bank, pos, neg, T, "infonce")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_info, ContrastTerm()(emb, bank, pos, neg, T, "infonce"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["avid", "cma"])
def test_bf16_autocast_forward_is_finite(name: str) -> None:
    method = make_method(name)
    method.on_epoch_start(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(make_batch([1, 2, 3, 4]))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


# -------------------------------------------------------------------------------------- CMA
def cma() -> CMA:
    m = make_method("cma", cross_weight=0.3, within_weight=0.9)
    assert isinstance(m, CMA)
    return m


def test_cma_needs_mining_first() -> None:
    method = cma()
    with pytest.raises(RuntimeError, match="never mined"):
        method(make_batch([0, 1]))


def _scramble_banks(method: CMA, seed: int) -> None:
    for k, bank in method.memory.items():
        g = torch.Generator().manual_seed(seed + len(k))
        bank.memory.copy_(F.normalize(torch.randn(bank.memory.shape, generator=g), dim=1))


def test_cma_mining_schedule_and_state() -> None:
    method = cma()
    assert int(method.mined_epoch) == -1 and bool((method.positive_set == -1).all())
    logged = method.on_epoch_start(0)
    assert set(logged) == {"cma_mining_s"}
    sets = method.positive_set.clone()
    assert sets.shape == (N_ROWS, 4) and int(method.mined_epoch) == 0
    assert not (sets == -1).any()
    assert not (sets == torch.arange(N_ROWS)[:, None]).any()  # never self
    assert all(len(set(r.tolist())) == 4 for r in sets)  # distinct members
    expected = mine_positive_sets(method.memory["video"].memory, method.memory["audio"].memory, 4)
    assert torch.equal(sets, expected)

    # New banks would give other sets, but epochs 1, 2 are not re-mining epochs (every 3).
    _scramble_banks(method, seed=1)
    for epoch in (1, 2):
        assert method.on_epoch_start(epoch) == {}
        assert torch.equal(method.positive_set, sets) and int(method.mined_epoch) == 0
    assert set(method.on_epoch_start(3)) == {"cma_mining_s"}
    remined = method.positive_set.clone()
    assert int(method.mined_epoch) == 3 and not torch.equal(remined, sets)
    assert torch.equal(remined, mine_positive_sets(method.memory["video"].memory,
                                                   method.memory["audio"].memory, 4))
    _scramble_banks(method, seed=2)
    assert method.on_epoch_start(3) == {}  # the same epoch twice (e.g. a resume): no re-mining
    assert torch.equal(method.positive_set, remined)

    # Saved with the checkpoint: a restored copy needs no mining and does not re-mine at 4.
    state = method.state_dict()
    assert int(state["mined_epoch"]) == 3 and torch.equal(state["positive_set"], remined)
    fresh = cma()
    fresh.load_state_dict(state)
    assert int(fresh.mined_epoch) == 3 and torch.equal(fresh.positive_set, remined)
    assert fresh.on_epoch_start(4) == {}
    fresh(make_batch([0, 1]))  # no RuntimeError


def test_cma_loss_against_written_out_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    method = cma()
    method.on_epoch_start(0)
    cross_rec = Recorder(monkeypatch, "sample_negatives")
    within_rec = Recorder(monkeypatch, "sample_negatives_excluding")
    idx = torch.tensor([2, 7, 13, 28])
    batch = make_batch(idx.tolist())
    banks = {k: method.memory[k].memory.clone() for k in ("video", "audio")}
    emb = embed(method, batch)
    out = method(batch)

    names = ["loss_v2a", "loss_a2v", "loss_v2v_pos", "loss_a2a_pos"]
    assert set(out) == {"loss", *names}
    cross = torch.stack([out[n] for n in names[:2]]).mean()
    within = torch.stack([out[n] for n in names[2:]]).mean()
    torch.testing.assert_close(out["loss"], 0.3 * cross + 0.9 * within)

    neg_x, neg_w = cross_rec.calls[0], within_rec.calls[0]
    pos_set = method.positive_set[idx]
    assert neg_w.shape == (4, 5)
    for b in range(4):  # within-modal negatives never in the positive set nor self
        assert not set(neg_w[b].tolist()) & (set(pos_set[b].tolist()) | {int(idx[b])})
    refs = {
        "loss_v2a": ("v", "audio", idx[:, None], neg_x),
        "loss_a2v": ("a", "video", idx[:, None], neg_x),
        "loss_v2v_pos": ("v", "video", pos_set, neg_w),
        "loss_a2a_pos": ("a", "audio", pos_set, neg_w),
    }
    for name, (e, b, pos, neg) in refs.items():
        z = reference_z(emb[e], banks[b][neg], N_ROWS)
        ref = reference_nce(emb[e], banks[b][pos], banks[b][neg], z, N_ROWS)
        torch.testing.assert_close(out[name].double(), ref, rtol=1e-5, atol=1e-5, msg=name)


def test_cma_within_negatives_exclude_sets_over_many_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    method = cma()
    method.on_epoch_start(0)
    rec = Recorder(monkeypatch, "sample_negatives_excluding")
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    seen: set[int] = set()
    with torch.no_grad():
        for i, idx in enumerate(batches):
            method(make_batch(idx, seed=i))
            neg = rec.calls[-1]
            for b, own in enumerate(idx):
                bad = set(method.positive_set[own].tolist()) | {own}
                assert not set(neg[b].tolist()) & bad
                seen |= set(neg[b].tolist())
    assert len(seen) > N_ROWS // 2  # the draws do spread over the allowed rows


def test_avid_state_dict_loads_into_cma() -> None:
    avid = make_method("avid")
    avid(make_batch([0, 1, 2]))  # sets Z, moves the banks
    result = cma().load_state_dict(avid.state_dict(), strict=False)
    assert set(result.missing_keys) == {"positive_set", "mined_epoch",
                                        "within.v2v.z.log_z", "within.a2a.z.log_z"}
    assert result.unexpected_keys == []
    method = cma()
    method.load_state_dict(avid.state_dict(), strict=False)
    for key, val in avid.state_dict().items():
        assert torch.equal(method.state_dict()[key], val), key
    assert int(method.mined_epoch) == -1  # CMA still mines at its first epoch


def test_video_grid_pool_projects_every_location() -> None:
    """``model.head.video_grid_pool``: the head projects each conv5x location and the
    projections are pooled (max / avg) before the L2 norm; a 1-location grid gives the
    published order (pool, then project) exactly."""
    from avssl.methods.base import AVEncoders

    video = torch.randn(3, 3, 8, 64, 64)
    for pool in ("max", "avg"):
        cfg = make_cfg()
        cfg.model.head.video_grid_pool = pool
        torch.manual_seed(0)
        enc = AVEncoders(cfg).eval()
        with torch.no_grad():
            grid = enc.video.forward_grid(video)  # (B, C, 1, 2, 2)
            z = enc.video_head.projection(grid.flatten(2).transpose(1, 2))
            want = F.normalize(z.amax(1) if pool == "max" else z.mean(1), dim=1)
            torch.testing.assert_close(enc.embed_video(video), want)
            enc.video_grid_pool = "off"
            off = enc.embed_video(video)
            assert (off - want).abs().max() > 1e-3  # a different embedding on a 2x2 grid
            small = video[..., :16, :16]  # conv5x is 1x1
            enc.video_grid_pool = pool
            torch.testing.assert_close(enc.embed_video(small), F.normalize(
                enc.video_head(enc.video(small)), dim=1))
