"""Chest X-ray data: image decoding, official-format readers, transforms, cache (see docs/design.md).

`get_dataset(name, root, **kw)` builds a reader by name; each class documents the files it expects, its
`classes` and its label policy. Every reader yields `cxrvlp.core.data.contract.Sample`.
"""

from __future__ import annotations

from pathlib import Path

from cxrvlp.core.data.base import CxrDataset
from cxrvlp.core.data.chestx_det import ChestXDet10Dataset
from cxrvlp.core.data.chestxray14 import ChestXray14Dataset
from cxrvlp.core.data.chexpert import CheXpertDataset
from cxrvlp.core.data.contract import OnError, Sample
from cxrvlp.core.data.covid_rural import COVIDRuralDataset
from cxrvlp.core.data.covidx import COVIDxDataset
from cxrvlp.core.data.imaging import read_image
from cxrvlp.core.data.mimic_cxr import MimicCxrDataset, prepare_master_table
from cxrvlp.core.data.ms_cxr import MSCXRDataset
from cxrvlp.core.data.openi import OpenIDataset
from cxrvlp.core.data.padchest import PadChestDataset
from cxrvlp.core.data.rsna import RSNAPneumoniaDataset
from cxrvlp.core.data.siim import SIIMPneumothoraxDataset
from cxrvlp.core.data.transforms import PRESETS, build_transform
from cxrvlp.core.data.vindr import VinDrCXRDataset
from cxrvlp.core.errors import ConfigError

DATASETS: dict[str, type[CxrDataset]] = {
    "mimic-cxr": MimicCxrDataset,
    "chexpert": CheXpertDataset,
    "chestxray14": ChestXray14Dataset,
    "padchest": PadChestDataset,
    "openi": OpenIDataset,
    "rsna-pneumonia": RSNAPneumoniaDataset,
    "siim-acr": SIIMPneumothoraxDataset,
    "covidx": COVIDxDataset,
    "vindr-cxr": VinDrCXRDataset,
    "chestx-det10": ChestXDet10Dataset,
    "covid-rural": COVIDRuralDataset,
    "ms-cxr": MSCXRDataset,
}


def get_dataset(name: str, root: str | Path, **kw) -> CxrDataset:
    """Build the reader registered as `name` over the official files under `root`."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; known: {sorted(DATASETS)}")
    return DATASETS[name](root, **kw)


__all__ = [
    "DATASETS",
    "PRESETS",
    "COVIDRuralDataset",
    "COVIDxDataset",
    "ChestXDet10Dataset",
    "CheXpertDataset",
    "ChestXray14Dataset",
    "CxrDataset",
    "MimicCxrDataset",
    "MSCXRDataset",
    "OnError",
    "OpenIDataset",
    "PadChestDataset",
    "RSNAPneumoniaDataset",
    "SIIMPneumothoraxDataset",
    "VinDrCXRDataset",
    "Sample",
    "build_transform",
    "get_dataset",
    "prepare_master_table",
    "read_image",
]
