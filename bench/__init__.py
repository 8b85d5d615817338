"""DicomKeep's benchmark against Debian's Orthanc, run side by side (`make bench`).

Modules: `targets` starts the servers compared (DicomKeep's three modes, Orthanc's
three), `scenarios` holds what is measured (run by `worker`, inside the server's
network namespace), `measure` reads CPU and memory of every process from /proc,
`report` turns runs into medians, spread and ratios, `cli` runs it all.
"""
