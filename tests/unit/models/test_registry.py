from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import (
    AttentionFusionConfig,
    UNetConfig,
    create_model,
    create_model_from_config,
    get_model_entry,
    list_models,
    list_variants,
    model_record,
    register_model,
)


def test_list_models_names_the_cli_architectures() -> None:
    assert list_models() == ["attention-fusion", "attention-unet", "unet"]


def test_every_architecture_has_the_standard_variants(arch: str) -> None:
    assert list_variants(arch) == ["tiny", "small", "paper"]
    assert get_model_entry(arch).summary


def test_unknown_architecture_lists_accepted() -> None:
    with pytest.raises(ConfigError, match=r"'segformer'.*attention-fusion, attention-unet, unet"):
        create_model("segformer", 1, 2)


def test_unknown_variant_lists_accepted(arch: str) -> None:
    with pytest.raises(ConfigError, match=r"'huge'.*tiny, small, paper"):
        create_model(arch, 1, 2, variant="huge")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_channel_counts_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="in_channels must be a positive integer"):
        create_model("unet", bad, 2, "tiny")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
        create_model("unet", 1, bad, "tiny")  # type: ignore[arg-type]


def test_record_round_trips_through_json(arch: str) -> None:
    model = create_model(arch, 2, 3, "tiny").eval()
    record = model_record(model)
    assert record["arch"] == arch and record["variant"] == "tiny"
    assert (record["in_channels"], record["num_classes"]) == (2, 3)
    assert record == json.loads(json.dumps(record))

    rebuilt = create_model_from_config(json.loads(json.dumps(record)))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert model_record(rebuilt) == record
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_record_is_a_copy() -> None:
    model = create_model("unet", 1, 2, "tiny")
    model_record(model)["config"]["channels"].append(1)
    assert model_record(model)["config"]["channels"] == [16, 32, 64, 128, 256]


def test_record_with_unknown_option_lists_accepted() -> None:
    record = model_record(create_model("attention-fusion", 1, 2, "tiny"))
    record["config"]["depth"] = 6
    with pytest.raises(ConfigError, match=r"'depth'.*base_channels, attention_reduction"):
        create_model_from_config(record)


def test_record_missing_key() -> None:
    with pytest.raises(ConfigError, match="lacks num_classes"):
        create_model_from_config(
            {"arch": "unet", "variant": "tiny", "in_channels": 1, "config": {}}
        )


def test_model_not_from_registry_has_no_record() -> None:
    with pytest.raises(ConfigError, match="Conv2d was not built by"):
        model_record(nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: AttentionFusionConfig(base_channels=0), "base_channels.*got 0"),
        (lambda: AttentionFusionConfig(norm="instance"), "'instance'.*'batch', 'group'"),
        (lambda: AttentionFusionConfig(norm="layer"), "'layer'.*accepted: 'batch', 'group'"),
        (lambda: UNetConfig(strides=(2, 2)), "strides must be 4 values"),
        (lambda: UNetConfig(dropout=1.0), "dropout must be in"),
    ],
)
def test_invalid_config_values(make: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make()  # type: ignore[operator]


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet", config_class=UNetConfig, variants={}, summary="")
