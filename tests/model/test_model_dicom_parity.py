"""The shipped checkpoint on a wrapped DICOM series and on its JPEG stack.

A patient's ordered JPEGs become a DICOM CT series with Rescale Slope 150/255 and Intercept -39
(the inverse of the 36/150 HU window the JPEGs hold, as the data README says). The DICOM path
(the service's) and the JPEG path (training's and ``evaluate``'s) give each slice the same
probability within 1e-3, and the DICOM path equals the same JPEGs turned into HU in numpy
within 1e-4. (The JPEG path once rounded each resized slice back to 8 bits, which moved
probabilities by up to 0.03.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from model.checkpoint import DEFAULT_CHECKPOINT_DIR
from model.inference import Classifier
from model.training.data import group_by_patient, load_records
from model.training.evaluate import predict_records

DATA = Path(os.environ.get("STROKE_TRIAGE_SHARED_DATA", "../shared/data")) / "brain-stroke-ct"
PATIENTS = ("stroke/73", "normal/54")
"""One haemorrhage and one normal patient of the training set."""


def _wrap(paths: list[Path]) -> list[pydicom.Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [0.35, 0.35]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope = f"{150.0 / 255.0:.14f}"
        ds.RescaleIntercept = -39
        ds.PixelData = pixels.astype("<u2").tobytes()
        datasets.append(ds)
    return datasets


@pytest.mark.skipif(not (DATA / "manifest.csv").is_file(), reason=f"no data at {DATA}")
def test_wrapped_dicom_series_match_the_jpeg_path() -> None:
    records = load_records(DATA)
    groups = group_by_patient(records)
    classifier = Classifier.from_checkpoint(DEFAULT_CHECKPOINT_DIR, device="cpu", precision="fp32")
    for patient in PATIENTS:
        members = [records[i] for i in groups[patient]][10:22]  # 12 slices keep it quick
        jpeg, _ = predict_records(classifier, members)
        # Shuffled on purpose: the DICOM path sorts by position.
        order = np.random.default_rng(0).permutation(len(members))
        prediction = classifier.predict_series(_wrap([members[i].path for i in order]))
        dicom = np.empty(len(members))
        dicom[order] = prediction.slice_probabilities
        stack = np.stack([_pixels(r.path) for r in members])
        hu = classifier.predict_hu_stack(stack * np.float32(150.0 / 255.0) - np.float32(39.0))
        np.testing.assert_allclose(dicom, hu, atol=1e-4, err_msg=patient)
        np.testing.assert_allclose(dicom, jpeg, rtol=0, atol=1e-3, err_msg=patient)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)
