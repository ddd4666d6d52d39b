"""Adversarial training: two parameter sets, each with its own AdamW, stepped alternately from one loss call; the
adversary (discriminator) trains only from disc_start; each loss's gradient reaches only its own parameters; a run
stopped and resumed is bit-identical to one that was not."""

from __future__ import annotations

import copy
from functools import partial
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers import run_state
from difflab.errors import DifflabError
from difflab.training import Adversary, Losses, Trainer, TrainerConfig, read_log
from difflab.training.checkpoint import resolve_checkpoint

CONFIG = TrainerConfig(steps=8, batch_size=16, lr=1e-2, warmup=2, grad_clip=1.0, ema_decay=0.9, log_every=1,
                       checkpoint_every=4, sample_every=0, device="cpu")


class TinyGAN(nn.Module):
    """A 2-D autoencoder-like generator and an MLP discriminator: LDM's autoencoder + PatchGAN in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


def gan_loss(model: TinyGAN, x: Tensor, cond: None, g: torch.Generator, adversarial: bool,
             detach: bool = True) -> Losses:
    """Reconstruction of noised points, plus the generator's hinge term from disc_start on; the discriminator's
    hinge loss (Lim & Ye 2017) on detached fakes (or, ``detach=False``, fakes it could backpropagate into the
    generator through) is returned at every step, so the trainer alone gates it."""
    z = torch.randn(x.shape, generator=g, device=x.device)
    fake = model.generator(x + 0.3 * z)                                    # (B, 2)
    rec = (fake - x).pow(2).sum(1)                                         # (B,)
    logs = {"rec": rec.mean()}
    main = rec
    if adversarial:
        g_adv = -model.discriminator(fake).squeeze(1)                     # (B,)
        main = rec + 0.1 * g_adv
        logs["g_adv"] = g_adv.mean()
    d_fake = model.discriminator(fake.detach() if detach else fake)
    d_loss = (F.relu(1 - model.discriminator(x)) + F.relu(1 + d_fake)).squeeze(1)
    logs["d_loss"] = d_loss.mean()
    return Losses(main, torch.rand(x.shape[0], generator=g, device=x.device), adversary=d_loss, logs=logs)


def points(n: int = 64) -> Tensor:
    g = torch.Generator().manual_seed(1)
    angle = 2 * torch.pi * torch.rand(n, generator=g)
    return torch.stack([angle.cos(), angle.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)   # a ring


def make_trainer(run_dir: Path, config: TrainerConfig = CONFIG, adversary: Adversary | None = Adversary(start=3),
                 loss_fn=gan_loss) -> Trainer:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return Trainer(TinyGAN(), loss_fn, points(), None, config, run_dir, adversary=adversary)


def params(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("detach", [True, False])
def test_the_discriminator_steps_from_disc_start_on_its_own_loss_alone(tmp_path, detach):
    """Each optimizer steps on its own loss's gradient alone, even when the discriminator's loss is not detached
    from the generator."""
    start = 3
    cfg = replace(CONFIG, grad_clip=0.0)               # the gradients the optimizers see are the raw ones
    loss_fn = partial(gan_loss, detach=detach)
    trainer = make_trainer(tmp_path, cfg, Adversary(start=start, lr=5e-3), loss_fn)
    model = trainer.model
    seen: dict[str, list] = {"main": [], "adversary": []}

    def spy(name: str, opt: torch.optim.Optimizer) -> None:
        real = opt.step

        def step(*args, **kwargs):
            before_g, before_d = params(model.generator), params(model.discriminator)
            grads = ([p.grad.clone() if p.grad is not None else None for p in model.generator.parameters()],
                     [p.grad.clone() if p.grad is not None else None for p in model.discriminator.parameters()])
            out = real(*args, **kwargs)
            seen[name].append((grads, before_g, before_d, params(model.generator), params(model.discriminator)))
            return out
        opt.step = step

    spy("main", trainer.opt)
    spy("adversary", trainer.adv_opt)
    for step in range(6):
        # the gradients each loss alone gives its own parameters, from a copy of the model and generator
        ref = copy.deepcopy(model)
        g = torch.Generator().set_state(trainer.generator.get_state())
        x = trainer.source.data[trainer.order.batch(step)]
        out = loss_fn(ref, x, None, g, adversarial=step >= start)
        want_g = torch.autograd.grad(out.main.mean(), list(ref.generator.parameters()), retain_graph=True)
        want_d = torch.autograd.grad(out.adversary.mean(), list(ref.discriminator.parameters()))
        d_before = params(model.discriminator)

        trainer.train_step()

        grads, g0, d0, g1, d1 = seen["main"][-1]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0], want_g, strict=True))
        assert same(d0, d1), "the main optimizer moved the discriminator"
        assert not same(g0, g1)
        if step < start:
            assert len(seen["adversary"]) == 0 and same(d_before, params(model.discriminator))
            assert all(p.grad is None for p in model.discriminator.parameters())
            continue
        assert len(seen["adversary"]) == step - start + 1
        grads, g0, d0, g1, d1 = seen["adversary"][-1]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[1], want_d, strict=True)), \
            "the discriminator's gradient is not its own loss's alone"
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0], want_g, strict=True)), \
            "the discriminator's loss reached the generator's gradient"
        assert same(g0, g1), "the adversary optimizer moved the generator"
        assert not same(d0, d1)


def test_a_tiny_gan_trains_and_logs_the_adversary_by_name(tmp_path):
    cfg = replace(CONFIG, steps=60, checkpoint_every=60)
    trainer = make_trainer(tmp_path, cfg, Adversary(start=4, lr=5e-3, warmup=2))
    ema_d_start = params(trainer.ema.model.discriminator)
    trainer.run(progress=False)
    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 61))
    before, after = log[:4], log[4:]
    assert all("adversary_loss" not in r and "g_adv" not in r and r["adversary_lr"] == 0.0 for r in before)
    assert all({"adversary_loss", "adversary_grad_norm", "g_adv", "d_loss", "rec"} <= r.keys() for r in after)
    assert [r["adversary_lr"] for r in after[:3]] == [2.5e-3, 5e-3, 5e-3]    # its own warm-up from disc_start
    assert after[0]["adversary_loss"] == pytest.approx(after[0]["d_loss"])
    # both players learn: reconstructions improve, and the discriminator's hinge loss falls below its start
    assert log[-1]["rec"] < 0.5 * log[0]["rec"]
    assert min(r["adversary_loss"] for r in log[-10:]) < after[0]["adversary_loss"]
    # the EMA averages the generator only; its discriminator is the raw one
    assert same(params(trainer.ema.model.discriminator), params(trainer.model.discriminator))
    assert not same(params(trainer.ema.model.discriminator), ema_d_start)
    assert not same(params(trainer.ema.model.generator), params(trainer.model.generator))


@pytest.mark.parametrize("start", [2, 6])   # the checkpoint at step 4 after, and before, the discriminator starts
def test_resume_is_bit_identical(tmp_path, start):
    """8 steps in one go == 4 steps, a checkpoint, a fresh process state, 4 more: weights, EMA, both optimizers'
    moments, RNG states, and the logged scalars."""
    adversary = Adversary(start=start, lr=5e-3, warmup=2, betas=(0.5, 0.9))
    make_trainer(tmp_path / "once", adversary=adversary).run(progress=False)
    make_trainer(tmp_path / "twice", replace(CONFIG, steps=4), adversary).run(progress=False)
    torch.manual_seed(123)                                  # resuming must not depend on the process's RNG
    resumed = make_trainer(tmp_path / "twice", adversary=adversary)
    resumed.load(resolve_checkpoint(tmp_path / "twice"))
    assert resumed.step == 4
    resumed.run(progress=False)
    a, b = run_state(tmp_path / "once"), run_state(tmp_path / "twice")
    assert a.keys() == b.keys()
    assert any(k.startswith("trainer.adversary.state.") and k.endswith("exp_avg_sq") for k in a)
    assert any(k.startswith("trainer.state.") and k.endswith("exp_avg_sq") for k in a)
    assert {k.split(".")[0] for k in a} == {"model", "ema", "trainer"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    drop = lambda r: {k: v for k, v in r.items() if k != "img_per_s"}            # noqa: E731
    assert [drop(r) for r in read_log(tmp_path / "once" / "log.jsonl")] == \
        [drop(r) for r in read_log(tmp_path / "twice" / "log.jsonl")]


def test_no_adversary_loss_is_no_adversary_step_and_the_main_gradient_stays_out_of_it(tmp_path):
    def no_adversary(model, x, cond, g, adversarial):
        return replace(gan_loss(model, x, cond, g, adversarial), adversary=None)

    trainer = make_trainer(tmp_path, adversary=Adversary(start=0), loss_fn=no_adversary)
    d_start = params(trainer.model.discriminator)
    for _ in range(3):
        trainer.train_step()            # the main loss holds -D(G(x)): its gradient passes through D
    assert same(params(trainer.model.discriminator), d_start)
    assert all(p.grad is None for p in trainer.model.discriminator.parameters())
    assert trainer.adv_opt.state_dict()["state"] == {}


def test_a_nonfinite_adversary_loss_stops_like_the_main_loss(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, x, cond, g, adversarial):
        calls["n"] += 1
        out = gan_loss(model, x, cond, g, adversarial)
        bad = out.adversary * float("nan") if calls["n"] == 7 else out.adversary
        return replace(out, adversary=bad)

    trainer = make_trainer(tmp_path, replace(CONFIG, steps=20, checkpoint_every=3), Adversary(start=2),
                           loss_fn=loss_fn)
    with pytest.raises(DifflabError, match=r"^adversary loss is nan at step 7.*step_0000006.*--resume"):
        trainer.run(progress=False)
    assert resolve_checkpoint(tmp_path).name == "step_0000006"


def plain_loss(model: TinyGAN, x: Tensor, cond: None, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """The single-loss path's tuple: the reconstruction loss and a key."""
    out = gan_loss(model, x, cond, g, adversarial=False)
    return out.main, out.key


def test_the_single_loss_path_takes_losses_with_logs_and_matches_the_tuple(tmp_path):
    def losses_loss(model, x, cond, g):
        out = gan_loss(model, x, cond, g, adversarial=False)
        return Losses(out.main, out.key, logs={"rec": out.logs["rec"], "half": 0.5})

    make_trainer(tmp_path / "tuple", adversary=None, loss_fn=plain_loss).run(progress=False)
    make_trainer(tmp_path / "losses", adversary=None, loss_fn=losses_loss).run(progress=False)
    a, b = run_state(tmp_path / "tuple"), run_state(tmp_path / "losses")
    assert a.keys() == b.keys() and not any("adversary" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path / "losses" / "log.jsonl")
    assert all(r["half"] == 0.5 and r["rec"] == pytest.approx(r["loss"]) for r in log)
    assert "half" not in read_log(tmp_path / "tuple" / "log.jsonl")[0]


def test_misuse_is_one_line_that_says_what_to_do(tmp_path):
    def tuple_loss(model, x, cond, g, adversarial):
        out = gan_loss(model, x, cond, g, adversarial)
        return out.main, out.key

    with pytest.raises(DifflabError, match="must return Losses"):
        make_trainer(tmp_path / "a", loss_fn=tuple_loss).train_step()
    with pytest.raises(DifflabError, match="no submodule 'critic'.*Adversary\\(module="):
        make_trainer(tmp_path / "b", adversary=Adversary(module="critic"))
    with pytest.raises(DifflabError, match="Adversary\\(start=...\\) is out of range"):
        make_trainer(tmp_path / "c", adversary=Adversary(start=-1))

    def clashing(model, x, cond, g, adversarial):
        return replace(gan_loss(model, x, cond, g, adversarial), logs={"lr": 1.0})

    with pytest.raises(DifflabError, match="'lr' is a name the trainer logs itself"):
        make_trainer(tmp_path / "d", loss_fn=clashing).train_step()

    make_trainer(tmp_path / "gan", replace(CONFIG, steps=2)).run(progress=False)
    with pytest.raises(DifflabError, match="adversarial run.*has no Adversary"):
        make_trainer(tmp_path / "gan", adversary=None, loss_fn=plain_loss).load(resolve_checkpoint(tmp_path / "gan"))
    make_trainer(tmp_path / "plain", replace(CONFIG, steps=2), adversary=None, loss_fn=plain_loss).run(progress=False)
    with pytest.raises(DifflabError, match="without an adversary and this run has one"):
        make_trainer(tmp_path / "plain").load(resolve_checkpoint(tmp_path / "plain"))
