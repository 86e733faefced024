"""Hospitals and their X-ray devices: who writes which pixels and headers, and how.

Each site has a fixed room (DX or CR) and a portable unit for bedside chests, each from a
fictional vendor whose processing differs in bit depth, photometric interpretation, VOI
(window or LUT), tone curve, noise, blur, grid lines and edge enhancement. Sites also differ in
how they export (folder layout, transfer syntax, RIS format, name style, identifier formats),
whether their modalities burn identifiers into the pixels, and in the prevalence of each
finding. Everything is derived from the cohort seed and the site index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medtune.config import Finding, SynthConfig
from medtune.synth.acquisition import Processing
from medtune.synth.identity import Institution, make_institution

# Transfer syntaxes the synthetic cohort can write (encoders available offline, see README).
TRANSFER_SYNTAXES = {
    "explicit-vr-little-endian": "1.2.840.10008.1.2.1",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70",  # Process 14, first-order prediction (SV1)
    "jpeg2000-lossless": "1.2.840.10008.1.2.4.90",
    "rle-lossless": "1.2.840.10008.1.2.5",
    "jpegls-lossless": "1.2.840.10008.1.2.4.80",
}
# Site k's own syntax: every site writes explicit VR little endian too (older studies, other
# sending nodes), and sites after the first compress most of their files.
SITE_SYNTAX_CYCLE = (
    "explicit-vr-little-endian",
    "jpeg-lossless",
    "jpeg2000-lossless",
    "rle-lossless",
    "jpegls-lossless",
)


@dataclass(frozen=True)
class Vendor:
    manufacturer: str
    models: tuple[str, str]  # (room, portable)
    modality: str  # "DX" or "CR"
    software: str
    private_creator: str
    processing: Processing


def _p(**kw: object) -> Processing:
    base = dict(
        bits_stored=12, photometric="MONOCHROME2", voi="window", tone="sigmoid",
        tone_strength=5.0, photons=40000.0, blur_mm=0.15, scatter=0.3, grid_period_mm=0.0,
        grid_amplitude=0.0, drc=0.5, edge_enhance=0.5, autorange=True, heel=0.1,
    )  # fmt: skip
    base.update(kw)
    return Processing(**base)  # type: ignore[arg-type]


VENDORS: tuple[Vendor, ...] = (
    Vendor("Helios Imaging", ("Aurora DR 700", "Aurora Mobile 2"), "DX", "AUR 4.2.1",
           "HELIOS_DX 1.0", _p(bits_stored=12, voi="window", tone="sigmoid", tone_strength=5.5,
                               drc=0.55, edge_enhance=0.7)),
    Vendor("Norland Medical Systems", ("NX-Flex 4343", "NX-Mobile"), "DX", "NX 11.0.3",
           "NORLAND 2.0", _p(bits_stored=14, voi="lut", tone="gamma", tone_strength=1.35,
                             photons=25000.0, drc=0.35, edge_enhance=0.3, blur_mm=0.2)),
    Vendor("Kestrel Radiography", ("KR-CR 120", "KR-CR 120P"), "CR", "KCR 3.7",
           "KESTREL CR", _p(bits_stored=10, photometric="MONOCHROME1", voi="window",
                            tone="linear", photons=12000.0, blur_mm=0.35, scatter=0.5,
                            grid_period_mm=1.1, grid_amplitude=0.012, drc=0.2, edge_enhance=0.2,
                            autorange=False, heel=0.2)),
    Vendor("Tamarind Diagnostics", ("Vista DR", "Vista Go"), "DX", "TD 2024.1", "TAMARIND_XR",
           _p(bits_stored=16, voi="window", tone="gamma", tone_strength=0.8, photons=60000.0,
              blur_mm=0.12, drc=0.65, edge_enhance=0.9)),
    Vendor("Orvane Healthcare", ("OrvaScan 43", "OrvaScan Portable"), "DX", "OS 7.5.0",
           "ORVANE 1.0", _p(bits_stored=15, photometric="MONOCHROME1", voi="lut",
                            tone="sigmoid", tone_strength=4.0, photons=30000.0, scatter=0.4,
                            grid_period_mm=0.9, grid_amplitude=0.006, drc=0.45,
                            edge_enhance=0.4)),
    Vendor("Silvercrest Imaging", ("SC-4343W", "SC-Bedside"), "DX", "SCI 5.1", "SILVERCREST",
           _p(bits_stored=12, voi="lut", tone="sigmoid", tone_strength=6.5, photons=35000.0,
              blur_mm=0.25, drc=0.6, edge_enhance=0.6, heel=0.15)),
)  # fmt: skip


@dataclass(frozen=True)
class Device:
    """One X-ray unit at a site: what goes into the equipment and image-pixel headers."""

    vendor: Vendor
    model: str
    serial: str
    station_name: str
    portable: bool
    detector_mm: tuple[float, float]  # (width, height) of the detector or largest cassette
    processing: Processing


@dataclass(frozen=True)
class Site:
    index: int
    site_id: str  # "site-01": safe to print, carries no identity
    institution: Institution
    room: Device
    portable: Device
    syntax: str  # name in TRANSFER_SYNTAXES: this site's own (compressed) syntax
    layout: str  # "by-patient" (PatientID/Accession/...) or "media" (DICOM/P0001/S0001/I0001)
    report_format: str  # RIS export: "csv" or "jsonl"
    name_style: str  # "upper" or "mixed" person-name case
    id_style: int  # index of the MRN and accession formats
    burns_in_text: bool  # modality writes name, ID and date into the pixels
    weight: float  # share of the cohort's patients
    prevalence_factor: dict[Finding, float]


def make_sites(config: SynthConfig) -> list[Site]:
    """The cohort's sites, deterministic for ``config.seed``.

    Each site's prevalence factors are log-normal, then divided by their patient-weighted mean
    over sites, so the configured prevalence stays the cohort-wide prevalence.
    """
    sites = [_make_site(config, index) for index in range(config.sites)]
    weights = np.array([site.weight for site in sites])
    weights = weights / weights.sum()
    mean = {
        f: float(sum(w * site.prevalence_factor[f] for w, site in zip(weights, sites, strict=True)))
        for f in Finding
    }
    return [
        replace(site, prevalence_factor={f: v / mean[f] for f, v in site.prevalence_factor.items()})
        for site in sites
    ]


def _make_site(config: SynthConfig, index: int) -> Site:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x517E, index]))
    vendor = VENDORS[index % len(VENDORS)]
    # Half the sites buy their portable unit from another vendor.
    portable_vendor = vendor if rng.random() < 0.5 else VENDORS[(index + 3) % len(VENDORS)]
    institution = make_institution(rng, index)
    room = _device(rng, vendor, institution, portable=False)
    portable = _device(rng, portable_vendor, institution, portable=True)
    factors = {
        finding: float(np.exp(rng.normal(0.0, config.site_variation))) for finding in Finding
    }
    return Site(
        index=index,
        site_id=f"site-{index + 1:02d}",
        institution=institution,
        room=room,
        portable=portable,
        syntax=SITE_SYNTAX_CYCLE[index % len(SITE_SYNTAX_CYCLE)],
        layout="by-patient" if index % 2 == 0 else "media",
        report_format="csv" if index % 3 != 2 else "jsonl",
        name_style="upper" if rng.random() < 0.6 else "mixed",
        id_style=index,
        burns_in_text=index % 5 in (1, 3),
        weight=float(np.exp(rng.normal(0.0, 0.5))),
        prevalence_factor=factors,
    )


def _device(
    rng: np.random.Generator, vendor: Vendor, institution: Institution, portable: bool
) -> Device:
    model = vendor.models[1 if portable else 0]
    serial = f"{vendor.manufacturer[:2].upper()}{int(rng.integers(100000, 999999))}"
    kind = "PORT" if portable else "XR"
    station = f"{institution.name.split()[0][:4].upper()}{kind}{int(rng.integers(1, 9))}"
    if vendor.modality == "CR" or portable:
        detector = (350.0, 430.0)  # cassette-sized
    else:
        detector = (430.0, 430.0) if rng.random() < 0.6 else (350.0, 430.0)
    # Each unit is calibrated a little differently: noise and sharpness vary within a vendor.
    processing = replace(
        vendor.processing,
        photons=vendor.processing.photons * float(rng.uniform(0.7, 1.3)),
        blur_mm=vendor.processing.blur_mm * float(rng.uniform(0.8, 1.25)),
        scatter=vendor.processing.scatter * (1.4 if portable else 1.0),  # no grid at the bedside
    )
    return Device(vendor, model, serial, station, portable, detector, processing)
