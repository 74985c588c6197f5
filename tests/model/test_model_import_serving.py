"""An imported Hugging Face ViT served by the worker: DICOM in, SR out, Hugging Face's numbers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

import db.results
from db.engine import create_engine_for, migrate
from model.aggregate import aggregate
from model.checkpoint import load_checkpoint
from model.dicom import SortedSeries
from model.importing.importer import import_huggingface
from model.pixels import preprocess_hu_stack
from tests.model.import_helpers import OPTIONS, hf_vit_folder
from tests.worker.helpers import Pacs, receive_series, worker_context
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import build_classifier
from worker.pipeline import process_series


def test_the_worker_serves_an_imported_checkpoint(tmp_path: Path) -> None:
    from transformers import ViTForImageClassification

    folder = hf_vit_folder(tmp_path / "hf", labels=["stroke", "no stroke"], seed=4)
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", OPTIONS)
    loaded = load_checkpoint(checkpoint)
    url = f"sqlite:///{tmp_path / 'triage.db'}"
    migrate(create_engine_for(url))
    runtime = WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=url,
        broker_url="memory://",
    )
    pacs = Pacs()
    try:
        ctx = worker_context(runtime, checkpoint, pacs=[pacs.destination])
        job_id, series_uid = receive_series(ctx, n_slices=6)
        outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid, worker="w")
        assert outcome.result_id is not None
        assert len(pacs.uids("SR")) == 1
    finally:
        pacs.stop()
    with ctx.sessions() as session:
        result = db.results.get_result(session=session, job_id=job_id)
    assert result is not None
    assert result.model_sha256 == loaded.sha256
    assert result.model_version == loaded.spec.version

    # The stored probability is Hugging Face's forward pass on the same series, aggregated.
    paths = sorted((runtime.storage_dir / "series").glob("*.dcm"))
    series = SortedSeries([pydicom.dcmread(path) for path in paths])
    inputs = preprocess_hu_stack(series.hu(0, len(series)), loaded.spec)
    model = ViTForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(inputs)).logits
    slices = torch.softmax(logits, dim=-1)[:, 0].numpy()  # "stroke" is index 0
    rule = loaded.spec.aggregation
    expected = aggregate(slices, rule=rule.rule, k=rule.k)
    assert result.probability == pytest.approx(expected, abs=1e-4)
    assert np.ptp(slices) > 1e-4


def test_the_worker_warns_that_an_imported_threshold_is_not_calibrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = hf_vit_folder(tmp_path / "hf", labels=["stroke", "no stroke"], seed=4)
    checkpoint = import_huggingface(folder, tmp_path / "ckpt", OPTIONS)
    config = WorkerConfig(device="cpu", precision="fp32")
    with caplog.at_level(logging.WARNING, logger="worker.context"):
        build_classifier(config, load_checkpoint(checkpoint), source=checkpoint)
    assert "not calibrated" in caplog.text
