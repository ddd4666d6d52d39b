"""training.acceleration: channels-last, torch.compile and bf16 autocast compute what the plain network computes,
on the plain network's own parameters, and refuse in one line where they cannot work."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.networks import build_network, network_config
from difflab.training.acceleration import Accelerated, accelerate, autocast_enabled

DIGITS = DataSpec.pixels(1, 8, 8)           # the default run's data: the default ("tiny") U-Net
RGB = DataSpec.pixels(3, 8, 8)              # three channels: a channels-last tensor differs from a contiguous one
# float32 agreement of two kernel orders on outputs of size ~0.1 (measured: 1.4e-7 channels-last, 1.2e-7 compiled)
ATOL, RTOL = 1e-5, 1e-4


def unet(spec: DataSpec = DIGITS, seed: int = 0) -> nn.Module:
    """The "tiny" U-Net with every weight drawn (the zero-initialised output layers would make any two networks
    agree), in eval mode."""
    torch.manual_seed(seed)
    net = build_network(network_config("tiny", spec))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net.eval()


def inputs(spec: DataSpec, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, *spec.shape, generator=g), torch.randn(batch, generator=g) * 5   # x, log-SNR


def is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_channels_last_weights_activations_and_output():
    net = unet(RGB)
    x, noise = inputs(RGB)
    with torch.no_grad():
        ref = net(x, noise)
    keys = list(net.state_dict())
    called = accelerate(net, channels_last=True)
    assert called is net and list(net.state_dict()) == keys
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(is_channels_last(m.weight) for m in convs if m.kernel_size == (3, 3))
    # Every convolution's and GroupNorm's output, the attention's reshapes included, stays channels-last: nothing
    # copies the activations back to the contiguous layout on the way.
    outputs: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.append((name, o)))
             for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.GroupNorm))]
    with torch.no_grad():
        out = called(x, noise)
    for h in hooks:
        h.remove()
    assert len(outputs) > len(convs)
    assert [name for name, o in outputs if not is_channels_last(o)] == []
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)


def test_channels_last_refuses_a_network_without_convolutions():
    mlp = build_network(network_config("mlp", DataSpec.points(2)))
    with pytest.raises(DifflabError, match="--channels-last .* no convolutions"):
        accelerate(mlp, channels_last=True)


def test_autocast_runs_the_network_alone_in_bf16_on_its_parameters():
    net = unet()
    x, noise = inputs(DIGITS)
    called = accelerate(net, autocast=True)
    assert isinstance(called, Accelerated) and called.noise_input == net.noise_input
    assert [id(p) for p in called.parameters()] == [id(p) for p in net.parameters()]
    with torch.no_grad():
        ref, out = net(x, noise), called(x, noise)
        assert out.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu") is False
        torch.testing.assert_close(out.float(), ref, atol=0.02, rtol=0.05)      # bf16: 8 bits of mantissa
        net.conv_out.bias.add_(1.0)                                             # a change to the plain network
        torch.testing.assert_close(called(x, noise).float(), ref + 1, atol=0.03, rtol=0.05)


def test_an_accelerated_module_leaves_a_callers_autocast_on():
    net = unet()
    x, noise = inputs(DIGITS)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert accelerate(net, autocast=False) is net
        assert Accelerated(net, compiled=False, autocast=False)(x, noise).dtype == torch.bfloat16


def test_bf16_precision_needs_cuda():
    cpu = torch.device("cpu")
    assert not autocast_enabled("auto", cpu) and not autocast_enabled("fp32", cpu)
    assert autocast_enabled("auto", torch.device("cuda")) and not autocast_enabled("fp32", torch.device("cuda"))
    with pytest.raises(DifflabError, match="bf16 needs a CUDA device"):
        autocast_enabled("bf16", cpu)
    with pytest.raises(DifflabError, match="--precision must be"):
        autocast_enabled("fp16", cpu)


def test_compile_without_a_cpp_compiler_is_one_line():
    import torch._inductor.config as inductor_config

    # the config's own patch(), which restores it whole (monkeypatch's setattr/undo left cpp.cxx hidden)
    with inductor_config.patch({"cpp.cxx": ("difflab-no-such-compiler",)}), \
            pytest.raises(DifflabError, match="needs a C\\+\\+ compiler") as e:
        accelerate(unet(), compile=True)
    assert "\n" not in str(e.value)


@pytest.mark.slow          # the first compile of the tiny U-Net: ~45 s cold on 2 shared cores, ~5 s from the cache
def test_compiled_unet_matches_eager_shares_parameters_and_keeps_state_dict_keys():
    net = unet()
    x, noise = inputs(DIGITS)
    keys = list(net.state_dict())
    called = accelerate(net, compile=True, channels_last=True)
    assert list(net.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    t0 = time.perf_counter()
    with torch.no_grad():
        out, ref = called(x, noise), net(x, noise)
    print(f"compile + first call: {time.perf_counter() - t0:.1f} s")
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    # One optimizer step on the plain network's parameters: the compiled module reads them, not a frozen copy.
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(x, noise).square().mean().backward()
    opt.step()
    with torch.no_grad():
        stepped, eager = called(x, noise), net(x, noise)
    assert (stepped - out).abs().max() > 100 * ATOL
    torch.testing.assert_close(stepped, eager, atol=ATOL, rtol=RTOL)


def test_training_with_channels_last_takes_the_plain_runs_steps_and_saves_plain_weights(tmp_path):
    """`difflab train --channels-last`: the same steps up to float rounding, checkpoints of ordinary layout."""
    from dataclasses import replace

    from conftest import tiny_config
    from safetensors.torch import load_file

    from difflab.pipelines.train import train
    from difflab.training.checkpoint import resolve_checkpoint

    states = {}
    for channels_last in (False, True):
        cfg = tiny_config(6)
        cfg = replace(cfg, trainer=replace(cfg.trainer, channels_last=channels_last, checkpoint_every=6))
        train(cfg, tmp_path / str(channels_last), progress=False)
        states[channels_last] = load_file(str(resolve_checkpoint(tmp_path / str(channels_last)) / "model.safetensors"))
    assert states[False].keys() == states[True].keys()
    scale = max(v.abs().max().item() for v in states[False].values())
    diff = max((states[False][k] - states[True][k]).abs().max().item() for k in states[False])
    assert 0 < diff < 1e-4 * scale      # another kernel order, through Adam: measured 1.8e-5 after 6 steps


def test_training_with_compile_calls_the_compiled_network_and_saves_the_plain_ones_keys(tmp_path, monkeypatch):
    """`difflab train --compile` trains through torch.compile's module (a spy that counts its calls: a real compile
    takes a minute here) while checkpoints and the EMA keep the plain network's keys."""
    from dataclasses import replace

    from conftest import tiny_config
    from safetensors.torch import load_file

    from difflab.pipelines.train import train
    from difflab.training.checkpoint import resolve_checkpoint

    calls = []

    def fake_compile(module, **kw):
        def forward(*args, **kwargs):
            calls.append(module.training)
            return module(*args, **kwargs)
        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = tiny_config(3)
    train(replace(cfg, trainer=replace(cfg.trainer, compile=True, checkpoint_every=3)), tmp_path / "run",
          progress=False)
    assert calls == [True] * 3                      # every training step, in training mode; sampling stays eager
    keys = load_file(str(resolve_checkpoint(tmp_path / "run") / "model.safetensors")).keys()
    assert keys == load_file(str(resolve_checkpoint(tmp_path / "run") / "ema.safetensors")).keys()
    assert not any("_orig_mod" in k for k in keys)
