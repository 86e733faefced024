"""Render and write one patient's files (runs in a worker process); return their table rows.

Per image: render, write the DICOM file and finding masks, and note every identifying value
placed in the header, the pixels or the path. Per study: write the report and note its
identifiers. Rows go back to the parent, which streams them into the truth tables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from medtune.config import Anatomy, Finding, SynthConfig
from medtune.synth import reports
from medtune.synth.anatomy import ANATOMY_RENDERERS, Subject
from medtune.synth.dicom import BODY_PART, HeaderValues, write_dicom
from medtune.synth.plan import ImagePlan, PatientPlan, StudyPlan, bone_density, deterministic_uid
from medtune.synth.render import ImageSpec, RenderedImage, render_image
from medtune.synth.sites import Site
from medtune.workspace import atomic_write_bytes

# Tube voltage (kVp) and current-time product (mAs) ranges per anatomy, for the header.
TECHNIQUE = {
    Anatomy.CHEST: ((110, 125), (1.5, 4.0)),
    Anatomy.HAND: ((50, 58), (1.5, 3.0)),
    Anatomy.FOOT: ((52, 60), (2.0, 4.0)),
    Anatomy.KNEE: ((60, 70), (5.0, 10.0)),
    Anatomy.SHOULDER: ((70, 80), (10.0, 20.0)),
    Anatomy.PELVIS: ((75, 85), (20.0, 40.0)),
    Anatomy.LUMBAR_SPINE: ((80, 95), (25.0, 60.0)),
    Anatomy.SKULL: ((70, 80), (15.0, 30.0)),
}

_STATE: dict[str, object] = {}


@dataclass
class PatientRecords:
    """Rows for the truth tables and RIS exports from one patient."""

    site_index: int
    images: list[dict[str, object]] = field(default_factory=list)
    ris: list[dict[str, object]] = field(default_factory=list)
    report_truth: list[dict[str, object]] = field(default_factory=list)
    phi: list[dict[str, object]] = field(default_factory=list)


def init_worker(config: SynthConfig, sites: list[Site], out: Path) -> None:
    """Pool initializer: keep what every task needs, so tasks carry only a patient plan."""
    _STATE.update(config=config, sites=sites, out=Path(out))
    cv2.setNumThreads(1)  # one process per core already; nested threads only thrash
    _reuse_large_blocks()


def _reuse_large_blocks() -> None:
    """Let glibc keep image-sized blocks on its heap instead of mmap/munmap-ing each one.

    A render makes dozens of 4 MB temporaries; served by mmap, each is fresh zeroed pages and
    page faults (a sixth of the time, in the kernel). The heap stays at its high-water mark,
    which the pool bounds by recycling workers. A no-op outside glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum
        libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def truncate(plan: PatientPlan, max_images: int) -> PatientPlan:
    """The plan cut to at most ``max_images`` images (whole studies first, then images)."""
    studies: list[StudyPlan] = []
    left = max_images
    for study in plan.studies:
        if left <= 0:
            break
        studies.append(replace(study, images=study.images[:left]))
        left -= len(studies[-1].images)
    return replace(plan, studies=tuple(studies))


def render_patient(plan: PatientPlan) -> PatientRecords:
    config: SynthConfig = _STATE["config"]  # type: ignore[assignment]
    sites: list[Site] = _STATE["sites"]  # type: ignore[assignment]
    out: Path = _STATE["out"]  # type: ignore[assignment]
    site = sites[plan.site]
    result = PatientRecords(site.index)
    prior_dates: dict[Anatomy, list[dt.date]] = {}
    for study in plan.studies:
        for image in study.images:
            _image(config, site, plan, study, image, out, result)
        _report(site, plan, study, tuple(prior_dates.get(study.anatomy, [])), result)
        prior_dates.setdefault(study.anatomy, []).append(study.when.date())
    return result


# ---------------------------------------------------------------------------------------------
# Images.


def _image(
    config: SynthConfig,
    site: Site,
    plan: PatientPlan,
    study: StudyPlan,
    image: ImagePlan,
    out: Path,
    result: PatientRecords,
) -> None:
    device = site.portable if image.portable else site.room
    age = plan.age_at(study.when)
    name_pn = plan.person.dicom_pn(site.name_style)
    burned = _burned_lines(site, plan, study, image) if site.burns_in_text else ()
    spec = ImageSpec(
        anatomy=study.anatomy,
        view=image.view,
        subject=Subject(
            plan.sex,
            float(age),
            plan.body_scale,
            plan.habitus,
            bone_density(plan, age),
            study.laterality,
        ),
        findings=study.findings,
        processing=device.processing,
        detector_mm=device.detector_mm,
        size=config.size,
        mirrored=image.mirrored,
        marker=image.marker,
        burned_text=burned,
        dose=image.dose,
        seed=image.render_seed,
    )
    rendered = render_image(spec)
    image_id = f"img-{plan.index:06d}-{study.index:02d}-{image.index:02d}"
    rel = _relative_path(site, plan, study, image)
    syntax = site.syntax if image.compressed else "explicit-vr-little-endian"
    header = _header(config, site, plan, study, image, device, syntax, name_pn, age)
    written = write_dicom(out / rel, rendered, header)
    masks = _write_masks(out, image_id, rendered)
    result.images.append(
        _image_row(site, plan, study, image, spec, rendered, header, image_id, rel, masks)
    )
    where = {"image_id": image_id, "accession": study.accession, "patient_index": plan.index}
    for value in written:
        result.phi.append({"value": value.value, "kind": value.kind, "location": "header",
                           "field": value.field, **where})  # fmt: skip
    for line, kind in zip(burned, ("patient_name", "mrn", "date"), strict=False):
        result.phi.append({"value": line, "kind": kind, "location": "pixel",
                           "field": "burned_in_text", **where})  # fmt: skip
    if site.layout == "by-patient":
        for value, kind in ((plan.mrn, "mrn"), (study.accession, "accession")):
            result.phi.append({"value": value, "kind": kind, "location": "path",
                               "field": "file", **where})  # fmt: skip


def _burned_lines(
    site: Site, plan: PatientPlan, study: StudyPlan, image: ImagePlan
) -> tuple[str, ...]:
    # Modalities print the name as stored, the ID and the acquisition date.
    return (
        plan.person.dicom_pn(site.name_style),
        plan.mrn,
        study.when.strftime("%Y-%m-%d" if site.index % 2 else "%d.%m.%Y"),
    )


def _relative_path(site: Site, plan: PatientPlan, study: StudyPlan, image: ImagePlan) -> Path:
    if site.layout == "by-patient":
        # Identifiers in folder names, as many exports do; never let one form a path.
        safe_id = plan.mrn.replace("/", "_").replace("\\", "_")
        safe_acc = study.accession.replace("/", "_").replace("\\", "_")
        return Path("dicom", site.site_id, safe_id, safe_acc, f"S{image.index + 1:03d}",
                    "IM0001.dcm")  # fmt: skip
    return Path("dicom", site.site_id, "DICOM", f"P{plan.index:06d}", f"S{study.index:04d}",
                f"I{image.index:04d}")  # fmt: skip


def _header(
    config: SynthConfig,
    site: Site,
    plan: PatientPlan,
    study: StudyPlan,
    image: ImagePlan,
    device: object,
    syntax: str,
    name_pn: str,
    age: int,
) -> HeaderValues:
    rng = np.random.default_rng(image.render_seed ^ 0x5EED)
    (kv_lo, kv_hi), (mas_lo, mas_hi) = TECHNIQUE[study.anatomy]
    views = " AND ".join(img.view for img in study.images)
    side = {"L": " LEFT", "R": " RIGHT"}.get(study.laterality or "", "")
    anatomy = study.anatomy.value.replace("_", " ").upper()
    style = site.name_style
    key = (config.seed, plan.index, study.index)
    return HeaderValues(
        patient_name=name_pn,
        patient_id=plan.mrn,
        birth_date=plan.birth_date,
        sex=plan.sex,
        age_years=age,
        address=plan.address.one_line() if site.index % 3 == 0 else None,
        phone=plan.phone if site.index % 4 == 1 else None,
        accession=study.accession,
        study_id=str(1000 + (plan.index * 7 + study.index) % 900000),
        study_uid=deterministic_uid(*key, "study"),
        series_uid=deterministic_uid(*key, image.index, "series"),
        sop_uid=deterministic_uid(*key, image.index, "sop"),
        when=study.when,
        study_description=f"XR {anatomy}{side} {views}",
        series_description=f"{anatomy} {image.view}",
        series_number=image.index + 1,
        instance_number=1,
        body_part=BODY_PART[study.anatomy.value],
        view=image.view,
        laterality=study.laterality,
        referring=study.referring.dicom_pn(style),
        performing=study.radiologist.dicom_pn(style),
        operator=study.operator.dicom_pn(style),
        institution=site.institution.name,
        institution_address=site.institution.address.one_line(),
        department=site.institution.department,
        device=device,  # type: ignore[arg-type]
        syntax=syntax,
        kvp=float(rng.uniform(kv_lo, kv_hi)),
        mas=float(rng.uniform(mas_lo, mas_hi) * image.dose),
    )


def _write_masks(out: Path, image_id: str, rendered: RenderedImage) -> dict[int, str]:
    paths: dict[int, str] = {}
    for i, item in enumerate(rendered.findings):
        rel = f"truth/masks/{image_id}_{item.finding.value}.png"
        # 1-bit PNG: a third faster to write and smaller; reads back as 0/255 grey.
        ok, data = cv2.imencode(".png", item.mask.astype(np.uint8) * 255,
                                [cv2.IMWRITE_PNG_BILEVEL, 1])  # fmt: skip
        if ok:
            atomic_write_bytes(out / rel, data.tobytes(), durable=False)
            paths[i] = rel
    return paths


def _image_row(
    site: Site,
    plan: PatientPlan,
    study: StudyPlan,
    image: ImagePlan,
    spec: ImageSpec,
    rendered: RenderedImage,
    header: HeaderValues,
    image_id: str,
    rel: Path,
    masks: dict[int, str],
) -> dict[str, object]:
    stored = rendered.stored
    present = dict(study.findings)
    renderable = ANATOMY_RENDERERS[study.anatomy].findings
    row: dict[str, object] = {
        "image_id": image_id,
        "file": rel.as_posix(),
        "site_id": site.site_id,
        "vendor": header.device.vendor.manufacturer,
        "model": header.device.model,
        "portable": image.portable,
        "modality": header.device.vendor.modality,
        "transfer_syntax": header.syntax,
        "photometric": stored.photometric,
        "bits_stored": stored.bits_stored,
        "voi": "lut" if stored.voi_lut is not None else "window",
        "rows": int(stored.pixels.shape[0]),
        "cols": int(stored.pixels.shape[1]),
        "pixel_spacing_mm": float(rendered.pixel_spacing_mm),
        "patient_key": f"P{plan.index:06d}",
        "study_key": f"P{plan.index:06d}-S{study.index:02d}",
        "accession": study.accession,
        "study_date": study.when.date(),
        "study_uid": header.study_uid,
        "sop_uid": header.sop_uid,
        "anatomy": study.anatomy.value,
        "view": image.view,
        "laterality": study.laterality,
        "sex": plan.sex,
        "age": int(spec.subject.age),
        "body_scale": float(spec.subject.body_scale),
        "habitus": float(spec.subject.habitus),
        "bone_density": float(spec.subject.bone_density),
        "marker": image.marker,
        "marker_box": list(rendered.marker_box) if rendered.marker_box else None,
        "mirrored": image.mirrored,
        "burned_in_text": bool(spec.burned_text),
        "text_box": list(rendered.text_box) if rendered.text_box else None,
    }
    for finding in Finding:
        # True, False, or None where the anatomy cannot show the finding at all.
        row[f"label_{finding.value}"] = (finding in present) if finding in renderable else None
    row["findings"] = [
        {
            "finding": item.finding.value,
            "x0": item.box[0],
            "y0": item.box[1],
            "x1": item.box[2],
            "y1": item.box[3],
            "mask": masks.get(i),
            "location": item.location,
            "side": item.side,
            "size_mm": item.size_mm,
        }
        for i, item in enumerate(rendered.findings)
    ]
    return row


# ---------------------------------------------------------------------------------------------
# Reports.


def _report(
    site: Site,
    plan: PatientPlan,
    study: StudyPlan,
    prior_dates: tuple[dt.date, ...],
    result: PatientRecords,
) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([plan.index, study.index, 0xEE]))
    present = dict(study.findings)
    first_view_findings = _study_locations(result, study)
    limb_side = {"L": "left", "R": "right"}.get(study.laterality or "")
    truths = []
    for finding in sorted(ANATOMY_RENDERERS[study.anatomy].findings, key=lambda f: f.value):
        location, side, size = first_view_findings.get(finding, (None, None, None))
        truths.append(
            reports.FindingTruth(
                finding=finding,
                present=finding in present,
                location=location,
                side=side or (limb_side if finding in present else None),
                size_mm=size,
            )
        )
    report = reports.write_report(
        reports.ReportInput(
            anatomy=study.anatomy,
            views=tuple(img.view for img in study.images),
            laterality=study.laterality,
            study_datetime=study.when,
            accession=study.accession,
            mrn=plan.mrn,
            patient=plan.person,
            age_years=plan.age_at(study.when),
            sex=plan.sex,
            patient_address=plan.address,
            patient_phone=plan.phone,
            findings=tuple(truths),
            prior_dates=prior_dates,
            referring=study.referring,
            radiologist=study.radiologist,
            institution=site.institution,
        ),
        rng,
    )
    ris = {
        "accession_number": study.accession,
        "patient_id": plan.mrn,
        "patient_name": plan.person.last_first(),
        "patient_birth_date": plan.birth_date.isoformat(),
        "exam_datetime": study.when.isoformat(sep=" "),
        "exam_description": f"XR {study.anatomy.value.replace('_', ' ').upper()}",
        "report_status": "FINAL",
        "radiologist": study.radiologist.display(),
        "signed_datetime": report.signed.isoformat(sep=" "),
        "report_text": report.text,
    }
    result.ris.append(ris)
    where = {"image_id": None, "accession": study.accession, "patient_index": plan.index}
    for item in report.phi:
        result.phi.append({"value": item.value, "kind": item.kind, "location": "report",
                           "field": "report_text", **where})  # fmt: skip
    for column, kind in (("accession_number", "accession"), ("patient_id", "mrn"),
                         ("patient_name", "patient_name"), ("patient_birth_date", "date"),
                         ("exam_datetime", "datetime"), ("radiologist", "physician_name"),
                         ("signed_datetime", "datetime")):  # fmt: skip
        result.phi.append({"value": str(ris[column]), "kind": kind, "location": "ris",
                           "field": column, **where})  # fmt: skip
    for truth in truths:
        result.report_truth.append({
            "accession": study.accession,
            "study_key": f"P{plan.index:06d}-S{study.index:02d}",
            "site_id": site.site_id,
            "anatomy": study.anatomy.value,
            "finding": truth.finding.value,
            "present": truth.present,
            "status": report.status[truth.finding],
            "location": truth.location,
            "side": truth.side,
        })  # fmt: skip


def _study_locations(
    result: PatientRecords, study: StudyPlan
) -> dict[Finding, tuple[str | None, str | None, float | None]]:
    """Location words of each finding from the study's images (first view that shows it)."""
    found: dict[Finding, tuple[str | None, str | None, float | None]] = {}
    for row in result.images:
        if row["accession"] != study.accession:
            continue
        for item in row["findings"]:  # type: ignore[attr-defined]
            finding = Finding(item["finding"])
            found.setdefault(finding, (item["location"], item["side"], item["size_mm"]))
    return found
