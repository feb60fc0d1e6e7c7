"""Every registered dataset's modules declare what the registry and the prepare stage read."""

import inspect

import ml_collections
import pytest

from configs import default
from synthjax.data import builder, registry


@pytest.mark.parametrize("name", registry.DATASETS)
def test_each_dataset_module_declares_its_builder_download_and_settings(name):
    dataset = registry.REGISTRY[name]
    module = dataset.module()
    assert issubclass(module.BUILDER, builder.SourceBuilder)
    assert isinstance(module.MANUAL_DIR, str) and module.MANUAL_DIR
    assert module.DOWNLOAD is None or "http" in module.DOWNLOAD
    config = default.get_config().dataset
    parameters = inspect.signature(module.PREPARE).parameters
    for argument in registry.settings_at(config, module.SETTINGS):
        assert argument in parameters, argument


@pytest.mark.parametrize("name", registry.PHANTOM_DATASETS)
def test_each_phantom_writer_declares_its_folder_and_settings(name):
    dataset = registry.REGISTRY[name]
    phantom = dataset.phantom_module()
    assert phantom.FOLDER.startswith("phantom")
    config = default.get_config().dataset
    settings = dataset.phantom_settings(config)
    assert set(registry.PHANTOM_SETTINGS) <= set(settings)
    writer = phantom.write_chexpert_phantom if name == "chexpert" else phantom.write_rsna_phantom
    assert set(settings) <= set(inspect.signature(writer).parameters)


def test_settings_at_reads_dotted_places_and_tuples():
    config = ml_collections.ConfigDict({"ct": {"windows": "brain"}, "a": 1, "b": 2})
    places = {"windows": "ct.windows", "pair": ("a", "b")}
    assert registry.settings_at(config, places) == {"windows": "brain", "pair": (1, 2)}
