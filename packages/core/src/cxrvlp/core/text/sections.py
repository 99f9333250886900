"""MIMIC-CXR report sectioning, as MIT-LCP's `txt/section_parser.py` + `create_section_files.py` do it.

`section_text(text)` splits a free-text report at all-caps headers preceded by a newline and a space
("\\n FINDINGS: ..."), normalises the header names (typos and synonyms -> canonical names), drops empty
findings/impression sections, and when a report has neither, splits the final section at its first blank
line ("\\n \\n") into the section and a "last_paragraph". `extract_sections(text)` then keeps the *last*
section of each of impression / findings / last_paragraph / comparison (stripped), the columns of MIT-LCP's
`mimic_cxr_sectioned.csv` that MGCA's master table is built from.

Not reproduced: the MIT-LCP script's per-study manual fixes (`custom_mimic_cxr_rules`, a few dozen study
ids). In the official CSV those studies are *absent* (the script `continue`s before writing them), so MGCA
drops them; here they are sectioned by the generic rules instead.
"""

from __future__ import annotations

import re

SECTIONED_COLUMNS = ("impression", "findings", "last_paragraph", "comparison")

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

# header (lower-case) -> canonical section; typos included, as in the MIT-LCP table
_FREQUENT = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",  # sic: the official table maps this typo to impression
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
_MAIN = ("impression", "findings", "history", "comparison", "addendum")
_FINDINGS_LIKE = re.compile(
    "(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|"
    "frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|"
    "ribs|pa and lat)"
)


def normalize_section_names(names: list[str]) -> list[str]:
    """Lower-case, strip and map header names to canonical ones (table, then substring rules)."""
    out = []
    for raw in names:
        s = raw.lower().strip()
        if s in _FREQUENT:
            out.append(_FREQUENT[s])
            continue
        main = next((m for m in _MAIN if m in s), None)
        if main is not None:
            out.append(main)
        elif _FINDINGS_LIKE.search(s) is not None:
            out.append("findings")  # a header describing the whole study counts as findings
        else:
            out.append(s)
    return out


def section_text(text: str) -> tuple[list[str], list[str], list[int]]:
    """Split a report into (sections, normalised names, start offsets), MIT-LCP's `section_text`."""
    sections: list[str] = []
    names: list[str] = []
    starts: list[int] = []
    m = _HEADER.search(text, 0)
    if m:
        sections.append(text[: m.start(1)])
        names.append("preamble")
        starts.append(0)
        while m:
            current = m.group(1).lower()
            start = m.end()
            # skip past the first newline after the header to avoid some bad parses (official behaviour)
            skip = text[start:].find("\n")
            if skip == -1:
                skip = 0
            m = _HEADER.search(text, start + skip)
            end = len(text) if m is None else m.start()
            sections.append(text[start:end])
            names.append(current)
            starts.append(start)
    else:
        sections.append(text)
        names.append("full report")
        starts.append(0)

    names = normalize_section_names(names)
    for i in reversed(range(len(names))):
        if names[i] in ("impression", "findings") and sections[i].strip() == "":
            sections.pop(i)
            names.pop(i)
            starts.pop(i)

    if "impression" not in names and "findings" not in names and "\n \n" in sections[-1]:
        parts = sections[-1].split("\n \n")
        sections.append("\n \n".join(parts[1:]))
        sections[-2] = parts[0]
        names.append("last_paragraph")
        starts.append(starts[-1] + len(sections[-2]))
    return sections, names, starts


def _last(names: list[str], name: str) -> int:
    return len(names) - 1 - names[::-1].index(name)


def extract_sections(text: str) -> dict[str, str | None]:
    """{impression, findings, last_paragraph, comparison} -> the *last* such section (stripped) or None."""
    sections, names, _ = section_text(text)
    return {sn: (sections[_last(names, sn)].strip() if sn in names else None) for sn in SECTIONED_COLUMNS}


def conclusion_text(text: str) -> str:
    """The single section MIT-LCP writes per study: impression > findings > last_paragraph > comparison."""
    sections, names, _ = section_text(text)
    for sn in SECTIONED_COLUMNS:
        if sn in names:
            return sections[_last(names, sn)].strip()
    return ""
