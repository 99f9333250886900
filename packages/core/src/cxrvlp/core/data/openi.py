"""Open-I / Indiana University chest X-rays: NLMCXR XML reports (with MeSH terms) and PNG images.

Expected layout (unmodified)::

    <root>/ecgen-radiology/1.xml ...   (NLMCXR_reports.tgz extracted; or the .tgz itself in <root>)
    <root>/NLMCXR_png/CXR1_1_IM-0001-3001.png ...   (one per <parentImage id=...>)

One item = one image (reports repeat across their images; `first_image_only=True` keeps one per report).
Sections: {"findings", "impression", "indication", "comparison"} from the AbstractText labels; `report` is
findings + " " + impression; `meta["longest"]` is the longer of the two (CXR-CLIP's retrieval text).
MeSH major / minor / automatic terms are in `meta`. Labels: ours, not official - CARZero's 18 Open-I
classes matched by lower-case substring on the `automatic` terms (CARZero's own `custom.csv` with its
synonyms is not public); reports without images are counted in `skipped`.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from cxrvlp.core.data.base import CxrDataset, Record, require_root
from cxrvlp.core.data.contract import OnError
from cxrvlp.core.errors import DatasetNotFoundError, MalformedRecordError

NAME = "openi"

OPENI_CLASSES: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases"),
    "Cardiomegaly": ("cardiomegaly",),
    "Pleural Effusion": ("pleural effusion",),
    "Infiltration": ("infiltrat",),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
    "Edema": ("edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Pleural Thickening": ("pleural thickening",),
    "Hernia": ("hernia",),
    "Fracture": ("fracture",),
    "Lung Opacity": ("opacity",),
    "Lesion": ("lesion",),
    "Calcified Granuloma": ("calcified granuloma",),
    "Granuloma": ("granuloma",),
}
"""CARZero's 18 Open-I classes (order of its prompt file) -> lower-case substrings matched on MeSH terms."""


def parse_report_xml(data: bytes | str, file: object) -> dict:
    """One NLMCXR XML -> {uid, sections, mesh_major, mesh_minor, automatic, images: [(id, caption)]}."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else "?"
        raise MalformedRecordError(file, line, f"XML parse error: {exc}") from exc
    if root.tag != "eCitation":
        raise MalformedRecordError(file, 1, f"root element is <{root.tag}>, expected <eCitation>")
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        raise MalformedRecordError(file, "?", "no <uId id=...> element")
    sections = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        if label:
            sections[label] = (el.text or "").strip()
    mesh = root.find("MeSH")
    major = [(e.text or "").strip() for e in mesh.findall("major")] if mesh is not None else []
    minor = [(e.text or "").strip() for e in mesh.findall("minor")] if mesh is not None else []
    auto = [(e.text or "").strip() for e in root.iter("automatic")]
    images = []
    for el in root.findall("parentImage"):
        iid = el.get("id")
        if not iid:
            raise MalformedRecordError(file, "?", "<parentImage> without an id")
        cap = el.find("caption")
        images.append((iid, (cap.text or "").strip() if cap is not None else ""))
    return {
        "uid": uid,
        "sections": sections,
        "mesh_major": major,
        "mesh_minor": minor,
        "automatic": auto,
        "images": images,
    }


def iter_report_files(root: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every report XML: from ecgen-radiology/ or from NLMCXR_reports.tgz."""
    folder = root / "ecgen-radiology"
    if folder.is_dir():
        for p in sorted(folder.glob("*.xml"), key=lambda q: (len(q.stem), q.stem)):
            yield str(p), p.read_bytes()
        return
    tgz = root / "NLMCXR_reports.tgz"
    if tgz.is_file():
        try:
            with tarfile.open(tgz, "r:gz") as tf:
                for m in tf:
                    if m.isfile() and m.name.endswith(".xml"):
                        f = tf.extractfile(m)
                        if f is not None:
                            yield f"{tgz}:{m.name}", f.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise MalformedRecordError(tgz, "?", f"cannot read the archive: {exc}") from exc
        return
    raise DatasetNotFoundError(NAME, folder, "ecgen-radiology/*.xml or NLMCXR_reports.tgz")


def substring_labels(terms: Sequence[str], classes: dict[str, tuple[str, ...]]) -> np.ndarray:
    """1 where any term contains any of the class's substrings (lower-case), else 0."""
    low = [t.lower() for t in terms]
    return np.array([float(any(s in t for t in low for s in subs)) for subs in classes.values()], np.float32)


class OpenIDataset(CxrDataset):
    """Open-I images with their report sections, MeSH terms and (ours) substring labels."""

    name = NAME
    classes = tuple(OPENI_CLASSES)

    def __init__(
        self,
        root: str | Path,
        first_image_only: bool = False,
        label_terms: str = "automatic",
        load_images: bool = True,
        on_error: OnError = "raise",
        cache_dir: str | Path | None = None,
        max_reports: int | None = None,
    ) -> None:
        super().__init__(root, load_images=load_images, on_error=on_error, cache_dir=cache_dir)
        png_dir = self.root / "NLMCXR_png"
        for k, (name, data) in enumerate(iter_report_files(require_root(NAME, self.root))):
            if max_reports is not None and k >= max_reports:
                break
            try:
                rep = parse_report_xml(data, name)
            except MalformedRecordError as err:
                self._skip(err)
                continue
            if not rep["images"]:
                self.skipped.append((name, f"{rep['uid']}: report has no image"))
                continue
            secs = rep["sections"]
            findings, impression = secs.get("findings", ""), secs.get("impression", "")
            report = " ".join(t for t in (findings, impression) if t)
            terms = rep["automatic"] if label_terms == "automatic" else rep["mesh_major"] + rep["mesh_minor"]
            lab = substring_labels(terms, OPENI_CLASSES)
            meta = {
                "uid": rep["uid"],
                "file": name,
                "mesh_major": rep["mesh_major"],
                "mesh_minor": rep["mesh_minor"],
                "automatic": rep["automatic"],
                "longest": findings if len(findings) >= len(impression) else impression,
            }
            images = rep["images"][:1] if first_image_only else rep["images"]
            for iid, caption in images:
                self.records.append(
                    Record(
                        image_path=str(png_dir / f"{iid}.png"),
                        labels=lab,
                        report=report,
                        sections=secs,
                        patient_id=rep["uid"],
                        study_id=rep["uid"],
                        meta={**meta, "image_id": iid, "caption": caption},
                    )
                )
