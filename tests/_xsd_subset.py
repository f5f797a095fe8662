"""A validator for the XSD subset that tests/fixtures/junit.xsd uses (no lxml/xmlschema here).

Supported: global ``xs:element`` declarations with ``type="xs:string"`` (text only) or an
``xs:complexType`` (``mixed`` or not) holding an optional ``xs:sequence`` of ``xs:element ref``
with ``minOccurs``/``maxOccurs``, and ``xs:attribute`` with ``use`` and the types ``xs:string``,
``xs:decimal``, ``xs:nonNegativeInteger``. Undeclared attributes and elements are errors, as in
XSD. Anything else in the schema raises NotImplementedError, so the checker never silently
accepts a construct it does not understand.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

XS = "{http://www.w3.org/2001/XMLSchema}"
_TYPES = {
    "xs:string": re.compile(r".*", re.S),
    "xs:decimal": re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*"),
    "xs:nonNegativeInteger": re.compile(r"\s*\+?\d+\s*"),
}


@dataclass
class _Attr:
    type: str
    required: bool


@dataclass
class _Decl:
    simple: bool
    mixed: bool
    attrs: dict[str, _Attr]
    seq: list[tuple[str, int, int | None]]  # (ref, min, max or None for unbounded)


def load_schema(path: Path) -> dict[str, _Decl]:
    root = ET.parse(path).getroot()
    decls: dict[str, _Decl] = {}
    for el in root:
        if el.tag is ET.Comment:
            continue
        if el.tag != XS + "element":
            raise NotImplementedError(el.tag)
        name = el.attrib["name"]
        if el.attrib.get("type") == "xs:string":
            decls[name] = _Decl(True, True, {}, [])
            continue
        (ct,) = list(el)
        if ct.tag != XS + "complexType":
            raise NotImplementedError(ct.tag)
        attrs: dict[str, _Attr] = {}
        seq: list[tuple[str, int, int | None]] = []
        for part in ct:
            if part.tag == XS + "attribute":
                t = part.attrib.get("type", "xs:string")
                if t not in _TYPES:
                    raise NotImplementedError(t)
                attrs[part.attrib["name"]] = _Attr(t, part.attrib.get("use") == "required")
            elif part.tag == XS + "sequence":
                for e in part:
                    if e.tag != XS + "element" or "ref" not in e.attrib:
                        raise NotImplementedError(e.tag)
                    mx = e.attrib.get("maxOccurs", "1")
                    seq.append(
                        (
                            e.attrib["ref"],
                            int(e.attrib.get("minOccurs", "1")),
                            None if mx == "unbounded" else int(mx),
                        )
                    )
            else:
                raise NotImplementedError(part.tag)
        decls[name] = _Decl(False, ct.attrib.get("mixed") == "true", attrs, seq)
    return decls


def validate(doc: ET.Element, schema: dict[str, _Decl]) -> list[str]:
    """Every violation of ``schema`` in ``doc`` (empty list: valid)."""
    errors: list[str] = []

    def check(el: ET.Element, path: str) -> None:
        decl = schema.get(el.tag)
        if decl is None:
            errors.append(f"{path}: element <{el.tag}> is not declared")
            return
        for a, v in el.attrib.items():
            spec = decl.attrs.get(a)
            if spec is None:
                errors.append(f"{path}: attribute {a!r} is not declared")
            elif not _TYPES[spec.type].fullmatch(v):
                errors.append(f"{path}: attribute {a}={v!r} is not a valid {spec.type}")
        for a, spec in decl.attrs.items():
            if spec.required and a not in el.attrib:
                errors.append(f"{path}: required attribute {a!r} missing")
        children = list(el)
        if decl.simple and children:
            errors.append(f"{path}: <{el.tag}> must hold text only")
            return
        if not decl.mixed:
            texts = [el.text or ""] + [c.tail or "" for c in children]
            if any(t.strip() for t in texts):
                errors.append(f"{path}: <{el.tag}> may not hold text")
        i = 0
        for ref, lo, hi in decl.seq:
            n = 0
            while i < len(children) and children[i].tag == ref and (hi is None or n < hi):
                i += 1
                n += 1
            if n < lo:
                errors.append(f"{path}: expected at least {lo} <{ref}>, found {n}")
        if i < len(children):
            errors.append(f"{path}: unexpected <{children[i].tag}> at child {i}")
        for k, c in enumerate(children):
            check(c, f"{path}/{c.tag}[{k}]")

    check(doc, doc.tag)
    return errors
