"""A local DICOMweb PACS (Orthanc) for the app: configuration, start-up and loading studies as DICOM series."""
