"""On-prem de-identification: DICOM PS3.15 Annex E, pixel text, report text, leak scan."""
