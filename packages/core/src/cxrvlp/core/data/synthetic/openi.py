"""Open-I / IU X-ray mirror: NLMCXR-style XML reports ecgen-radiology/<n>.xml (FINDINGS / IMPRESSION
AbstractText, MeSH major / minor terms, parentImage ids) and PNGs NLMCXR_png/<parentImage id>.png."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from cxrvlp.core.data.synthetic.cases import FINDING_TO_MESH, Case, sample_case
from cxrvlp.core.data.synthetic.files import dataset_rng, write_image, write_meta, write_text
from cxrvlp.core.data.synthetic.phantom import render_phantom
from cxrvlp.core.data.synthetic.reports import make_report

_MESH_SEVERITY = {
    "small": "small",
    "moderate": "moderate",
    "large": "large",
    "mild": "mild",
    "severe": "severe",
}
_AUTOMATIC = {
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "nodule": "nodule",
    "mass": "Mass",
    "edema": "Pulmonary Edema",
    "atelectasis": "Atelectasis",
}
_MINOR = [
    "Thoracic Vertebrae/degenerative/mild",
    "Spine/degenerative",
    "Granulomatous Disease",
    "Aorta/tortuous",
]


def mesh_terms(case: Case) -> list[str]:
    """Open-I MeSH 'major' terms of a case, e.g. 'Pleural Effusion/left/small'; ['normal'] when none."""
    out = []
    for name, p in case.findings.items():
        parts = [FINDING_TO_MESH[name]]
        if name in ("consolidation", "pneumonia", "nodule", "mass") and p.get("zone"):
            parts += [
                "lung",
                {"upper": "upper lobe", "middle": "middle lobe", "lower": "lower lobe"}[p["zone"]],
            ]
        elif name == "atelectasis":
            parts.append("base")
        elif name == "pneumothorax":
            parts.append("apex")
        if p.get("side"):
            parts.append(p["side"])
        if name != "support_devices" and p.get("severity") in _MESH_SEVERITY:
            parts.append(_MESH_SEVERITY[p["severity"]])
        out.append("/".join(parts))
    return out or ["normal"]


def automatic_terms(case: Case, text: str) -> list[str]:
    """The <automatic> MeSH terms (the real ones are extracted from the text): one per finding + 'opacity'."""
    out = [_AUTOMATIC[f] for f in case.findings if f in _AUTOMATIC]
    if "opacit" in text.lower():
        out.append("opacity")
    return out


def _xml(uid: int, report, majors: list[str], minors: list[str], auto: list[str], images: list[str]) -> str:
    abstract = "".join(
        f'\n            <AbstractText Label="{lab}">{escape(text)}</AbstractText>\n         '
        for lab, text in (
            ("COMPARISON", report.comparison),
            ("INDICATION", report.indication),
            ("FINDINGS", report.findings),
            ("IMPRESSION", report.impression),
        )
    )
    mesh = "".join(f"\n      <major>{escape(m)}</major>\n" for m in majors)
    mesh += "".join(f"\n      <minor>{escape(m)}</minor>\n" for m in minors)
    mesh += "".join(f"\n      <automatic>{escape(m)}</automatic>\n" for m in auto)
    parents = "".join(
        f"""   <parentImage id={quoteattr(img)}>
      <figureId>F{k}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{escape(img)}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>
"""
        for k, img in enumerate(images, start=1)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <pmcId id="{uid}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{uid}"/>
   <licenseType>synthetic</licenseType>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>cxrvlp synthetic mirror</publisher>
   <title>Synthetic phantom in the Indiana University Chest X-ray Collection format</title>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="cxrvlp" Status="synthetic">
      <Article PubModel="Electronic">
         <ArticleTitle>Synthetic phantom report</ArticleTitle>
         <Abstract>{abstract}</Abstract>
         <PublicationTypeList>
            <PublicationType>Radiology Report</PublicationType>
         </PublicationTypeList>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}
   </MeSH>
{parents}</eCitation>"""


def write_openi(root: str | Path, n_reports: int = 150, seed: int = 0, image_size: int = 256) -> Path:
    """Write an Open-I mirror under root; returns root.

    Report n (1..n_reports) has a frontal and, for ~85% of reports, a lateral image with ids
    CXR<n>_IM-<dddd>-1001 / -2001; MeSH major terms name the drawn findings (no hedged findings here, so
    the MeSH terms are exactly the image's findings); a few reports carry an incidental minor term.
    """
    root = Path(root)
    rng = dataset_rng(seed, "openi")
    n_images = 0
    n_normal = 0
    for uid in range(1, n_reports + 1):
        case = sample_case(rng, uncertain_rate=0.0)
        report = make_report(case, rng, style="openi")
        series = int(rng.integers(1, 3000))
        views = ["PA"] + (["LATERAL"] if rng.random() < 0.85 else [])
        ids = [f"CXR{uid}_IM-{series:04d}-{1001 + 1000 * k}" for k in range(len(views))]
        for img_id, view in zip(ids, views):
            img, _ = render_phantom(case.findings, rng, image_size, view=view)
            write_image(root / "NLMCXR_png" / f"{img_id}.png", img)
            n_images += 1
        majors = mesh_terms(case)
        n_normal += majors == ["normal"]
        minors = [str(rng.choice(_MINOR))] if rng.random() < 0.15 else []
        auto = automatic_terms(case, report.text)
        write_text(root / "ecgen-radiology" / f"{uid}.xml", _xml(uid, report, majors, minors, auto, ids))
    write_meta(
        root,
        "openi",
        seed,
        {"reports": n_reports, "images": n_images, "normal_reports": n_normal},
        image_size=image_size,
    )
    return root
