"""Synthetic mirrors: small phantom datasets written in the official formats of the real ones.

A fresh machine has none of the datasets; `write_all(root)` writes MIMIC-CXR-JPG, CheXpert, ChestX-ray14,
PadChest, Open-I, RSNA Pneumonia, SIIM-ACR and COVIDx mirrors (phantom images, template reports, label and
split files in the official layouts) so the real readers, training loops and the benchmark run unchanged.
They are phantoms, not patient data: numbers measured on them say nothing about clinical performance.
"""

from cxrvlp.core.data.synthetic.cases import (
    CHEXPERT_CLASSES,
    CXR14_CLASSES,
    MIMIC_CHEXPERT_COLUMNS,
    Case,
    sample_case,
    truth_chexpert,
)
from cxrvlp.core.data.synthetic.chestxray14 import write_chestxray14
from cxrvlp.core.data.synthetic.chexpert import write_chexpert
from cxrvlp.core.data.synthetic.covidx import write_covidx
from cxrvlp.core.data.synthetic.files import GENERATOR_VERSION
from cxrvlp.core.data.synthetic.mimic_cxr import write_mimic_cxr
from cxrvlp.core.data.synthetic.mirrors import DATASET_NAMES, write_all
from cxrvlp.core.data.synthetic.openi import write_openi
from cxrvlp.core.data.synthetic.padchest import write_padchest
from cxrvlp.core.data.synthetic.phantom import FINDINGS, render_phantom
from cxrvlp.core.data.synthetic.reports import Report, make_report
from cxrvlp.core.data.synthetic.rsna import write_rsna
from cxrvlp.core.data.synthetic.siim import write_siim

__all__ = [
    "CHEXPERT_CLASSES",
    "CXR14_CLASSES",
    "DATASET_NAMES",
    "FINDINGS",
    "GENERATOR_VERSION",
    "MIMIC_CHEXPERT_COLUMNS",
    "Case",
    "Report",
    "make_report",
    "render_phantom",
    "sample_case",
    "truth_chexpert",
    "write_all",
    "write_chestxray14",
    "write_chexpert",
    "write_covidx",
    "write_mimic_cxr",
    "write_openi",
    "write_padchest",
    "write_rsna",
    "write_siim",
]
