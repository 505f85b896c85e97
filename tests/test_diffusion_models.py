"""Model loading: tiny models round-trip through from_pretrained; bad locations give one-line ModelLoadErrors."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stylegallery.engines.diffusion import save_tiny_models
from stylegallery.engines.diffusion.models import load_depth, load_dino, load_lora, load_sd
from stylegallery.errors import ModelLoadError
from tests.fixtures import tiny_engine, tiny_paths


def _message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and len(text) < 400
    return text


def test_tiny_models_are_seeded_and_load_through_from_pretrained(tmp_path):
    again = save_tiny_models(tmp_path)
    first = tiny_paths()
    for sub in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        a, b = load_file(first.sd / sub), load_file(again.sd / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sd = load_sd(str(again.sd))
    assert type(sd.scheduler).__name__ == "DDIMScheduler"
    assert (sd.scheduler.config.timestep_spacing, sd.scheduler.config.steps_offset) == ("leading", 1)
    assert len(sd.unet.down_blocks) == len(sd.unet.up_blocks) == 4
    assert sd.unet.config.layers_per_block == 2 and not any(p.requires_grad for p in sd.unet.parameters())
    dino, _ = load_dino(str(again.dino))
    depth, _ = load_depth(str(again.depth))
    assert type(dino).__name__ == "Dinov2Model" and type(depth).__name__ == "DepthAnythingForDepthEstimation"
    assert not list(again.sd.rglob("*.bin")) and not list(again.dino.rglob("*.bin"))


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as excinfo:
        load_sd(str(missing))
    text = _message(excinfo)
    assert str(missing) in text and "does not exist" in text


def test_a_folder_of_another_architecture_is_named():
    paths = tiny_paths()
    with pytest.raises(ModelLoadError) as excinfo:
        load_sd(str(paths.dino))
    text = _message(excinfo)
    assert "holds a dinov2 model, not a Stable Diffusion 1.5 pipeline" in text and "unet/" in text
    with pytest.raises(ModelLoadError) as excinfo:
        load_dino(str(paths.sd))
    assert "holds a StableDiffusionPipeline pipeline, not a DINOv2 model" in _message(excinfo)
    with pytest.raises(ModelLoadError) as excinfo:
        load_depth(str(paths.dino))
    assert "not a Depth-Anything model" in _message(excinfo)


def test_an_uncached_hub_id_offline_says_how_to_download_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as excinfo:
        load_dino("stylegallery-tests/not-a-real-model")
    text = _message(excinfo)
    assert "offline" in text and "`hf download stylegallery-tests/not-a-real-model`" in text
    assert "local folder" in text


def test_pickle_weights_are_refused(tmp_path):
    folder = tmp_path / "dino"
    shutil.copytree(tiny_paths().dino, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as excinfo:
        load_dino(str(folder))
    assert "only pickle weights (pytorch_model.bin)" in _message(excinfo)


def test_a_file_is_not_a_model_folder():
    with pytest.raises(ModelLoadError) as excinfo:
        load_dino(str(tiny_paths().dino / "config.json"))
    assert "is a file, not a model folder" in _message(excinfo)


@pytest.mark.skipif(importlib.util.find_spec("peft") is not None, reason="peft is installed")
def test_a_lora_without_peft_says_what_to_install():
    with pytest.raises(ModelLoadError) as excinfo:
        load_lora(tiny_engine().sd.unet, "latent-consistency/lcm-lora-sdv1-5")
    assert "pip install peft" in _message(excinfo)


def test_a_lora_file_without_unet_keys_is_named(tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import save_file

    path = tmp_path / "text_encoder_only.safetensors"
    save_file({"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32),
               "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 4)}, path)
    unet = load_sd(str(tiny_paths().sd)).unet
    with pytest.raises(ModelLoadError) as excinfo:
        load_lora(unet, str(path))
    text = _message(excinfo)
    assert f"lora {str(path)!r} holds no UNet LoRA weights" in text and "lcm-lora-sdv1-5" in text


def test_a_lora_is_fused_only_around_a_fast_transfer(tmp_path):
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from stylegallery.engines.diffusion import DiffusionEngine
    from stylegallery.types import Match
    from tests.fixtures import random_image, time_weights, tiny_settings

    paths = tiny_paths()
    donor = UNet2DConditionModel.from_pretrained(paths.sd, subfolder="unet")
    torch.manual_seed(0)
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(donor))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=layers, safe_serialization=True)

    engine = DiffusionEngine(str(paths.sd), str(paths.dino), None, lora=str(tmp_path / "lora"))
    plain = tiny_engine().sd.unet
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def outputs():
        with torch.no_grad():
            return (engine.sd.unet(z, 400, encoder_hidden_states=engine.text_embedding).sample,
                    plain(z, 400, encoder_hidden_states=engine.text_embedding).sample)

    torch.testing.assert_close(*outputs())  # loaded but disabled: stages 1-2 see the plain UNet
    analysis = engine.analyze(random_image(64, 64, seed=0), tiny_settings(), time_weights())
    labels = np.zeros((8, 8), np.int32)
    run = engine.transfer(analysis, labels, [analysis], [labels], [Match(0, 0, 0, 1.0, {})],
                          tiny_settings("fast", steps=2, iters=1, preview_every=1))
    assert next(run).step == 1
    fused, original = outputs()
    assert (fused - original).abs().max() > 1e-3  # the LoRA acts during the fast transfer
    assert [s.final for s in run] == [True]
    torch.testing.assert_close(*outputs(), rtol=1e-5, atol=1e-5)  # unfused afterwards
    assert engine.notes(tiny_settings("fast")) == ()
    (note,) = engine.notes(tiny_settings("paper"))  # loaded, but the paper preset never fuses it: say so
    assert f"lora {str(tmp_path / 'lora')!r} is loaded but not used" in note and "--preset fast" in note


# ---- broken model folders: every failure is one ModelLoadError line naming the component, location and fix ----

def _copy(tmp_path, name: str):
    return shutil.copytree(getattr(tiny_paths(), name), tmp_path / name)


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("model", "weights", "component"), [
    ("dino", "model.safetensors", "the model"),
    ("depth", "model.safetensors", "the model"),
    ("sd", "text_encoder/model.safetensors", "text_encoder/"),
    ("sd", "unet/diffusion_pytorch_model.safetensors", "unet/"),
])
def test_a_truncated_safetensors_file_is_a_model_load_error(tmp_path, model, weights, component):
    folder = _copy(tmp_path, model)
    _truncate(folder / weights)  # a raw SafetensorError from transformers, an OSError from diffusers
    loader = {"dino": load_dino, "depth": load_depth, "sd": load_sd}[model]
    with pytest.raises(ModelLoadError) as excinfo:
        loader(str(folder))
    text = _message(excinfo)
    field = {"dino": "dino_model", "depth": "depth_model", "sd": "sd_model"}[model]
    assert text.startswith(f"{field} {str(folder)!r}: {component} could not be loaded (")
    assert "damaged or incomplete" in text and "download it again" in text


@pytest.mark.parametrize("case", ["empty", "no_config"])
def test_a_broken_tokenizer_is_refused_when_loading_not_at_the_first_run(tmp_path, case):
    folder = _copy(tmp_path, "sd")
    files = list((folder / "tokenizer").iterdir()) if case == "empty" else [folder / "tokenizer/tokenizer_config.json"]
    for path in files:
        path.unlink()
    with pytest.raises(ModelLoadError) as excinfo:  # loaded before, then OverflowError: int too big to convert
        load_sd(str(folder))
    text = _message(excinfo)
    assert text.startswith(f"sd_model {str(folder)!r}: tokenizer/ is unusable (")
    assert ("holds no vocabulary" if case == "empty" else "model_max_length") in text
    assert "restore tokenizer/" in text


def test_a_truncated_lora_is_a_model_load_error(tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 32)}, path)
    _truncate(path)
    with pytest.raises(ModelLoadError) as excinfo:
        load_lora(load_sd(str(tiny_paths().sd)).unet, str(path))
    text = _message(excinfo)
    assert text.startswith(f"lora {str(path)!r}: the LoRA could not be loaded (SafetensorError")
    assert "damaged or incomplete" in text


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch.load and pickle.load fail the test if anything calls them."""
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


@pytest.mark.parametrize("layout", ["file", "folder", "missing_file"])
def test_a_pickle_lora_is_refused_before_it_is_opened(tmp_path, no_unpickling, layout):
    pickle_file = tmp_path / "lora" / "pytorch_lora_weights.bin"
    pickle_file.parent.mkdir()
    if layout != "missing_file":
        pickle_file.write_bytes(b"\x80\x04 not opened")
    location = str(pickle_file.parent if layout == "folder" else pickle_file)
    with pytest.raises(ModelLoadError) as excinfo:
        load_lora(tiny_engine().sd.unet, location)
    text = _message(excinfo)
    assert text.startswith(f"lora {location!r}")
    expected = "holds only pickle weights (pytorch_lora_weights.bin)" if layout == "folder" else \
        "is not a .safetensors file"
    assert expected in text and "only as safetensors" in text


def test_a_lora_folder_with_several_safetensors_files_asks_which(tmp_path):
    for name in ("a.safetensors", "b.safetensors"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelLoadError) as excinfo:
        load_lora(tiny_engine().sd.unet, str(tmp_path))
    assert "holds several .safetensors files (a.safetensors, b.safetensors)" in _message(excinfo)


def test_models_load_without_unpickling_anything(tmp_path, no_unpickling):
    paths = tiny_paths()
    load_sd(str(paths.sd))
    load_dino(str(paths.dino))
    load_depth(str(paths.depth))


def test_every_from_pretrained_call_is_safetensors_only_and_never_runs_remote_code():
    """Static check of models.py: every weights loader passes use_safetensors=True, Auto* classes
    trust_remote_code=False, and nothing passes trust_remote_code=True."""
    import ast
    import inspect

    from stylegallery.engines.diffusion import models

    tree = ast.parse(inspect.getsource(models))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "from_pretrained"]
    assert len(calls) >= 6  # unet, vae, text encoder, DINOv2, depth, image processor
    for call in calls:
        owner = ast.unparse(call.func.value)
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("trust_remote_code", "False") == "False", owner
        if not owner.endswith(("Processor", "ProcessorPil", "Tokenizer", "Scheduler")):  # these load no weights
            assert keywords.get("use_safetensors") == "True", owner
        if owner.startswith("Auto") and owner != "AutoencoderKL":  # transformers' Auto classes can run hub code
            assert keywords.get("trust_remote_code") == "False", owner
    # from_pretrained passed by reference (not called here): only classes without weights or remote code
    references = [ast.unparse(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and node.attr == "from_pretrained" and node not in [c.func for c in calls]]
    assert set(references) <= {"CLIPTokenizer", "DDIMScheduler"}, references
