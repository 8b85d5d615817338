"""DICOM files as Orthanc reads them.

- `parsing`: the structural Part-10 reader (validation, element walk, value decoding).
- `instance`: what a store needs from a file (the four Orthanc IDs, main tags).
- `orthanc_json`: Orthanc's JSON views of a dataset (`/tags`, `/header`, `/content`).

`dicom_scu` and `receiving` join this package in a later step.
"""
