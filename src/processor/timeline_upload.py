"""Timelines for a `timeline_path` on OSS (DeepRec's `oss://bucket/dir/`): the data plane writes each
traced request's Chrome trace into a local staging directory (a finished file appears there by rename),
and this uploader moves finished files to OSS: every second while serving, and once more at close. A
file whose upload fails stays and is tried again at the next pass; nothing is ever written to a local
directory named after the URL."""
from __future__ import annotations

import logging
import os
import shutil

from .config import ProcessorConfig
from .errors import StoreError

logger = logging.getLogger(__name__)

UPLOAD_SECONDS = 1.0


class TimelineUploader:
    def __init__(self, config: ProcessorConfig, staging: str):
        from .stores.oss import OssTransport  # oss2: only when a timeline goes to OSS
        self._transport = OssTransport.from_config(config)
        self.target = config.timeline_path.rstrip("/")
        self.staging = staging
        os.makedirs(staging, exist_ok=True)

    def upload_finished(self) -> int:
        """Uploads the finished traces in the staging directory and removes them; returns how many."""
        uploaded = 0
        for name in sorted(os.listdir(self.staging)):
            if not (name.startswith("timeline-") and name.endswith(".json")):
                continue  # a trace still being written ends in .partial
            path = os.path.join(self.staging, name)
            try:
                with open(path, "rb") as f:
                    self._transport.write_bytes(f"{self.target}/{name}", f.read())
            except StoreError as e:
                logger.warning("cannot upload timeline %s to %s (tried again in %.0f s): %s", name, self.target,
                               UPLOAD_SECONDS, e)
                continue
            os.remove(path)
            uploaded += 1
            logger.info("uploaded timeline %s/%s", self.target, name)
        return uploaded

    def close(self) -> None:
        """Uploads what is left; removes the staging directory once it is empty."""
        self.upload_finished()
        if not any(name.endswith(".json") for name in os.listdir(self.staging)):
            shutil.rmtree(self.staging, ignore_errors=True)
