"""Test-time augmentation (the dihedral transforms, probabilities averaged) and ensembles in predict and detect."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import tiny_config
from flairkit.cli.main import app
from flairkit.cli.predict import load_models
from flairkit.config import load_config
from flairkit.data.transforms import Normalizer
from flairkit.detection.run import detect
from flairkit.errors import CheckpointError, ConfigError, DataError
from flairkit.evaluation.predict import predict
from flairkit.models.build import build_model
from flairkit.models.export import export_bundle
from flairkit.models.inference import (
    TTA_TRANSFORMS,
    Predictor,
    averaged_log_probabilities,
    dihedral,
    masked_argmax,
    masked_softmax,
    undo_dihedral,
)
from flairkit.models.loader import load_model
from flairkit.nomenclature import get_nomenclature
from flairkit.training.run import train
from test_benchmarks import run_bench, table_rows
from test_detection_run import write_ortho

# The eight symmetries of the square written out independently of flairkit: (transform, inverse).
SQUARE_SYMMETRIES = [
    (lambda x: x, lambda x: x),
    (lambda x: torch.rot90(x, 1, (-2, -1)), lambda x: torch.rot90(x, -1, (-2, -1))),
    (lambda x: torch.rot90(x, 2, (-2, -1)), lambda x: torch.rot90(x, 2, (-2, -1))),
    (lambda x: torch.rot90(x, 3, (-2, -1)), lambda x: torch.rot90(x, 1, (-2, -1))),
    (lambda x: x.flip(-1), lambda x: x.flip(-1)),
    (lambda x: x.flip(-2), lambda x: x.flip(-2)),
    (lambda x: x.transpose(-2, -1), lambda x: x.transpose(-2, -1)),
    (lambda x: x.transpose(-2, -1).flip(-1).flip(-2), lambda x: x.transpose(-2, -1).flip(-1).flip(-2)),
]
FLIPS = [SQUARE_SYMMETRIES[i] for i in (0, 2, 4, 5)]


def manual_probabilities(networks, image, symmetries, disabled=()):
    """Probabilities averaged over networks and symmetries, computed the plain way."""
    runs = [inverse(network(forward(image))) for network in networks for forward, inverse in symmetries]
    return torch.stack([masked_softmax(logits, disabled) for logits in runs]).mean(0)


class ManualTTA(nn.Module):
    """A network made of ``networks`` under the eight symmetries, returning log averaged probabilities."""

    def __init__(self, networks, disabled):
        super().__init__()
        self.networks, self.disabled = networks, disabled

    def forward(self, image, metadata=None):
        return manual_probabilities(self.networks, image, SQUARE_SYMMETRIES, self.disabled).log()


def random_network(channels: int, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 5, padding=2)).eval()


def test_dihedral_transforms_are_the_eight_symmetries_and_undo_exactly():
    image = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    seen = []
    for transform in TTA_TRANSFORMS["d4"]:
        moved = dihedral(image, transform)
        assert torch.equal(undo_dihedral(moved, transform), image)
        seen.append(moved)
    expected = [forward(image) for forward, _ in SQUARE_SYMMETRIES]
    for moved in seen:
        assert sum(torch.equal(moved, other) for other in expected) == 1
    flips = [dihedral(image, t) for t in TTA_TRANSFORMS["flips"]]
    assert all(any(torch.equal(f, forward(image)) for f in flips) for forward, _ in FLIPS)


def test_tta_of_an_equivariant_network_keeps_its_classes():
    torch.manual_seed(0)
    pointwise = nn.Conv2d(3, 6, 1).eval()  # per pixel: equivariant to every symmetry of the square
    image = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = masked_argmax(pointwise(image), [1])
        for tta in ("flips", "d4"):
            averaged = averaged_log_probabilities([pointwise], image, tta, [1])
            assert torch.equal(masked_argmax(averaged, [1]), plain)
            assert torch.allclose(averaged.exp(), masked_softmax(pointwise(image), [1]), atol=1e-6)


def test_tta_and_ensembles_average_probabilities():
    image = torch.randn(2, 4, 24, 24)
    first, second = random_network(4, 5, 0), random_network(4, 5, 1)
    with torch.no_grad():
        d4 = averaged_log_probabilities([first], image, "d4", [3]).exp()
        assert torch.allclose(d4, manual_probabilities([first], image, SQUARE_SYMMETRIES, [3]), atol=1e-6)
        assert not torch.allclose(d4, masked_softmax(first(image), [3]), atol=1e-3)  # the network is not equivariant
        assert torch.all(d4[:, 3] == 0)
        flips = averaged_log_probabilities([first], image, "flips", []).exp()
        assert torch.allclose(flips, manual_probabilities([first], image, FLIPS), atol=1e-6)
        both = averaged_log_probabilities([first, second], image, "d4", []).exp()
        assert torch.allclose(both, manual_probabilities([first, second], image, SQUARE_SYMMETRIES), atol=1e-6)
        twice = averaged_log_probabilities([first, first], image, "none", []).exp()
        assert torch.allclose(twice, torch.softmax(first(image), 1), atol=1e-6)


@pytest.fixture(scope="module")
def world_config(tiny_world, tmp_path_factory):
    return tiny_config(tiny_world, tmp_path_factory.mktemp("runs"), "model.smp_kwargs={}")


def test_an_ensemble_of_one_model_twice_predicts_like_the_model(world_config):
    config = world_config
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    batch = {"image": torch.randint(0, 256, (2, len(config.data.channels), 32, 32), dtype=torch.uint8)}
    with torch.inference_mode():
        single = Predictor(config, model, torch.device("cpu"))
        twice = Predictor(config, [model, model], torch.device("cpu"))
        assert torch.equal(single.classes(single.prepare(batch)), twice.classes(twice.prepare(batch)))
    assert twice.passes == "tta none x 2 models = 2 passes"
    assert Predictor(config, model, torch.device("cpu"), tta="d4").passes == "tta d4 x 1 model = 8 passes"


def test_tta_is_refused_for_utt_models(world_config):
    config = world_config.model_copy(deep=True)
    config.model.multimodal = True
    with pytest.raises(ConfigError, match=r"evaluate\.tta=d4 .*U-T&T.*set evaluate\.tta=none"):
        Predictor(config, nn.Identity(), torch.device("cpu"), tta="d4")


def test_an_ensemble_of_models_made_for_other_inputs_is_refused(tmp_path):
    rgbi = load_config("demo", ["model.encoder=resnet18", "model.encoder_weights=null", "data.channels=[1,2,3,4]"])
    rgb = load_config("demo", ["model.encoder=resnet18", "model.encoder_weights=null", "data.channels=[1,2,3]"])
    first = export_bundle(rgbi, build_model(rgbi, pretrained_encoder=False), tmp_path / "rgbi")
    second = export_bundle(rgb, build_model(rgb, pretrained_encoder=False), tmp_path / "rgb")
    assert len(load_models(rgbi, [str(first), str(first)])) == 2
    with pytest.raises(
        CheckpointError, match=r"data\.channels: the weights need \[1, 2, 3\], the config has \[1, 2, 3, 4\]"
    ):
        load_models(rgbi, [str(first), str(second)])


def test_detection_with_d4_and_two_models_maps_the_averaged_probabilities(tmp_path):
    config = load_config(
        None,
        [
            "data.nomenclature=15cl",
            "data.normalization.mode=without",
            "detect.tile_size=64",
            "detect.margin=0",
            "detect.backend=torch",
            "detect.output_codes=index",
            "detect.tta=d4",
        ],
    )
    nomenclature = get_nomenclature(config.data.nomenclature)
    models = [random_network(5, nomenclature.n_targets, seed) for seed in (0, 1)]
    pixels = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    ortho = write_ortho(tmp_path / "ortho.tif", pixels)
    summary = detect(config, models, [ortho], tmp_path / "map.tif")
    assert summary.passes == "tta d4 x 2 models = 16 passes" and "16 passes per tile" in str(summary)
    with torch.no_grad():
        image = Normalizer.from_config(config.data.normalization)(torch.from_numpy(pixels)[None])
        probabilities = manual_probabilities(models, image, SQUARE_SYMMETRIES, nomenclature.disabled)
    with rasterio.open(tmp_path / "map.tif") as src:
        assert np.array_equal(src.read(1), masked_argmax(probabilities, nomenclature.disabled)[0].numpy())
    single = detect(
        config.model_copy(update={"detect": config.detect.model_copy(update={"tta": "none"})}),
        models[0],
        [ortho],
        tmp_path / "one.tif",
    )
    assert single.passes == "tta none x 1 model = 1 pass"


def test_predict_tta_option_writes_the_averaged_maps_and_records_them(world_config, tmp_path):
    config = world_config
    torch.manual_seed(0)
    model = build_model(config, pretrained_encoder=False).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    (tmp_path / "config.yaml").write_text(json.dumps(config.model_dump(mode="json")))
    disabled = get_nomenclature(config.data.nomenclature).disabled
    expected = predict(config, ManualTTA([model], disabled), tmp_path / "manual")
    out = tmp_path / "tta"
    args = ["predict", str(out), "-c", str(tmp_path / "config.yaml"), "-w", str(tmp_path / "w.pth"), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--tta", "d4"])
    assert result.exit_code == 0, result.output
    assert "tta d4 x 1 model = 8 passes per patch" in " ".join(result.output.split())
    for path in expected.written:
        with rasterio.open(path) as manual, rasterio.open(out / path.name) as cli:
            assert np.array_equal(manual.read(1), cli.read(1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passes"] == "tta d4 x 1 model = 8 passes" and manifest["settings"]["evaluate.tta"] == "d4"
    refused = CliRunner().invoke(app, [*args, "--tta", "flips"])
    assert refused.exit_code != 0 and "evaluate.tta=d4 (this run: flips)" in " ".join(refused.output.split())
    with pytest.raises(DataError, match=r"evaluate\.tta"):
        predict(config, model, out)
    twice = tmp_path / "twice"
    args = [*args[:1], str(twice), *args[2:], "-w", str(tmp_path / "w.pth"), "--tta", "d4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for path in expected.written:
        with rasterio.open(path) as manual, rasterio.open(twice / path.name) as cli:
            assert np.array_equal(manual.read(1), cli.read(1))
    assert json.loads((twice / "manifest.json").read_text())["passes"] == "tta d4 x 2 models = 16 passes"


class RawWeights(L.Callback):
    """Keeps the raw (trained, not averaged) weights after each optimiser step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_training_with_ema_checkpoints_the_average_of_the_trajectory(tiny_world, tmp_path):
    config = tiny_config(
        tiny_world,
        tmp_path,
        "train.max_epochs=1",
        "train.limit_train_batches=2",
        "train.limit_val_batches=1",
        "train.ema_decay=0.25",
        "model.smp_kwargs={}",
    )
    raw = RawWeights()
    result = train(config, progress=False, callbacks=[raw])
    checkpoint = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    first, second = raw.steps
    # The first update copies the weights; each later one: average = decay * average + (1 - decay) * weights.
    averaged = [
        key for key, value in second.items() if value.is_floating_point() and not torch.equal(value, first[key])
    ]
    assert any(".running_mean" in key for key in averaged) and any(key.endswith(".weight") for key in averaged)
    for key in averaged:
        assert torch.allclose(checkpoint["state_dict"][key], 0.25 * first[key] + 0.75 * second[key], atol=1e-6), key
        assert torch.equal(checkpoint["current_model_state"][key], second[key])
    loaded = load_model(config, result.last_checkpoint).state_dict()
    key = next(key for key in averaged if key.startswith("model."))
    assert torch.allclose(loaded[key.removeprefix("model.")], 0.25 * first[key] + 0.75 * second[key], atol=1e-6)


def test_bench_tta_times_every_setting_with_its_passes(tmp_path):
    out = run_bench(tmp_path, "bench_tta.py", "--size", "32", "--batch", "2", "--repeats", "1", "--threads", "1")
    rows = table_rows(out, "")
    passes = {(row[0], row[1]): int(row[2]) for row in rows if row[0] in ("none", "flips", "d4")}
    assert passes == {
        ("none", "1"): 1,
        ("flips", "1"): 4,
        ("d4", "1"): 8,
        ("none", "2"): 2,
        ("flips", "2"): 8,
        ("d4", "2"): 16,
    }
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows if row[0] in ("none", "flips", "d4"))
